"""The multivariate and relational detectors scoring values as they are written (dust.engine.anomaly_joint), by
rule, through the embedded API, on both backends."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select

from dust.anomalies.multivariate import Multivariate
from dust.core.errors import InvalidInput
from dust.core.security import Role
from dust.embedded import Dust
from dust.engine import access, anomalies, anomaly_joint, tensors
from dust.storage.models import AnomalyState
from tests.anomalies.test_multivariate import NAMES, vitals
from tests.engine.conftest import principal
from tests.engine.test_anomalies import ON_THE_DAY, VITALS, WARD, joint

SETTINGS = {"window": 30, "warmup": 10}  # a window that fills up: steps leave it as the test goes on
Flag = tuple[int, str, float, float, str | None]


@pytest.fixture
def tensor(db: Dust) -> uuid.UUID:
    db.create_schema(VITALS)
    patient = db.create_patient("Jane Doe")
    return db.create_tensor(patient.id, "vitals", origin="2026-01-01T00:00:00Z").id


def flags(db: Dust, detector: str = "multivariate") -> list[Flag]:
    found = db.anomalies(limit=500).items
    return sorted((a.time_index, a.label, a.value, a.score, a.reason) for a in found if a.detector == detector)


def steps(values: list[dict[str, Any]], first: int, last: int) -> list[dict[str, Any]]:
    return [v for v in values if first <= v["time"] < last]


def window_state(db: Dust) -> tuple[dict[str, Any], int]:
    with db.session() as s:
        (row,) = s.scalars(select(AnomalyState).where(AnomalyState.cell == anomaly_joint.WHOLE_STEP))
        assert (row.detector, row.label) == ("multivariate", "*")
        return row.state, row.last_time


# --- multivariate -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 7, 80])
def test_a_joint_anomaly_is_flagged_as_it_is_written(db: Dust, tensor: uuid.UUID, batch: int) -> None:
    db.put_anomaly_rule("vitals", "*", "multivariate")
    values = joint()
    for first in range(0, 80, batch):
        db.write_values(tensor, steps(values, first, first + batch))
    ((t, label, value, score, reason),) = flags(db)
    assert t == 60 and score >= 0.5 and reason is not None
    assert f"{label} {value:.4g}" in reason
    assert "heart_rate 86" in reason and "temperature 36.2" in reason
    assert reason.endswith(")") and "together are unusual for Jane Doe (distance" in reason


def as_written(db: Dust, tensor: uuid.UUID, values: list[dict[str, Any]], batch: int) -> list[Flag]:
    for first in range(0, 80, batch):
        db.write_values(tensor, steps(values, first, first + batch))
    return flags(db)


@pytest.mark.parametrize("batch", [1, 13])
def test_as_written_is_as_a_scan_of_the_same_history(db: Dust, tensor: uuid.UUID, batch: int) -> None:
    """Low threshold: many steps flagged, each with the score the scan gives it, to the last bit."""
    db.put_anomaly_rule("vitals", "*", "multivariate", SETTINGS, threshold=0.02)
    streamed = as_written(db, tensor, joint(), batch)
    result = db.scan_anomalies(detector="multivariate", tensor_id=tensor, settings=SETTINGS, threshold=0.02)
    assert (result.scored, result.flagged) == (80, len(streamed))
    assert flags(db) == streamed
    assert len(streamed) > 10 and 60 in [t for t, *_ in streamed]


def test_labels_of_a_step_written_apart_are_judged_together(db: Dust, tensor: uuid.UUID) -> None:
    """A monitor sends the heart rate, then the temperature: the step is judged again once the second comes, from
    the window as it was before the step, also once the window is full."""
    db.put_anomaly_rule("vitals", "*", "multivariate", SETTINGS, threshold=0.02)
    for value in joint():
        db.write_values(tensor, [value])
    streamed = flags(db)
    db.scan_anomalies(detector="multivariate", tensor_id=tensor, settings=SETTINGS, threshold=0.02)
    assert flags(db) == streamed
    assert 60 in [t for t, *_ in streamed]


def test_scoring_carries_on_from_the_stored_window_after_a_restart(db: Dust, tensor: uuid.UUID) -> None:
    db.put_anomaly_rule("vitals", "*", "multivariate", SETTINGS)
    values = joint()
    db.write_values(tensor, steps(values, 0, 60))
    db.close()
    with Dust(str(db.engine.url.render_as_string(hide_password=False)), migrate=False) as again:
        again.write_values(tensor, steps(values, 60, 61))  # the joint anomaly, first after the restart
        again.write_values(tensor, steps(values, 61, 80))
        assert [t for t, *_ in flags(again)] == [60]
        state, last = window_state(again)
    reference = Multivariate(NAMES, **SETTINGS)
    for row in vitals():
        reference.update(row)
    assert (state["window"], last) == (reference.state(), 79)


def test_gaps_and_a_constant_label_neither_crash_nor_flag_everything(db: Dust, tensor: uuid.UUID) -> None:
    db.put_anomaly_rule("vitals", "*", "multivariate", SETTINGS)
    heart_rate = vitals()[:, 0]
    cells = [{"time": t, "metric": "heart_rate", "value": float(v)} for t, v in enumerate(heart_rate) if t % 5]
    cells += [{"time": t, "metric": "temperature", "value": 37.0} for t in range(0, 80, 2)]  # constant, every other
    for first in range(0, 80, 9):
        db.write_values(tensor, steps(sorted(cells, key=lambda c: c["time"]), first, first + 9))
    assert len(flags(db)) <= 2


def test_a_constant_tensor_flags_nothing(db: Dust, tensor: uuid.UUID) -> None:
    db.put_anomaly_rule("vitals", "*", "multivariate")
    for first in range(0, 60, 10):
        db.write_values(
            tensor, [{"time": t, "metric": m, "value": 1.0} for t in range(first, first + 10) for m in NAMES]
        )
    assert flags(db) == []


def test_a_backfill_is_left_to_a_scan(db: Dust, tensor: uuid.UUID) -> None:
    db.put_anomaly_rule("vitals", "*", "multivariate")
    values = joint()
    planted = steps(values, 60, 61)
    db.write_values(tensor, [v for v in values if v["time"] != 60])
    before = window_state(db)
    db.write_values(tensor, planted)  # before the last step judged: not judged, the window as it was
    assert flags(db) == [] and window_state(db) == before
    db.scan_anomalies(detector="multivariate", tensor_id=tensor)
    assert [t for t, *_ in flags(db)] == [60]


def test_new_settings_start_afresh_and_other_rules_carry_on(db: Dust, tensor: uuid.UUID) -> None:
    db.put_anomaly_rule("vitals", "*", "multivariate")
    db.put_anomaly_rule("vitals", "heart_rate", "mad")
    values = joint()
    db.write_values(tensor, steps(values, 0, 50))
    db.put_anomaly_rule("vitals", "*", "multivariate", {"warmup": 15})  # the window goes: 10 steps before 60
    db.write_values(tensor, steps(values, 50, 80))
    assert flags(db) == [] and window_state(db)[0]["window"]["past"][0] == [values[100]["value"], values[101]["value"]]


def test_deleting_the_rule_drops_the_windows_and_keeps_what_was_flagged(db: Dust, tensor: uuid.UUID) -> None:
    db.put_anomaly_rule("vitals", "*", "multivariate")
    db.write_values(tensor, joint())
    db.delete_anomaly_rule("vitals", "*")
    with db.session() as s:
        assert list(s.scalars(select(AnomalyState))) == []
    assert [t for t, *_ in flags(db)] == [60]


def test_a_tensor_moved_to_a_version_with_more_labels_keeps_its_window(db: Dust, tensor: uuid.UUID) -> None:
    """The window's columns go by name: the new label is not recorded in the steps before the move, and the
    steps after it are judged on the labels the window has with them, as a scan of the whole history is."""
    db.put_anomaly_rule("vitals", "*", "multivariate")
    values = joint()
    db.write_values(tensor, steps(values, 0, 40))
    db.update_schema("vitals", {"axes": [{"name": "metric", "labels": [*NAMES, "spo2"]}]})
    db.update_tensor(tensor, 2)
    spo2 = [{"time": t, "metric": "spo2", "value": 97.0 + (t % 3) / 2} for t in range(40, 80)]
    db.write_values(tensor, steps(values, 40, 80) + spo2)
    streamed = flags(db)
    assert [t for t, *_ in streamed] == [60]
    assert window_state(db)[0]["window"]["names"] == [*NAMES, "spo2"]
    db.scan_anomalies(detector="multivariate", tensor_id=tensor)
    assert flags(db) == streamed


# --- relational -------------------------------------------------------------------------------------------


TREATS = {"relation": "treats", "via": True}


@pytest.fixture
def practice(db: Dust) -> dict[str, uuid.UUID]:
    """Dr D treats P1..P5, Dr E Q1..Q3; each has a tensor of ``ward`` (P5's begins two days later), none yet written."""
    db.create_schema(WARD)
    ids: dict[str, uuid.UUID] = {}
    for doctor in ("D", "E"):
        ids[doctor] = db.create_entity("doctor", f"Dr {doctor}").id
    for name in ("P1", "P2", "P3", "P4", "P5", "Q1", "Q2", "Q3"):
        patient = db.create_patient(name).id
        db.relate(ids["D" if name.startswith("P") else "E"], patient, "treats")
        origin = "2026-01-03T00:00:00Z" if name == "P5" else "2026-01-01T00:00:00Z"
        ids[name] = db.create_tensor(patient, "ward", origin=origin).id
        ids[f"{name} patient"] = patient
    return ids


def temperature(db: Dust, ids: dict[str, uuid.UUID], name: str, value: float) -> None:
    """``name``'s temperature on 3 January."""
    db.write_values(ids[name], [{"time": 0 if name == "P5" else 2, "metric": "temperature", "value": value}])


USUAL = {"P1": 37.0, "P2": 37.2, "P3": 36.9, "P4": 37.1, "Q1": 37.0, "Q2": 37.1}


def test_a_value_far_from_its_cohort_is_flagged_as_it_is_written(db: Dust, practice: dict[str, uuid.UUID]) -> None:
    db.put_anomaly_rule("ward", "temperature", "relational", TREATS)
    for name, value in USUAL.items():
        temperature(db, practice, name, value)
    temperature(db, practice, "P5", 39.8)
    temperature(db, practice, "Q3", 41.0)  # two fellow patients: not judged
    streamed = flags(db, "relational")
    ((t, label, value, score, reason),) = streamed
    assert (t, label, value) == (0, "temperature", 39.8) and score >= 0.5 and reason is not None
    assert reason.startswith("temperature 39.8 is ")
    assert reason.endswith("MADs above the 4 other patients related by treats to the same entities as P5")
    result = db.scan_anomalies("temperature", schema="ward", start=ON_THE_DAY, detector="relational", **TREATS)
    assert flags(db, "relational") == streamed and result.flagged == 1  # the scan's score and reason


def test_no_look_ahead_a_value_is_judged_by_what_its_cohort_has_when_it_is_written(
    db: Dust, practice: dict[str, uuid.UUID]
) -> None:
    db.put_anomaly_rule("ward", "temperature", "relational", TREATS)
    temperature(db, practice, "P5", 39.8)  # before the others: nothing to compare with
    for name, value in USUAL.items():
        temperature(db, practice, name, value)  # each usual against those before it
    assert flags(db, "relational") == []
    temperature(db, practice, "P5", 39.8)  # written again: judged again, now against four
    assert [v for _, _, v, *_ in flags(db, "relational")] == [39.8]
    temperature(db, practice, "P5", 37.05)  # corrected: its flag goes
    assert flags(db, "relational") == []


def test_the_neighbours_read_are_capped(
    db: Dust, practice: dict[str, uuid.UUID], monkeypatch: pytest.MonkeyPatch
) -> None:
    db.put_anomaly_rule("ward", "temperature", "relational", TREATS)
    for name, value in USUAL.items():
        temperature(db, practice, name, value)
    monkeypatch.setattr(anomaly_joint, "MAX_NEIGHBOURS", 2)  # fewer than min_neighbours: not judged
    temperature(db, practice, "P5", 39.8)
    assert flags(db, "relational") == []


def test_the_cohort_is_what_the_writer_may_see_and_flags_are_listed_by_access(
    db: Dust, practice: dict[str, uuid.UUID]
) -> None:
    db.put_anomaly_rule("ward", "temperature", "relational", TREATS)
    for name, value in USUAL.items():
        temperature(db, practice, name, value)
    cell = [{"time": 0, "metric": "temperature", "value": 39.8}]
    with db.session() as s:
        access.act_as(s, principal(Role.clinician, practice["D"]))
        tensors.write_values(s, practice["P5"], cell)
        mine = anomalies.list_anomalies(s).items
    with db.session() as s:
        access.act_as(s, principal(Role.clinician, practice["E"]))
        theirs = anomalies.list_anomalies(s).items
    assert [a.entity_id for a in mine] == [practice["P5 patient"]] and theirs == []


# --- rules ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "detector", "settings", "detail"),
    [
        ("heart_rate", "multivariate", {}, "put it on label '*' (PUT /anomalies/rules/vitals/*)"),
        ("*", "multivariate", {"window": 1}, "needs 2 ≤ warmup ≤ window"),
        ("*", "multivariate", {"windw": 9}, "it takes: window, warmup, flag_at, clip"),
        ("temperature", "relational", {}, "a relational rule needs settings.relation"),
        ("temperature", "relational", {"relation": "Treats"}, "a relational rule needs settings.relation"),
        ("temperature", "relational", {"relation": "treats", "direction": "up"}, "must be out, in or both"),
        ("temperature", "relational", {"relation": "treats", "via": "yes"}, "settings.via must be true or false"),
        ("temperature", "relational", {"relation": "treats", "min_neighbours": 1}, "needs min_neighbours ≥ 3"),
        ("temperature", "relational", {"relation": "treats", "k": 1}, "it takes: relation, direction, via, min_"),
        ("*", "relational", {"relation": "treats"}, "label '*' is not in schema vitals"),
        ("temp", "relational", {"relation": "treats"}, "label 'temp' is not in schema vitals (labels"),
    ],
)
def test_a_bad_joint_rule_is_refused_saying_what_is_allowed(
    db: Dust, tensor: uuid.UUID, label: str, detector: str, settings: dict[str, Any], detail: str
) -> None:
    with pytest.raises(InvalidInput) as refused:
        db.put_anomaly_rule("vitals", label, detector, settings)
    assert detail in refused.value.detail


def test_a_label_with_a_relational_rule_is_scanned_by_the_relational_detector(db: Dust, tensor: uuid.UUID) -> None:
    db.put_anomaly_rule("vitals", "temperature", "relational", {"relation": "treats"})
    with pytest.raises(InvalidInput, match="is relational: scan with detector 'relational'"):
        db.scan_anomalies("temperature", tensor_id=tensor)
    assert [(r.label, r.detector) for r in db.anomaly_rules().items] == [("temperature", "relational")]
    db.write_values(tensor, [{"time": 0, "metric": "temperature", "value": 37.0}])  # no neighbours: nothing
    assert flags(db, "relational") == []


def test_a_scan_of_the_whole_history_leaves_the_window_streaming_carries_on_from(db: Dust, tensor: uuid.UUID) -> None:
    """A rule put on a tensor with a history starts afresh, still warming up at the planted step; a scan with
    the rule's settings leaves its window, as a scan by a label's rule leaves its series' states."""
    values = joint()
    db.write_values(tensor, steps(values, 0, 55))
    db.put_anomaly_rule("vitals", "*", "multivariate", SETTINGS)
    db.scan_anomalies(detector="multivariate", tensor_id=tensor, settings={"window": 40, "warmup": 10})  # others
    db.write_values(tensor, steps(values, 55, 56))
    assert len(window_state(db)[0]["window"]["past"]) == 1  # no window left by a scan with other settings
    db.scan_anomalies(detector="multivariate", tensor_id=tensor, settings=SETTINGS)
    db.write_values(tensor, steps(values, 56, 80))
    assert [t for t, *_ in flags(db)] == [60]
    reference = Multivariate(NAMES, **SETTINGS)
    for vector in vitals():
        reference.update(vector)
    state, last = window_state(db)
    assert (state["window"], last) == (reference.state(), 79)


def test_the_relations_valid_at_the_step_make_the_cohort(db: Dust, practice: dict[str, uuid.UUID]) -> None:
    db.put_anomaly_rule("ward", "temperature", "relational", {"relation": "beside"})
    for name in ("P1", "P2", "P3", "P4"):  # beside P5 from the 4th only
        db.relate(practice["P5 patient"], practice[f"{name} patient"], "beside", valid_from="2026-01-04T00:00:00Z")
        db.write_values(practice[name], [{"time": t, "metric": "temperature", "value": USUAL[name]} for t in (2, 3)])
    db.write_values(practice["P5"], [{"time": t, "metric": "temperature", "value": 39.8} for t in (0, 1)])
    assert [(t, v) for t, _, v, *_ in flags(db, "relational")] == [(1, 39.8)]


def test_a_cohort_on_a_zoned_calendar_lines_up_by_local_day(db: Dust) -> None:
    """Day steps in Europe/Paris, tensors of different origins: the same local day is the same step."""
    db.create_schema({**WARD, "name": "paris", "time": {"unit": "day", "step": 1, "zone": "Europe/Paris"}})
    db.put_anomaly_rule("paris", "temperature", "relational", TREATS)
    doctor = db.create_entity("doctor", "Dr P").id
    tensors: dict[str, uuid.UUID] = {}
    for name, origin in (("A", "2026-03-27"), ("B", "2026-03-28"), ("C", "2026-03-26"), ("D", "2026-03-29")):
        patient = db.create_patient(name).id
        db.relate(doctor, patient, "treats")
        tensors[name] = db.create_tensor(patient, "paris", origin=f"{origin}T00:00:00+01:00").id
    on_the_29th = {"A": 2, "B": 1, "C": 3}  # across the change to summer time on the 29th
    for name, t in on_the_29th.items():
        db.write_values(tensors[name], [{"time": t, "metric": "temperature", "value": 37.0 + t / 10}])
    db.write_values(tensors["D"], [{"time": 0, "metric": "temperature", "value": 40.0}])
    (flag,) = [a for a in db.anomalies().items if a.detector == "relational"]
    assert (flag.value, flag.time.isoformat()) == (40.0, "2026-03-28T23:00:00+00:00")


def test_a_tiny_flag_at_flags_rather_than_fails_a_write(db: Dust, practice: dict[str, uuid.UUID]) -> None:
    db.put_anomaly_rule("ward", "temperature", "relational", {**TREATS, "flag_at": 1e-300})
    for name, value in USUAL.items():
        temperature(db, practice, name, value)
    temperature(db, practice, "P5", 39.8)
    found = flags(db, "relational")  # any value off its cohort's median is certain at such a flag_at
    assert 39.8 in [v for _, _, v, _, _ in found] and {s for *_, s, _ in found} == {1.0}
