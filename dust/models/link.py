"""Link prediction and relation strength: an R-GCN encoder and a DistMult decoder (Schlichtkrull et al. 2018, §4).

The encoder gives each entity i a vector e_i: a learnt embedding per node (the authors' input transform; DGL's
and PyTorch Geometric's examples do the same) through ``layers`` R-GCN layers (mean per relation, a root weight
for the self-loop, ReLU between) over the training relations and their inverses. The decoder is DistMult (Yang
et al. 2015), a diagonal matrix R_r per relation type r:

    f(s, r, o) = e_s^T diag(R_r) e_o = Σ_k e_s[k] · R_r[k] · e_o[k],    P((s, r, o) holds) = σ(f(s, r, o))

and σ(f) is the relation strength ``score`` gives. ``layers=0`` is DistMult alone, the paper's baseline: an
embedding per entity, no message passing.

Training (full batch, Adam): each training triple with ``negatives`` (the paper's ω) corruptions of it, its
subject or its object (even odds) replaced by an entity drawn uniformly; binary cross-entropy of σ(f), 1 for the
triple and 0 for its corruptions, plus ``l2`` · (mean e² + mean R²), the L2 on the decoder's inputs (the paper:
0.01; means over all entities and relation types, as DGL's and PyG's examples); gradients clipped to norm 1 (the
authors' code); edge dropout on the encoder's graph (the paper: 0.4). Held-out triples never pass messages: the
encoder's graph has the training triples only.

Evaluation: the filtered ranks of Bordes et al. (2013), as the paper and its successors report them: each test
triple's object is ranked against every entity as object of (s, r, ·), and its subject against every entity as
subject of (·, r, o), leaving out the candidates that make another known triple (training or test). A tie counts
half (the mean rank a random tie-break gives), so that a model scoring everything alike ranks in the middle, not
first. MRR and Hits@1, 3, 10 are over both ranks of every test triple.
"""

from __future__ import annotations

import csv
import io
import math
import random
import statistics
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from dust.core.errors import InvalidInput
from dust.engine import relations
from dust.models import graph, rgcn
from dust.storage.repositories import entities as entity_repo

if TYPE_CHECKING:  # torch loads only when a model is trained or used
    import torch

Triple = tuple[int, int, int]  # (source node, relation type, target node)
CHUNK = 5_000  # external ids looked up at once
BATCH = 512  # test triples ranked at once: BATCH × entities scores in memory
HITS = (1, 3, 10)
FORMAT = 1  # of to_bytes


@dataclass(frozen=True)
class Settings:
    hidden: int = 100
    layers: int = 1  # R-GCN layers (the paper: 1 on FB15k and WN18, 2 on FB15k-237); 0: DistMult alone
    epochs: int = 500
    lr: float = 0.01
    negatives: int = 1  # ω, corruptions per training triple (the paper's text; the authors' code: 10)
    l2: float = 0.01  # on the decoder's inputs: the entity vectors and the relations' diagonals
    bases: int | None = None  # basis decomposition with this many bases (PyG's RGCNConv, slower)
    blocks: int | None = None  # this many diagonal blocks; None and no bases: blocks of 5 × 5, the paper's
    edge_dropout: float = 0.4

    def check(self) -> None:
        if self.hidden < 1 or self.epochs < 1 or self.layers < 0 or self.negatives < 1:
            raise InvalidInput("hidden, epochs and negatives must be at least 1, layers 0 or more")
        if not (self.lr > 0 and math.isfinite(self.lr)) or not (self.l2 >= 0 and math.isfinite(self.l2)):
            raise InvalidInput("lr must be a positive number, l2 a number of 0 or more")
        if not 0 <= self.edge_dropout < 1:
            raise InvalidInput("edge dropout must be from 0 to under 1")
        if self.bases is not None and self.blocks is not None:
            raise InvalidInput("give bases or blocks, not both")
        if (self.bases is not None and self.bases < 1) or (self.blocks is not None and self.blocks < 1):
            raise InvalidInput("bases and blocks must be at least 1")
        if self.layers and self.bases is None and self.hidden % self.block_count:
            raise InvalidInput(f"blocks ({self.block_count}) must divide hidden ({self.hidden}): give blocks or bases")

    @property
    def block_count(self) -> int:
        return self.blocks if self.blocks is not None else max(self.hidden // 5, 1)


@dataclass(frozen=True)
class TripleFile:
    """(source, type, target) rows of a triples file: external ids and a relation type, in file order."""

    rows: list[tuple[str, str, str]]
    path: Path


def read_triples(path: Path) -> TripleFile:
    """The rows of a CSV, or of a TSV (by its .tsv or .tab name), with columns source, type and target."""
    columns = ("source", "type", "target")
    if not path.is_file():
        raise InvalidInput(f"{path} is not a file: give a CSV or TSV with columns {', '.join(columns)}")
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file, delimiter=delimiter)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise InvalidInput(f"{path.name} has no column {', '.join(missing)} (it has {reader.fieldnames})")
        rows = [(r["source"].strip(), r["type"].strip(), r["target"].strip()) for r in reader if all(r.values())]
    if not rows:
        raise InvalidInput(f"{path.name} has no row with a source, a type and a target")
    return TripleFile(rows, path)


@dataclass(frozen=True)
class Problem:
    """The relations to learn from and those to predict, read from the database once and for all."""

    graph: graph.RelationalGraph  # the encoder's: training triples only (and literal nodes, if asked)
    relation_types: list[str]  # decoder relation k; its edges in the encoder's graph are of type 2k and 2k + 1
    train: list[Triple]
    test: list[Triple]
    at: datetime | None

    @property
    def entities(self) -> int:
        """Entity nodes come first (0 … entities - 1): the candidates of a ranking and of a corruption."""
        return len(self.graph.entity_ids)


def prepare(
    session: Session,
    *,
    at: datetime | None = None,
    types: list[str] | None = None,
    test_triples: TripleFile | None = None,
    test_fraction: float = 0.1,
    seed: int = 0,
    literals: bool = False,
    tested: list[str] | None = None,
) -> Problem:
    """The master tensor's relations (of ``types``, and of ``tested``) as of ``at``, split into training and
    test triples: those of ``test_triples``, else a ``test_fraction`` of those of the types ``tested`` (default:
    of all) drawn with ``seed``. Training needs no database: close the session before it (on SQLite an open
    transaction holds the write lock)."""
    if types is not None and tested is not None:
        types = list(dict.fromkeys(types + tested))
    tensor = relations.master_tensor(session, types=types, at=at)
    when = f" as of {at.isoformat()}" if at else ""
    missing = [t for t in dict.fromkeys((types or []) + (tested or [])) if t not in tensor.types]
    if missing:
        raise InvalidInput(f"no relation of type {missing[0]!r}{when}")
    if not tensor.values:
        raise InvalidInput(f"no relation{when} to learn from")
    kinds, sources, targets = tensor.indices
    stored = list(zip(sources, kinds, targets, strict=True))
    ids = list(tensor.entity_ids)
    if test_triples is not None:
        test = _resolve(session, test_triples, ids, tensor.types, when)
    elif tested is None:
        test = _split(stored, test_fraction, seed)
    else:
        held_types = {tensor.types.index(t) for t in tested}
        test = _split([triple for triple in stored if triple[1] in held_types], test_fraction, seed)
    held = set(test)
    train = [i for i, triple in enumerate(stored) if triple not in held]
    if not train:
        raise InvalidInput(f"no relation{when} is left to train on once the test triples are held out")
    built = graph.from_triples(ids, tensor.types, [stored[i] for i in train], [tensor.values[i] for i in train])
    if literals:
        graph.add_literals(session, built)
    return Problem(built, list(tensor.types), [stored[i] for i in train], test, at)


def _split(stored: list[Triple], fraction: float, seed: int) -> list[Triple]:
    if not 0 < fraction < 1:
        raise InvalidInput(f"the test fraction must be above 0 and below 1, not {fraction}")
    size = round(fraction * len(stored))
    if not 0 < size < len(stored):
        raise InvalidInput(f"a test fraction of {fraction} of {len(stored)} relations holds out {size}")
    return sorted(random.Random(seed).sample(stored, size))


def _resolve(session: Session, file: TripleFile, ids: list[uuid.UUID], types: list[str], when: str) -> list[Triple]:
    """The triples of ``file`` as nodes and types; an entity without a relation then becomes a node (of ``ids``)."""
    names = list(dict.fromkeys(n for s, _, t in file.rows for n in (s, t)))
    found: dict[str, uuid.UUID] = {}
    for i in range(0, len(names), CHUNK):
        found.update(entity_repo.ids_by_external_id_any_kind(session, names[i : i + CHUNK]))
    unknown = [n for n in names if n not in found]
    if unknown:
        raise InvalidInput(f"{len(unknown)} ids of {file.path.name} are no entity's external id, e.g. {unknown[0]!r}")
    kind = {name: k for k, name in enumerate(types)}
    strange = [t for _, t, _ in file.rows if t not in kind]
    if strange:
        raise InvalidInput(f"{file.path.name}: no relation of type {strange[0]!r}{when} to learn it from")
    node = {entity: i for i, entity in enumerate(ids)}
    for entity in found.values():
        if entity not in node:
            node[entity] = len(ids)
            ids.append(entity)
    return list(dict.fromkeys((node[found[s]], kind[t], node[found[o]]) for s, t, o in file.rows))


@dataclass(frozen=True)
class Model:
    """A trained link predictor, as scoring needs it: the encoder's output for each entity (not the encoder,
    which would need the graph again) and DistMult's diagonal for each relation type."""

    entity_ids: list[uuid.UUID]
    relation_types: list[str]
    entities: torch.Tensor  # [entities, hidden]: e_i of entity_ids[i]
    relations: torch.Tensor  # [relation types, hidden]: R_r of relation_types[r]


def network(problem: Problem, settings: Settings) -> Any:
    """The untrained encoder and decoder for ``problem`` (a torch Module)."""
    import torch
    from torch_geometric.nn import FastRGCNConv, RGCNConv

    def conv() -> torch.nn.Module:
        if settings.bases is not None:  # FastRGCNConv would gather a hidden × hidden matrix for every edge
            return RGCNConv(settings.hidden, settings.hidden, edge_types, num_bases=settings.bases)
        return FastRGCNConv(settings.hidden, settings.hidden, edge_types, num_blocks=settings.block_count)

    edge_types = max(problem.graph.num_relations, 1)

    class LinkPredictor(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = torch.nn.Parameter(torch.empty(problem.graph.num_nodes, settings.hidden))
            self.diagonals = torch.nn.Parameter(torch.empty(len(problem.relation_types), settings.hidden))
            torch.nn.init.xavier_uniform_(self.embedding)
            torch.nn.init.xavier_uniform_(self.diagonals)
            self.convs = torch.nn.ModuleList([conv() for _ in range(settings.layers)])

        def encode(self, edge_index: torch.Tensor, edge_type: torch.Tensor) -> torch.Tensor:
            x = self.embedding
            for i, layer in enumerate(self.convs):
                x = layer(x, edge_index, edge_type)
                x = x.relu() if i < len(self.convs) - 1 else x
            return x

        def forward(self, e: torch.Tensor, triples: torch.Tensor) -> torch.Tensor:
            """f(s, r, o) of each column (s, r, o) of ``triples`` [3, T], from the encoder's output ``e``."""
            # index_select, not e[...]: e[...]'s gradient, an accumulating index_put_, led the epoch's profile
            s, o = e.index_select(0, triples[0]), e.index_select(0, triples[2])
            return (s * self.diagonals.index_select(0, triples[1]) * o).sum(-1)

    return LinkPredictor()


def fit(
    problem: Problem, settings: Settings, seed: int, on_epoch: Callable[[int], None] | None = None
) -> tuple[Model, float]:
    """A model trained from ``seed`` (the same seed, the same model) and its seconds per epoch; ``on_epoch(k)``
    is called after epoch k (1..epochs), to report progress."""
    import torch
    import torch.nn.functional as F

    settings.check()
    torch.manual_seed(seed)
    net = network(problem, settings)
    optimizer = torch.optim.Adam(net.parameters(), lr=settings.lr)
    edge_index, edge_type, _ = problem.graph.tensors()
    positives = torch.tensor(problem.train, dtype=torch.long).t().reshape(3, -1)
    labels = torch.cat([torch.ones(positives.shape[1]), torch.zeros(positives.shape[1] * settings.negatives)])
    clock = rgcn.EpochClock(on_epoch)
    for epoch in range(1, settings.epochs + 1):
        net.train()
        optimizer.zero_grad()
        kept = torch.rand(edge_type.shape[0]) >= settings.edge_dropout
        e = net.encode(edge_index[:, kept], edge_type[kept])
        triples = torch.cat([positives, corrupt(positives, settings.negatives, problem.entities)], dim=1)
        regular = e[: problem.entities].pow(2).mean() + net.diagonals.pow(2).mean()
        loss = F.binary_cross_entropy_with_logits(net(e, triples), labels) + settings.l2 * regular
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        clock.done(epoch)
    seconds = clock.per_epoch(settings.epochs)
    net.eval()
    with torch.no_grad():
        e = net.encode(edge_index, edge_type)[: problem.entities].clone()
    model = Model(list(problem.graph.entity_ids), list(problem.relation_types), e, net.diagonals.detach().clone())
    return model, seconds


def corrupt(positives: torch.Tensor, negatives: int, entities: int) -> torch.Tensor:
    """``negatives`` copies of each triple (columns of [3, T]) with its subject or its object (even odds)
    replaced by an entity drawn uniformly from 0 … entities - 1."""
    import torch

    out = positives.repeat(1, negatives)
    side = torch.randint(2, (out.shape[1],)) * 2  # row 0 (subject) or 2 (object)
    out[side, torch.arange(out.shape[1])] = torch.randint(entities, (out.shape[1],))
    return out


def filtered_ranks(scores: torch.Tensor, answers: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """The rank (1 = best) of each row's answer among that row's candidates, by score, leaving out the other
    candidates that ``known`` holds true; a tie counts half. ``scores`` [B, N]: candidate n's score in row b;
    ``answers`` [B]: the right candidate of each row; ``known`` [2, K]: (row, candidate) pairs that are true
    (the answer among them or not)."""
    import torch

    rows = torch.arange(scores.shape[0])
    left_out = torch.zeros_like(scores, dtype=torch.bool)
    left_out[known[0], known[1]] = True
    left_out[rows, answers] = True  # the answer does not rank against itself
    target = scores[rows, answers].unsqueeze(1)
    above = ((scores > target) & ~left_out).sum(1)
    level = ((scores == target) & ~left_out).sum(1)
    return 1 + above.double() + level.double() / 2


def ranks(model: Model, test: Sequence[Triple], known: Sequence[Triple]) -> torch.Tensor:
    """The filtered ranks of each test triple's object and subject against all entities (``filtered_ranks``);
    ``known``: every triple known true (training and test)."""
    import torch

    objects: dict[tuple[int, int], list[int]] = defaultdict(list)
    subjects: dict[tuple[int, int], list[int]] = defaultdict(list)
    for s, r, o in known:
        objects[s, r].append(o)
        subjects[r, o].append(s)
    out = []
    for start in range(0, len(test), BATCH):
        part = test[start : start + BATCH]
        heads, kinds, tails = (torch.tensor(column) for column in zip(*part, strict=True))
        for query, answers, true in (
            (model.entities[heads] * model.relations[kinds], tails, [objects[s, r] for s, r, _ in part]),
            (model.entities[tails] * model.relations[kinds], heads, [subjects[r, o] for _, r, o in part]),
        ):  # DistMult is symmetric: f(s', r, o) = (e_o ∘ R_r) · e_s'
            pairs = torch.tensor([(row, c) for row, cs in enumerate(true) for c in cs], dtype=torch.long)
            out.append(filtered_ranks(query @ model.entities.T, answers, pairs.t().reshape(2, -1)))
    return torch.cat(out)


def evaluate(model: Model, problem: Problem) -> dict[str, float]:
    """Filtered MRR and Hits@1, 3, 10 of the test triples, over their objects' and subjects' ranks."""
    found = ranks(model, problem.test, problem.train + problem.test)
    metrics = {"mrr": float((1 / found).mean())}
    metrics.update({f"hits@{k}": float((found <= k).double().mean()) for k in HITS})
    return metrics


def chance_mrr(problem: Problem) -> float:
    """The filtered MRR a random scorer has on average: a rank drawn evenly from 1 … n, where n counts the
    candidates left once the other known triples are filtered out, has the mean reciprocal H(n) / n."""
    objects: dict[tuple[int, int], set[int]] = defaultdict(set)
    subjects: dict[tuple[int, int], set[int]] = defaultdict(set)
    for s, r, o in problem.train + problem.test:
        objects[s, r].add(o)
        subjects[r, o].add(s)
    harmonic = [0.0]
    for n in range(1, problem.entities + 1):
        harmonic.append(harmonic[-1] + 1 / n)
    values = [
        harmonic[n] / n
        for s, r, o in problem.test
        for n in (problem.entities - len(objects[s, r] - {o}), problem.entities - len(subjects[r, o] - {s}))
    ]
    return statistics.fmean(values) if values else 0.0


def top_targets(model: Model, source: int, kind: int, among: torch.Tensor | None, k: int) -> list[tuple[int, float]]:
    """The ``k`` entities (node, strength) most likely the target of a relation of type ``kind`` from
    ``source``, best first, among the nodes ``among`` (None: every entity), never ``source`` itself."""
    import torch

    scores = torch.sigmoid((model.entities[source] * model.relations[kind]) @ model.entities.T)
    allowed = torch.ones(scores.shape[0], dtype=torch.bool)
    if among is not None:
        allowed = torch.zeros_like(allowed).index_fill_(0, among, True)
    allowed[source] = False
    count = min(k, int(allowed.sum()))
    best = torch.topk(torch.where(allowed, scores, torch.tensor(-1.0)), count)  # a strength is never below 0
    return list(zip(best.indices.tolist(), best.values.tolist(), strict=True))


def score(model: Model, triples: Sequence[tuple[uuid.UUID, str, uuid.UUID]]) -> list[float]:
    """The relation strength of each candidate (source, type, target): σ(f(s, r, o)), the model's probability
    that the relation holds. An entity or a type the model was not trained on is an error naming it."""
    import torch

    node = {entity: i for i, entity in enumerate(model.entity_ids)}
    kind = {name: k for k, name in enumerate(model.relation_types)}
    for source, name, target in triples:
        if name not in kind:
            raise InvalidInput(f"the model knows no relation type {name!r}: it has {model.relation_types}")
        for entity in (source, target):
            if entity not in node:
                raise InvalidInput(f"entity {entity} was not in the graph the model was trained on")
    if not triples:
        return []
    columns = torch.tensor([(node[s], kind[t], node[o]) for s, t, o in triples], dtype=torch.long).t()
    e, d = model.entities, model.relations
    return torch.sigmoid((e[columns[0]] * d[columns[1]] * e[columns[2]]).sum(-1)).tolist()


def to_bytes(model: Model) -> bytes:
    """The model as bytes to store (torch's format, tensors and plain values only)."""
    import torch

    buffer = io.BytesIO()
    state = {
        "format": FORMAT,
        "entity_ids": [str(e) for e in model.entity_ids],
        "relation_types": model.relation_types,
        "entities": model.entities,
        "relations": model.relations,
    }
    torch.save(state, buffer)
    return buffer.getvalue()


def from_bytes(data: bytes) -> Model:
    """The model ``to_bytes`` stored; loading runs no pickled code (``weights_only``)."""
    import torch

    try:
        state = torch.load(io.BytesIO(data), weights_only=True)
        ids = [uuid.UUID(e) for e in state["entity_ids"]]
        model = Model(ids, list(state["relation_types"]), state["entities"], state["relations"])
    except Exception as problem:  # any damage: a truncated file, another format, a pickle of something else
        raise InvalidInput(f"not a stored link-prediction model ({type(problem).__name__})") from None
    if state.get("format") != FORMAT or model.entities.shape[0] != len(ids):
        raise InvalidInput("not a stored link-prediction model of this DUST version")
    return model


@dataclass(frozen=True)
class Run:
    seed: int
    metrics: dict[str, float]
    seconds_per_epoch: float


def train(problem: Problem, *, settings: Settings, seeds: list[int]) -> dict[str, Any]:
    """A model trained and tested once per seed; the metrics (their means, with several seeds their standard
    deviations) and the problem's size."""
    settings.check()
    runs = []
    for seed in seeds:
        model, seconds = fit(problem, settings, seed)
        runs.append(Run(seed, evaluate(model, problem), seconds))
    return {**summary(runs, settings), **sizes(problem)}


def summary(runs: Sequence[Run], settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {"task": "link-prediction", "runs": len(runs), "settings": asdict(settings)}
    columns = {f"test_{key}": [r.metrics[key] for r in runs] for key in runs[0].metrics}
    columns["seconds_per_epoch"] = [r.seconds_per_epoch for r in runs]
    for key, values in columns.items():
        out[key] = statistics.fmean(values)
        if len(runs) > 1:
            out[f"{key}_std"] = statistics.stdev(values)
    if len(runs) > 1:
        out["test_mrrs"] = columns["test_mrr"]
    out["seeds"] = [r.seed for r in runs]
    return out


def sizes(problem: Problem) -> dict[str, Any]:
    return {
        "train_size": len(problem.train),
        "test_size": len(problem.test),
        "entities": problem.entities,
        "nodes": problem.graph.num_nodes,
        "edges": problem.graph.num_edges,
        "relations": len(problem.relation_types),
        "as_of": problem.at.isoformat() if problem.at else None,
    }
