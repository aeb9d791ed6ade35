"""Entity classification from labels files: which entity has which label, then R-GCN runs and their metrics."""

from __future__ import annotations

import csv
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from dust.core.errors import InvalidInput
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
    built = graph.build(session, at=at, literals=literals, include=list(entity_of.values()))
    position = built.index()
    classes = sorted({label for _, label in everything})
    class_of = {label: i for i, label in enumerate(classes)}

    def nodes(labels: Labels | None) -> tuple[list[int], list[int]]:
        rows = labels.rows if labels else []
        return [position[entity_of[n]] for n, _ in rows], [class_of[label] for _, label in rows]

    return Problem(built, classes, *nodes(train_labels), *nodes(test_labels), at)


def train(problem: Problem, *, settings: rgcn.Settings, seeds: list[int]) -> dict[str, Any]:
    """An R-GCN trained once per seed on the problem's training labels and tested on its test labels; the
    metrics (``rgcn.summary``) with the graph's size."""
    settings.check()
    runs = [
        rgcn.train(
            problem.graph,
            problem.train_nodes,
            problem.train_classes,
            len(problem.classes),
            settings,
            seed,
            problem.test_nodes,
            problem.test_classes,
        )
        for seed in seeds
    ]
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
