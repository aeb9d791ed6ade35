"""Streaming anomaly scoring on the write path (dust.engine.anomalies), through the embedded API."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import select

from dust.core.errors import InvalidInput, NotFound
from dust.embedded import Dust
from dust.engine import anomalies, caches, tensors
from dust.plugins import registry
from dust.storage.models import AnomalyState
from dust.storage.repositories import anomalies as repo
from tests.anomalies.test_multivariate import vitals
from tests.detectors import Spike, flags, series

VITALS = {
    "name": "vitals",
    "axes": [{"name": "metric", "labels": ["heart_rate", "temperature"]}],
    "time": {"unit": "day", "step": 1},
}
SPIKY = series(40, {25: 150.0})  # normal heart rates with one spike at time 25
REGISTERED = registry.detectors  # the plugins' detectors, before the fixture below offers the tests' own


@pytest.fixture(autouse=True)
def spike_detector(monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry offers the tests' own detector (scoring is tested, not the built-in detectors' tuning)."""
    monkeypatch.setattr(registry, "detectors", lambda: {"spike": Spike})


@pytest.fixture
def tensor(db: Dust) -> uuid.UUID:
    db.create_schema(VITALS)
    patient = db.create_patient("Jane Doe")
    return db.create_tensor(patient.id, "vitals", origin="2026-01-01T00:00:00Z").id


@pytest.fixture
def ruled(db: Dust, tensor: uuid.UUID) -> uuid.UUID:
    """The tensor, with heart_rate scored by the spike detector."""
    db.put_anomaly_rule("vitals", "heart_rate", "spike", {"warmup": 5, "flag_at": 4.0})
    return tensor


def write(db: Dust, tensor_id: uuid.UUID, values: list[float], start: int = 0, label: str = "heart_rate") -> None:
    db.write_values(tensor_id, cells(values, start, label))


def cells(values: list[float], start: int = 0, label: str = "heart_rate") -> list[dict[str, Any]]:
    return [{"time": start + i, "metric": label, "value": v} for i, v in enumerate(values)]


def in_batches(db: Dust, tensor_id: uuid.UUID, values: list[float], size: int, start: int = 0) -> None:
    for at in range(0, len(values), size):
        write(db, tensor_id, values[at : at + size], start + at)


def flagged(db: Dust, tensor_id: uuid.UUID) -> list[int]:
    return sorted(a.time_index for a in db.anomalies(tensor_id=tensor_id, limit=500).items)


def stored_states(db: Dust) -> list[tuple[Any, ...]]:
    with db.session() as s:
        rows = s.scalars(select(AnomalyState).order_by(AnomalyState.cell))
        return [(r.tensor_id, r.cell, r.detector, r.label, r.state, r.last_time) for r in rows]


def test_a_planted_spike_is_flagged_with_its_reason(db: Dust, ruled: uuid.UUID) -> None:
    in_batches(db, ruled, SPIKY, 1)
    (anomaly,) = db.anomalies(tensor_id=ruled).items
    assert (anomaly.time_index, anomaly.value, anomaly.label, anomaly.detector) == (25, 150.0, "heart_rate", "spike")
    assert anomaly.time.isoformat() == "2026-01-26T00:00:00+00:00"
    assert anomaly.score >= 0.5
    assert anomaly.reason is not None
    assert anomaly.reason.startswith("heart_rate 150 is ")
    assert anomaly.reason.endswith("sd from Jane Doe's mean")


@pytest.mark.parametrize("size", [1, 3, 7, 25, 40])
def test_one_batch_or_many_flag_the_same(db: Dust, ruled: uuid.UUID, size: int) -> None:
    values = series(40, {12: 140.0, 25: 150.0, 26: 30.0})
    in_batches(db, ruled, values, size)
    assert flagged(db, ruled) == flags(values) != []


def test_scoring_carries_on_from_the_stored_state_after_a_restart(db: Dust, ruled: uuid.UUID) -> None:
    """The spike is the first value after the restart: a detector made afresh would still be warming up and
    not flag it; one restored from the stored state does, exactly as an uninterrupted run."""
    values = series(40, {20: 150.0})
    write(db, ruled, values[:20])
    db.close()
    with Dust(str(db.engine.url.render_as_string(hide_password=False)), migrate=False) as again:
        write(again, ruled, values[20:], 20)
        assert flagged(again, ruled) == flags(values) == [20]
        ((*_, state, last),) = stored_states(again)
    reference = Spike(warmup=5, flag_at=4.0)
    for t, value in enumerate(values):
        reference.update(float(t), value)
    assert (state, last) == (reference.state(), 39)


def rejected_by_a_bad_value(db: Dust, tensor_id: uuid.UUID) -> None:
    db.write_values(tensor_id, [*cells([150.0], 30), {"time": 31, "metric": "heart_rat", "value": 70.0}])


def rolled_back_after_scoring(db: Dust, tensor_id: uuid.UUID) -> None:
    with db.session() as s:
        tensors.write_values(s, tensor_id, cells([150.0], 30))
        assert len(anomalies.list_anomalies(s, tensor_id=tensor_id).items) == 2  # scored in the write's transaction
        raise InvalidInput("the transaction fails after the write")


@pytest.mark.parametrize("reject", [rejected_by_a_bad_value, rolled_back_after_scoring])
def test_a_rejected_write_flags_nothing_and_keeps_the_state(db: Dust, ruled: uuid.UUID, reject: Any) -> None:
    write(db, ruled, SPIKY[:30])
    before = stored_states(db)
    with pytest.raises(InvalidInput):
        reject(db, ruled)
    assert flagged(db, ruled) == [25]
    assert stored_states(db) == before


def test_a_backfill_is_not_scored_as_it_is_written_but_by_a_scan(db: Dust, ruled: uuid.UUID) -> None:
    values = series(40, {5: 150.0})
    write(db, ruled, values[10:], 10)
    write(db, ruled, values[:10])  # before the last time scored: left to a scan
    assert flagged(db, ruled) == []
    result = db.scan_anomalies("heart_rate", tensor_id=ruled)
    assert (result.scored, result.flagged) == (40, 1)
    assert flagged(db, ruled) == flags(values) == [5]
    db.scan_anomalies("heart_rate", tensor_id=ruled)  # a scan replaces what it flagged, never adds to it
    assert flagged(db, ruled) == [5]


def test_a_scan_to_the_end_leaves_the_state_streaming_carries_on_from(db: Dust, ruled: uuid.UUID) -> None:
    values = series(40, {5: 150.0, 30: 150.0})
    write(db, ruled, values[10:30], 10)
    write(db, ruled, values[:10])
    db.scan_anomalies("heart_rate", schema=None, tensor_id=ruled)
    write(db, ruled, values[30:], 30)
    assert flagged(db, ruled) == flags(values) == [5, 30]


def test_a_scan_of_a_window_rescores_only_it(db: Dust, ruled: uuid.UUID) -> None:
    values = series(40, {25: 150.0})
    write(db, ruled, values)
    before = stored_states(db)
    result = db.scan_anomalies("heart_rate", schema="vitals", start=20, end=29)
    assert (result.scored, result.flagged) == (10, 1)  # from a fresh detector: 20..24 warm it up
    assert flagged(db, ruled) == [25]
    assert stored_states(db) == before  # it did not reach the end: streaming keeps its own state


def no_rule(db: Dust) -> None:
    pass


def rule_on_another_label(db: Dust) -> None:
    db.put_anomaly_rule("vitals", "temperature", "spike")


def rule_on_another_schema(db: Dust) -> None:
    db.create_schema({**VITALS, "name": "labs"})
    db.put_anomaly_rule("labs", "heart_rate", "spike")


def rule_deleted(db: Dust) -> None:
    db.put_anomaly_rule("vitals", "heart_rate", "spike")
    db.delete_anomaly_rule("vitals", "heart_rate")


@pytest.mark.parametrize("rules", [no_rule, rule_on_another_label, rule_on_another_schema, rule_deleted])
def test_without_a_rule_for_the_label_nothing_is_scored(db: Dust, tensor: uuid.UUID, rules: Any) -> None:
    rules(db)
    in_batches(db, tensor, SPIKY, 8)
    assert flagged(db, tensor) == []
    assert stored_states(db) == []


def test_deleting_a_rule_drops_its_states_and_keeps_what_was_flagged(db: Dust, ruled: uuid.UUID) -> None:
    write(db, ruled, SPIKY)
    db.delete_anomaly_rule("vitals", "heart_rate")
    assert stored_states(db) == []
    assert flagged(db, ruled) == [25]
    with pytest.raises(NotFound, match="no anomaly rule for label 'heart_rate' of schema 'vitals'"):
        db.delete_anomaly_rule("vitals", "heart_rate")


def test_a_deleted_schema_takes_its_rules_with_it(db: Dust, ruled: uuid.UUID) -> None:
    db.delete_tensor(ruled)
    db.delete_schema("vitals")
    assert db.anomaly_rules().items == []
    db.create_schema({**VITALS, "axes": [{"name": "metric", "labels": ["spo2", "heart_rate"]}]})  # the name again
    patient = db.create_patient("John Doe")
    again = db.create_tensor(patient.id, "vitals", origin="2026-01-01T00:00:00Z").id
    write(db, again, SPIKY)
    assert flagged(db, again) == [] and stored_states(db) == []  # no rule of the old schema scores the new one


def delete_tensor(db: Dust, tensor_id: uuid.UUID) -> None:
    db.delete_tensor(tensor_id)


def delete_patient(db: Dust, tensor_id: uuid.UUID) -> None:
    db.delete_patient(db.get_tensor(tensor_id).entity_id)


@pytest.mark.parametrize("delete", [delete_tensor, delete_patient])
def test_a_deleted_tensor_takes_its_anomalies_and_states_with_it(db: Dust, ruled: uuid.UUID, delete: Any) -> None:
    write(db, ruled, SPIKY)
    delete(db, ruled)
    assert db.anomalies().items == []
    assert stored_states(db) == []


@pytest.mark.parametrize(
    ("change", "kept"),
    [({"threshold": 0.8}, True), ({"settings": {"warmup": 6}}, False), ({"settings": {"flag_at": 5.0}}, False)],
)
def test_new_settings_start_the_series_afresh_and_a_new_threshold_does_not(
    db: Dust, ruled: uuid.UUID, change: dict[str, Any], kept: bool
) -> None:
    write(db, ruled, SPIKY)
    before = stored_states(db)
    rule = {"settings": {"warmup": 5, "flag_at": 4.0}, "threshold": 0.5, **change}
    db.put_anomaly_rule("vitals", "heart_rate", "spike", **rule)
    assert stored_states(db) == (before if kept else [])
    assert [(r.settings, r.threshold) for r in db.anomaly_rules().items] == [(rule["settings"], rule["threshold"])]


POSTURE = {
    "name": "posture",
    "axes": [{"name": "metric", "labels": ["spo2", "heart_rate"]}, {"name": "position", "labels": ["sit", "stand"]}],
}
SITTING = series(40, {25: 150.0})
STANDING = [v + 20 for v in series(40, {30: 20.0})]


@pytest.fixture
def posture(db: Dust) -> uuid.UUID:
    """A tensor of two axes, heart_rate scored: a series per position."""
    db.create_schema(POSTURE)
    patient = db.create_patient("Jane Doe")
    db.put_anomaly_rule("posture", "heart_rate", "spike")
    return db.create_tensor(patient.id, "posture").id


def by_position(tensor_id: uuid.UUID, start: int, end: int) -> list[dict[str, Any]]:
    rows = [{"time": t, "position": "sit", "value": SITTING[t]} for t in range(start, end)]
    rows += [{"time": t, "position": "stand", "value": STANDING[t]} for t in range(start, end)]
    return [{**row, "metric": "heart_rate"} for row in rows]


def reasons(db: Dust, tensor_id: uuid.UUID) -> list[tuple[int, str]]:
    return sorted((a.time_index, (a.reason or "").split(" ")[1]) for a in db.anomalies(tensor_id=tensor_id).items)


def test_a_state_made_under_other_settings_is_not_carried_on_from(db: Dust, ruled: uuid.UUID) -> None:
    """As when a write that read the rules before a change stores its state after the change dropped the states:
    the next write starts the series afresh under the rule as it is now."""
    values = series(40, {20: 150.0})
    write(db, ruled, values[:20])
    with db.session() as s:  # the rule changes (and every process learns of it), its states stay
        repo.put_rule(s, "vitals", "heart_rate", "spike", {"warmup": 6, "flag_at": 4.0}, 0.5)
        caches.changed(s, anomalies.RULES_EPOCH)
    write(db, ruled, values[20:], 20)
    assert flagged(db, ruled) == flags(values[20:], 20, warmup=6) == []  # the spike is the fresh run's first
    reference = Spike(warmup=6, flag_at=4.0)
    for t, value in enumerate(values[20:]):
        reference.update(float(t), value)
    assert [(state, last) for *_, state, last in stored_states(db)] == [(reference.state(), 39)]


def test_every_cell_with_the_label_is_a_series_of_its_own(db: Dust, posture: uuid.UUID) -> None:
    db.write_values(posture, by_position(posture, 0, 40))
    assert reasons(db, posture) == [(25, "(position=sit)"), (30, "(position=stand)")]


def test_a_tensor_moved_to_a_version_with_more_labels_keeps_its_series(db: Dust, posture: uuid.UUID) -> None:
    """A label appended to the second axis renumbers the cells (heart_rate × sit: cell 2 of 2 × 2, then cell 3 of
    2 × 3, where the state of heart_rate × stand was): each series carries on from its own state."""
    db.write_values(posture, by_position(posture, 0, 28))
    lying = {"name": "position", "labels": ["sit", "stand", "lie"]}
    db.update_schema("posture", {"axes": [{"name": "metric", "labels": ["spo2", "heart_rate", "pulse"]}, lying]})
    db.update_tensor(posture, 2)
    db.write_values(posture, by_position(posture, 28, 40))
    assert reasons(db, posture) == [(25, "(position=sit)"), (30, "(position=stand)")]
    assert sorted(cell for _, cell, *_ in stored_states(db)) == [3, 4]


@pytest.mark.parametrize(
    ("rule", "detail"),
    [
        ({"detector": "spik"}, "detector 'spik' does not exist; did you mean 'spike'?; detectors: spike"),
        (
            {"detector": "spike", "settings": {"window": 3}},
            "are not accepted by detector 'spike' (Spike.__init__() got",
        ),
        ({"detector": "spike", "settings": {"warmup": "many"}}, "invalid literal for int()"),
        ({"detector": "spike", "threshold": 0}, "threshold: Input should be greater than 0"),
        ({"detector": "spike", "threshold": 1.5}, "threshold: Input should be less than or equal to 1"),
        ({"detector": "spike", "label": "heart_rat"}, "label 'heart_rat' is not in schema 'vitals'; did you mean"),
    ],
)
def test_a_bad_rule_is_refused_saying_what_is_allowed(
    db: Dust, tensor: uuid.UUID, rule: dict[str, Any], detail: str
) -> None:
    fields = {key: value for key, value in rule.items() if key != "label"}
    with pytest.raises(InvalidInput) as refused:
        db.put_anomaly_rule("vitals", rule.get("label", "heart_rate"), **fields)
    assert detail in refused.value.detail
    assert db.anomaly_rules().items == []


def test_a_rule_on_an_unknown_schema_is_not_found(db: Dust, tensor: uuid.UUID) -> None:
    with pytest.raises(NotFound, match="schema 'vital' does not exist; did you mean 'vitals'"):
        db.put_anomaly_rule("vital", "heart_rate", "spike")


@pytest.mark.parametrize(
    ("request_", "detail"),
    [
        ({"label": "temperature", "tensor_id": "ruled"}, "label 'temperature' of schema 'vitals' has no anomaly rule"),
        ({"label": "heart_rate"}, "give either tensor_id or schema"),
        ({"label": "heart_rate", "schema": "vitals", "tensor_id": "ruled"}, "give either tensor_id or schema"),
    ],
)
def test_a_bad_scan_is_refused(db: Dust, ruled: uuid.UUID, request_: dict[str, Any], detail: str) -> None:
    arguments = {**request_, **({"tensor_id": ruled} if "tensor_id" in request_ else {})}
    with pytest.raises(InvalidInput, match=detail):
        db.scan_anomalies(**arguments)


def test_pages_walk_every_anomaly_once_newest_first(db: Dust, ruled: uuid.UUID) -> None:
    values = series(60, {t: 150.0 + t for t in (20, 30, 40, 50)})
    write(db, ruled, values)
    seen, cursor = [], None
    for _ in range(10):  # more pages than anomalies: a cursor that never ends fails, not hangs
        page = db.anomalies(limit=1, cursor=cursor)
        seen += [a.time_index for a in page.items]
        if (cursor := page.next_cursor) is None:
            break
    assert seen == sorted(flags(values), reverse=True) and len(seen) >= 4


@pytest.mark.parametrize("steps", [3, 64, 65_536])
def test_a_scan_read_in_chunks_scores_as_one_uninterrupted_run(
    db: Dust, ruled: uuid.UUID, monkeypatch: pytest.MonkeyPatch, steps: int
) -> None:
    monkeypatch.setattr(anomalies, "SCAN_STEPS", steps)
    values = series(100, {7: 150.0, 70: 20.0, 71: 150.0})
    write(db, ruled, values[50:], 50)
    write(db, ruled, values[:50])
    db.scan_anomalies("heart_rate", tensor_id=ruled)
    assert flagged(db, ruled) == flags(values) != []
    reference = Spike(warmup=5, flag_at=4.0)
    for t, value in enumerate(values):
        reference.update(float(t), value)
    assert [(state, last) for *_, state, last in stored_states(db)] == [(reference.state(), 99)]


def test_a_built_in_detector_flags_a_planted_spike(
    db: Dust, tensor: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plugins' own ``mad`` through the registry (the other tests use the tests' detector)."""
    monkeypatch.setattr(registry, "detectors", REGISTERED)
    db.put_anomaly_rule("vitals", "heart_rate", "mad")
    in_batches(db, tensor, series(60, {45: 190.0}), 6)
    (anomaly,) = db.anomalies(tensor_id=tensor).items
    assert (anomaly.time_index, anomaly.detector) == (45, "mad")
    assert anomaly.reason is not None and "heart_rate 190" in anomaly.reason and "Jane Doe" in anomaly.reason


# --- scans with the multivariate and relational detectors -------------------------------------------------


def joint(steps: int = 80) -> list[dict[str, Any]]:
    """Heart rate and temperature rising together, and at time 60 a heart rate 2 sd high with a temperature 2 sd
    low: each usual alone, never seen together (``vitals`` of tests/anomalies/test_multivariate.py)."""
    values = vitals(steps)
    return [
        {"time": t, "metric": label, "value": float(values[t, k])}
        for t in range(steps)
        for k, label in enumerate(("heart_rate", "temperature"))
    ]


def by_detector(db: Dust, detector: str) -> list[tuple[int, str]]:
    return sorted((a.time_index, a.label) for a in db.anomalies(limit=500).items if a.detector == detector)


def test_a_multivariate_scan_flags_a_joint_anomaly_that_mad_does_not(
    db: Dust, tensor: uuid.UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry, "detectors", REGISTERED)
    db.put_anomaly_rule("vitals", "heart_rate", "mad")
    db.put_anomaly_rule("vitals", "temperature", "mad")
    db.write_values(tensor, joint())
    assert db.anomalies().items == []  # streamed through mad, label by label: nothing
    result = db.scan_anomalies(detector="multivariate", tensor_id=tensor)
    assert (result.scored, result.flagged) == (80, 1)
    (anomaly,) = db.anomalies().items
    assert (anomaly.time_index, anomaly.detector, anomaly.schema_name) == (60, "multivariate", "vitals")
    assert anomaly.label in ("heart_rate", "temperature") and anomaly.reason is not None
    assert f"{anomaly.label} {anomaly.value:.4g}" in anomaly.reason
    assert "heart_rate 86" in anomaly.reason and "temperature 36.2" in anomaly.reason
    assert "together are unusual for Jane Doe (distance" in anomaly.reason


@pytest.mark.parametrize(("start", "end"), [(None, None), (None, 60), (60, None), (60, 60), (50, 70)])
def test_a_multivariate_scan_judges_a_step_from_the_steps_before_it_whatever_the_window(
    db: Dust, tensor: uuid.UUID, start: int | None, end: int | None
) -> None:
    """The steps before ``from`` warm the detector up; those after ``to`` are never read."""
    db.write_values(tensor, joint())
    db.scan_anomalies(detector="multivariate", tensor_id=tensor, start=start, end=end)
    assert [t for t, _ in by_detector(db, "multivariate")] == [60]


def test_scans_replace_their_own_detectors_flags_only(db: Dust, ruled: uuid.UUID) -> None:
    values = joint()
    values[2 * 30]["value"] = 150.0  # a heart rate spike at time 30, for the spike rule
    db.write_values(ruled, values)
    spikes = by_detector(db, "spike")
    for _ in range(2):
        db.scan_anomalies(detector="multivariate", schema="vitals")
        db.scan_anomalies("heart_rate", tensor_id=ruled)
    assert by_detector(db, "spike") == spikes != []
    assert [t for t, _ in by_detector(db, "multivariate")] == [30, 60]


WARD = {**VITALS, "name": "ward"}
ON_THE_DAY = "2026-01-03T00:00:00Z"


@pytest.fixture
def practice(db: Dust) -> dict[str, uuid.UUID]:
    """Dr D treats P1..P5, whose temperatures on 3 January are usual but P5's; P5 has been in contact with
    P1..P4; Dr E treats Q1..Q3, of whom Q3 is far from the others but has only two fellow patients. P5's tensor
    begins on 3 January, the others' on 1 January: the same day is time 0 of one and time 2 of the others."""
    db.create_schema(WARD)
    ids: dict[str, uuid.UUID] = {}
    temperatures = {"P1": 37.0, "P2": 37.2, "P3": 36.9, "P4": 37.1, "P5": 39.8, "Q1": 37.0, "Q2": 37.1, "Q3": 41.0}
    for doctor in ("D", "E"):
        ids[doctor] = db.create_entity("doctor", f"Dr {doctor}").id
    for name, temperature in temperatures.items():
        ids[name] = db.create_patient(name).id
        db.relate(ids["D" if name.startswith("P") else "E"], ids[name], "treats")
        origin, day = ("2026-01-03T00:00:00Z", 0) if name == "P5" else ("2026-01-01T00:00:00Z", 2)
        tensor = db.create_tensor(ids[name], "ward", origin=origin).id
        db.write_values(tensor, [{"time": day, "metric": "temperature", "value": temperature}])
        db.write_values(tensor, [{"time": day + 1, "metric": "temperature", "value": 37.0}])
    for other in ("P1", "P2", "P3", "P4"):
        db.relate(ids["P5"], ids[other], "contact")
    return ids


def relational_flags(db: Dust, ids: dict[str, uuid.UUID]) -> list[str]:
    names = {v: k for k, v in ids.items()}
    return sorted(names[a.entity_id] for a in db.anomalies(limit=500).items if a.detector == "relational")


@pytest.mark.parametrize(
    ("relation", "direction", "via", "scored", "flagged"),
    [
        ("treats", "both", True, 5, ["P5"]),  # the other patients of one's doctor; Q1..Q3 have two: not judged
        ("treats", "in", True, 5, ["P5"]),  # patient ← treats ← doctor → treats → patient
        ("treats", "out", True, 0, []),  # patients treat no one
        ("contact", "both", False, 1, ["P5"]),  # P1..P4 each have one contact: not judged
        ("contact", "out", False, 1, ["P5"]),
        ("contact", "in", False, 0, []),
        ("treats", "both", False, 0, []),  # a patient's doctor has no temperature
    ],
)
def test_a_relational_scan_flags_the_entity_far_from_those_it_is_related_to(
    db: Dust,
    practice: dict[str, uuid.UUID],
    relation: str,
    direction: str,
    via: bool,
    scored: int,
    flagged: list[str],
) -> None:
    result = db.scan_anomalies(
        "temperature",
        schema="ward",
        start=ON_THE_DAY,
        detector="relational",
        relation=relation,
        direction=direction,
        via=via,
    )
    assert (result.scored, result.flagged) == (scored, len(flagged))
    assert relational_flags(db, practice) == flagged


@pytest.mark.parametrize(
    ("via", "reason"),
    [
        (True, "temperature 39.8 is {z} MADs above the 4 other patients related by treats to the same entities as P5"),
        (False, "temperature 39.8 is {z} MADs above the 4 patients P5 is related to by contact"),
    ],
)
def test_a_relational_flag_says_what_it_was_compared_with(
    db: Dust, practice: dict[str, uuid.UUID], via: bool, reason: str
) -> None:
    relation = "treats" if via else "contact"
    db.scan_anomalies("temperature", schema="ward", start=ON_THE_DAY, detector="relational", relation=relation, via=via)
    (anomaly,) = db.anomalies().items
    assert (anomaly.entity_id, anomaly.label, anomaly.value, anomaly.time_index) == (
        practice["P5"],
        "temperature",
        39.8,
        0,
    )
    assert anomaly.time.isoformat() == "2026-01-03T00:00:00+00:00"
    assert anomaly.reason is not None
    head, tail = reason.split("{z}")
    assert anomaly.reason.startswith(head) and anomaly.reason.endswith(tail)


@pytest.mark.parametrize(("day", "scored"), [(ON_THE_DAY, 0), ("2026-01-04T00:00:00Z", 1)])
def test_a_relational_scan_counts_the_relations_valid_at_each_step(
    db: Dust, practice: dict[str, uuid.UUID], day: str, scored: int
) -> None:
    for other in ("P1", "P2", "P3", "P4"):  # beside since the 4th only
        db.relate(practice["P5"], practice[other], "beside", valid_from="2026-01-04T00:00:00Z")
    result = db.scan_anomalies("temperature", schema="ward", start=day, detector="relational", relation="beside")
    assert (result.scored, result.flagged) == (scored, 0)


def test_a_relational_scan_replaces_its_flags_in_its_window_only(db: Dust, practice: dict[str, uuid.UUID]) -> None:
    scan = {"schema": "ward", "detector": "relational", "relation": "treats", "via": True}
    db.scan_anomalies("temperature", start=ON_THE_DAY, **scan)
    db.scan_anomalies("temperature", start=ON_THE_DAY, end="2026-01-04T00:00:00Z", **scan)
    db.scan_anomalies("temperature", start="2026-01-04T00:00:00Z", **scan)  # a calm day: its flags, none
    assert relational_flags(db, practice) == ["P5"]


@pytest.mark.parametrize(
    ("request_", "detail"),
    [
        ({"detector": "multivariate"}, "give either tensor_id or schema"),
        ({"detector": "multivariate", "schema": "vitals", "label": "heart_rate"}, "label are not for the multivariate"),
        ({"detector": "multivariate", "schema": "vitals", "settings": {"window": 1}}, "needs 2 ≤ warmup ≤ window"),
        ({"detector": "multivariate", "schema": "vitals", "settings": {"windw": 9}}, "unexpected keyword argument"),
        ({"detector": "relational", "schema": "vitals", "label": "temperature"}, "(missing: relation, from)"),
        ({"detector": "relational", "tensor_id": "tensor"}, "tensor_id is not for the relational detector"),
        (
            {"detector": "relational", "schema": "vitals", "label": "temperature", "relation": "treats", "start": 2},
            "from and to as timestamps",
        ),
        (
            {"detector": "relational", "schema": "vitals", "label": "temp", "relation": "treats", "start": ON_THE_DAY},
            "label 'temp' is not in schema vitals",
        ),
        (
            {
                "detector": "relational",
                "schema": "vitals",
                "label": "temperature",
                "relation": "treats",
                "start": ON_THE_DAY,
                "end": "2026-01-01T00:00:00Z",
            },
            "from is after to",
        ),
        (
            {
                "detector": "relational",
                "schema": "vitals",
                "label": "temperature",
                "relation": "treats",
                "start": "1990-01-01T00:00:00Z",
                "end": ON_THE_DAY,
            },
            "spans at most 10,000 steps",
        ),
        ({"label": "heart_rate", "schema": "vitals", "relation": "treats"}, "relation are for the multivariate"),
        ({"detector": "isolation", "schema": "vitals"}, "Input should be 'multivariate' or 'relational'"),
    ],
)
def test_a_bad_joint_scan_is_refused(db: Dust, tensor: uuid.UUID, request_: dict[str, Any], detail: str) -> None:
    arguments = {**request_, **({"tensor_id": tensor} if "tensor_id" in request_ else {})}
    with pytest.raises(InvalidInput) as refused:
        db.scan_anomalies(**arguments)
    assert detail in refused.value.detail
