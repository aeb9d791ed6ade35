"""Trigger actions that plugins add (the ``dust_trigger_actions`` hook), and how a firing runs them.

A plugin's action is a ``TriggerAction``: a name (what a rule's ``{"action": ...}`` says), a pydantic model of its
settings (the rest of the action's keys, checked when the rule is saved: a bad setting is a 422 naming it), and
``run(firing, settings)``. DUST gives every action ``follow``/``self`` (whom it acts on) the way it gives them to
its own actions; ``firing.targets`` are the entities they reach.

``run`` is called in one of two places:

- by default inside the write's transaction, as DUST itself (the rule was made by an admin), in a savepoint of
  its own: what it does commits or rolls back with the write, and an action that raises is rolled back alone and
  logged, so a plugin's fault never fails a write;
- with ``after_commit=True`` (an action that calls out: a chat message, a ticket, a file), from the job layer
  once the write has committed, as a job of kind ``triggers.action`` recorded in the write's own transaction (so
  a rejected write calls nothing, a committed one is never lost, and ``GET /jobs`` shows how it went). The
  firing is handed over as JSON, and ``firing.session`` is a transaction of the job's own.

DUST's own actions (alert, write, attribute, weight, webhook) are part of the rule document's model
(``dust.engine.triggers``); their names are taken.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel
from sqlalchemy.orm import Session

from dust.core.errors import InvalidInput
from dust.core.logging import get_logger
from dust.engine import triggers
from dust.jobs import records
from dust.jobs.records import JobRun
from dust.jobs.registry import kind
from dust.storage.repositories import entities as entity_repo

log = get_logger("dust.triggers")
JOB = "triggers.action"  # the job kind of the actions run after commit


def _template(message: str) -> str:
    triggers.check_template(message)
    return message


Template = Annotated[str, AfterValidator(_template)]
"""A setting holding a message template: checked when the rule is saved (only ``PLACEHOLDERS``), filled with
``firing.render``."""


@dataclass(frozen=True)
class TriggerAction:
    """An action trigger rules may name, added by a plugin."""

    name: str  # what a rule's "action" says: lowercase letters, digits and _
    description: str  # one line, for GET /plugins and docs
    settings: type[BaseModel]  # the action's other keys (but follow and self, which DUST takes)
    run: Callable[[Firing, Any], Any]  # (firing, settings instance); after commit, a dict it returns is the result
    after_commit: bool = False  # run by the job layer once the write commits, not inside its transaction


@dataclass(frozen=True)
class Firing:
    """One firing of a rule, as a plugin's action sees it."""

    session: Session  # the write's transaction (after commit: one of the job's own)
    firing_id: int  # GET /triggers/{id}/firings
    trigger_id: uuid.UUID
    rule: str  # the rule's name
    rule_version: int
    entity_id: uuid.UUID  # the entity whose value or attribute fired the rule
    targets: list[uuid.UUID]  # whom the action acts on: the entity, or those its follow/for reach
    schema: str | None = None
    label: str | None = None  # the label (an attribute rule: the attribute's name)
    value: Any = None  # the value written (an attribute rule: the attribute's new value)
    unit: str = ""
    score: float | None = None  # an anomaly rule's score
    time: datetime | None = None  # the start of the value's time step
    time_index: int | None = None

    def render(self, template: str, target: uuid.UUID | None = None) -> str:
        """``template`` (a ``Template`` setting) filled in; ``{target.…}`` from ``target``. Names are filled in
        full: the action runs as DUST, not as a reader who may see less."""
        from dust.engine.firing import fields_of, render

        def kind() -> str:  # looked up only if a template asks for it
            return self._entity(self.entity_id, "kind")

        at, index = self.time, self.time_index
        values = fields_of(self.entity_id, kind, self.label, self.value, self.unit, at, index, self.score, self.rule)
        values |= {
            "entity.name": lambda: self._entity(self.entity_id, "name"),
            "target.id": "" if target is None else str(target),
            "target.name": lambda: "" if target is None else self._entity(target, "name"),
        }
        return render(template, values, keep=())

    def _entity(self, entity_id: uuid.UUID, what: str) -> str:
        row = entity_repo.get(self.session, entity_id)
        return "" if row is None else str(getattr(row, what))

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "session"}
        out["trigger_id"], out["entity_id"] = str(self.trigger_id), str(self.entity_id)
        out["targets"] = [str(t) for t in self.targets]
        out["time"] = None if self.time is None else self.time.isoformat()
        return out

    @classmethod
    def from_json(cls, session: Session, data: dict[str, Any]) -> Firing:
        return cls(
            **{
                **data,
                "session": session,
                "trigger_id": uuid.UUID(data["trigger_id"]),
                "entity_id": uuid.UUID(data["entity_id"]),
                "targets": [uuid.UUID(t) for t in data["targets"]],
                "time": None if data["time"] is None else datetime.fromisoformat(data["time"]),
            }
        )


def perform(action: TriggerAction, settings: BaseModel, firing: Firing) -> None:
    """Run ``action`` for ``firing``: now, in a savepoint of the write's transaction, or after commit as a job."""
    if action.after_commit:
        payload = {"action": action.name, "settings": settings.model_dump(mode="json"), "firing": firing.to_json()}
        records.submit(firing.session, JOB, payload)
        return
    try:
        with firing.session.begin_nested():
            action.run(firing, settings)
    except Exception:  # the plugin's fault: its part rolls back, the write and the other actions go on
        log.exception("trigger action failed; its effects were rolled back", action=action.name, trigger=firing.rule)


@kind(JOB)
def _run_after_commit(run: JobRun, payload: dict[str, Any]) -> Any:
    from dust.plugins import registry

    action = registry.trigger_actions().get(payload["action"])
    if action is None:
        raise InvalidInput(f"trigger action '{payload['action']}' is not installed where this worker runs")
    settings = action.settings.model_validate(payload["settings"])
    with run.session() as session:
        return action.run(Firing.from_json(session, payload["firing"]), settings)
