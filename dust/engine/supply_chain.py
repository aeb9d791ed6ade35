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

import heapq
import math
import uuid
from collections import defaultdict
from typing import Any

import networkx as nx
import numpy as np
from networkx.algorithms.flow import preflow_push
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from dust.core.errors import Forbidden
from dust.core.security import pseudonym
from dust.engine import access, audit, entities, relations, schemas
from dust.engine import blocks as codec
from dust.engine.schemas import SchemaDef
from dust.storage.repositories import relations as relation_repo
from dust.storage.repositories import supply_chain as repo

TYPES = ["supplies", "ships_to"]
SOURCE, SINK = "supplier", "retailer"
ANY_PRODUCT = "*"
SCHEMA = "inventory"
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
    """The sites among ``ids`` as ``access.present`` shows their names: read as three columns, since loading
    10,000 entities (with their attributes) cost a second."""
    who = access.principal(session)
    hidden: dict[str, bool] = {}
    found: dict[uuid.UUID, Site] = {}
    for part in relation_repo.chunks(ids):
        for id_, kind, name in repo.sites(session, part):
            if who is not None and who.deidentified:
                if kind not in hidden:
                    hidden[kind] = "name" in access.sensitive_fields(session, kind)
                name = pseudonym(who.secret, kind, id_) if hidden[kind] else name
            found[id_] = Site(id=id_, kind=kind, name=name)
    return found


def bottlenecks(session: Session, *, limit: int = 10, horizon_days: float = 14, window: int = 14) -> Bottlenecks:
    """Where flow concentrates (betweenness, max-flow/min-cut) and which stocks are running out."""
    net = _Network(session)
    value, through, cut = _max_flow(net, set())
    between = _betweenness(net)
    ranked = sorted(
        (-between.get(node, 0.0), -_share(through, node, value), site.name, str(node), node)
        for node, site in net.sites.items()
    )  # as tuples: only the top ``limit`` of 10,000 sites become models
    top = [
        SiteScore(**net.sites[node].model_dump(), betweenness=-b, flow_share=-f) for b, f, _, _, node in ranked[:limit]
    ]
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
        top=top,
        min_cut=edges,
        stock_out=stock_out(session, horizon_days=horizon_days, window=window),
    )


def _share(through: dict[uuid.UUID, float], node: uuid.UUID, value: float) -> float:
    return round(through.get(node, 0.0) / value, 6) if value > 0 else 0.0


def _betweenness(net: _Network) -> dict[uuid.UUID, float]:
    """Per site, the share of connected (supplier, retailer) pairs whose fastest routes pass through it.

    networkx ``betweenness_centrality_subset`` (lead time as distance), computed the same way but faster: on
    integer node numbers rather than ids, and with the retailers that ship nowhere (usually nearly every site)
    folded in as arrays. Such a retailer ends routes and lies on none, so its distance, route count and share
    of each route come from its suppliers' in one NumPy step per source instead of a heap entry each.
    """
    sources, targets = net.of_kind(SOURCE), net.of_kind(SINK)
    if len(sources) > MAX_SOURCES:  # a fixed sample: the same graph gives the same answer
        picks = np.random.default_rng(0).choice(len(sources), MAX_SOURCES, replace=False)
        sources = [sources[i] for i in sorted(picks.tolist())]
    if not sources or not targets:
        return {}
    graph = net.graph
    ends = [t for t in targets if graph.out_degree(t) == 0]
    end_set = set(ends)
    core = [n for n in graph if n not in end_set]
    number = {n: i for i, n in enumerate(core)}
    succ = [[(number[v], float(d["lead"])) for v, d in graph[n].items() if v not in end_set] for n in core]
    end_number = {n: i for i, n in enumerate(ends)}
    edges = [(number[u], end_number[v], float(d["lead"])) for v in ends for u, _, d in graph.in_edges(v, data=True)]
    last = _EndEdges(edges, len(ends))
    is_target = np.zeros(len(core), dtype=bool)
    is_target[[number[t] for t in targets if t in number]] = True
    total, pairs = np.zeros(len(core)), 0
    for s in sources:
        order, preds, sigma, dist = _fastest(succ, number[s])
        delta, reached = last.delta(sigma, dist)
        pairs += reached + int(is_target[order].sum()) - int(is_target[number[s]])
        for w in reversed(order):
            coeff = (delta[w] + (1.0 if is_target[w] and w != number[s] else 0.0)) / sigma[w]
            for v in preds[w]:
                delta[v] += sigma[v] * coeff
            if w != number[s]:
                total[w] += delta[w]
    return {n: round(float(total[i]) / pairs, 6) for i, n in enumerate(core)} if pairs else {}


def _fastest(succ: list[list[tuple[int, float]]], s: int) -> tuple[list[int], list[list[int]], np.ndarray, np.ndarray]:
    """Dijkstra from ``s`` as networkx's betweenness runs it: the nodes in the order settled, each node's
    predecessors on fastest routes, the number of fastest routes to it (sigma) and its distance (inf: unreached)."""
    n = len(succ)
    sigma, dist = [0.0] * n, [math.inf] * n
    preds: list[list[int]] = [[] for _ in range(n)]
    done = [False] * n
    seen: dict[int, float] = {s: 0.0}
    sigma[s] = 1.0
    order: list[int] = []
    queue = [(0.0, 0, s, s)]
    pushed = 1
    while queue:
        d, _, pred, v = heapq.heappop(queue)
        if done[v]:
            continue
        sigma[v] += sigma[pred]
        order.append(v)
        done[v], dist[v] = True, d
        for w, lead in succ[v]:
            vw = d + lead
            if not done[w] and (w not in seen or vw < seen[w]):
                seen[w] = vw
                heapq.heappush(queue, (vw, pushed, v, w))
                pushed += 1
                sigma[w] = 0.0
                preds[w] = [v]
            elif vw == seen.get(w):
                sigma[w] += sigma[v]
                preds[w].append(v)
    return order, preds, np.array(sigma), np.array(dist)


class _EndEdges:
    """The relations into retailers that ship nowhere, as arrays: (core node, retailer, lead time)."""

    def __init__(self, edges: list[tuple[int, int, float]], ends: int) -> None:
        self.ends = ends
        self.source = np.array([e[0] for e in edges], dtype=np.int64)
        self.target = np.array([e[1] for e in edges], dtype=np.int64)
        self.lead = np.array([e[2] for e in edges], dtype=float)

    def delta(self, sigma: np.ndarray, dist: np.ndarray) -> tuple[list[float], int]:
        """Each core node's dependency on these retailers (sigma[v] / sigma[r] per fastest route v→r), as the
        start of the accumulation, and how many of the retailers the source reaches."""
        if not self.ends:
            return [0.0] * len(sigma), 0
        arrive = dist[self.source] + self.lead
        best = np.full(self.ends, np.inf)
        np.minimum.at(best, self.target, arrive)
        on = np.isfinite(arrive) & (arrive == best[self.target])
        routes = np.bincount(self.target[on], weights=sigma[self.source[on]], minlength=self.ends)
        share = sigma[self.source[on]] / routes[self.target[on]]
        delta = np.bincount(self.source[on], weights=share, minlength=len(sigma))
        return delta.tolist(), int(np.isfinite(best).sum())


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
    """Falling ``inventory`` stocks (visible sites) that reach zero within ``horizon_days`` at their trend.

    The last ``window`` days of every inventory tensor come in one query of their blocks (reading tensor by
    tensor cost 8,600 reads at 10,000 sites); a least-squares trend of all of them at once as arrays then drops
    the stocks that are clearly safe, and the few left are judged one by one exactly as before (``_risk``).
    """
    visible = access.visible_ids(session)
    rows = repo.tensors_of_schema(session, SCHEMA, visible)
    defs = schemas.get_defs(session, {(SCHEMA, version) for _, _, version, _, _ in rows})
    who = access.principal(session)
    for sdef in defs.values():  # what tensors.read checks of each tensor it reads
        if who is not None and who.deidentified and sdef.sensitive:
            raise Forbidden(f"schema '{sdef.name}' is sensitive: de-identified readers get aggregates only")
    audit.record_each(session, "read", "tensor", [(tensor_id, [entity_id]) for tensor_id, entity_id, *_ in rows])
    blocks: dict[uuid.UUID, list[tuple[int, str, bytes]]] = defaultdict(list)
    for tensor_id, number, shape, data in repo.last_blocks(session, SCHEMA, visible, window):
        blocks[tensor_id].append((number, shape, data))
    # Each tensor's (product, day) values, padded before to ``window`` days (a trend ignores the shift).
    stocks: list[tuple[uuid.UUID, list[str], int, np.ndarray]] = []  # (entity, products, days, values)
    for tensor_id, entity_id, version, time_min, time_max in rows:
        if time_min is None or time_max is None:
            continue  # nothing recorded: no steps, no trend
        days = time_max - max(time_min, time_max - window + 1) + 1
        products, series = _on_hand(defs[(SCHEMA, version)], time_min, time_max, window, blocks.get(tensor_id, []))
        stocks.append((entity_id, products, days, series))
    if not stocks:
        return []
    owner = np.repeat(np.arange(len(stocks)), [len(products) for _, products, _, _ in stocks])
    offset = np.cumsum([0] + [len(products) for _, products, _, _ in stocks])
    risks = []
    for i in np.flatnonzero(_may_run_out(np.concatenate([v for *_, v in stocks]), horizon_days)).tolist():
        entity_id, products, days, series = stocks[owner[i]]
        product = i - offset[owner[i]]
        risk = _risk(series[product, window - days :], horizon_days)  # the verdict, on the days recorded
        if risk is not None:
            risks.append((entity_id, products[product], risk))
    sites = _sites(session, list(dict.fromkeys(entity_id for entity_id, _, _ in risks)))
    found = [StockRisk(**sites[entity_id].model_dump(), product=product, **risk) for entity_id, product, risk in risks]
    found.sort(key=lambda r: (r.days_left, r.name, r.product))
    return found


def _on_hand(
    sdef: SchemaDef, time_min: int, time_max: int, window: int, blocks: list[tuple[int, str, bytes]]
) -> tuple[list[str], np.ndarray]:
    """The product labels and the (product, day) on_hand values of the ``window`` days up to ``time_max``:
    NaN where not recorded, and before ``time_min`` (a tensor read starts there)."""
    measure = sdef.axis("measure")
    picks = [np.arange(len(a.labels)) for a in sdef.axes]
    picks[sdef.axes.index(measure)] = np.array([sdef.label_index(measure, "on_hand")])
    first = time_max - window + 1
    series = np.full((window, *(len(p) for p in picks)), np.nan)
    for number, shape, data in blocks:
        steps = codec.steps_of(shape, data)  # the tensor's block length (dust.engine.blocks)
        start = number * steps
        low, high = max(first, start, time_min), min(time_max, start + steps - 1)
        if low <= high:
            values = codec.decode(shape, data, None, sdef.shape)[0][np.ix_(np.arange(steps), *picks)]
            series[low - first : high - first + 1] = values[low - start : high - start + 1]
    return list(sdef.axis("product").labels), series.reshape(window, -1).T


def _may_run_out(series: np.ndarray, horizon_days: float) -> np.ndarray:
    """Per row of (product, day) ``series``: whether it may run out within the horizon, by a vectorised trend.

    A screen, not the verdict: it keeps a margin so that a stock ``_risk`` would flag is never dropped (the
    closed-form slope may differ from ``np.polyfit`` in the last bits), and ``_risk`` decides on what it keeps.
    """
    finite = np.isfinite(series)
    count = finite.sum(axis=1)
    days = np.where(finite, np.arange(series.shape[1], dtype=float), 0.0)
    values = np.where(finite, series, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_x, mean_y = days.sum(axis=1) / count, values.sum(axis=1) / count
        dx = np.where(finite, days - mean_x[:, None], 0.0)
        slope = (dx * (values - mean_y[:, None])).sum(axis=1) / (dx * dx).sum(axis=1)
        last = np.where(finite.any(axis=1), series[np.arange(len(series)), _last_finite(finite)], np.nan)
        level = np.maximum(last, 0.0)
        days_left = level / -slope
    slack = 1e-6 * (1 + np.abs(slope))
    return (count >= 5) & ((level == 0) | ((slope < slack) & ~(days_left > horizon_days * 1.001 + 1e-6)))


def _last_finite(finite: np.ndarray) -> np.ndarray:
    """Per row, the index of its last True (0 where none)."""
    return finite.shape[1] - 1 - np.argmax(finite[:, ::-1], axis=1)


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
