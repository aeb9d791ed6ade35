"""Alerts (dust.engine.alerts): listed, filtered and handled under the access policy, through the engine and the
embedded API. Rows are raised through the repository, as the firing code raises them."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session

from dust.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from dust.core.security import Role, pseudonym
from dust.embedded import Dust
from dust.engine import access, alerts, audit
from dust.engine.alerts import AlertUpdate
from dust.storage.models import Trigger
from dust.storage.repositories import alerts as repo
from tests.engine.conftest import principal

T0 = datetime(2026, 3, 1, tzinfo=UTC)


@dataclass
class World:
    """Doctor A treats patient PA, doctor B treats PB; ``db`` holds them."""

    db: Dust
    ids: dict[str, uuid.UUID]

    def __getitem__(self, name: str) -> uuid.UUID:
        return self.ids[name]

    def raise_(self, on: str, subject: str, **fields: Any) -> int:
        return self.raise_many([{"on": on, "subject": subject, **fields}])[0]

    def raise_many(self, specs: list[dict[str, Any]]) -> list[int]:
        rows = [_row(self[s.pop("on")], self[s.pop("subject")], **s) for s in specs]
        with self.db.session() as s:
            return repo.add(s, rows)


def _row(entity_id: uuid.UUID, subject_id: uuid.UUID, **fields: Any) -> dict[str, Any]:
    return {
        "entity_id": entity_id,
        "subject_id": subject_id,
        "trigger_id": None,
        "firing_id": None,
        "severity": "high",
        "message": "{entity.name}: temperature 39.5 (to {target.name})",
        "schema_name": None,
        "label": "temperature",
        "value": 39.5,
        "time_index": 3,
        "at": T0,
        **fields,
    }


@pytest.fixture
def world(db: Dust) -> World:
    ids = {
        "A": db.create_entity("doctor", "Dr A").id,
        "B": db.create_entity("doctor", "Dr B").id,
        "PA": db.create_patient("Pat A").id,
        "PB": db.create_patient("Pat B").id,
    }
    db.relate(ids["A"], ids["PA"], "treats")
    db.relate(ids["B"], ids["PB"], "treats")
    return World(db, ids)


@pytest.fixture
def as_(db: Dust) -> Iterator[Any]:
    """``with as_(who) as s``: a session acting for ``who``."""

    @contextmanager
    def acting(who: access.Principal) -> Iterator[Session]:
        with db.session() as s:
            access.act_as(s, who)
            yield s

    yield acting


def ids(page: alerts.AlertList) -> list[int]:
    return [a.id for a in page.items]


# --- the repository --------------------------------------------------------------------------------------


def test_add_returns_the_new_ids_in_the_order_of_the_rows(world: World) -> None:
    specs = [{"on": on, "subject": "PA", "message": f"alert {i}"} for i, on in enumerate(["PA", "A", "PA", "A"] * 50)]
    new = world.raise_many(specs)
    assert len(new) == len(set(new)) == 200
    with world.db.session() as s:
        assert [repo.get(s, i).message for i in new] == [f"alert {i}" for i in range(200)]  # type: ignore[union-attr]
    assert world.db.get_alert(new[0]).state == "open"
    assert repo.add(Session(), []) == []  # nothing to insert: no statement, no connection


# --- filters ---------------------------------------------------------------------------------------------


def test_each_filter_narrows_the_list(world: World) -> None:
    db = world.db
    with db.session() as s:
        rule = Trigger(name="fever", event="value", document={}, secret="x")
        s.add(rule)
        s.flush()
        rule_id = rule.id
    first = world.raise_("PA", "PA", severity="low", created_at=T0)
    on_a = world.raise_("A", "PA", severity="critical", trigger_id=rule_id, created_at=T0 + timedelta(days=1))
    on_pb = world.raise_("PB", "PB", severity="medium", created_at=T0 + timedelta(days=2))
    db.update_alert(first, "resolved")
    assert ids(db.alerts()) == [on_pb, on_a, first]
    assert ids(db.alerts(entity_id=world["PA"])) == [first]
    assert ids(db.alerts(subject_id=world["PA"])) == [on_a, first]
    assert ids(db.alerts(trigger_id=rule_id)) == [on_a]
    assert ids(db.alerts(severity="critical")) == [on_a]
    assert ids(db.alerts(severity="low, medium")) == [on_pb, first]
    assert ids(db.alerts(severity=["low", "critical"])) == [on_a, first]
    assert ids(db.alerts(min_severity="medium")) == [on_pb, on_a]
    assert ids(db.alerts(min_severity="medium", severity="low,medium")) == [on_pb]
    assert ids(db.alerts(state="open")) == [on_pb, on_a]
    assert ids(db.alerts(state="acknowledged,resolved")) == [first]
    assert ids(db.alerts(start=T0 + timedelta(hours=1))) == [on_pb, on_a]
    assert ids(db.alerts(end=T0 + timedelta(days=1))) == [on_a, first]
    assert ids(db.alerts(start=T0 + timedelta(days=1), end=T0 + timedelta(days=1))) == [on_a]


@pytest.mark.parametrize(
    ("query", "said"),
    [
        ({"severity": "urgent"}, "severity 'urgent' is not one of info, low, medium, high, critical"),
        ({"severity": "hihg"}, "did you mean 'high'?"),
        ({"state": "closed"}, "state 'closed' is not one of open, acknowledged, resolved"),
        ({"severity": [3]}, "severity must be one of info, low, medium, high, critical, a comma list"),
    ],
)
def test_an_unknown_severity_or_state_is_refused_saying_which_are_allowed(
    world: World, query: dict[str, Any], said: str
) -> None:
    with world.db.session() as s, pytest.raises(InvalidInput) as refused:
        alerts.list_alerts(s, **query)
    assert said in refused.value.detail


def test_min_severity_is_checked_too(world: World) -> None:
    with pytest.raises(InvalidInput) as refused:
        world.db.alerts(min_severity="severe")  # type: ignore[arg-type]
    assert "min_severity" in refused.value.detail and "critical" in refused.value.detail


def test_pages_run_newest_first_with_no_alert_twice_or_left_out(world: World) -> None:
    raised = world.raise_many([{"on": "PA", "subject": "PA", "message": f"#{i}"} for i in range(7)])
    seen, cursor, pages = [], None, 0
    while True:
        page = world.db.alerts(limit=3, cursor=cursor)
        seen += ids(page)
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == sorted(raised, reverse=True) and pages == 3


# --- who sees what ---------------------------------------------------------------------------------------


def test_a_clinician_sees_alerts_on_their_patients_and_their_own_entity_only(world: World, as_: Any) -> None:
    mine = [world.raise_("PA", "PA"), world.raise_("A", "PA")]
    theirs = [world.raise_("PB", "PB"), world.raise_("B", "PB")]
    alice = principal(Role.clinician, world["A"])
    with as_(alice) as s:
        page = alerts.list_alerts(s)
        assert ids(page) == sorted(mine, reverse=True)
        shown = {a.id: a for a in page.items}
        assert shown[mine[1]].message == "Pat A: temperature 39.5 (to Dr A)"
        assert shown[mine[1]].entity.model_dump() == {"id": world["A"], "kind": "doctor", "name": "Dr A"}
        assert shown[mine[1]].subject.model_dump() == {"id": world["PA"], "kind": "patient", "name": "Pat A"}
        for other in ("PB", "B"):
            with pytest.raises(NotFound):
                alerts.list_alerts(s, entity_id=world[other])
        with pytest.raises(NotFound):
            alerts.list_alerts(s, subject_id=world["PB"])
    for alert_id in theirs:
        for attempt in (
            lambda s, i=alert_id: alerts.get_alert(s, i),
            lambda s, i=alert_id: alerts.update_alert(s, i, AlertUpdate(state="resolved")),
        ):
            with as_(alice) as s, pytest.raises(NotFound) as hidden:
                attempt(s)
            assert hidden.value.detail == f"alert {alert_id} does not exist"  # as for an id never used
    assert {world.db.get_alert(i).state for i in theirs} == {"open"}


def test_a_subject_the_reader_may_not_see_is_named_neutrally(world: World, as_: Any) -> None:
    """An alert on doctor A fired by patient PB (reached over some other relation): A sees the alert, not PB."""
    alert_id = world.raise_("A", "PB")
    with as_(principal(Role.clinician, world["A"])) as s:
        shown = alerts.get_alert(s, alert_id)
    assert shown.message == "another entity: temperature 39.5 (to Dr A)"
    assert shown.subject.model_dump() == {"id": None, "kind": None, "name": "another entity"}


def test_an_analyst_reads_pseudonyms_in_messages_and_entities(world: World, as_: Any) -> None:
    alert_id = world.raise_("A", "PA")
    analyst = principal(Role.analyst, sensitive=("name",))
    with as_(analyst) as s:
        shown = alerts.get_alert(s, alert_id)
        (listed,) = alerts.list_alerts(s).items
    patient, doctor = pseudonym(analyst.secret, "patient", world["PA"]), pseudonym(analyst.secret, "doctor", world["A"])
    assert shown.message == listed.message == f"{patient}: temperature 39.5 (to {doctor})"
    assert "Pat A" not in shown.message and "Dr A" not in shown.message
    assert (shown.subject.id, shown.subject.name, shown.entity.name) == (world["PA"], patient, doctor)


def test_an_analyst_gets_no_alert_about_a_sensitive_schema(world: World, as_: Any) -> None:
    world.db.create_schema(
        {"name": "vitals", "axes": [{"name": "metric", "labels": ["temperature"]}], "sensitive": True}
    )
    hidden = world.raise_("PA", "PA", schema_name="vitals")
    shown = world.raise_("PA", "PA", schema_name=None)
    with as_(principal(Role.analyst)) as s:
        assert ids(alerts.list_alerts(s)) == [shown]
        with pytest.raises(Forbidden, match="sensitive"):
            alerts.get_alert(s, hidden)
    assert ids(world.db.alerts()) == [shown, hidden]


def test_a_deleted_subject_is_named_as_such_to_those_who_see_everything(world: World) -> None:
    alert_id = world.raise_("A", "PA")
    world.db.delete_entity(world["PA"])
    shown = world.db.get_alert(alert_id)
    assert shown.message == "a deleted entity: temperature 39.5 (to Dr A)"
    assert shown.subject.model_dump() == {"id": world["PA"], "kind": None, "name": "a deleted entity"}
    world.db.delete_entity(world["A"])  # the entity it is on: its alerts go with it
    with pytest.raises(NotFound):
        world.db.get_alert(alert_id)


def test_a_name_that_looks_like_a_placeholder_is_not_filled_in_again(world: World) -> None:
    world.db.update_entity(world["PA"], name="{target.name}")
    shown = world.db.get_alert(world.raise_("A", "PA"))
    assert shown.message == "{target.name}: temperature 39.5 (to Dr A)"


def test_an_unknown_or_impossible_id_is_not_found(world: World) -> None:
    for alert_id in (1, 2**31 - 1):
        with pytest.raises(NotFound, match=f"alert {alert_id} does not exist"):
            world.db.get_alert(alert_id)
    with pytest.raises(InvalidInput):
        world.db.get_alert(0)


# --- changing state --------------------------------------------------------------------------------------


def test_an_alert_is_acknowledged_then_resolved_by_whoever_may_write(world: World, as_: Any) -> None:
    alert_id = world.raise_("A", "PA")
    alice = principal(Role.clinician, world["A"])
    with as_(alice) as s:
        acked = alerts.update_alert(s, alert_id, AlertUpdate(state="acknowledged", note="calling the patient"))
    assert (acked.state, acked.note, acked.updated_by) == ("acknowledged", "calling the patient", "clinician")
    assert acked.updated_at > acked.created_at
    with as_(alice) as s:
        done = alerts.update_alert(s, alert_id, AlertUpdate(state="resolved"))
    assert (done.state, done.note) == ("resolved", "calling the patient")  # a step without a note keeps it


def test_open_may_go_straight_to_resolved(world: World) -> None:
    assert world.db.update_alert(world.raise_("PA", "PA"), "resolved").state == "resolved"


@pytest.mark.parametrize(
    ("path", "then", "said"),
    [
        (["resolved"], "open", "is resolved, which is final: it cannot become 'open' again"),
        (["resolved"], "acknowledged", "is resolved, which is final: it cannot become 'acknowledged' again"),
        (["acknowledged"], "open", "is acknowledged and cannot go back to 'open'; from acknowledged it may become: "),
    ],
)
def test_a_step_back_is_a_conflict_saying_what_is_allowed(world: World, path: list[str], then: str, said: str) -> None:
    alert_id = world.raise_("PA", "PA")
    for state in path:
        world.db.update_alert(alert_id, state)
    with pytest.raises(Conflict) as refused:
        world.db.update_alert(alert_id, then)
    assert said in refused.value.detail
    assert world.db.get_alert(alert_id).state == path[-1]


def test_the_same_state_again_changes_nothing(world: World) -> None:
    alert_id = world.raise_("PA", "PA")
    for state in ("acknowledged", "resolved"):
        before = world.db.update_alert(alert_id, state, note="seen")
        assert world.db.update_alert(alert_id, state) == before
        assert world.db.update_alert(alert_id, state, note="seen") == before


def test_a_note_alone_may_change_until_the_alert_is_resolved(world: World) -> None:
    alert_id = world.raise_("PA", "PA")
    world.db.update_alert(alert_id, "acknowledged", note="first")
    assert world.db.update_alert(alert_id, "acknowledged", note="second").note == "second"
    world.db.update_alert(alert_id, "resolved")
    with pytest.raises(Conflict, match="its note cannot change"):
        world.db.update_alert(alert_id, "resolved", note="third")


def test_an_unknown_state_or_a_bad_note_is_invalid_input(world: World) -> None:
    alert_id = world.raise_("PA", "PA")
    with pytest.raises(InvalidInput, match="state: Input should be 'open', 'acknowledged' or 'resolved'"):
        world.db.update_alert(alert_id, "closed")
    with pytest.raises(InvalidInput, match="note"):
        world.db.update_alert(alert_id, "acknowledged", note="x" * 1001)


@pytest.mark.parametrize("role", [Role.analyst, Role.viewer])
def test_readers_cannot_change_an_alert(world: World, as_: Any, role: Role) -> None:
    alert_id = world.raise_("A", "PA")
    with as_(principal(role, world["A"])) as s, pytest.raises(Forbidden, match="can read but not change"):
        alerts.update_alert(s, alert_id, AlertUpdate(state="acknowledged"))


def test_each_change_is_audited_with_the_entities_it_concerns(world: World, as_: Any) -> None:
    alert_id = world.raise_("A", "PA")
    with as_(principal(Role.clinician, world["A"])) as s:
        alerts.update_alert(s, alert_id, AlertUpdate(state="acknowledged"))
        alerts.update_alert(s, alert_id, AlertUpdate(state="acknowledged"))  # no change: a read
        alerts.list_alerts(s)
    with world.db.session() as s:
        entries = audit.search(s, entity_id=world["A"]).items
    seen = [(e.action, e.resource, e.resource_id, e.username) for e in entries if e.resource == "alert"]
    assert seen == [
        ("read", "alert", str(alert_id), "clinician"),
        ("read", "alert", str(alert_id), "clinician"),
        ("update", "alert", str(alert_id), "clinician"),
    ]
    with world.db.session() as s:
        on_patient = audit.search(s, entity_id=world["PA"]).items
    assert ("update", str(alert_id)) in [(e.action, e.resource_id) for e in on_patient if e.resource == "alert"]


def test_a_change_waits_for_one_in_progress_and_sees_its_state(world: World) -> None:
    """Two people handle the same alert at once: the second change waits for the first to commit and is judged
    against the state it left (resolved: final), never against the one it read before."""
    alert_id = world.raise_("PA", "PA")
    outcome: list[object] = []

    def acknowledge() -> None:
        try:
            outcome.append(world.db.update_alert(alert_id, "acknowledged").state)
        except Conflict as refused:
            outcome.append(refused)

    with world.db.session() as s:
        alerts.update_alert(s, alert_id, AlertUpdate(state="resolved"))
        other = threading.Thread(target=acknowledge)
        other.start()
        other.join(0.3)
        assert other.is_alive()  # waiting for this transaction
    other.join(10)
    (refused,) = outcome
    assert isinstance(refused, Conflict) and "is resolved, which is final" in refused.detail
    assert world.db.get_alert(alert_id).state == "resolved"


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # SQLite serialises writers: never there
def test_an_alert_committed_behind_a_cursor_comes_on_the_next_page(world: World) -> None:
    """A write raises an alert and commits only after a page has been read past its id (newer alerts committed
    first); the next page returns it first."""
    old = world.raise_many([{"on": "PA", "subject": "PA"} for _ in range(2)])
    with world.db.session() as late:
        (late_id,) = repo.add(late, [_row(world["PA"], world["PA"])])
        new = world.raise_many([{"on": "PA", "subject": "PA"} for _ in range(2)])
        first = world.db.alerts(limit=3)
    assert ids(first) == [new[1], new[0], old[1]]  # the late one is not committed yet
    rest = world.db.alerts(limit=3, cursor=first.next_cursor)
    assert ids(rest) == [late_id, old[0]] and rest.next_cursor is None
