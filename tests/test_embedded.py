"""The embedded API (``dust.open()``) on every backend: what REST does, by method, with DUST's own errors."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from dust import Conflict, Dust, DustError, InvalidInput, NotFound
from dust.engine.relations import MAX_TYPES

API = "/api/v1"
VITALS = {
    "name": "vitals",
    "axes": [{"name": "metric", "labels": ["hr", "temp"], "units": {"hr": "/min"}, "ranges": {"hr": [0, 300]}}],
    "time": {"unit": "day", "step": 1, "origin": "2026-01-01T00:00:00Z"},
}
WITH_SPO2 = {"axes": [{"name": "metric", "labels": ["hr", "temp", "spo2"], "ranges": {"hr": [0, 250]}}]}


def jane_with_vitals(db: Dust) -> tuple[uuid.UUID, uuid.UUID]:
    db.create_schema(VITALS)
    jane = db.create_entity("patient", "Jane Doe").id
    return jane, db.create_tensor(jane, "vitals").id


# --- schemas ------------------------------------------------------------------------------------------------


def test_update_schema_publishes_a_version_that_get_schema_returns(db: Dust) -> None:
    db.create_schema(VITALS)
    published = db.update_schema("vitals", WITH_SPO2)
    assert (published.version, published.axes[0].labels) == (2, ["hr", "temp", "spo2"])
    assert published.time.unit == "day" and published.axes[0].ranges == {"hr": (0, 250)}
    latest = db.get_schema("vitals")
    assert (latest.version, latest.axes[0].labels) == (2, ["hr", "temp", "spo2"])
    assert db.get_schema("vitals", version=1).axes[0].labels == ["hr", "temp"]
    assert [(s.name, s.version) for s in db.schemas()] == [("vitals", 2)]
    with pytest.raises(NotFound, match="schema 'vitals' has no version 3"):
        db.get_schema("vitals", 3)
    with pytest.raises(NotFound, match="did you mean 'vitals'"):
        db.get_schema("vitalz")


def test_schema_conflicts_say_what_to_call_in_either_interface(db: Dust) -> None:
    db.create_schema(VITALS)
    with pytest.raises(Conflict) as taken:
        db.create_schema(VITALS)
    assert "PUT /schemas/vitals" in taken.value.detail and "update_schema" in taken.value.detail
    with pytest.raises(Conflict, match="may only append labels"):
        db.update_schema("vitals", {"axes": [{"name": "metric", "labels": ["temp", "hr"]}]})
    with pytest.raises(Conflict, match="time unit and step"):
        db.update_schema("vitals", {**WITH_SPO2, "time": {"unit": "hour"}})
    assert db.get_schema("vitals").version == 1  # a refused version changes nothing


def test_delete_schema_waits_until_no_tensor_uses_it(db: Dust) -> None:
    _, tensor = jane_with_vitals(db)
    db.update_schema("vitals", WITH_SPO2)
    with pytest.raises(Conflict, match="used by 1 tensor"):
        db.delete_schema("vitals")
    db.delete_tensor(tensor)
    db.delete_schema("vitals")
    with pytest.raises(NotFound):
        db.get_schema("vitals", 1)
    assert db.schemas() == []


# --- tensors ------------------------------------------------------------------------------------------------


def test_a_moved_tensor_reads_new_labels_as_nan_and_keeps_its_values(db: Dust) -> None:
    jane, tensor = jane_with_vitals(db)
    db.write_values(tensor, [{"time": 0, "metric": "hr", "value": 72}, {"time": 1, "metric": "temp", "value": 37}])
    db.update_schema("vitals", WITH_SPO2)
    assert db.get_tensor(tensor).schema_version == 1  # tensors stay on their version until moved
    moved = db.update_tensor(tensor, schema_version=2)
    assert (moved.schema_version, moved.axes[0].labels, moved.shape) == (2, ["hr", "temp", "spo2"], [3, 2])
    view = db.read_tensor(tensor, time=0)
    assert view.coords["metric"] == ["hr", "temp", "spo2"]
    assert view.values[0] == 72 and math.isnan(view.values[1]) and math.isnan(view.values[2])
    db.write_values(tensor, [{"time": 1, "metric": "spo2", "value": 97}])  # the new label takes values
    assert [t.id for t in db.entity_tensors(jane)] == [tensor]
    assert db.entity_tensors(jane)[0].schema_version == 2
    with pytest.raises(Conflict, match="version 2"):
        db.update_tensor(tensor, 1)
    with pytest.raises(NotFound, match="no version 9"):
        db.update_tensor(tensor, 9)


def test_get_tensor_and_entity_tensors_are_metadata(db: Dust) -> None:
    jane, tensor = jane_with_vitals(db)
    meta = db.get_tensor(tensor)
    assert (meta.id, meta.entity_id, meta.schema_name, meta.shape) == (tensor, jane, "vitals", [2, 0])
    assert db.entity_tensors(db.create_entity("patient", "John").id) == []
    with pytest.raises(NotFound):
        db.get_tensor(uuid.uuid4())
    with pytest.raises(NotFound):
        db.entity_tensors(uuid.uuid4())


def test_tensor_history_holds_replaced_values_between_start_and_end(db: Dust) -> None:
    _, tensor = jane_with_vitals(db)
    db.write_values(tensor, [{"time": t, "metric": "hr", "value": 60 + t} for t in range(4)])
    db.write_values(tensor, [{"time": 1, "metric": "hr", "value": 90}, {"time": 3, "metric": "hr", "value": 93}])
    history = db.tensor_history(tensor).items
    assert [(h.time, h.labels, h.value, h.new_value) for h in history] == [
        (1, {"metric": "hr"}, 61, 90),
        (3, {"metric": "hr"}, 63, 93),
    ]
    assert history[0].written_at <= history[0].replaced_at
    assert [h.time for h in db.tensor_history(tensor, start=1, end=1).items] == [1]  # inclusive at both ends
    assert [h.time for h in db.tensor_history(tensor, start="2026-01-03T00:00:00Z").items] == [3]
    assert db.tensor_history(tensor, end=0).items == []


# --- relations and the master tensor ------------------------------------------------------------------------


def care(db: Dust) -> dict[str, uuid.UUID]:
    ids = {name: db.create_entity(kind, name).id for name, kind in [("dr", "doctor"), ("jane", "patient")]}
    ids["john"] = db.create_entity("patient", "John").id
    ids["ward"] = db.create_entity("ward", "Ward B").id
    return ids


def test_relations_are_listed_read_and_deleted(db: Dust) -> None:
    ids = care(db)
    treats = db.relate(ids["dr"], ids["jane"], "treats", 0.9, attributes={"since": 2024})
    db.relate(ids["dr"], ids["john"], "treats", 0.4)
    db.relate(ids["dr"], ids["ward"], "works_at")
    assert [r.id for r in db.relations(entity_id=ids["jane"]).items] == [treats.id]
    assert len(db.relations(type="treats,works_at").items) == 3
    assert len(db.relations(type=["works_at"]).items) == 1
    first = db.relations(limit=2)
    assert len(first.items) == 2 and first.next_cursor is not None
    rest = db.relations(limit=2, cursor=first.next_cursor)
    assert len(rest.items) == 1 and rest.next_cursor is None
    detail = db.get_relation(treats.id)
    assert (detail.weight, detail.attributes, [h.weight for h in detail.history]) == (0.9, {"since": 2024}, [0.9])
    with pytest.raises(Conflict) as exists:
        db.relate(ids["dr"], ids["jane"], "treats")
    assert str(treats.id) in exists.value.detail and "update_relation" in exists.value.detail
    db.delete_relation(treats.id)
    with pytest.raises(NotFound):
        db.get_relation(treats.id)
    with pytest.raises(InvalidInput, match=f"at most {MAX_TYPES} relation types"):
        db.relations(type=[f"t{i}" for i in range(MAX_TYPES + 1)])


def test_update_relation_weight_shows_in_history_and_query_master(db: Dust) -> None:
    ids = care(db)
    made = db.relate(ids["dr"], ids["jane"], "treats", 0.5, attributes={"ward": "B", "bed": 3})
    before = datetime.now(UTC)
    changed = db.update_relation(made.id, weight=0.8, attributes={"bed": None, "note": "x"})
    assert [h.weight for h in changed.history] == [0.5, 0.8]
    assert changed.attributes == {"ward": "B", "note": "x"}
    assert [h.weight for h in db.get_relation(made.id).history] == [0.5, 0.8]
    assert [e.weight for e in db.query_master(ids["jane"]).edges] == [0.8]
    assert [e.weight for e in db.query_master(ids["jane"], at=before).edges] == [0.5]  # the weight it had then
    assert db.query_master(ids["jane"], min_weight=0.9).edges == []
    ended = db.update_relation(made.id, valid_to="2020-01-01T00:00:00Z", valid_from=None)
    assert ended.valid_to == datetime(2020, 1, 1, tzinfo=UTC) and [h.weight for h in ended.history] == [0.5, 0.8]
    assert db.query_master(ids["jane"]).edges == []  # no longer valid
    with pytest.raises(InvalidInput, match="weight cannot be null"):
        db.update_relation(made.id, weight=None)
    with pytest.raises(InvalidInput, match=r"^bogus: Extra inputs are not permitted"):
        db.update_relation(made.id, bogus=1)


def test_query_master_and_master_tensor_take_rests_options(db: Dust) -> None:
    ids = care(db)
    db.relate(ids["dr"], ids["jane"], "treats", 0.9)
    db.relate(ids["dr"], ids["ward"], "works_at")
    db.relate(ids["john"], ids["ward"], "admitted_to", 0.2)
    around = db.query_master(ids["jane"], direction="in", depth=2)
    assert {n.id: n.depth for n in around.nodes} == {ids["jane"]: 0, ids["dr"]: 1}
    two = db.query_master(ids["jane"], depth=3)
    assert {n.id: n.depth for n in two.nodes} == {ids["jane"]: 0, ids["dr"]: 1, ids["ward"]: 2, ids["john"]: 3}
    only = db.query_master(ids["ward"], type="works_at,treats", depth=2)
    assert {n.id for n in only.nodes} == {ids["ward"], ids["dr"], ids["jane"]}
    assert db.query_master(ids["jane"], direction="out").edges == []
    tensor = db.master_tensor(type="treats,works_at")
    assert tensor.types == ["treats", "works_at"] and tensor.shape == [2, 3, 3] and sorted(tensor.values) == [0.9, 1]
    assert db.master_tensor(type=["admitted_to"]).values == [0.2]
    assert db.master_tensor(at="2000-01-01T00:00:00Z").types == ["admitted_to", "treats", "works_at"]  # type: ignore[arg-type]


def test_query_master_and_master_tensor_answer_as_rest_does(client: TestClient, db: Dust) -> None:
    ids = care(db)
    db.relate(ids["dr"], ids["jane"], "treats", 0.9)
    db.relate(ids["dr"], ids["ward"], "works_at", valid_from="2025-01-01T00:00:00Z")
    queries: list[dict[str, Any]] = [
        {},
        {"direction": "in", "depth": 2},
        {"type": "treats", "min_weight": 0.5, "depth": 3},
        {"at": "2024-06-01T00:00:00Z", "depth": 2},
    ]
    for query in queries:
        rest = client.get(f"{API}/query_master", params={"entity_id": str(ids["jane"]), **query})
        assert rest.status_code == 200, rest.text
        assert db.query_master(ids["jane"], **query).model_dump(mode="json") == rest.json(), query
    for query in [{}, {"type": "works_at"}, {"at": "2024-06-01T00:00:00Z"}]:
        rest = client.get(f"{API}/query_master/tensor", params=query)
        assert db.master_tensor(**query).model_dump(mode="json") == rest.json(), query  # type: ignore[arg-type]
    rest_relations = client.get(f"{API}/relations", params={"entity_id": str(ids["dr"]), "type": "treats"}).json()
    assert db.relations(entity_id=ids["dr"], type="treats").model_dump(mode="json") == rest_relations


# --- kinds, patients, users, audit --------------------------------------------------------------------------


def test_kinds_set_get_and_list(db: Dust) -> None:
    with pytest.raises(NotFound, match="default sensitive fields apply"):
        db.get_kind("doctor")
    made = db.set_kind("doctor", description="A clinician", public=["name"], sensitive=["licence"])
    assert (made.kind, made.public, made.sensitive) == ("doctor", ["name"], ["licence"])
    assert db.get_kind("doctor") == made
    replaced = db.set_kind("doctor")  # PUT replaces the whole policy
    assert (replaced.description, replaced.public, replaced.sensitive) == (None, [], [])
    assert [k.kind for k in db.kinds()] == ["doctor"]
    with pytest.raises(InvalidInput, match="both sensitive and public"):
        db.set_kind("doctor", sensitive=["name"], public=["name"])
    with pytest.raises(InvalidInput, match=r"^kind: String should match pattern"):
        db.get_kind("Doctor")


def test_patients_are_entities_of_kind_patient(db: Dust) -> None:
    jane = db.create_patient("Jane Doe", external_id="MRN-1", attributes={"gender": "F"})
    doctor = db.create_entity("doctor", "Dr A")
    assert jane.kind == "patient" and db.get_patient(jane.id) == jane
    assert [p.id for p in db.patients().items] == [jane.id]
    assert [p.id for p in db.patients(q="jnae doe").items] == [jane.id]
    assert [p.id for p in db.patients(gender="F").items] == [jane.id] and db.patients(gender="M").items == []
    with pytest.raises(NotFound):
        db.get_patient(doctor.id)
    with pytest.raises(NotFound):
        db.update_patient(doctor.id, name="x")
    with pytest.raises(NotFound):
        db.delete_patient(doctor.id)
    assert db.update_patient(jane.id, name="Jane Roe").name == "Jane Roe"
    db.delete_patient(jane.id)
    with pytest.raises(NotFound):
        db.get_entity(jane.id)


def test_users_are_administered_in_process(db: Dust) -> None:
    dr = db.create_entity("doctor", "Dr A")
    made = db.create_user("dr.a", "clinician", password="a long enough password", entity_id=dr.id)
    assert (made.username, made.role, made.entity_id, made.disabled) == ("dr.a", "clinician", dr.id, False)
    service = db.create_user("etl-bot", "member")  # no password: API keys only
    assert [u.username for u in db.users()] == ["dr.a", "etl-bot"]
    assert db.get_user(service.id) == service
    changed = db.update_user(made.id, role="viewer", disabled=True, entity_id=None)
    assert (changed.role, changed.disabled, changed.entity_id) == ("viewer", True, None)
    with pytest.raises(Conflict, match=r"'dr\.a'"):
        db.create_user("dr.a", "viewer")
    with pytest.raises(InvalidInput, match=r"^role: Input should be"):
        db.create_user("someone", "overlord")
    with pytest.raises(InvalidInput, match=r"^password: String should have at least 10 characters"):
        db.update_user(made.id, password="short")
    with pytest.raises(NotFound):
        db.get_user(uuid.uuid4())


def test_audit_reads_what_rest_requests_did(client: TestClient, db: Dust) -> None:
    jane = db.create_entity("patient", "Jane Doe")  # in process: the process itself, not recorded
    assert db.audit().items == []
    assert client.get(f"{API}/entities/{jane.id}").status_code == 200
    found = db.audit(entity_id=jane.id, user="admin", start=datetime.now(UTC) - timedelta(hours=1))
    assert [(e.action, e.resource, e.username) for e in found.items] == [("read", "entity", "admin")]
    assert db.audit(user="nobody").items == []
    assert db.audit(end=datetime(2000, 1, 1, tzinfo=UTC)).items == []
    with pytest.raises(InvalidInput, match=r"^limit: Input should be less than or equal to 1000"):
        db.audit(limit=1001)


# --- errors -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "says"),
    [
        (lambda db: db.create_entity("patient", ""), "name: must not be blank"),
        (lambda db: db.create_schema({"name": "s", "axes": []}), "axes: List should have at least 1 item"),
        (lambda db: db.create_schema({"name": "s", "axes": [{"name": "time", "labels": ["a"]}]}), "axes.0.name: "),
        (lambda db: db.query_master("not-a-uuid"), "entity_id: Input should be a valid UUID"),
        (lambda db: db.query_master(uuid.uuid4(), depth=4), "depth: Input should be less than or equal to 3"),
        (lambda db: db.query_master(uuid.uuid4(), None, "sideways"), "direction: Input should be 'out', 'in' or"),
        (lambda db: db.master_tensor(at=12), "at: "),
        (lambda db: db.relations(limit=0), "limit: Input should be greater than or equal to 1"),
        (lambda db: db.get_schema("vitals", 0), "version: Input should be greater than or equal to 1"),
        (lambda db: db.create_entities([{"kind": "a", "name": "x"}, {"kind": "a"}]), "items.1.name: Field required"),
        (lambda db: db.relate(uuid.uuid4(), uuid.uuid4(), "treats", weight="1"), "weight: "),
        (lambda db: db.get_entity(), "entity_id: Missing required argument"),
    ],
)
def test_bad_input_raises_invalid_input_saying_where_and_what(db: Dust, call: Any, says: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        call(db)
    assert isinstance(caught.value, DustError)
    assert caught.value.detail.startswith(says), caught.value.detail
    assert caught.value.errors and caught.value.errors[0]["msg"]


def test_a_422_and_its_python_error_say_the_same(client: TestClient, db: Dust) -> None:
    rest = client.post(f"{API}/entities", json={"kind": "patient", "name": " ", "attributes": {"a\tb": 1}})
    with pytest.raises(InvalidInput) as python:
        db.create_entity("patient", " ", attributes={"a\tb": 1})
    assert rest.status_code == 422
    assert rest.json()["detail"] == "body." + python.value.detail
    assert [e["msg"] for e in rest.json()["errors"]] == [e["msg"] for e in python.value.errors or []]
    rest = client.get(f"{API}/query_master", params={"entity_id": str(uuid.uuid4()), "depth": 9})
    with pytest.raises(InvalidInput) as python:
        db.query_master(uuid.uuid4(), depth=9)
    assert rest.json()["detail"] == "query." + python.value.detail


def test_ids_may_be_given_as_text(db: Dust) -> None:
    _, tensor = jane_with_vitals(db)
    assert db.get_tensor(str(tensor)).id == tensor  # type: ignore[arg-type]
    assert db.write_array(tensor, np.array([[70.0], [np.nan]])).written == 1
