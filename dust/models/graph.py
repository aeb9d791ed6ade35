"""The master tensor as a graph for relational graph neural networks (PyTorch Geometric's layout).

Nodes are entities (index ↔ entity id both ways); each relation R[type, source, target] = weight is an edge
source → target of its type, and, as in the R-GCN paper (Schlichtkrull et al. 2018, eq. 2), an inverse edge
target → source of the type's inverse (``type^-1``), so that a node hears from both ends of its relations.
The paper's self-loop (W0·h_i) is not an edge here: RGCNConv's root weight is exactly that term.

"As of" a date, the graph is the master tensor then: a relation not yet valid (or no longer) is not in it, and
weights are those of that moment (``dust.engine.relations.master_tensor``). Nodes are featureless by default, as
in the paper: the first layer learns one vector per node (a one-hot input times a weight matrix); a model may
give them ``features`` too (``dust.models.features``: from their tensors and attributes, as of the same date).

Literal nodes (``literals=True``): the R-GCN benchmark graphs count an RDF literal as a node (AIFB's 8,285 nodes
are 2,835 resources and 5,450 distinct literals). DUST keeps literals as attributes (``dust import rdf``), so
the graph can turn them back: one node per distinct value, an edge of the attribute's key from the entity to
it. Attributes carry no validity interval: literal edges are present whatever the "as of". A model whose
labels come from an attribute leaves that attribute out (``skip``): its values as nodes would hand it the answer.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from dust.engine import relations
from dust.storage.repositories import entities as entity_repo
from dust.storage.repositories import relations as relation_repo

if TYPE_CHECKING:  # torch loads only when a model is built
    import torch

INVERSE = "^-1"  # suffix of an inverse relation's name: "author^-1" is "has author"


@dataclass
class RelationalGraph:
    """Edges as parallel lists; ``tensors()`` gives them as torch tensors."""

    entity_ids: list[uuid.UUID]  # node i is entity entity_ids[i], for i < len(entity_ids); literal nodes after
    literals: list[str] = field(default_factory=list)  # node len(entity_ids) + j is the value literals[j] (JSON)
    relation_types: list[str] = field(default_factory=list)  # edge type k is relation_types[k]
    sources: list[int] = field(default_factory=list)
    targets: list[int] = field(default_factory=list)
    types: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    features: Any = None  # [num_nodes, columns] float32 NumPy array, or None: featureless (dust.models.features)

    @property
    def num_nodes(self) -> int:
        return len(self.entity_ids) + len(self.literals)

    @property
    def num_relations(self) -> int:
        return len(self.relation_types)

    @property
    def num_edges(self) -> int:
        return len(self.sources)

    def index(self) -> dict[uuid.UUID, int]:
        """Entity id → node index."""
        return {entity: i for i, entity in enumerate(self.entity_ids)}

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(edge_index [2, E], edge_type [E], edge_weight [E]) for PyTorch Geometric."""
        import torch

        edge_index = torch.tensor([self.sources, self.targets], dtype=torch.long).reshape(2, -1)
        return edge_index, torch.tensor(self.types, dtype=torch.long), torch.tensor(self.weights)

    @property
    def num_features(self) -> int:
        return 0 if self.features is None else int(self.features.shape[1])

    def x(self) -> torch.Tensor | None:
        """The node features as a torch tensor, or None (featureless)."""
        import torch

        return None if self.features is None else torch.from_numpy(self.features)


def build(
    session: Session,
    *,
    at: datetime | None = None,
    types: list[str] | None = None,
    literals: bool = False,
    include: Sequence[uuid.UUID] = (),
    skip: Collection[str] = (),
) -> RelationalGraph:
    """The graph of the master tensor (of ``types``, default all) as of ``at`` (default now), with inverse
    relations; with ``literals``, attribute values as nodes, but those of the attributes named in ``skip``.
    Entities of ``include`` (those to classify) are nodes even without a relation."""
    tensor = relations.master_tensor(session, types=types, at=at)
    ids = list(tensor.entity_ids)
    known = set(ids)
    ids.extend(e for e in dict.fromkeys(include) if e not in known)
    graph = RelationalGraph(entity_ids=ids)
    names: dict[str, int] = {}
    kinds, sources, targets = tensor.indices
    for k, s, t, w in zip(kinds, sources, targets, tensor.values, strict=True):
        _link(graph, names, tensor.types[k], s, t, w)
    if literals:
        _literal_nodes(session, graph, names, frozenset(skip))
    return graph


def from_triples(
    entity_ids: Sequence[uuid.UUID],
    relation_types: Sequence[str],
    triples: Sequence[tuple[int, int, int]],
    weights: Sequence[float] | None = None,
) -> RelationalGraph:
    """The graph of some of the master tensor's relations: each (source node, type k, target node) of
    ``triples`` an edge of type ``relation_types[k]`` (edge type 2k) and its inverse (2k + 1). A link
    predictor's encoder must see its training relations only: a held-out relation passing messages would leak
    its own answer."""
    graph = RelationalGraph(entity_ids=list(entity_ids))
    names: dict[str, int] = {}
    for name in relation_types:
        _type(graph, names, name)
    for i, (source, k, target) in enumerate(triples):
        _link(graph, names, relation_types[k], source, target, weights[i] if weights is not None else 1.0)
    return graph


def add_literals(session: Session, graph: RelationalGraph) -> None:
    """The attribute values of the graph's entities as nodes, as ``build(literals=True)`` adds them."""
    names = {name: k for k, name in enumerate(graph.relation_types) if k % 2 == 0}
    _literal_nodes(session, graph, names)


def _type(graph: RelationalGraph, names: dict[str, int], name: str) -> int:
    """The index of relation ``name``; its inverse is the next index."""
    if name not in names:
        names[name] = len(graph.relation_types)
        graph.relation_types.extend([name, name + INVERSE])
    return names[name]


def _link(graph: RelationalGraph, names: dict[str, int], name: str, source: int, target: int, weight: float) -> None:
    k = _type(graph, names, name)
    graph.sources.extend([source, target])
    graph.targets.extend([target, source])
    graph.types.extend([k, k + 1])
    graph.weights.extend([weight, weight])


def _literal_nodes(session: Session, graph: RelationalGraph, names: dict[str, int], skip: Collection[str] = ()) -> None:
    """A node per distinct attribute value (lists: each item), linked from its entity by the attribute's key."""
    values: dict[str, int] = {}
    offset = len(graph.entity_ids)
    positions = graph.index()
    for part in relation_repo.chunks(graph.entity_ids):
        # in node order, so that the literals' order, and so a seeded model, is the same each time
        for row in sorted(entity_repo.by_ids(session, part), key=lambda r: positions[r.id]):
            for key, value in sorted((row.attributes or {}).items()):
                if key in skip:
                    continue
                for item in value if isinstance(value, list) else [value]:
                    text = _literal(item)
                    if text not in values:
                        values[text] = offset + len(graph.literals)
                        graph.literals.append(text)
                    _link(graph, names, key, positions[row.id], values[text], 1.0)


def _literal(value: Any) -> str:
    """A literal's identity, as JSON: equal values of one JSON type are one node (the text "1" is not 1)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)
