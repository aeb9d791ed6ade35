"""Pages as the browser asks for them (Dash's callback route), on SQLite and PostgreSQL: what each user is shown
follows the access policy, and a two-axis tensor gets its 3D view."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from dust.core.security import Role
from dust.engine import entities, relations, schemas, tensors, triggers, users
from dust.engine.entities import EntityCreate
from dust.engine.relations import RelationCreate
from dust.engine.schemas import SchemaCreate
from dust.engine.tensors import TensorCreate
from dust.engine.users import UserCreate

PASSWORD = "a long enough password"
HERE = "http://testserver"
INVENTORY = {
    "name": "stock",
    "axes": [{"name": "product", "labels": ["p1", "p2", "p3"]}, {"name": "measure", "labels": ["on_hand", "sold"]}],
    "time": {"unit": "day"},
}


@pytest.fixture
def world(app: FastAPI) -> dict[str, uuid.UUID]:
    """A doctor treating Ann, a stranger Bob, and a shop whose stock is product × measure × day; one user a role."""
    with app.state.sessions() as session, session.begin():
        doctor = entities.create(session, EntityCreate(kind="practitioner", name="Dr Who")).id
        ann = entities.create(session, EntityCreate(kind="patient", name="Ann Example")).id
        bob = entities.create(session, EntityCreate(kind="patient", name="Bob Example")).id
        relations.create(session, RelationCreate(source_id=doctor, target_id=ann, type="treats"))
        schemas.create(session, SchemaCreate.model_validate(INVENTORY))
        shop = entities.create(session, EntityCreate(kind="retailer", name="Corner Shop")).id
        stock = tensors.create(session, TensorCreate.model_validate({"entity_id": shop, "schema": "stock"})).id
        values = [
            {"time": t, "product": p, "measure": m, "value": 10.0 + t}
            for t in range(3)
            for p in ("p1", "p2", "p3")
            for m in ("on_hand", "sold")
        ]
        tensors.write_values(session, stock, values)
        for role, linked in (("admin", None), ("clinician", doctor), ("analyst", None)):
            users.create(
                session, UserCreate(username=f"ui-{role}", password=PASSWORD, role=Role(role), entity_id=linked)
            )
    return {"doctor": doctor, "ann": ann, "bob": bob, "shop": shop}


def _signed_in(app: FastAPI, role: str) -> TestClient:
    client = TestClient(app, follow_redirects=False)
    signed = client.post("/ui/login", data={"username": f"ui-{role}", "password": PASSWORD}, headers={"Origin": HERE})
    assert signed.status_code == 302
    return client


def _page(client: TestClient, path: str) -> Any:
    """The page's content, as the router callback answers a browser opening ``path`` (with its ?query)."""
    pathname, _, query = path.partition("?")
    body = {
        "output": "page.children",
        "outputs": {"id": "page", "property": "children"},
        "inputs": [
            {"id": "url", "property": "pathname", "value": pathname},
            {"id": "url", "property": "search", "value": f"?{query}" if query else ""},
        ],
        "changedPropIds": ["url.pathname"],
        "state": [],
    }
    answer = client.post("/ui/_dash-update-component", json=body, headers={"Origin": HERE})
    assert answer.status_code == 200, answer.text
    return answer.json()["response"]["page"]["children"]


def test_a_two_axis_tensor_gets_a_3d_view_with_a_time_slider(app: FastAPI, world: dict[str, uuid.UUID]) -> None:
    page = json.dumps(_page(_signed_in(app, "admin"), f"/ui/entity/{world['shop']}"))
    assert '"type": "surface"' in page
    assert '"type": "slider"' in page  # its time slider's id
    assert "stock (v1)" in page and "Corner Shop" in page


def test_a_clinician_sees_their_patient_and_not_another(app: FastAPI, world: dict[str, uuid.UUID]) -> None:
    clinician = _signed_in(app, "clinician")
    assert "Ann Example" in json.dumps(_page(clinician, f"/ui/entity/{world['ann']}"))
    refused = json.dumps(_page(clinician, f"/ui/entity/{world['bob']}"))
    assert f"entity {world['bob']} does not exist" in refused and "Bob Example" not in refused


def test_an_analyst_sees_entities_de_identified(app: FastAPI, world: dict[str, uuid.UUID]) -> None:
    page = json.dumps(_page(_signed_in(app, "analyst"), f"/ui/entity/{world['ann']}"))
    assert "Ann Example" not in page and "patient" in page


def test_trigger_rules_are_listed_for_admins_only(app: FastAPI, world: dict[str, uuid.UUID]) -> None:
    assert "Trigger rules" in json.dumps(_page(_signed_in(app, "admin"), "/ui/insights"))
    assert "Trigger rules" not in json.dumps(_page(_signed_in(app, "clinician"), "/ui/insights"))


def test_everyone_who_reads_a_chart_sees_its_rules_thresholds(app: FastAPI, world: dict[str, uuid.UUID]) -> None:
    vitals = {"name": "temps", "axes": [{"name": "metric", "labels": ["temperature", "spo2"]}], "time": {"unit": "day"}}
    alert = [{"action": "alert", "severity": "high"}]
    rules = {
        "fever": {"kind": "patient", "schema": "temps", "label": "temperature", "op": ">=", "value": 38.3},
        "low-sats": {"schema": "temps", "label": "spo2", "outside": [92, 100]},
        "shop-heat": {"kind": "retailer", "schema": "temps", "label": "temperature", "op": ">", "value": 30},
        "jump": {"schema": "temps", "label": "temperature", "change": {"op": ">", "value": 1.5, "steps": 1}},
    }
    with app.state.sessions() as session, session.begin():
        schemas.create(session, SchemaCreate.model_validate(vitals))
        temps = tensors.create(session, TensorCreate.model_validate({"entity_id": world["ann"], "schema": "temps"}))
        tensors.write_values(session, temps.id, [{"time": 0, "metric": "temperature", "value": 37.0}])
        for name, when in rules.items():
            document = {"name": name, "when": when, "then": alert}
            triggers.create(session, triggers.TriggerCreate.model_validate(document), allow_private=False)
    page = json.dumps(_page(_signed_in(app, "clinician"), f"/ui/entity/{world['ann']}"))
    assert "fever: >= 38.3" in page and "low-sats: < 92" in page and "low-sats: > 100" in page
    assert "shop-heat" not in page and "jump" not in page  # another kind's rule; a change has no line


def _bundle(client: TestClient, path: str) -> tuple[str, str]:
    """The plotly.js bundle the index page at ``path`` names (bundles.py): (which, its URL)."""
    index = client.get(path)
    assert index.status_code == 200, index.text
    tag = next(line for line in index.text.split("<meta") if 'name="dust-plotly"' in line)
    return tag.split('data-bundle="')[1].split('"')[0], tag.split('content="')[1].split('"')[0]


def test_only_a_page_with_a_3d_view_loads_the_full_plotly_bundle(app: FastAPI, world: dict[str, uuid.UUID]) -> None:
    admin = _signed_in(app, "admin")
    which, url = _bundle(admin, f"/ui/entity/{world['shop']}")
    assert which == "full" and "/_dash-component-suites/plotly/package_data/plotly.v" in url
    assert '"entity-3d"' in json.dumps(_page(admin, f"/ui/entity/{world['shop']}"))  # reloads a cartesian tab
    for path in (f"/ui/entity/{world['ann']}", "/ui/insights", "/ui/", "/ui/graph"):
        assert _bundle(admin, path)[0] == "cartesian", path
    assert '"entity-3d"' not in json.dumps(_page(admin, f"/ui/entity/{world['ann']}"))
    # a page the reader may not see names no bundle it would need: nothing about the entity leaks
    assert _bundle(_signed_in(app, "clinician"), f"/ui/entity/{world['shop']}")[0] == "cartesian"
    # both bundles are served, and kept a year by the browser (their URLs change with their content)
    for served in (url, _bundle(admin, "/ui/insights")[1]):
        answer = admin.get(served)
        assert answer.status_code == 200 and answer.text.startswith("/**\n* plotly.js"), served
        assert "max-age=31536000" in answer.headers["cache-control"]
    assert admin.get("/ui/assets/vendor/plotly-cartesian-4.1.1.min.js").headers["cache-control"].endswith("immutable")


def test_the_vendored_cartesian_bundle_is_the_plotly_js_of_the_installed_plotly() -> None:
    from plotly.offline import get_plotlyjs_version

    from dust.ui import bundles

    assert get_plotlyjs_version() == bundles.PLOTLY_VERSION  # update assets/vendor/ with plotly (npm, same version)
    head = (Path(bundles.__file__).parent / bundles.CARTESIAN).read_text()[:200]
    assert f"plotly.js (cartesian - minified) v{bundles.PLOTLY_VERSION}" in head
