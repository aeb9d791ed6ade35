"""Supply-chain analyses over the master tensor: where flow concentrates, stock-out risk, and what-if.

The graph is the ``supplies`` and ``ships_to`` relations the caller may see (both ends visible), with their
weight now (the usual flow) and their attributes: ``capacity`` (units a day; the weight when absent),
``lead_time_days`` (1 when absent) and, on ``supplies``, ``products`` (the SKUs sent; absent: every product the
target makes, shown as ``*``). Flow runs from suppliers to retailers, by kind.

- Betweenness (networkx ``betweenness_centrality_subset``, lead time as distance): the share of
  supplier→retailer routes whose fastest path passes through a site.
- Max-flow/min-cut (networkx preflow-push) from every supplier to every retailer under the capacities: the
  most that can reach retailers a day, each site's share of it, and the saturated relations that limit it.
- Stock-out risk: per site and product of the ``inventory`` tensors, the latest ``on_hand`` and its linear trend
  over the last ``window`` days; a falling stock that runs out within ``horizon_days`` is at risk.
- What-if: remove sites and list the retailers that lose a product they could get before.
"""

from __future__ import annotations

import math
import uuid
from collections import defaultdict
from typing import Any

import networkx as nx
import numpy as np
from networkx.algorithms.flow import preflow_push
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from dust.engine import access, entities, relations, tensors
from dust.storage.repositories import entities as entity_repo
from dust.storage.repositories import relations as relation_repo
from dust.storage.repositories import supply_chain as repo

TYPES = ["supplies", "ships_to"]
SOURCE, SINK = "supplier", "retailer"
ANY_PRODUCT = "*"
MAX_SOURCES = 200  # betweenness from at most this many suppliers (a fixed sample beyond): cost grows with each


class Site(BaseModel):
    """A site as the caller may read it (a de-identified reader sees pseudonyms where names are sensitive)."""

    id: uuid.UUID
    kind: str
    name: str


class SiteScore(Site):
    betweenness: float = Field(description="Share of supplier→retailer routes whose fastest path passes here.")
    flow_share: float = Field(description="Share of the maximum flow to retailers that passes through here.")


class CutEdge(BaseModel):
    source: Site
    target: Site
    type: str
    capacity: float = Field(description="Units a day the relation can carry: saturated in the maximum flow.")


class StockRisk(Site):
    product: str
    on_hand: float = Field(description="The latest units on hand.")
    trend_per_day: float = Field(description="Change of on_hand per day over the window (least squares).")
    days_left: float = Field(description="Days until on_hand reaches 0 at that trend.")
    risk: float = Field(ge=0, le=1, description="1 - days_left / horizon_days: 1 is out of stock now.")


class Bottlenecks(BaseModel):
    sites: int = Field(description="Sites in the graph you may see.")
    relations: int
    max_flow: float = Field(description="The most units a day that can reach retailers from suppliers.")
    min_cut_capacity: float
    top: list[SiteScore] = Field(description="Sites by betweenness, then flow share: where flow concentrates.")
    min_cut: list[CutEdge] = Field(description="The saturated relations that limit the flow, largest first.")
    stock_out: list[StockRisk] = Field(description="Falling stocks that run out within the horizon, soonest first.")


class WhatIf(BaseModel):
    model_config = ConfigDict(extra="forbid")

    remove: list[uuid.UUID] = Field(
        min_length=1, max_length=100, description="Sites (suppliers, factories, warehouses) to take away."
    )


class Starving(Site):
    products: list[str] = Field(description="Products the retailer could get before and cannot after.")


class WhatIfResult(BaseModel):
    removed: list[Site]
    starving: list[Starving] = Field(description="Retailers that lose products, in name order.")
    max_flow_before: float
    max_flow_after: float


class _Network:
    """The visible supply graph: a networkx DiGraph keyed by entity id, with each site's kind and name."""

    def __init__(self, session: Session) -> None:
        coo = relations.master_tensor(session, types=TYPES)  # visible ends only, weights now; audited
        attributes = repo.edge_attributes(session, TYPES, access.visible_ids(session))
        self.graph: nx.DiGraph[uuid.UUID] = nx.DiGraph()
        for t, s, d, weight in zip(*coo.indices, coo.values, strict=True):
            source, target, type_ = coo.entity_ids[s], coo.entity_ids[d], coo.types[t]
            self.graph.add_edge(
                source, target, type=type_, **_edge_data(attributes.get((source, target, type_), {}), weight)
            )
        self.sites = _sites(session, list(self.graph.nodes))
        for node, site in self.sites.items():
            self.graph.nodes[node]["kind"] = site.kind

    def of_kind(self, kind: str) -> list[uuid.UUID]:
        return sorted(n for n, k in self.graph.nodes(data="kind") if k == kind)


def _edge_data(attributes: dict[str, Any], weight: float) -> dict[str, Any]:
    """Capacity, lead time and products of a relation; what is missing or not a usable number gets its default."""
    capacity = _number(attributes.get("capacity"), weight)
    products = attributes.get("products")
    skus = [str(p) for p in products] if isinstance(products, list) and products else [ANY_PRODUCT]
    return {"capacity": capacity, "lead": _number(attributes.get("lead_time_days"), 1.0), "products": skus}


def _number(value: Any, default: float) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    return float(value) if ok else max(default, 0.0)


def _sites(session: Session, ids: list[uuid.UUID]) -> dict[uuid.UUID, Site]:
    found: dict[uuid.UUID, Site] = {}
    for part in relation_repo.chunks(ids):
        for row in entity_repo.by_ids(session, part):
            shown = access.present(session, row)
            found[row.id] = Site(id=row.id, kind=row.kind, name=shown["name"])
    return found


def bottlenecks(session: Session, *, limit: int = 10, horizon_days: float = 14, window: int = 14) -> Bottlenecks:
    """Where flow concentrates (betweenness, max-flow/min-cut) and which stocks are running out."""
    net = _Network(session)
    value, through, cut = _max_flow(net, set())
    between = _betweenness(net)
    scores = [
        SiteScore(**site.model_dump(), betweenness=between.get(node, 0.0), flow_share=_share(through, node, value))
        for node, site in net.sites.items()
    ]
    scores.sort(key=lambda s: (-s.betweenness, -s.flow_share, s.name, str(s.id)))
    edges = [
        CutEdge(
            source=net.sites[u], target=net.sites[v], type=net.graph[u][v]["type"], capacity=net.graph[u][v]["capacity"]
        )
        for u, v in cut
    ]
    edges.sort(key=lambda e: (-e.capacity, e.source.name, e.target.name))
    return Bottlenecks(
        sites=net.graph.number_of_nodes(),
        relations=net.graph.number_of_edges(),
        max_flow=value,
        min_cut_capacity=sum(e.capacity for e in edges),
        top=scores[:limit],
        min_cut=edges,
        stock_out=stock_out(session, horizon_days=horizon_days, window=window),
    )


def _share(through: dict[uuid.UUID, float], node: uuid.UUID, value: float) -> float:
    return round(through.get(node, 0.0) / value, 6) if value > 0 else 0.0


def _betweenness(net: _Network) -> dict[uuid.UUID, float]:
    """Per site, the share of connected (supplier, retailer) pairs whose fastest routes pass through it."""
    sources, targets = net.of_kind(SOURCE), net.of_kind(SINK)
    if len(sources) > MAX_SOURCES:  # a fixed sample: the same graph gives the same answer
        picks = np.random.default_rng(0).choice(len(sources), MAX_SOURCES, replace=False)
        sources = [sources[i] for i in sorted(picks.tolist())]
    if not sources or not targets:
        return {}
    raw = nx.betweenness_centrality_subset(net.graph, sources, targets, normalized=False, weight="lead")
    wanted = set(targets)
    pairs = sum(len(nx.descendants(net.graph, s) & wanted) for s in sources)
    return {n: round(b / pairs, 6) for n, b in raw.items()} if pairs else {}


def _max_flow(
    net: _Network, removed: set[uuid.UUID]
) -> tuple[float, dict[uuid.UUID, float], list[tuple[uuid.UUID, uuid.UUID]]]:
    """The maximum flow from suppliers to retailers without ``removed``: its value, the flow into each site,
    and the relations of a minimum cut (the side the source still reaches in the residual network)."""
    graph: nx.DiGraph[Any] = nx.DiGraph()
    graph.add_edges_from(
        (u, v, {"capacity": d["capacity"]})
        for u, v, d in net.graph.edges(data=True)
        if u not in removed and v not in removed
    )
    sources = [n for n in net.of_kind(SOURCE) if n not in removed and n in graph]
    sinks = [n for n in net.of_kind(SINK) if n not in removed and n in graph]
    if not sources or not sinks:
        return 0.0, {}, []
    source, sink = object(), object()  # the super source and sink: no entity id can equal them
    graph.add_edges_from((source, n) for n in sources)  # no capacity: unbounded
    graph.add_edges_from((n, sink) for n in sinks)
    residual = preflow_push(graph, source, sink)
    through: dict[uuid.UUID, float] = defaultdict(float)
    for u, v, d in residual.edges(data=True):
        if d["flow"] > 0 and isinstance(v, uuid.UUID) and graph.has_edge(u, v):
            through[v] += d["flow"]
    reached = _reachable(residual, source)
    cut = [(u, v) for u, v in graph.edges if u in reached and v not in reached and u is not source and v is not sink]
    return float(residual.graph["flow_value"]), dict(through), cut


def _reachable(residual: nx.DiGraph[Any], start: object) -> set[object]:
    """Nodes reached from ``start`` over residual edges with capacity left."""
    seen, todo = {start}, [start]
    while todo:
        node = todo.pop()
        for nxt, d in residual[node].items():
            if nxt not in seen and d["flow"] < d["capacity"]:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def stock_out(session: Session, *, horizon_days: float = 14, window: int = 14) -> list[StockRisk]:
    """Falling ``inventory`` stocks (visible sites) that reach zero within ``horizon_days`` at their trend."""
    found: list[StockRisk] = []
    rows = repo.tensors_of_schema(session, "inventory", access.visible_ids(session))
    sites = _sites(session, list(dict.fromkeys(e for _, e in rows)))
    for tensor_id, entity_id in rows:
        view = tensors.read(session, tensor_id, labels={"measure": "on_hand"})
        for product, series in zip(view.coords["product"], view.values, strict=True):
            risk = _risk(series[-window:], horizon_days)
            if risk is not None:
                found.append(StockRisk(**sites[entity_id].model_dump(), product=product, **risk))
    found.sort(key=lambda r: (r.days_left, r.name, r.product))
    return found


def _risk(series: np.ndarray, horizon_days: float) -> dict[str, float] | None:
    """The latest level, its trend and days left, if it runs out within the horizon; else None."""
    days = np.flatnonzero(np.isfinite(series))
    if len(days) < 5:  # too few values for a trend
        return None
    slope = float(np.polyfit(days, series[days], 1)[0])
    level = max(0.0, float(series[days[-1]]))
    if level > 0 and slope >= 0:
        return None
    days_left = 0.0 if level == 0 else level / -slope
    if days_left > horizon_days:
        return None
    return {
        "on_hand": level,
        "trend_per_day": round(slope, 3),
        "days_left": round(days_left, 2),
        "risk": round(1 - days_left / horizon_days, 4),
    }


def what_if(session: Session, data: WhatIf) -> WhatIfResult:
    """Take sites away: the retailers that lose products they could get, and the maximum flow before and after."""
    net = _Network(session)
    removed = list(dict.fromkeys(data.remove))
    entities.check_visible(session, removed)  # an entity outside the graph may be removed too: that changes nothing
    shown = _sites(session, removed)
    gone = set(removed)
    before, after = _products(net, set()), _products(net, gone)
    starving = [
        Starving(**net.sites[r].model_dump(), products=sorted(lost))
        for r, had in before.items()
        if r not in gone and (lost := had - after.get(r, set()))
    ]
    starving.sort(key=lambda s: (s.name, str(s.id)))
    return WhatIfResult(
        removed=[shown[e] for e in removed],
        starving=starving,
        max_flow_before=_max_flow(net, set())[0],
        max_flow_after=_max_flow(net, gone)[0],
    )


def _products(net: _Network, removed: set[uuid.UUID]) -> dict[uuid.UUID, set[str]]:
    """Per retailer, the products that can reach it from a supplier without ``removed``."""
    entry: dict[str, set[uuid.UUID]] = defaultdict(set)  # product -> sites a supplier sends it to
    for u, v, d in net.graph.edges(data=True):
        if d["type"] == "supplies" and u not in removed and v not in removed:
            for sku in d["products"]:
                entry[sku].add(v)
    shipping = nx.subgraph_view(
        net.graph,
        filter_node=lambda n: n not in removed,
        filter_edge=lambda u, v: net.graph[u][v]["type"] == "ships_to",
    )
    retailers = set(net.of_kind(SINK))
    got: dict[uuid.UUID, set[str]] = defaultdict(set)
    for sku, starts in entry.items():
        reached: set[uuid.UUID] = set()
        for start in starts:
            reached |= {start} | nx.descendants(shipping, start)
        for retailer in reached & retailers:
            got[retailer].add(sku)
    return got
