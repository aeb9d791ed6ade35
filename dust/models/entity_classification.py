"""Entity classification as a task of the models registry (``dust.models.tasks``).

- at the request: the labels are read as the caller may see them — the values of ``target.attribute`` on the
  entities of ``kind`` (default: any kind), or ``target.labels`` (external id → class) — and refused with a 422
  if they cannot train a classifier (no entity has the attribute, fewer than 2 classes, an unknown external id);
- in the job: the same labels read again, acting as the user who asked; without ``test_labels`` a seeded,
  stratified split holds out ``settings.test_fraction`` of each class to test; the graph as of ``as_of`` (of
  ``types``; with literal nodes, never the target attribute's); one R-GCN (``dust.models.rgcn``) trained with
  ``settings.seed``, its accuracies measured, and stored with the graph it fit (``dust.models.artefacts``);
- to predict: the stored model's class probabilities for entities of its graph the caller may see, explained on
  request (``dust.models.explain``), and written back as an attribute by ordinary, audited entity updates, or
  into a tensor (``dust.models.writeback``).

With ``settings.features``, the nodes get features from their tensors and attributes (``dust.models.features``):
read as of ``as_of`` in the job, scaled with the training entities' statistics, which the artefact keeps; a
prediction reads them again as of its own ``as_of`` (default now), over the graph the model was trained on.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from dust.core.errors import InvalidInput, invalid_input
from dust.engine import access, entities
from dust.engine.entities import EntityUpdate
from dust.models import artefacts, classification, explain, features, rgcn, tasks, writeback
from dust.models import graph as graph_
from dust.models.classification import Labelled
from dust.models.schemas import MAX_EXPLAIN, ModelCreate, Prediction, PredictRequest, WriteBack
from dust.models.tasks import Predicted, Trained, Training
from dust.storage.models import Entity, Model, utcnow
from dust.storage.repositories import entities as entity_repo
from dust.storage.repositories import relations as relation_repo

TASK = "entity-classification"
MAX_PARAMETERS = 250_000_000  # of the first layer (one vector per node and relation): 1 GB of float32
_FITTING = tasks.FITTING  # one training at a time per process, whatever the task (torch's generator is shared)


def check(session: Session, request: ModelCreate) -> None:
    """422 for labels that cannot train a classifier, or settings that cannot train one of their classes."""
    train, test = labelled(session, request)
    spec = request.settings.features
    if spec is not None:
        features.check(session, spec, request.target.attribute)
    rgcn.check(_settings(request), len(_classes(train, test)), int(spec is not None))


def labelled(session: Session, request: ModelCreate) -> tuple[Labelled, Labelled]:
    """(train, test) labels of the request, as the session's principal may see them."""
    target, seed = request.target, request.settings.seed
    if target.attribute is not None:
        found = classification.attribute_labels(session, request.kind, target.attribute)
        if not found:
            which = f"{request.kind} entity" if request.kind else "entity"
            raise InvalidInput(
                f"no {which} that you may see has the attribute '{target.attribute}' "
                "(with a text, a number or a boolean): nothing to learn from"
            )
        train, test = classification.split(found, request.settings.test_fraction, seed)
    elif target.test_labels is not None:
        train = classification.mapped_labels(session, request.kind, target.labels or {})
        test = classification.mapped_labels(session, request.kind, target.test_labels)
    else:
        found = classification.mapped_labels(session, request.kind, target.labels or {})
        train, test = classification.split(found, request.settings.test_fraction, seed)
    _classes(train, test)
    return train, test


def _classes(train: Labelled, test: Labelled) -> list[str]:
    classes = sorted({label for _, label in train + test})
    if len(classes) < 2:
        said = f"only the class {classes[0]!r}" if classes else "no class"
        raise InvalidInput(f"the labels hold {said}: a classifier needs at least 2 classes")
    return classes


def _settings(request: ModelCreate) -> rgcn.Settings:
    s = request.settings
    embeddings = s.features.embeddings if s.features is not None else True
    return rgcn.Settings(
        hidden=s.hidden,
        epochs=s.epochs,
        lr=s.lr,
        l2=s.l2,
        bases=s.bases,
        blocks=s.blocks,
        dropout=s.dropout,
        embeddings=embeddings,
    )


def train(training: Training, request: ModelCreate) -> Trained:
    settings = _settings(request)
    skip = [request.target.attribute] if request.target.attribute else []
    with training.session() as session:
        read_at = request.as_of or utcnow()
        train_part, test_part = labelled(session, request)
        problem = classification.problem(
            session,
            train_part,
            test_part,
            at=request.as_of,
            types=request.types,
            literals=request.settings.literals,
            skip=skip,
        )
        graph = problem.graph
        encoder = None
        if request.settings.features is not None:
            ended = request.as_of is not None  # as of a date: the steps over by then; else those begun by now
            encoder, graph.features = features.attach(
                session,
                request.settings.features,
                graph.entity_ids,
                graph.num_nodes,
                problem.train_nodes,
                read_at,
                ended,
            )
    inputs = (graph.num_nodes if settings.embeddings else 0) + graph.num_features
    first_layer = inputs * settings.hidden * (settings.bases or max(graph.num_relations, 1))
    if first_layer > MAX_PARAMETERS:
        raise InvalidInput(
            f"the graph's {graph.num_nodes:,} nodes and {graph.num_relations} relation types make "
            f"{first_layer:,} weights in the first layer (at most {MAX_PARAMETERS:,}): give settings.bases "
            "(e.g. 30), fewer types, or literals: false"
        )
    with _FITTING:
        net, seconds = rgcn.fit(
            graph,
            problem.train_nodes,
            problem.train_classes,
            len(problem.classes),
            settings,
            request.settings.seed,
            on_epoch=lambda done: training.epoch(done, settings.epochs),
        )
    metrics = _metrics(net, problem, seconds, request)
    if encoder is not None:
        metrics["features"] = len(encoder.columns)
    return Trained(metrics, artefacts.dump(net, graph, problem.classes, settings, encoder), read_at)


def _metrics(net: Any, problem: classification.Problem, seconds: float, request: ModelCreate) -> dict[str, Any]:
    predicted = rgcn.probabilities(net, problem.graph).argmax(dim=-1)

    def accuracy(nodes: list[int], classes: list[int]) -> float | None:
        return sum(int(predicted[n]) == c for n, c in zip(nodes, classes, strict=True)) / len(nodes) if nodes else None

    given = request.target.test_labels is not None
    counts = Counter(problem.classes[c] for c in problem.train_classes + problem.test_classes)
    return {
        "train_accuracy": accuracy(problem.train_nodes, problem.train_classes),
        "test_accuracy": accuracy(problem.test_nodes, problem.test_classes),
        "train_size": len(problem.train_nodes),
        "test_size": len(problem.test_nodes),
        "classes": problem.classes,
        "class_counts": {label: counts[label] for label in problem.classes},
        "split": {"test_labels": True}
        if given
        else {"test_fraction": request.settings.test_fraction, "seed": request.settings.seed, "stratified": True},
        "seconds_per_epoch": seconds,
        "nodes": problem.graph.num_nodes,
        "edges": problem.graph.num_edges,
        "relations": problem.graph.num_relations,
    }


# --- predicting ---------------------------------------------------------------------------------------------


def predict(session: Session, model: Model, loaded: artefacts.Loaded, request: PredictRequest) -> Predicted:
    back = request.write_back
    if back is not None and not isinstance(back, WriteBack):
        raise InvalidInput("write_back.relation_type writes relations, for link prediction; give attribute or tensor")
    if back is not None and back.attribute is not None and back.attribute == model.target.get("attribute"):
        raise InvalidInput(
            f"write_back.attribute '{back.attribute}' holds the labels model {model.name} learnt "
            "from: predictions would overwrite them; name another attribute"
        )
    reads = loaded.encoder.schemas if loaded.encoder is not None else []
    into = writeback.target(session, back.tensor, loaded.classes, reads) if back and back.tensor else None
    rows = _entities(session, model, loaded.graph, request)
    if request.explain and len(rows) > MAX_EXPLAIN:
        raise InvalidInput(f"explain takes at most {MAX_EXPLAIN} entities at a time; {len(rows)} were asked for")
    moment = request.as_of or utcnow()
    graph = loaded.graph
    if loaded.encoder is not None:  # the stored graph, this moment's features (the cached model stays as it is)
        ended = request.as_of is not None
        x = features.again(session, loaded.encoder, graph.entity_ids, graph.num_nodes, moment, ended)
        graph = replace(graph, features=x)
    position = graph.index()
    nodes = [position[row.id] for row in rows]
    probabilities = rgcn.probabilities(loaded.net, graph)[nodes].tolist() if nodes else []
    predictions = []
    for row, p in zip(rows, probabilities, strict=True):
        best = max(range(len(p)), key=p.__getitem__)
        predictions.append(
            Prediction(
                entity_id=row.id,
                name=access.present(session, row)["name"],
                predicted=loaded.classes[best],
                probability=p[best],
                probabilities=dict(zip(loaded.classes, p, strict=True)),
            )
        )
    if request.explain and nodes:
        _explain(session, loaded, graph, nodes, predictions, request.top)
    written = 0
    if back is not None and back.attribute is not None:
        written = _write_back(session, back.attribute, predictions)
    if into is not None:
        written = writeback.write(session, into, predictions, moment)
    return Predicted(predictions, written)


def _entities(session: Session, model: Model, graph: Any, request: PredictRequest) -> list[Entity]:
    """The entities to predict, as rows the principal may see: those asked for (404 for one they may not see,
    422 for one not in the model's graph), or every one of the kind (default: the model's) in its graph."""
    position = graph.index()
    if request.entity_ids is not None:
        wanted = list(dict.fromkeys(request.entity_ids))
        entities.check_visible(session, wanted)
        outside = next((e for e in wanted if e not in position), None)
        if outside is not None:
            raise InvalidInput(
                f"entity {outside} is not in the graph model {model.name} (version {model.version}) was trained on, "
                f"as of {model.data_version}: train a new version to predict it"
            )
        found = {row.id: row for part in relation_repo.chunks(wanted) for row in entity_repo.among(session, part)}
        return [found[e] for e in wanted]
    kind = request.kind or model.kind
    visible = access.visible_ids(session)
    rows = [
        row
        for part in relation_repo.chunks(graph.entity_ids)
        for row in entity_repo.among(session, part, within=visible)
        if kind is None or row.kind == kind
    ]
    return sorted(rows, key=lambda row: position[row.id])


def _explain(
    session: Session,
    loaded: artefacts.Loaded,
    graph: graph_.RelationalGraph,
    nodes: list[int],
    predictions: list[Prediction],
    top: int,
) -> None:
    classes = [loaded.classes.index(p.predicted) for p in predictions]
    found = explain.importances(loaded.net, graph, nodes, classes)
    rows: dict[Any, Entity] = {}
    for node, prediction, importance in zip(nodes, predictions, found, strict=True):
        prediction.explanation = explain.explain(session, graph, node, importance, top, rows)


def _write_back(session: Session, attribute: str, predictions: list[Prediction]) -> int:
    """Each predicted class set as ``attribute`` on its entity: an entity update under the caller's rights."""
    for prediction in predictions:
        try:
            change = EntityUpdate(attributes={attribute: prediction.predicted})
        except ValidationError as problem:
            raise invalid_input(problem.errors()) from None
        entities.update(session, prediction.entity_id, change)
    return len(predictions)


# The fields of a request that are this task's alone (dust.models.tasks): another task's model refuses them.
OWNS = frozenset(
    {"kind", "target.attribute", "target.labels", "target.test_labels", "settings.dropout", "settings.features"}
)
OWNS_PREDICT = frozenset({"entity_ids", "explain", "as_of", "write_back.attribute", "write_back.tensor"})
tasks.register(
    TASK,
    tasks.Task(check=check, train=train, predict=predict, load=artefacts.load, owns=OWNS, owns_predict=OWNS_PREDICT),
)
