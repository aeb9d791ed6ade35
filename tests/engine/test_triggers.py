"""Trigger rules fired by writes (dust.engine.triggers, dust.engine.firing), through the embedded API."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from dust.core.errors import Conflict, InvalidInput, NotFound
from dust.embedded import Dust
from dust.engine import firing
from dust.storage.models import Alert, TriggerFiring

VITALS = {
    "name": "vitals",
    "axes": [
        {
            "name": "metric",
            "labels": ["heart_rate", "temperature", "spo2"],
            "units": {"temperature": "Cel", "heart_rate": "/min", "spo2": "%"},
            "ranges": {"temperature": [25, 45]},
        }
    ],
    "time": {"unit": "day", "step": 1},
}
ALERTS = {
    "name": "alerts",
    "axes": [{"name": "kind", "labels": ["fever", "count"]}],
    "time": {"unit": "day", "step": 1},
}
FEVER = {
    "name": "fever",
    "when": {"kind": "patient", "schema": "vitals", "label": "temperature", "op": ">", "value": 39.0},
    "then": [
        {"action": "alert", "severity": "high", "message": "{entity.name}: temperature {value} {unit}"},
        {"action": "alert", "follow": {"type": "treats", "direction": "in"}, "severity": "high"},
        {
            "action": "write",
            "follow": {"type": "treats", "direction": "in"},
            "schema": "alerts",
            "label": "fever",
            "value": "value",
        },
    ],
}


@pytest.fixture
def ward(db: Dust) -> dict[str, uuid.UUID]:
    """John, his two doctors (who treat him), and a third doctor who treats someone else."""
    db.create_schema(VITALS)
    db.create_schema(ALERTS)
    john = db.create_patient("John Smith").id
    other = db.create_patient("Ann Other").id
    house, wilson, cuddy = (db.create_entity("doctor", n).id for n in ("Dr House", "Dr Wilson", "Dr Cuddy"))
    db.relate(house, john, "treats")
    db.relate(wilson, john, "treats")
    db.relate(cuddy, other, "treats")
    vitals = db.create_tensor(john, "vitals", origin="2026-01-01T00:00:00Z").id
    return {"john": john, "other": other, "house": house, "wilson": wilson, "cuddy": cuddy, "vitals": vitals}


def temperature(db: Dust, tensor: uuid.UUID, *values: float, start: int = 0) -> None:
    db.write_values(tensor, [{"time": start + i, "metric": "temperature", "value": v} for i, v in enumerate(values)])


def alerts(db: Dust) -> list[Alert]:
    with db.session() as s:
        return list(s.scalars(select(Alert).order_by(Alert.id)))


def firings(db: Dust) -> list[TriggerFiring]:
    with db.session() as s:
        return list(s.scalars(select(TriggerFiring).order_by(TriggerFiring.id)))


def recorded(db: Dust, entity: uuid.UUID, time: int, label: str = "fever") -> float:
    """What ``entity``'s alerts tensor holds for ``label`` at ``time``."""
    tensor = db.entity_tensors(entity)[0]
    return float(np.asarray(db.read_tensor(tensor.id, time=time, labels={"kind": label}).values).ravel()[0])


# --- the scenario -------------------------------------------------------------------------------------


def test_a_fever_alerts_john_and_writes_into_each_of_his_doctors_alert_tensors(db: Dust, ward: dict) -> None:
    db.create_trigger(FEVER)
    temperature(db, ward["vitals"], 37.0, 39.6)
    raised = alerts(db)
    assert [(a.entity_id, a.subject_id, a.severity) for a in raised] == [
        (ward["john"], ward["john"], "high"),
        *sorted([(ward["house"], ward["john"], "high"), (ward["wilson"], ward["john"], "high")]),
    ]
    assert raised[0].message == "{entity.name}: temperature 39.6 Cel"  # the name is filled in for each reader
    assert {a.time_index for a in raised} == {1} and {a.value for a in raised} == {39.6}
    for doctor in (ward["house"], ward["wilson"]):
        assert recorded(db, doctor, 1) == 39.6
    assert db.entity_tensors(ward["cuddy"]) == []  # not John's doctor
    (fired,) = firings(db)
    assert fired.effects == {"alerts": 3, "writes": 2} and fired.depth == 0 and fired.cause == []


def test_a_rejected_write_raises_nothing(db: Dust, ward: dict) -> None:
    db.create_trigger(FEVER)
    with pytest.raises(InvalidInput):  # 50 °C is outside the valid range: the whole batch is refused
        temperature(db, ward["vitals"], 39.6, 50.0)
    assert alerts(db) == [] and firings(db) == []
    assert db.entity_tensors(ward["house"]) == []


def test_a_write_rolled_back_after_it_fired_leaves_no_alert(db: Dust, ward: dict) -> None:
    db.create_trigger(FEVER)
    with pytest.raises(RuntimeError), db.session() as s:
        from dust.engine import tensors

        tensors.write_values(s, ward["vitals"], [{"time": 0, "metric": "temperature", "value": 40.0}])
        assert s.scalar(select(func.count()).select_from(Alert)) == 3  # fired inside the transaction
        raise RuntimeError("the caller gives up")
    assert alerts(db) == [] and firings(db) == []


def test_disabled_rules_and_other_labels_do_not_fire(db: Dust, ward: dict) -> None:
    rule = db.create_trigger(FEVER)
    db.write_values(ward["vitals"], [{"time": 0, "metric": "heart_rate", "value": 140}])  # not temperature
    db.update_trigger(rule.id, enabled=False)
    temperature(db, ward["vitals"], 40.0)
    assert alerts(db) == []
    assert db.update_trigger(rule.id, description="off for now").enabled is False  # stays off
    db.update_trigger(rule.id, enabled=True)
    temperature(db, ward["vitals"], 40.0, start=1)
    assert len(alerts(db)) == 3


def test_a_rule_fires_in_the_transaction_that_made_it(db: Dust, ward: dict) -> None:
    """The rules are shared between transactions while none changes; the one that changes them sees its own."""
    from dust.engine import tensors, triggers

    temperature(db, ward["vitals"], 37.0)  # the rules (none) are now cached
    with db.session() as s:
        triggers.create(s, triggers.TriggerCreate.model_validate(FEVER), allow_private=False)
        tensors.write_values(s, ward["vitals"], [{"time": 1, "metric": "temperature", "value": 40.0}])
    assert len(alerts(db)) == 3


def test_the_kind_scopes_a_rule(db: Dust, ward: dict) -> None:
    db.create_trigger({**FEVER, "when": {**FEVER["when"], "kind": "doctor"}})
    temperature(db, ward["vitals"], 40.0)
    assert alerts(db) == []


# --- conditions -----------------------------------------------------------------------------------------------


def rule_on(db: Dust, when: dict[str, Any], name: str = "r") -> Any:
    base = {"schema": "vitals", "label": "temperature"}
    return db.create_trigger({"name": name, "when": {**base, **when}, "then": [{"action": "alert"}]})


def fired_at(db: Dust) -> list[int]:
    return [f.time_index for f in firings(db)]


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ({"op": ">=", "value": 38.0}, [2, 3]),
        ({"op": "<", "value": 36.0}, [4]),
        ({"op": "==", "value": 37.0}, [0]),
        ({"between": [37.5, 38.5]}, [1, 2]),
        ({"outside": [36.0, 38.2]}, [3, 4]),
        ({"change": {"steps": 2, "op": ">", "value": 1.0}}, [3]),  # 39.0 - 37.5; at 2, 38.0 - 37.0 is not > 1
        ({"rate": {"steps": 1, "op": "<", "value": -2.0}}, [4]),  # 35.0 - 39.0
        ({"op": ">", "value": 37.2, "count": {"of": 3, "at_least": 3}}, [3]),  # 37.5, 38.0, 39.0
    ],
)
def test_conditions_on_values(db: Dust, ward: dict, when: dict[str, Any], expected: list[int]) -> None:
    rule_on(db, when)
    temperature(db, ward["vitals"], 37.0, 37.5, 38.0, 39.0, 35.0)
    assert fired_at(db) == expected


def test_conditions_over_steps_read_values_written_before(db: Dust, ward: dict) -> None:
    """A change, a rate or a count looks at values of earlier writes; a missing earlier value meets nothing."""
    rule_on(db, {"change": {"steps": 3, "op": ">=", "value": 2.0}}, "change")
    rule_on(db, {"rate": {"steps": 5, "op": ">", "value": 0.5}}, "rate")
    temperature(db, ward["vitals"], 37.0)  # time 0
    temperature(db, ward["vitals"], 39.0, start=3)  # 3 steps after 37.0: change 2.0, rate 2.0/3
    temperature(db, ward["vitals"], 41.0, start=5)  # 3 steps before (time 2) holds nothing; rate 2.0/2 = 1.0
    names = {f.trigger_id: f for f in firings(db)}
    assert sorted(f.time_index for f in firings(db)) == [3, 3, 5]
    assert len(names) == 2


def test_looking_back_reads_earlier_blocks_from_storage(db: Dust, ward: dict) -> None:
    """Values are stored in blocks of time steps: a change over steps that crosses into a block this write did
    not touch reads it from storage; one that the write touched, from the write."""
    from dust.engine.blocks import steps_for

    BLOCK = steps_for((3,))  # the steps of a block of a 3-label tensor such as ward["vitals"]

    rule_on(db, {"change": {"steps": 3, "op": ">=", "value": 2.0}})
    temperature(db, ward["vitals"], 37.0, start=BLOCK - 2)  # the last block but one of the first block
    temperature(db, ward["vitals"], 36.0, 39.0, start=BLOCK)  # 39.0 at BLOCK + 1, 3 steps after 37.0
    temperature(db, ward["vitals"], 41.0, start=BLOCK + 4)  # 3 steps after 39.0: from this write's own blocks
    assert fired_at(db) == [BLOCK + 1, BLOCK + 4]


def test_rate_is_per_step_since_the_latest_earlier_value(db: Dust, ward: dict) -> None:
    rule_on(db, {"rate": {"steps": 10, "op": ">", "value": 0.9}})
    temperature(db, ward["vitals"], 37.0)
    temperature(db, ward["vitals"], 39.0, start=2)  # 1.0 per step: fires
    temperature(db, ward["vitals"], 40.5, start=4)  # 0.75 per step: does not
    assert fired_at(db) == [2]


def test_anomaly_rules_fire_on_flagged_values(db: Dust, ward: dict) -> None:
    db.put_anomaly_rule("vitals", "temperature", "mad", {"warmup": 5})
    db.create_trigger(
        {
            "name": "odd",
            "when": {"event": "anomaly", "schema": "vitals", "label": "temperature", "min_score": 0.5},
            "then": [{"action": "alert", "message": "{label} scored {score}"}],
        }
    )
    rng = np.random.default_rng(1)
    normal = (37.0 + rng.normal(0, 0.1, 30)).round(2).tolist()
    temperature(db, ward["vitals"], *normal, 41.0)
    (alert,) = alerts(db)
    assert alert.time_index == 30 and alert.value == 41.0
    assert alert.message.startswith("temperature scored 0.") or alert.message.startswith("temperature scored 1")


def test_attribute_rules_fire_on_a_change_to_a_matching_value(db: Dust, ward: dict) -> None:
    db.create_trigger(
        {
            "name": "critical",
            "when": {"event": "attribute", "kind": "patient", "attribute": "status", "op": "==", "value": "critical"},
            "then": [{"action": "alert", "severity": "critical"}],
        }
    )
    db.update_entity(ward["john"], attributes={"status": "stable"})
    assert alerts(db) == []
    db.update_entity(ward["john"], attributes={"status": "critical"})
    db.update_entity(ward["john"], attributes={"status": "critical", "note": "same status"})  # no change: no firing
    db.create_patient("Newly Critical", attributes={"status": "critical"})  # at creation too
    assert [a.severity for a in alerts(db)] == ["critical", "critical"]


# --- targets and actions --------------------------------------------------------------------------------------


def test_follow_reaches_deeper_and_filters_by_weight(db: Dust, ward: dict) -> None:
    hospital = db.create_entity("organization", "St Mary").id
    db.relate(ward["house"], hospital, "works_at")
    db.update_relation(db.relations(ward["wilson"], "treats").items[0].id, weight=0.2)
    db.create_trigger(
        {
            "name": "r",
            "when": {"schema": "vitals", "label": "temperature", "op": ">", "value": 39},
            "then": [
                {
                    "action": "alert",
                    "follow": {"type": ["treats", "works_at"], "direction": "both", "depth": 2, "min_weight": 0.5},
                    "self": True,
                }
            ],
        }
    )
    temperature(db, ward["vitals"], 40.0)
    assert sorted(a.entity_id for a in alerts(db)) == sorted([ward["john"], ward["house"], hospital])


def test_write_adds_to_what_is_there(db: Dust, ward: dict) -> None:
    db.create_trigger(
        {
            "name": "count",
            "when": {"schema": "vitals", "label": "temperature", "op": ">", "value": 39},
            "then": [
                {
                    "action": "write",
                    "follow": {"type": "treats", "direction": "in"},
                    "schema": "alerts",
                    "label": "count",
                    "value": 1,
                    "mode": "add",
                }
            ],
        }
    )
    temperature(db, ward["vitals"], 40.0)
    db.write_values(ward["vitals"], [{"time": 0, "metric": "temperature", "value": 40.5}])  # a correction fires too
    assert recorded(db, ward["house"], 0, "count") == 2.0


def test_attribute_actions_set_attributes_of_the_targets(db: Dust, ward: dict) -> None:
    db.create_trigger(
        {
            "name": "flag",
            "when": {"schema": "vitals", "label": "temperature", "op": ">", "value": 39},
            "then": [{"action": "attribute", "set": {"febrile": True}}],
        }
    )
    temperature(db, ward["vitals"], 40.0)
    assert db.get_entity(ward["john"]).attributes["febrile"] is True


def test_rules_act_with_their_own_authority(db: Dust, ward: dict, member: Any) -> None:
    """A writer who may not see the patient's doctor still alerts them: the rule acts, not the writer."""
    from dust.engine import access, entities, tensors

    db.create_trigger(FEVER)
    nurse = member("nurse")
    with db.session() as s:
        access.act_as(s, nurse)
        pat = entities.create(s, entities.EntityCreate(kind="patient", name="Pat")).id
        tensor = tensors.create(s, tensors.TensorCreate(entity_id=pat, schema_name="vitals")).id
    db.relate(ward["house"], pat, "treats")
    with db.session() as s:
        access.act_as(s, nurse)
        with pytest.raises(NotFound):
            entities.get(s, ward["house"])  # hidden from her
        tensors.write_values(s, tensor, [{"time": 0, "metric": "temperature", "value": 40.0}])
    assert sorted(a.entity_id for a in alerts(db)) == sorted([pat, ward["house"]])
    assert recorded(db, ward["house"], 0) == 40.0


def test_weight_actions_change_the_relations_followed(db: Dust, ward: dict) -> None:
    """Each fever strengthens the bond between John and the doctors who treat him; the change is in the weight
    history, and a weight policy's cap bounds it."""
    db.set_weight_policy("treats", cap=1.8)
    db.create_trigger(
        {
            "name": "bond",
            "when": {"schema": "vitals", "label": "temperature", "op": ">", "value": 39},
            "then": [{"action": "weight", "follow": {"type": "treats", "direction": "in"}, "add": 0.5}],
        }
    )
    temperature(db, ward["vitals"], 40.0, 40.0)  # two firings in one write
    for edge in db.relations(ward["john"], "treats").items:
        detail = db.get_relation(edge.id)
        assert detail.weight == pytest.approx(1.8)  # 1.0 + 0.5, then capped
        assert [round(w.weight, 3) for w in detail.history] == [1.0, 1.5, 1.8]
    assert db.relations(ward["other"], "treats").items[0].weight == 1.0
    (first, second) = firings(db)
    assert first.effects == second.effects == {"weights": 2}


# --- cascades -------------------------------------------------------------------------------------------------


def chain_rules(db: Dust, n: int) -> None:
    """Rule k fires on label k of the 'chain' schema and writes label k + 1 of the same entity."""
    labels = [f"l{k}" for k in range(n + 1)]
    db.create_schema({"name": "chain", "axes": [{"name": "step", "labels": labels}], "time": {"unit": "day"}})
    for k in range(n):
        db.create_trigger(
            {
                "name": f"c{k}",
                "when": {"schema": "chain", "label": labels[k], "op": ">", "value": 0},
                "then": [{"action": "write", "schema": "chain", "label": labels[k + 1]}],
            }
        )


def test_a_cascade_stops_at_its_depth_bound(db: Dust, ward: dict) -> None:
    chain_rules(db, 6)
    tensor = db.create_tensor(ward["john"], "chain").id
    db.write_values(tensor, [{"time": 0, "step": "l0", "value": 1}])
    fired = firings(db)
    bound = db.settings.trigger_max_depth
    assert [f.depth for f in fired] == list(range(bound + 1))  # the first firing, then `bound` caused ones
    assert [link["trigger"] for link in fired[-1].cause] == [f"c{k}" for k in range(bound)]
    written = np.asarray(db.read_tensor(tensor).values).ravel()
    assert np.count_nonzero(~np.isnan(written)) == bound + 2  # l0, and one label per firing


def test_two_rules_that_would_ping_pong_stop(db: Dust, ward: dict) -> None:
    """John's fever writes into his doctors' tensors; their rule writes back into John's: each rule fires once
    per entity in a chain."""
    db.create_trigger(
        {
            "name": "ping",
            "when": {"schema": "vitals", "label": "temperature", "op": ">", "value": 39},
            "then": [
                {
                    "action": "write",
                    "follow": {"type": "treats", "direction": "in"},
                    "schema": "vitals",
                    "label": "temperature",
                    "value": "value",
                }
            ],
        }
    )
    temperature(db, ward["vitals"], 40.0)
    fired = firings(db)
    # John (depth 0) -> House and Wilson (depth 1) -> back to John: ping on John is in the chain already.
    assert sorted((f.depth, f.entity_id) for f in fired) == sorted(
        [(0, ward["john"]), (1, ward["house"]), (1, ward["wilson"])]
    )


# --- keeping rules --------------------------------------------------------------------------------------------


def test_rules_are_versioned_and_firings_name_their_version(db: Dust, ward: dict) -> None:
    rule = db.create_trigger(FEVER)
    assert rule.version == 1 and len(rule.secret) >= 32
    changed = db.update_trigger(rule.id, when={**FEVER["when"], "value": 38.0})
    assert changed.version == 2 and changed.when["value"] == 38.0
    assert db.update_trigger(rule.id, when={**FEVER["when"], "value": 38.0}).version == 2  # nothing changed
    temperature(db, ward["vitals"], 38.5)
    assert [f.trigger_version for f in firings(db)] == [2]
    assert [v.document["when"]["value"] for v in db.trigger_versions(rule.id)] == [39.0, 38.0]
    page = db.firings(rule.id)
    assert [f.time_index for f in page.items] == [0]


def test_names_are_unique(db: Dust, ward: dict) -> None:
    db.create_trigger(FEVER)
    with pytest.raises(Conflict):
        db.create_trigger(FEVER)


def test_delete_keeps_the_alerts(db: Dust, ward: dict) -> None:
    rule = db.create_trigger(FEVER)
    temperature(db, ward["vitals"], 40.0)
    db.delete_trigger(rule.id)
    with pytest.raises(NotFound):
        db.trigger(rule.id)
    assert len(alerts(db)) == 3 and {a.trigger_id for a in alerts(db)} == {None}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"when": {"schema": "vitalz", "label": "temperature", "op": ">", "value": 1}}, "did you mean 'vitals'"),
        ({"when": {"schema": "vitals", "label": "temp", "op": ">", "value": 1}}, "has no label 'temp'"),
        ({"when": {"schema": "vitals", "label": "temperature", "op": ">"}}, "op and a numeric value"),
        ({"when": {"schema": "vitals", "label": "temperature", "between": [2, 1]}}, "above the high bound"),
        (
            {"when": {"schema": "vitals", "label": "temperature", "op": ">", "value": 1, "between": [0, 1]}},
            "exactly one test",
        ),
        ({"when": {"event": "attribute", "attribute": "x", "op": ">"}}, "op and value together"),
        ({"when": {"event": "anomaly", "schema": "vitals", "label": "spo2", "op": ">", "value": 1}}, "does not take"),
        ({"then": [{"action": "alert", "message": "{patient}"}]}, "unknown placeholder {patient}"),
        ({"then": [{"action": "weight", "add": 1}]}, "names the relations to change"),
        ({"then": [{"action": "alert", "follow": {"type": "Treats!"}}]}, "'Treats!' is not a relation type"),
        ({"then": [{"action": "write", "schema": "alerts", "label": "nope"}]}, "has no label 'nope'"),
        ({"then": [{"action": "page"}]}, "action"),
        ({"then": []}, "then"),
    ],
)
def test_bad_rules_are_refused_with_the_reason(db: Dust, ward: dict, change: dict, words: str) -> None:
    with pytest.raises(InvalidInput, match=words.replace("(", r"\(").replace("{", r"\{").replace("}", r"\}")):
        db.create_trigger({**FEVER, **change})
    assert db.triggers().items == []


def test_render_fills_fields_and_keeps_names_for_readers() -> None:
    text = firing.render(
        "{entity.name} {label} {value:.1f}{unit} ({rule})",
        {"label": "t", "value": 39.64, "unit": " Cel", "rule": "fever"},
    )
    assert text == "{entity.name} t 39.6 Cel (fever)"
