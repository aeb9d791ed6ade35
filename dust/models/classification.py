"""Entity classification: which entity has which label (from labels files, an attribute or a map of external ids),
then R-GCN runs and their metrics."""

from __future__ import annotations

import csv
import json
import random
import uuid
from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from dust.core.errors import InvalidInput
from dust.engine import access
from dust.models import graph, rgcn
from dust.storage.repositories import entities as entity_repo

CHUNK = 5_000


@dataclass(frozen=True)
class Labels:
    """(external id, label) pairs of a labels file, in file order."""

    rows: list[tuple[str, str]]
    path: Path


def read_labels(path: Path, id_column: str, label_column: str) -> Labels:
    """The (id, label) rows of a CSV, or of a TSV (by its .tsv or .tab name); rows without either are left out."""
    if not path.is_file():
        raise InvalidInput(f"{path} is not a file: give a CSV or TSV with columns {id_column} and {label_column}")
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else ","
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file, delimiter=delimiter)
        missing = [c for c in (id_column, label_column) if c not in (reader.fieldnames or [])]
        if missing:
            raise InvalidInput(f"{path.name} has no column {', '.join(missing)} (it has {reader.fieldnames})")
        rows = [(r[id_column].strip(), r[label_column].strip()) for r in reader if r[id_column] and r[label_column]]
    if not rows:
        raise InvalidInput(f"{path.name} has no row with both {id_column} and {label_column}")
    return Labels(rows, path)


def _entities(session: Session, labels: Labels) -> dict[str, uuid.UUID]:
    """The entity of each external id of ``labels``; an id no entity holds is an error naming it."""
    names = list(dict.fromkeys(name for name, _ in labels.rows))
    found: dict[str, uuid.UUID] = {}
    for i in range(0, len(names), CHUNK):
        found.update(entity_repo.ids_by_external_id_any_kind(session, names[i : i + CHUNK]))
    missing = [n for n in names if n not in found]
    if missing:
        raise InvalidInput(
            f"{len(missing)} ids of {labels.path.name} are no entity's external id, e.g. {missing[0][:200]!r}"
        )
    return found


@dataclass(frozen=True)
class Problem:
    """A graph and its labelled nodes: what training needs, read from the database once and for all."""

    graph: graph.RelationalGraph
    classes: list[str]
    train_nodes: list[int]
    train_classes: list[int]
    test_nodes: list[int]
    test_classes: list[int]
    at: datetime | None


def prepare(
    session: Session,
    train_labels: Labels,
    test_labels: Labels | None,
    *,
    at: datetime | None = None,
    literals: bool = True,
) -> Problem:
    """The graph as of ``at`` and the node and class of each label. Training needs no database: close the
    session before it (on SQLite an open transaction holds the write lock)."""
    everything = train_labels.rows + (test_labels.rows if test_labels else [])
    entity_of = _entities(session, Labels(everything, train_labels.path))

    def labelled(labels: Labels | None) -> Labelled:
        return [(entity_of[n], label) for n, label in (labels.rows if labels else [])]

    return problem(session, labelled(train_labels), labelled(test_labels), at=at, literals=literals)


Labelled = list[tuple[uuid.UUID, str]]  # (entity, class)


def problem(
    session: Session,
    train: Labelled,
    test: Labelled,
    *,
    at: datetime | None = None,
    types: list[str] | None = None,
    literals: bool = True,
    skip: Collection[str] = (),
) -> Problem:
    """The graph as of ``at`` (of ``types``; literal nodes but of the attributes in ``skip``) and the node and
    class of each labelled entity; classes in sorted order."""
    everything = train + test
    built = graph.build(session, at=at, types=types, literals=literals, include=[e for e, _ in everything], skip=skip)
    position = built.index()
    classes = sorted({label for _, label in everything})
    class_of = {label: i for i, label in enumerate(classes)}

    def nodes(part: Labelled) -> tuple[list[int], list[int]]:
        return [position[entity] for entity, _ in part], [class_of[label] for _, label in part]

    return Problem(built, classes, *nodes(train), *nodes(test), at)


def run(problem: Problem, settings: rgcn.Settings, seed: int) -> rgcn.Run:
    """One R-GCN trained from ``seed`` on the problem's training labels, measured on both sets."""
    return rgcn.train(
        problem.graph,
        problem.train_nodes,
        problem.train_classes,
        len(problem.classes),
        settings,
        seed,
        problem.test_nodes,
        problem.test_classes,
    )


def train(problem: Problem, *, settings: rgcn.Settings, seeds: list[int]) -> dict[str, Any]:
    """An R-GCN trained once per seed on the problem's training labels and tested on its test labels; the
    metrics (``rgcn.summary``) with the graph's size."""
    settings.check()
    runs = [run(problem, settings, seed) for seed in seeds]
    return {
        **rgcn.summary(runs, settings),
        "classes": len(problem.classes),
        "train_size": len(problem.train_nodes),
        "test_size": len(problem.test_nodes),
        "nodes": problem.graph.num_nodes,
        "edges": problem.graph.num_edges,
        "relations": problem.graph.num_relations,
        "as_of": problem.at.isoformat() if problem.at else None,
    }


# --- labels in the service (dust.models.registry): from an attribute or a map, and a seeded split --------------


def attribute_labels(session: Session, kind: str | None, attribute: str) -> Labelled:
    """(entity, class) of each entity of ``kind`` (None: any) the principal may see whose ``attribute`` holds a text, a
    number or a boolean (a number's or boolean's class is its JSON: 1 → "1"), in entity id order. Other values
    (lists, objects, null, blank text) label nothing."""
    found: Labelled = []
    for part in entity_repo.attribute_of_kind(session, kind, attribute, access.visible_ids(session)):
        found.extend((entity, text) for entity, value in part if (text := class_of(value)) is not None)
    return found


def class_of(value: Any) -> str | None:
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return None


def mapped_labels(session: Session, kind: str | None, labels: Mapping[str, str]) -> Labelled:
    """(entity, class) of each external id of ``labels``, that of an entity of ``kind`` the principal may see
    (None: of any kind, as for labels files), in entity id order; an id that is none is an error naming it (one
    not seen as one not there)."""
    names = list(labels)
    found: dict[str, uuid.UUID] = {}
    for i in range(0, len(names), CHUNK):
        part = names[i : i + CHUNK]
        found.update(
            entity_repo.ids_by_external_id(session, kind, part)
            if kind is not None
            else entity_repo.ids_by_external_id_any_kind(session, part)
        )
    visible = access.visible_ids(session)
    if visible is not None:
        ids, seen = list(found.values()), set[uuid.UUID]()
        for i in range(0, len(ids), CHUNK):
            seen.update(row.id for row in entity_repo.among(session, ids[i : i + CHUNK], within=visible))
        found = {name: entity for name, entity in found.items() if entity in seen}
    missing = [name for name in names if name not in found]
    if missing:
        raise InvalidInput(
            f"{len(missing)} of the labels' external ids are no {f'{kind} entity' if kind else 'entity'}'s that you "
            f"may see, e.g. {missing[0][:200]!r}"
        )
    return sorted((found[name], label) for name, label in labels.items())


def split(labelled: Labelled, fraction: float, seed: int) -> tuple[Labelled, Labelled]:
    """(train, test): of each class, ``fraction`` of its entities (rounded, but never its last one) held out to
    test, drawn with ``seed``; the same labels and seed give the same split."""
    rng = random.Random(seed)
    by_class: dict[str, Labelled] = defaultdict(list)
    for pair in sorted(labelled):
        by_class[pair[1]].append(pair)
    train: Labelled = []
    test: Labelled = []
    for label in sorted(by_class):
        members = by_class[label]
        rng.shuffle(members)
        held = min(round(len(members) * fraction), len(members) - 1)
        test.extend(members[:held])
        train.extend(members[held:])
    return sorted(train), sorted(test)
