"""The supply-chain analyses find what the generator planted: the hub, the sole source, the run-down stocks."""

from __future__ import annotations

import uuid

import networkx as nx
import numpy as np
import pytest

from dust.core.errors import InvalidInput, NotFound
from dust.domains import load_anomaly_rules, load_rules, supply_chain
from dust.domains.supply_chain import Plan
from dust.embedded import Dust
from dust.engine import supply_chain as engine
from dust.engine import tensors


@pytest.fixture
def plan(db: Dust) -> Plan:
    with db.session() as session:
        supply_chain.generate(session, size=60, days=40)
    return Plan.of(60, 40)


def _id(db: Dust, kind: str, n: int) -> uuid.UUID:
    """The id of ``<kind>-<n>``, the generator's external id."""
    return next(e.id for e in db.entities(kind=kind, limit=500).items if e.external_id == f"{kind}-{n}")


def _ext(db: Dust, ids: list[uuid.UUID]) -> set[str | None]:
    return {db.get_entity(i).external_id for i in ids}


def test_the_hub_tops_betweenness_and_carries_most_of_the_flow(db: Dust, plan: Plan) -> None:
    found = db.supply_chain_bottlenecks(limit=5)
    hub = _id(db, "warehouse", 1)
    assert found.top[0].id == hub and found.top[0].kind == "warehouse"
    assert found.top[0].flow_share > 0.5  # most of what reaches retailers passes through it
    assert found.sites == 12 + plan.factories + plan.warehouses + plan.retailers


def test_the_min_cut_holds_the_hubs_inbound_relations_and_equals_the_max_flow(db: Dust, plan: Plan) -> None:
    found = db.supply_chain_bottlenecks()
    hub = _id(db, "warehouse", 1)
    into_hub = [e for e in found.min_cut if e.target.id == hub]
    assert len(into_hub) == plan.factories - 1  # every factory but factory-1 ships to the hub, all saturated
    assert found.min_cut_capacity == pytest.approx(found.max_flow)  # max-flow = min-cut
    hub_share = sum(e.capacity for e in into_hub) / found.max_flow
    assert hub_share > 0.5


def test_the_run_down_stocks_are_at_risk_and_nothing_else(db: Dust, plan: Plan) -> None:
    found = db.supply_chain_bottlenecks(horizon_days=14).stock_out
    planted = {(f"retailer-{r + 1}", supply_chain.PRODUCTS[p]) for r, p in plan.declining()}
    assert {(db.get_entity(r.id).external_id, r.product) for r in found} == planted
    assert all(r.trend_per_day < 0 and r.days_left < 14 and 0 < r.risk <= 1 for r in found)


def test_without_the_sole_supplier_warehouse_2s_retailers_starve_of_sku_001(db: Dust, plan: Plan) -> None:
    answer = db.supply_chain_what_if([_id(db, "supplier", 1)])
    region = {f"retailer-{r + 1}" for r in range(plan.retailers) if plan.warehouse_of(r) == 1}
    assert region and _ext(db, [s.id for s in answer.starving]) == region
    assert {tuple(s.products) for s in answer.starving} == {("SKU-001",)}
    assert answer.max_flow_after <= answer.max_flow_before
    assert [s.kind for s in answer.removed] == ["supplier"]


def test_without_any_other_supplier_no_one_starves(db: Dust, plan: Plan) -> None:
    for n in (2, 5, plan.suppliers):
        assert db.supply_chain_what_if([_id(db, "supplier", n)]).starving == []


def test_without_the_hub_its_retailers_starve_of_everything_they_had(db: Dust, plan: Plan) -> None:
    answer = db.supply_chain_what_if([_id(db, "warehouse", 1)])
    hub_retailers = {f"retailer-{r + 1}" for r in range(plan.retailers) if plan.warehouse_of(r) == 0}
    assert _ext(db, [s.id for s in answer.starving]) == hub_retailers
    assert {len(s.products) for s in answer.starving} == {11}
    assert answer.max_flow_after < answer.max_flow_before / 2


def test_removing_an_entity_outside_the_graph_changes_nothing_and_an_unknown_one_is_not_found(
    db: Dust, plan: Plan
) -> None:
    product = db.entities(kind="product").items[0].id
    answer = db.supply_chain_what_if([product])
    assert answer.starving == [] and answer.max_flow_after == answer.max_flow_before
    with pytest.raises(NotFound):
        db.supply_chain_what_if([uuid.UUID("00000000-0000-4000-8000-000000000000")])
    with pytest.raises(InvalidInput):
        db.supply_chain_what_if([])


def test_capacity_missing_falls_back_to_the_weight_and_products_to_any(db: Dust) -> None:
    """A hand-made chain without the generator's attributes: s -> f -> r, and s2 -> f."""
    s = db.create_entity("supplier", "S")
    s2 = db.create_entity("supplier", "S2")
    f = db.create_entity("factory", "F")
    r = db.create_entity("retailer", "R")
    db.relate(s.id, f.id, "supplies", weight=5)
    db.relate(s2.id, f.id, "supplies", weight=3, attributes={"capacity": "lots"})  # not a number: the weight
    db.relate(f.id, r.id, "ships_to", weight=100, attributes={"capacity": 6})
    found = db.supply_chain_bottlenecks()
    assert found.max_flow == 6  # min(5 + 3, 6)
    assert [(e.source.name, e.target.name) for e in found.min_cut] == [("F", "R")]
    assert db.supply_chain_what_if([s.id]).starving == []  # S2 still sends "*" (any product)
    starving = db.supply_chain_what_if([s.id, s2.id]).starving
    assert [(x.name, x.products) for x in starving] == [("R", ["*"])]


def test_the_rules_alert_the_run_down_retailers_and_their_warehouse(db: Dust, plan: Plan) -> None:
    with db.session() as session:
        assert load_rules(session, supply_chain.PACK) == 0  # loaded with the data
    alerted = {db.get_entity(a.entity.id).external_id for a in db.alerts(limit=500).items}
    planted = {f"retailer-{r + 1}" for r, _ in plan.declining()}
    assert planted <= alerted
    assert "warehouse-1" in alerted  # the hub: its retailers' alerts, and its own day of shrinkage
    assert not any(e.startswith("retailer-") for e in alerted - planted)  # no false alarms


def _networkx_betweenness(net: engine._Network) -> dict[uuid.UUID, float]:
    """The reference: networkx's own subset betweenness over every supplier, as the engine once called it."""
    sources, targets = net.of_kind("supplier"), net.of_kind("retailer")
    raw = nx.betweenness_centrality_subset(net.graph, sources, targets, normalized=False, weight="lead")
    pairs = sum(len(nx.descendants(net.graph, s) & set(targets)) for s in sources)
    return {n: round(b / pairs, 6) for n, b in raw.items()}


def test_betweenness_equals_networkx_with_ties_onward_retailers_and_unreached_sites(db: Dust) -> None:
    """The fast betweenness folds retailers that ship nowhere into arrays: it must still count equal routes,
    retailers that ship on to other retailers, and sites no supplier reaches exactly as networkx does."""
    kinds = {"S": "supplier", "F": "factory", "W": "warehouse", "R": "retailer"}
    site = {f"{k}{i}": db.create_entity(kind, f"{k}{i}").id for k, kind in kinds.items() for i in range(1, 6)}

    def edge(a: str, b: str, lead: float, type_: str = "ships_to") -> None:
        db.relate(site[a], site[b], type_, weight=10, attributes={"lead_time_days": lead})

    for a, b, lead in [("S1", "F1", 1), ("S1", "F2", 1), ("S2", "F2", 3), ("S3", "F3", 2), ("S4", "F3", 0)]:
        edge(a, b, lead, "supplies")
    for a, b, lead in [("F1", "W1", 2), ("F2", "W2", 2), ("F2", "W3", 4), ("F3", "W3", 1), ("F4", "R5", 1)]:
        edge(a, b, lead)  # F4 -> R5: a retailer no supplier reaches
    for a, b, lead in [("W1", "R1", 1), ("W1", "R4", 1), ("W2", "R4", 1), ("W2", "R2", 1), ("W3", "R2", 0)]:
        edge(a, b, lead)  # from S1, R4 by two routes of equal lead time; R2 by W2, and by W3 in 0 days
    edge("R2", "R3", 1)  # a retailer that ships on: on routes, not only at their ends
    edge("W3", "R3", 2)
    with db.session() as session:
        net = engine._Network(session)
        got = engine._betweenness(net)
        want = _networkx_betweenness(net)
    assert any(v > 0 for v in want.values())
    assert {n: got.get(n, 0.0) for n in want} == want


def test_betweenness_and_stock_out_equal_the_one_by_one_reference_on_generated_data(db: Dust, plan: Plan) -> None:
    with db.session() as session:
        net = engine._Network(session)
        got, want = engine._betweenness(net), _networkx_betweenness(net)
        assert {n: got.get(n, 0.0) for n in want} == want
        for window, horizon in [(5, 3.0), (14, 14.0), (40, 60.0), (365, 365.0)]:
            assert engine.stock_out(session, horizon_days=horizon, window=window) == _stock_out_one_by_one(
                session, horizon, window
            )


def _stock_out_one_by_one(session: engine.Session, horizon: float, window: int) -> list[engine.StockRisk]:
    """The reference: each inventory tensor read on its own through tensors.read, as the engine once did."""
    found = []
    for tensor_id, entity_id, *_ in engine.repo.tensors_of_schema(session, "inventory", None):
        view = tensors.read(session, tensor_id, labels={"measure": "on_hand"})
        site = engine._sites(session, [entity_id])[entity_id]
        for product, series in zip(view.coords["product"], view.values, strict=True):
            risk = engine._risk(np.asarray(series[-window:]), horizon)
            if risk is not None:
                found.append(engine.StockRisk(**site.model_dump(), product=product, **risk))
    found.sort(key=lambda r: (r.days_left, r.name, r.product))
    return found


def test_stock_out_reads_gaps_short_series_and_block_edges_like_a_tensor_read(db: Dust, plan: Plan) -> None:
    """Hand-made stocks: one spanning two blocks with gaps, one too short for a trend, one empty, one at 0."""
    for name, values, start in [
        ("gappy", [200 - 7 * d if d % 3 else np.nan for d in range(20)], 55),  # days 55..74: blocks 0 and 1
        ("short", [10, 8, 6, 4], 0),  # four values: too few for a trend
        ("empty", [], 0),
        ("zero", [5, 4, 3, 2, 1, 0, 0], 3),
    ]:
        entity = db.create_entity("retailer", f"hand-{name}")
        tensor = db.create_tensor(entity.id, "inventory")
        if values:
            array = np.full((len(supply_chain.PRODUCTS), 1, len(values)), np.nan)
            array[0, 0] = values
            db.write_array(tensor.id, array, start)
    with db.session() as session:
        for window in (5, 9, 14, 30):
            found = engine.stock_out(session, horizon_days=30, window=window)
            assert found == _stock_out_one_by_one(session, 30, window)
            hand = {r.name: r for r in found if r.name.startswith("hand-")}
            # gappy: 3 of its last 5 days recorded (too few for a trend), 6 of its last 9; short never has 5
            assert set(hand) == ({"hand-zero"} if window < 9 else {"hand-gappy", "hand-zero"})
            assert hand["hand-zero"].risk == 1


def test_progress_is_told_every_site_once_in_steps_and_the_plan_holds_across_steps(
    db: Dust, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Made 5 sites at a time (the demo makes 500): the bar moves after each step, its increments add up to
    ``size``, and what is planted across steps (run-downs in the 1st and 3rd retailer steps) is found."""
    monkeypatch.setattr(supply_chain, "CHUNK", 5)
    told: list[int] = []
    with db.session() as session:
        made = supply_chain.generate(session, size=200, days=20, progress=told.append)
    plan = Plan.of(200, 20)
    assert sum(told) == 200 == plan.sites
    assert len(told) >= 200 // 5 and max(told) <= 5 and min(told) > 0
    found = db.supply_chain_bottlenecks(limit=1, horizon_days=14)
    assert (found.sites, found.relations) == (plan.sites, made["relations"])
    assert found.top[0].id == _id(db, "warehouse", 1)
    planted = {(f"retailer-{r + 1}", supply_chain.PRODUCTS[p]) for r, p in plan.declining()}
    assert {(db.get_entity(r.id).external_id, r.product) for r in found.stock_out} == planted
    assert {r // 5 for r, _ in plan.declining()} == {0, 2}


def test_below_32_sites_progress_still_adds_up_to_the_size_asked(db: Dust) -> None:
    """``dust demo supply-chain --size 5`` makes the 32 sites a network needs; its bar's total is 5."""
    told: list[int] = []
    with db.session() as session:
        made = supply_chain.generate(session, size=5, days=7, progress=told.append)
    assert sum(told) == 5
    assert made["suppliers"] + made["factories"] + made["warehouses"] + made["retailers"] == 32


@pytest.mark.parametrize(("size", "seed"), [(32, 0), (32, 7), (40, 3), (60, 0)])
def test_the_hub_tops_betweenness_at_the_smallest_sizes_whatever_the_seed(db: Dust, size: int, seed: int) -> None:
    """With two or three factories one of them could take most fastest routes if lead times were drawn per
    relation; a supplier's and a warehouse's lead times are the same on all their relations, so routes through
    the factories tie and the hub stays on top (drawn per relation, these seeds put a factory there)."""
    with db.session() as session:
        supply_chain.generate(session, size=size, days=7, seed=seed)
    top = db.supply_chain_bottlenecks(limit=2).top
    assert top[0].id == _id(db, "warehouse", 1) and top[0].betweenness > top[1].betweenness


def test_stock_on_hand_is_scored_from_the_demo_on(db: Dust) -> None:
    """As `dust demo` does: the on-hand rule comes after the history; after ten days of a retailer's stock written
    afterwards, a sudden loss is flagged as it comes."""
    with db.session() as session:
        supply_chain.generate(session, size=32, days=20)
        assert load_anomaly_rules(session, supply_chain.PACK) == 1
        assert load_anomaly_rules(session, supply_chain.PACK) == 0
    (rule,) = db.anomaly_rules().items
    assert (rule.schema_name, rule.label, rule.detector) == ("inventory", "on_hand", "mad")
    assert db.anomalies(schema="inventory").items == []  # the generated history was not scored value by value
    (tensor,) = db.entity_tensors(_id(db, "retailer", 1))
    steady = [100, 104, 97, 102, 99, 103, 98, 101, 100, 102]  # the detector's warm-up: a fresh series from here
    stock = [*steady, 5]  # then most of it is gone overnight
    cell = {"product": "SKU-001", "measure": "on_hand"}
    db.write_values(tensor.id, [{"time": 20 + i, **cell, "value": v} for i, v in enumerate(stock)])
    (loss,) = db.anomalies(tensor_id=tensor.id).items
    assert (loss.time_index, loss.value, loss.label) == (30, 5, "on_hand") and loss.score >= 0.5
