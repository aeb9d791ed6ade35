"""/domains/supply-chain: the analyses over REST, under the caller's access."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dust.domains import supply_chain
from tests.api.conftest import API

BOTTLENECKS = f"{API}/domains/supply-chain/bottlenecks"
WHAT_IF = f"{API}/domains/supply-chain/what-if"


@pytest.fixture
def loaded(app: FastAPI) -> dict[str, str]:
    """The generated network (size 40, 30 days); external id -> id of every site."""
    with app.state.sessions() as session, session.begin():
        supply_chain.generate(session, size=40, days=30)
    from dust.storage.models import Entity

    with app.state.sessions() as session:
        return {e.external_id: str(e.id) for e in session.query(Entity) if e.external_id}


def test_bottlenecks_name_the_hub_the_cut_and_the_run_down_stocks(client: TestClient, loaded: dict[str, str]) -> None:
    response = client.get(BOTTLENECKS, params={"limit": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["top"]) == 3
    assert body["top"][0]["id"] == loaded["warehouse-1"] and body["top"][0]["kind"] == "warehouse"
    assert body["max_flow"] == pytest.approx(body["min_cut_capacity"])
    assert any(edge["target"]["id"] == loaded["warehouse-1"] for edge in body["min_cut"])
    plan = supply_chain.Plan.of(40, 30)
    planted = {(loaded[f"retailer-{r + 1}"], supply_chain.PRODUCTS[p]) for r, p in plan.declining()}
    assert {(risk["id"], risk["product"]) for risk in body["stock_out"]} == planted


def test_what_if_lists_the_retailers_that_starve_and_changes_nothing(
    client: TestClient, loaded: dict[str, str]
) -> None:
    before = client.get(BOTTLENECKS).json()
    response = client.post(WHAT_IF, json={"remove": [loaded["supplier-1"]]})
    assert response.status_code == 200, response.text
    body = response.json()
    plan = supply_chain.Plan.of(40, 30)
    region = {loaded[f"retailer-{r + 1}"] for r in range(plan.retailers) if plan.warehouse_of(r) == 1}
    assert {s["id"] for s in body["starving"]} == region
    assert all(s["products"] == ["SKU-001"] for s in body["starving"])
    assert body["removed"][0]["id"] == loaded["supplier-1"]
    assert client.get(BOTTLENECKS).json()["max_flow"] == before["max_flow"]  # a what-if removes nothing


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"remove": []}, 422),
        ({"remove": ["not-an-id"]}, 422),
        ({"remove": ["00000000-0000-4000-8000-000000000000"]}, 404),
        ({"remove": [], "extra": 1}, 422),
        ({}, 422),
    ],
)
def test_bad_what_if_requests_get_a_clear_4xx(client: TestClient, body: dict[str, object], status: int) -> None:
    response = client.post(WHAT_IF, json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("params", [{"limit": 0}, {"horizon_days": 0}, {"window": 2}, {"limit": "x"}])
def test_bad_bottleneck_parameters_are_422(client: TestClient, params: dict[str, object]) -> None:
    assert client.get(BOTTLENECKS, params=params).status_code == 422


def test_a_clinician_sees_only_the_graph_they_may_see(
    login_as: Callable[..., TestClient], client: TestClient, loaded: dict[str, str]
) -> None:
    """A clinician linked to no site sees no supply graph: nothing to rank, and the hub is not theirs to remove."""
    clinician = login_as("clinician", entity_id=loaded["warehouse-2"])
    body = clinician.get(BOTTLENECKS).json()
    assert body["max_flow"] == 0 and body["stock_out"] == []
    assert clinician.post(WHAT_IF, json={"remove": [loaded["warehouse-1"]]}).status_code == 404


def test_an_analyst_reads_the_analyses_with_the_names_the_kinds_make_public(
    login_as: Callable[..., TestClient], loaded: dict[str, str]
) -> None:
    analyst = login_as("analyst")
    body = analyst.get(BOTTLENECKS).json()
    assert body["top"][0]["id"] == loaded["warehouse-1"]
    assert body["top"][0]["name"].startswith("Warehouse 1 ")  # the pack makes site names public
