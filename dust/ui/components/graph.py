"""The relationship graph for dash-cytoscape: nodes coloured by kind, edges by type and sized by weight, anomalous
entities ringed; past a node budget, sampled server-side with the cut said on screen.

Browsers draw a few thousand graph elements at interactive speed (Grafana's node graph stops at 1,500 nodes), so
``sample`` keeps at most ``budget`` nodes: the entities asked to be kept first (the one the graph is around),
then the best connected by total weight — the hubs a reader looks for — and only the edges between kept nodes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dust.ui.components.charts import OKABE_ITO

NODE_BUDGET = 1_500


@dataclass(frozen=True)
class GNode:
    id: str
    name: str
    kind: str


@dataclass(frozen=True)
class GEdge:
    id: str
    source: str
    target: str
    type: str
    weight: float


@dataclass
class Sampled:
    nodes: list[GNode]
    edges: list[GEdge]
    total_nodes: int
    total_edges: int
    notes: list[str] = field(default_factory=list)

    @property
    def cut(self) -> bool:
        return len(self.nodes) < self.total_nodes


def sample(
    nodes: Sequence[GNode], edges: Sequence[GEdge], budget: int = NODE_BUDGET, keep: Iterable[str] = ()
) -> Sampled:
    """At most ``budget`` nodes: ``keep`` first, then by weighted degree (ties by name, so a page shows the same
    sample each time), and the edges among them."""
    if len(nodes) <= budget:
        return Sampled(list(nodes), list(edges), len(nodes), len(edges))
    strength: dict[str, float] = defaultdict(float)
    for edge in edges:
        strength[edge.source] += abs(edge.weight)
        strength[edge.target] += abs(edge.weight)
    wanted = set(keep)
    ranked = sorted(nodes, key=lambda n: (n.id not in wanted, -strength.get(n.id, 0.0), n.name, n.id))
    kept = ranked[:budget]
    ids = {n.id for n in kept}
    inner = [e for e in edges if e.source in ids and e.target in ids]
    note = (
        f"Showing {len(kept):,} of {len(nodes):,} entities and {len(inner):,} of {len(edges):,} relations: the "
        "best connected (by total weight). Narrow it by relation type or weight, or open an entity's graph."
    )
    return Sampled(kept, inner, len(nodes), len(edges), [note])


def colours(values: Iterable[str]) -> dict[str, str]:
    """A stable Okabe-Ito colour per name (sorted, so a kind keeps its colour across pages)."""
    return {name: OKABE_ITO[i % len(OKABE_ITO)] for i, name in enumerate(sorted(set(values)))}


def elements(graph: Sampled, anomalous: set[str], centre: str | None = None) -> list[dict[str, Any]]:
    """Cytoscape elements: node data (label, kind, anomalous, centre) and edge data (type, weight, width)."""
    top = max((abs(e.weight) for e in graph.edges), default=1.0) or 1.0
    found: list[dict[str, Any]] = [
        {
            "data": {"id": n.id, "label": n.name, "kind": n.kind},
            "classes": " ".join(
                c
                for c, on in ((f"kind-{n.kind}", True), ("anomalous", n.id in anomalous), ("centre", n.id == centre))
                if on
            ),
        }
        for n in graph.nodes
    ]
    found += [
        {
            "data": {
                "id": e.id,
                "source": e.source,
                "target": e.target,
                "type": e.type,
                "weight": round(e.weight, 3),
                "width": 1 + 5 * abs(e.weight) / top,
            },
            "classes": f"type-{e.type}",
        }
        for e in graph.edges
    ]
    return found


LARGE = 300  # nodes past which edges are drawn straight and without arrows (Cytoscape's fast "haystack" edges)


def stylesheet(kinds: Iterable[str], types: Iterable[str], nodes: int = 0) -> list[dict[str, Any]]:
    """Kinds by fill colour, relation types by line colour, anomalies by a thick vermillion ring. Labels show only
    once zoomed in enough to read them (drawing 1,500 unreadable labels was most of a large graph's draw time)."""
    edge = {"width": "data(width)", "opacity": 0.7}
    if nodes > LARGE:
        edge |= {"curve-style": "haystack", "haystack-radius": 0}
    else:
        edge |= {"curve-style": "bezier", "target-arrow-shape": "triangle"}
    node = {"label": "data(label)", "font-size": 9, "width": 18, "height": 18, "min-zoomed-font-size": 8}
    style: list[dict[str, Any]] = [
        {"selector": "node", "style": node},
        {"selector": "edge", "style": edge},
        {"selector": ".anomalous", "style": {"border-width": 4, "border-color": "#D55E00"}},
        {"selector": ".centre", "style": {"width": 30, "height": 30, "font-weight": "bold"}},
    ]
    style += [{"selector": f".kind-{k}", "style": {"background-color": c}} for k, c in colours(kinds).items()]
    style += [
        {"selector": f".type-{t}", "style": {"line-color": c, "target-arrow-color": c}}
        for t, c in colours(types).items()
    ]
    return style
