"""Plugins' trigger actions (dust.engine.actions) through the embedded API: a plugin registered in this process
(tests/plugins installs a real package and drives its actions over HTTP)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy import select

from dust.core.errors import InvalidInput
from dust.embedded import Dust
from dust.engine import entities, triggers
from dust.engine.actions import Firing, Template, TriggerAction
from dust.importers.base import Importer
from dust.plugins import hookimpl, registry
from dust.storage.models import Alert, TriggerFiring

VITALS = {"name": "vitals", "axes": [{"name": "metric", "labels": ["temperature"], "units": {"temperature": "Cel"}}]}
RAN: list[tuple[str, dict[str, Any]]] = []


class Mark(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: Template = "{rule}: {label} {value} {unit} on {entity.name}"
    fail: bool = False


def mark(firing: Firing, settings: Mark) -> None:
    """Sets ``marked`` on each target; then fails, if told to (after it has written)."""
    for target in firing.targets:
        entities.update(firing.session, target, entities.EntityUpdate(attributes={"marked": True}))
    RAN.append((firing.render(settings.message), {"targets": firing.targets, "time_index": firing.time_index}))
    if settings.fail:
        raise RuntimeError("the plugin's bug")


def _plugin(*actions: TriggerAction, importers: tuple[Importer, ...] = ()) -> Iterator[None]:
    plugin = SimpleNamespace(
        dust_trigger_actions=hookimpl(lambda: list(actions)), dust_importers=hookimpl(lambda: list(importers))
    )
    registry.manager().register(plugin, name="marker")
    registry.trigger_actions.cache_clear()
    registry.importers.cache_clear()
    RAN.clear()
    yield
    registry.reload()


@pytest.fixture
def marker() -> Iterator[None]:
    yield from _plugin(TriggerAction("mark", "Marks each target.", Mark, mark))


def _rule(*then: dict[str, Any]) -> dict[str, Any]:
    when = {"schema": "vitals", "label": "temperature", "op": ">", "value": 39}
    return {"name": "fever", "when": when, "then": list(then)}


@pytest.fixture
def patient(db: Dust) -> tuple[uuid.UUID, uuid.UUID]:
    """Jane Doe and her vitals tensor."""
    db.create_schema(VITALS)
    jane = db.create_patient("Jane Doe").id
    return jane, db.create_tensor(jane, "vitals").id


def _fever(db: Dust, tensor: uuid.UUID, time: int = 1) -> None:
    db.write_values(tensor, [{"time": time, "metric": "temperature", "value": 39.5}])


def test_the_action_runs_with_the_firing_in_the_writes_transaction(
    db: Dust, marker: None, patient: tuple[uuid.UUID, uuid.UUID]
) -> None:
    jane, tensor = patient
    db.create_trigger(_rule({"action": "mark"}))
    _fever(db, tensor)
    (ran,) = RAN
    assert ran == ("fever: temperature 39.5 Cel on Jane Doe", {"targets": [jane], "time_index": 1})
    assert db.get_entity(jane).attributes["marked"] is True


def test_a_failing_action_is_rolled_back_alone_and_the_write_stands(
    db: Dust, marker: None, patient: tuple[uuid.UUID, uuid.UUID]
) -> None:
    jane, tensor = patient
    db.create_trigger(_rule({"action": "mark", "fail": True}, {"action": "alert"}))
    _fever(db, tensor)
    assert len(RAN) == 1  # it ran, wrote, and raised
    assert "marked" not in db.get_entity(jane).attributes
    with db.session() as s:
        assert len(list(s.scalars(select(Alert)))) == 1
    assert db.read_tensor(tensor, time=1).values.ravel().tolist() == [39.5]


def test_bad_settings_and_unknown_actions_are_refused_naming_the_field(db: Dust, marker: None) -> None:
    db.create_schema(VITALS)
    with pytest.raises(InvalidInput, match=r"then\.0\.mark\.message: message has an unknown placeholder \{x\}"):
        db.create_trigger(_rule({"action": "mark", "message": "{x}"}))
    with pytest.raises(InvalidInput, match=r"then\.0\.mark\.follow\.depth: .* less than or equal to 3"):
        db.create_trigger(_rule({"action": "mark", "follow": {"depth": 4}}))
    with pytest.raises(InvalidInput, match=r"then\.1\.action: unknown action 'marc' \(the actions are alert, "
                       r"write, attribute, weight, webhook, mark\); did you mean 'mark'\?"):  # fmt: skip
        db.create_trigger(_rule({"action": "alert"}, {"action": "marc"}))


def test_a_rule_is_stored_as_written_and_reads_back_the_same(db: Dust, marker: None) -> None:
    db.create_schema(VITALS)
    action = {"action": "mark", "self": True, "follow": {"type": "treats", "direction": "in", "depth": 1}}
    made = db.create_trigger(_rule(action))
    assert made.then == [{**action, "message": Mark().message, "fail": False}]
    assert triggers.TriggerCreate.model_validate(_rule(*made.then)).then[0] == triggers.PluginAction(
        action="mark", self_=True, follow=triggers.Follow(type="treats", direction="in"), settings=Mark()
    )


def test_a_rule_whose_plugin_is_gone_fires_its_other_actions_and_can_be_changed(
    db: Dust, database_url: str, marker: None, patient: tuple[uuid.UUID, uuid.UUID]
) -> None:
    jane, tensor = patient
    rule = db.create_trigger(_rule({"action": "mark"}, {"action": "alert"}))
    registry.manager().unregister(name="marker")
    registry.reload()
    triggers._PARSED.clear()  # as in a process started after the plugin was uninstalled
    with Dust(database_url, migrate=False) as restarted:
        _fever(restarted, tensor)
        assert RAN == [] and "marked" not in restarted.get_entity(jane).attributes
        with restarted.session() as s:
            assert len(list(s.scalars(select(Alert)))) == 1
            (fired,) = s.scalars(select(TriggerFiring))
            assert fired.effects == {"mark": 0, "alerts": 1}
        renamed = restarted.update_trigger(rule.id, name="fever_v2", enabled=False)
        assert renamed.then[0] == {"action": "mark", "message": Mark().message, "fail": False}
        with pytest.raises(InvalidInput, match="unknown action 'mark'"):
            restarted.update_trigger(rule.id, then=[{"action": "mark"}])


def _named(name: str, **settings: Any) -> TriggerAction:
    model = type("Settings", (BaseModel,), {"__annotations__": dict.fromkeys(settings, str), **settings})
    return TriggerAction(name, "", model, mark)


@pytest.mark.parametrize(
    ("action", "error"),
    [
        (_named("alert"), "plugins 'dust' and 'marker' both add a trigger action named 'alert'"),
        (_named("Mark"), "'Mark' is not an action name"),
        (_named("mark", follow="x"), "action 'mark' has a setting named follow, which every action takes from DUST"),
    ],
)
def test_an_action_that_would_clash_with_dusts_own_is_refused(action: TriggerAction, error: str) -> None:
    for _ in _plugin(action):
        with pytest.raises(registry.PluginConflict, match=error):
            registry.trigger_actions()


def test_the_name_of_dusts_export_loader_is_taken() -> None:
    taken = Importer("dust", "", "directory", lambda *_: None)  # type: ignore[arg-type]
    for _ in _plugin(importers=(taken,)):
        with pytest.raises(registry.PluginConflict, match="both add an importer named 'dust'"):
            registry.importers()


def test_validation_outside_a_request_keeps_pydantics_error() -> None:
    with pytest.raises(ValidationError, match="unknown action 'nope'"):
        triggers.TriggerCreate.model_validate(_rule({"action": "nope"}))
