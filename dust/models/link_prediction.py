"""Link prediction as a task of the models registry (``dust.models.tasks``): R-GCN + DistMult (``dust.models.link``).

- at the request (``target: {"relations": [TYPE, …]}``): the relation types to predict must have relations that
  the caller may see (as of ``as_of``), enough for ``settings.test_fraction`` of them to make a test set; the
  settings must make a model (blocks that divide hidden, …); 422 otherwise;
- in the job, acting as the user who asked: the master tensor as of ``as_of`` (of ``types`` and the target types;
  default all), a seeded ``test_fraction`` of the target types' relations held out (never passing messages),
  one model trained with ``settings.seed`` on the rest, its filtered MRR and Hits@1/3/10 on the held-out ones
  beside a random scorer's MRR; stored as its entity vectors and relation diagonals (``link.to_bytes``);
- to predict: ``candidates`` scored, or the ``top`` most likely targets of ``source`` by ``type`` among the
  entities of the model's graph that the caller may see (of ``kind``); every entity named must be one they may
  see (404 otherwise, as for one that does not exist); optionally written back as relations of another type,
  weighted by their scores: ordinary, audited relation writes under the caller's rights.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.orm import Session

from dust.core.errors import InvalidInput
from dust.engine import access, entities, relations
from dust.engine.relations import RelationCreate, RelationUpdate
from dust.models import link, tasks
from dust.models.schemas import LinkPrediction, ModelCreate, PredictRequest, WriteBack
from dust.models.tasks import Predicted, Trained, Training
from dust.storage.models import Model, utcnow
from dust.storage.repositories import entities as entity_repo
from dust.storage.repositories import relations as relation_repo

TASK = "link-prediction"
MAX_PARAMETERS = 250_000_000  # entity vectors (nodes × hidden): 1 GB of float32
# The settings this task defaults otherwise than TrainSettings (entity classification's): link.Settings's, the
# command's (dust model train --task link-prediction).
DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in asdict(link.Settings()).items() if k not in ("bases", "blocks")},
    "test_fraction": 0.1,
    "literals": False,
}
OWNS = frozenset({"target.relations", "settings.layers", "settings.negatives", "settings.edge_dropout"})
OWNS_PREDICT = frozenset({"candidates", "source", "type", "write_back.relation_type", "write_back.min_score"})


def _settings(request: ModelCreate) -> link.Settings:
    s = request.settings
    return link.Settings(
        hidden=s.hidden,
        layers=s.layers if s.layers is not None else link.Settings.layers,
        epochs=s.epochs,
        lr=s.lr,
        negatives=s.negatives or link.Settings.negatives,
        l2=s.l2,
        bases=s.bases,
        blocks=s.blocks,
        edge_dropout=s.edge_dropout if s.edge_dropout is not None else link.Settings.edge_dropout,
    )


def _targets(request: ModelCreate) -> list[str]:
    if request.target.relations is None:
        raise InvalidInput('link-prediction learns relations: give target: {"relations": [TYPE, …]}')
    return list(dict.fromkeys(request.target.relations))


def check(session: Session, request: ModelCreate) -> None:
    """422 for relation types to predict that the caller may not see any relation of (as of the date), too few of
    them to hold some out, or settings that cannot make a model."""
    targets = _targets(request)
    _settings(request).check()
    tensor = relations.master_tensor(session, types=targets, at=request.as_of)
    when = f" as of {request.as_of.isoformat()}" if request.as_of else ""
    missing = [t for t in targets if t not in tensor.types]
    if missing:
        raise InvalidInput(f"no relation of type '{missing[0]}' that you may see{when}: nothing to learn it from")
    count, fraction = len(tensor.values), request.settings.test_fraction
    if not 0 < round(fraction * count) < count:
        raise InvalidInput(
            f"settings.test_fraction {fraction} of the {count} relations to predict holds out "
            f"{round(fraction * count)}: give one that leaves some to test and some to train on"
        )


def train(training: Training, request: ModelCreate) -> Trained:
    settings = _settings(request)
    targets = _targets(request)
    with training.session() as session:
        read_at = request.as_of or utcnow()
        problem = link.prepare(
            session,
            at=request.as_of,
            types=request.types,
            tested=targets,
            test_fraction=request.settings.test_fraction,
            seed=request.settings.seed,
            literals=request.settings.literals,
        )
    vectors = problem.graph.num_nodes * settings.hidden
    if vectors > MAX_PARAMETERS:
        raise InvalidInput(
            f"the graph's {problem.graph.num_nodes:,} nodes × hidden {settings.hidden} make {vectors:,} weights "
            f"(at most {MAX_PARAMETERS:,}): give a smaller settings.hidden, fewer types, or literals: false"
        )
    with tasks.FITTING:
        model, seconds = link.fit(
            problem, settings, request.settings.seed, on_epoch=lambda done: training.epoch(done, settings.epochs)
        )
    measured = link.evaluate(model, problem)
    metrics = {
        **{f"test_{key}": value for key, value in measured.items()},
        "chance_mrr": link.chance_mrr(problem),
        "target_relations": targets,
        "split": {"test_fraction": request.settings.test_fraction, "seed": request.settings.seed},
        "seconds_per_epoch": seconds,
        **link.sizes(problem),
    }
    metrics.pop("as_of")  # the model's own as_of says it
    return Trained(metrics, link.to_bytes(model), read_at)


# --- predicting ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    """A stored model as predictions use it, with its entities' positions (kept with it in the cache)."""

    model: link.Model
    position: dict[uuid.UUID, int]


def load(data: bytes) -> Loaded:
    model = link.from_bytes(data)
    return Loaded(model, {entity: i for i, entity in enumerate(model.entity_ids)})


def predict(session: Session, model: Model, loaded: Loaded, request: PredictRequest) -> Predicted:
    write_back = request.write_back
    if write_back is not None and write_back.relation_type is None:
        raise InvalidInput('a link-prediction model writes relations: write_back: {"relation_type", "min_score"}')
    if write_back is not None and write_back.relation_type in loaded.model.relation_types:
        raise InvalidInput(
            f"model {model.name} learnt from '{write_back.relation_type}' relations: predictions written there "
            "would come back as facts; name another type (e.g. predicted_…)"
        )
    if request.candidates is not None:
        if request.kind is not None:
            raise InvalidInput("kind goes with source: the kind of its top targets")
        triples = [(c.source, c.type, c.target) for c in request.candidates]
        scored = _scored(session, model, loaded, triples)
    elif request.source is not None and request.type is not None:
        scored = _top(session, model, loaded, request.source, request.type, request.kind, request.top)
    else:
        raise InvalidInput(
            'a link-prediction model scores relations: give candidates [{"source", "type", "target"}, …], or '
            "source and type (and top: how many targets)"
        )
    links = _presented(session, scored)
    written = _write_back(session, write_back, links) if write_back is not None else 0
    return Predicted([], written, links)


Scored = list[tuple[uuid.UUID, str, uuid.UUID, float]]


def _scored(session: Session, model: Model, loaded: Loaded, triples: list[tuple[uuid.UUID, str, uuid.UUID]]) -> Scored:
    for _, name, _ in triples:
        _type(model, name)
    ends = list(dict.fromkeys(e for s, _, o in triples for e in (s, o)))
    entities.check_visible(session, ends)
    for entity in ends:
        _node(model, loaded, entity)
    strengths = link.score(loaded.model, triples)
    return [(s, t, o, p) for (s, t, o), p in zip(triples, strengths, strict=True)]


def _top(
    session: Session, model: Model, loaded: Loaded, source: uuid.UUID, name: str, kind: str | None, k: int
) -> Scored:
    """The ``k`` likeliest targets of ``source`` by ``name``, among the graph's entities the caller may see."""
    import torch

    relation = loaded.model.relation_types.index(_type(model, name))
    entities.check_visible(session, [source])
    node = _node(model, loaded, source)
    visible = access.visible_ids(session)  # and existing: an entity deleted since training is no answer
    seen = [
        loaded.position[entity]
        for part in relation_repo.chunks(loaded.model.entity_ids)
        for entity in entity_repo.ids_among(session, part, kind=kind, within=visible)
    ]
    found = link.top_targets(loaded.model, node, relation, torch.tensor(sorted(seen), dtype=torch.long), k)
    return [(source, name, loaded.model.entity_ids[target], p) for target, p in found]


def _type(model: Model, name: str) -> str:
    targets = model.target.get("relations") or []
    if name not in targets:
        raise InvalidInput(
            f"model {model.name} (version {model.version}) predicts {', '.join(map(repr, targets))}, not {name!r}"
        )
    return name


def _node(model: Model, loaded: Loaded, entity: uuid.UUID) -> int:
    if entity not in loaded.position:
        raise InvalidInput(
            f"entity {entity} is not in the graph model {model.name} (version {model.version}) was trained on, as "
            f"of {model.data_version}: train a new version to predict its relations"
        )
    return loaded.position[entity]


def _presented(session: Session, scored: Scored) -> list[LinkPrediction]:
    """The scored relations with their ends' names as the caller may see them, and whether each is stored."""
    ends = list(dict.fromkeys(e for s, _, o, _ in scored for e in (s, o)))
    rows = {row.id: row for part in relation_repo.chunks(ends) for row in entity_repo.among(session, part)}
    names = {entity: access.present(session, row)["name"] for entity, row in rows.items()}
    stored = relation_repo.find_edges(session, [(s, o, t) for s, t, o, _ in scored])
    return [
        LinkPrediction(
            source_id=s,
            source_name=names[s],
            type=t,
            target_id=o,
            target_name=names[o],
            score=p,
            exists=(s, o, t) in stored,
        )
        for s, t, o, p in scored
    ]


def _write_back(session: Session, write_back: WriteBack, links: list[LinkPrediction]) -> int:
    """Each predicted relation of at least ``min_score`` as a relation of ``relation_type`` weighted by its score:
    made, or its weight set if it is there already; relation writes under the caller's rights, audited."""
    kept = list({(p.source_id, p.target_id): p for p in links if p.score >= write_back.min_score}.values())
    name = write_back.relation_type
    assert name is not None  # checked by predict
    stored = relation_repo.find_edges(session, [(p.source_id, p.target_id, name) for p in kept])
    for p in kept:
        existing = stored.get((p.source_id, p.target_id, name))
        if existing is not None:
            relations.update(session, existing, RelationUpdate(weight=p.score))
        else:
            relations.create(
                session, RelationCreate(source_id=p.source_id, target_id=p.target_id, type=name, weight=p.score)
            )
    return len(kept)


tasks.register(
    TASK,
    tasks.Task(
        check=check,
        train=train,
        predict=predict,
        load=load,
        owns=OWNS,
        owns_predict=OWNS_PREDICT,
        defaults=DEFAULTS,
    ),
)
