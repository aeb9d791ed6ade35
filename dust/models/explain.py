"""Why a model predicted what it did: which relations and neighbours mattered most.

Gradient × input on edge masks (a saliency method, as in PyTorch Geometric's explain module): every edge's
message is multiplied by a mask entry of 1, in both layers, and the gradient of the predicted class's margin
(its logit over the mean of the others') with respect to the mask says how much the prediction leans on each
edge — positive: the edge speaks for the class; negative: against it. An edge and its inverse (one relation,
heard from both ends) are summed into the relation's importance. Only edges within two hops of the entity (the
model's two layers) count. Importances are in logit units: comparable within a prediction and across them.

What an explanation shows is what the caller may see: edges with an end they may not see are left out, as if
absent (neither counted nor named); a de-identified reader gets pseudonyms for names and no edge to a value of
an attribute that is sensitive to them.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from dust.engine import access
from dust.models.graph import RelationalGraph
from dust.models.schemas import EdgeImportance, Explanation, Neighbour, Node, RelationImportance
from dust.storage.models import Entity
from dust.storage.repositories import entities as entity_repo
from dust.storage.repositories import relations as relation_repo


def importances(net: Any, graph: RelationalGraph, nodes: Sequence[int], classes: Sequence[int]) -> list[Any]:
    """For each node, each relation's importance to its class: a tensor [relations] (the graph's edges in
    pairs, an edge and its inverse)."""
    import torch
    from torch_geometric.explain.algorithm.utils import clear_masks, set_masks

    edge_index, edge_type, _ = graph.tensors()
    mask = torch.ones(edge_index.size(1), requires_grad=True)
    # The masks are set on the network's layers, and the network is shared by the requests of this process
    # (dust.models.cache): masked, a copy, so that no other request's forward pass runs on them meanwhile.
    net = copy.deepcopy(net)
    set_masks(net, mask, edge_index, apply_sigmoid=False)
    try:
        out = net(edge_index, edge_type, graph.x())
        found = []
        for node, cls in zip(nodes, classes, strict=True):
            (grad,) = torch.autograd.grad(_margin(out[node], cls), mask, retain_graph=True)
            each = (grad * mask).detach()  # gradient × input; the input is the mask's 1
            found.append(each[0::2] + each[1::2])
        return found
    finally:
        clear_masks(net)


def _margin(logits: Any, cls: int) -> Any:
    """The class's logit over the mean of the others': unlike its probability, it does not saturate, so a
    confident prediction's gradient still tells its edges apart."""
    others = (logits.sum() - logits[cls]) / max(logits.numel() - 1, 1)
    return logits[cls] - others


def explain(
    session: Session, graph: RelationalGraph, node: int, importance: Any, top: int, rows: dict[uuid.UUID, Entity]
) -> Explanation:
    """The explanation of node ``node``'s prediction from its relations' ``importance``, as the session's
    principal may see it; ``rows`` caches the entities seen so far (those visible)."""
    weight = importance.tolist()
    touched = [r for r, w in enumerate(weight) if w != 0.0]
    _visible_rows(session, graph, touched, rows)
    shown = [r for r in touched if _shown(session, graph, r, rows)]
    shown.sort(key=lambda r: -abs(weight[r]))
    by_type: dict[str, float] = defaultdict(float)
    by_node: dict[int, float] = defaultdict(float)
    for r in shown:
        by_type[_type(graph, r)] += weight[r]
        for end in (graph.sources[2 * r], graph.targets[2 * r]):
            if end != node:
                by_node[end] += weight[r]
    relations = sorted(by_type.items(), key=lambda item: -abs(item[1]))[:top]
    neighbours = sorted(by_node.items(), key=lambda item: -abs(item[1]))[:top]
    return Explanation(
        relations=[RelationImportance(type=name, importance=w) for name, w in relations],
        neighbours=[Neighbour(**_node(session, graph, n, rows).model_dump(), importance=w) for n, w in neighbours],
        edges=[
            EdgeImportance(
                source=_node(session, graph, graph.sources[2 * r], rows),
                type=_type(graph, r),
                target=_node(session, graph, graph.targets[2 * r], rows),
                importance=weight[r],
            )
            for r in shown[:top]
        ],
    )


def _type(graph: RelationalGraph, relation: int) -> str:
    return graph.relation_types[graph.types[2 * relation]]


def _visible_rows(
    session: Session, graph: RelationalGraph, relations: list[int], rows: dict[uuid.UUID, Entity]
) -> None:
    """Read the entities at the ends of ``relations`` that the principal may see, into ``rows``."""
    count = len(graph.entity_ids)
    ends = {graph.entity_ids[n] for r in relations for n in (graph.sources[2 * r], graph.targets[2 * r]) if n < count}
    wanted = [entity for entity in ends if entity not in rows]
    visible = access.visible_ids(session)
    for part in relation_repo.chunks(wanted):
        rows.update((row.id, row) for row in entity_repo.among(session, part, within=visible))


def _shown(session: Session, graph: RelationalGraph, relation: int, rows: dict[uuid.UUID, Entity]) -> bool:
    """Whether the principal may see both ends; a value node through its entity and the attribute's key."""
    count = len(graph.entity_ids)
    source, target = graph.sources[2 * relation], graph.targets[2 * relation]
    if graph.entity_ids[source] not in rows or (target < count and graph.entity_ids[target] not in rows):
        return False
    if target < count:
        return True
    who = access.principal(session)
    kind = rows[graph.entity_ids[source]].kind
    return who is None or not who.deidentified or _type(graph, relation) not in access.sensitive_fields(session, kind)


def _node(session: Session, graph: RelationalGraph, node: int, rows: dict[uuid.UUID, Entity]) -> Node:
    if node >= len(graph.entity_ids):
        return Node(value=json.loads(graph.literals[node - len(graph.entity_ids)]))
    seen = access.present(session, rows[graph.entity_ids[node]])
    return Node(entity_id=seen["id"], name=seen["name"], kind=seen["kind"])
