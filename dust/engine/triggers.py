"""Trigger rules: JSON documents that say when a write should act, and what it does then.

A rule has a **when** (a condition on a written value, on an anomaly score, or on an attribute change, scoped by
kind, schema and label), an optional **for** (the entities it acts on: the entity itself and/or those reached
over relations), and **then** (alerts, values written, attributes set, relation weights changed, webhooks).
Rules are versioned: every change keeps the document it replaced, and a firing names the version that ran.

This module keeps the rules and hands the write path an index of them by (schema, label), by kind for attribute
rules, read once per transaction and shared by an app's requests while no rule has changed (the ``triggers``
cache epoch); ``dust.engine.firing`` evaluates them inside the write's transaction.
"""

from __future__ import annotations

import math
import secrets
import string
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapSerializer,
    WrapValidator,
    model_serializer,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from dust.core.errors import Conflict, InvalidInput, NotFound, did_you_mean
from dust.core.security import Permission
from dust.engine import access, audit, caches, schemas, webhooks
from dust.engine.fields import Attributes
from dust.engine.paging import id_next_cursor, id_walk
from dust.engine.relations import TYPE_NAME, Direction
from dust.engine.schemas import NAME, SchemaDef
from dust.plugins import registry
from dust.storage.models import Trigger
from dust.storage.repositories import triggers as repo

Op = Literal[">", ">=", "<", "<=", "==", "!="]
Severity = Literal["info", "low", "medium", "high", "critical"]
MAX_ACTIONS = 20
MAX_STEPS = 1000  # how far back a condition over changes may look
_INDEX = "dust.trigger_index"  # session.info: the rules this transaction fires by


# --- the rule document --------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Change(_Strict):
    """The value now minus the value ``steps`` time steps before (which must be recorded)."""

    steps: int = Field(ge=1, le=MAX_STEPS)
    op: Op
    value: float = Field(allow_inf_nan=False)


class Rate(_Strict):
    """Change per time step since the latest earlier value recorded within the last ``steps`` steps."""

    steps: int = Field(ge=1, le=MAX_STEPS)
    op: Op
    value: float = Field(allow_inf_nan=False)


class Count(_Strict):
    """At least ``at_least`` of the last ``of`` time steps (this one included) hold a value meeting op/value."""

    of: int = Field(ge=1, le=MAX_STEPS)
    at_least: int = Field(ge=1, le=MAX_STEPS)

    @model_validator(mode="after")
    def _fits(self) -> Count:
        if self.at_least > self.of:
            raise ValueError(f"at_least ({self.at_least}) cannot be more than of ({self.of})")
        return self


Scalar = float | str | bool


class When(_Strict):
    """What makes a rule fire.

    - ``event: value`` (the default): a value written to ``schema``/``label`` meets ``op``/``value``, lies
      ``between`` or ``outside`` two bounds, or its ``change``, ``rate`` or ``count`` over recent steps does;
    - ``event: anomaly``: a value of ``schema``/``label`` is flagged with a score of at least ``min_score``;
    - ``event: attribute``: ``attribute`` of an entity of ``kind`` changes, to a value meeting ``op``/``value``
      if they are given.
    """

    event: Literal["value", "anomaly", "attribute"] = "value"
    kind: str | None = Field(None, max_length=64, description="Only entities of this kind.")
    schema_name: str | None = Field(None, alias="schema", pattern=NAME)
    label: str | None = Field(None, min_length=1, max_length=128)
    op: Op | None = None
    value: Scalar | None = Field(None, description="The threshold (a number), or an attribute's value.")
    between: tuple[float, float] | None = Field(None, description="Fires on low <= value <= high.")
    outside: tuple[float, float] | None = Field(None, description="Fires on value < low or value > high.")
    change: Change | None = None
    rate: Rate | None = None
    count: Count | None = Field(None, description="With op/value: N of the last M steps meet them.")
    min_score: float | None = Field(None, gt=0, le=1, allow_inf_nan=False, description="anomaly: the least score.")
    attribute: str | None = Field(None, min_length=1, max_length=128, description="attribute: the field watched.")

    @model_validator(mode="after")
    def _consistent(self) -> When:
        given = {name for name in self.model_fields_set if getattr(self, name) is not None}
        if self.event in ("value", "anomaly") and not (self.schema_name and self.label):
            raise ValueError(f"a rule on {self.event}s names the schema and the label it watches")
        if self.event == "value":
            self._check_value(given)
        elif self.event == "anomaly":
            _only(given, {"event", "kind", "schema_name", "label", "min_score"}, "an anomaly rule")
        else:
            _only(given, {"event", "kind", "attribute", "op", "value"}, "an attribute rule")
            if not self.attribute:
                raise ValueError("an attribute rule names the attribute it watches")
            if (self.op is None) != ("value" not in given):
                raise ValueError("give op and value together, or neither (then any change fires)")
        return self

    def _check_value(self, given: set[str]) -> None:
        _only(given, {"event", "kind", "schema_name", "label", "op", "value", "between", "outside", "change", "rate",
                      "count"}, "a value rule")  # fmt: skip
        tests = [name for name in ("between", "outside", "change", "rate") if name in given]
        threshold = "op" in given or "value" in given
        if threshold and not (
            "op" in given and isinstance(self.value, int | float) and not isinstance(self.value, bool)
        ):
            raise ValueError("a threshold needs op and a numeric value")
        if len(tests) + threshold != 1:
            raise ValueError("a value rule has exactly one test: op/value, between, outside, change or rate")
        if "count" in given and not threshold:
            raise ValueError("count goes with op/value: how many of the last steps meet them")
        for bounds in (self.between, self.outside):
            if bounds is not None and not bounds[0] <= bounds[1]:
                raise ValueError(f"the low bound {bounds[0]:g} is above the high bound {bounds[1]:g}")

    @property
    def threshold(self) -> float:
        assert isinstance(self.value, int | float)
        return float(self.value)


def _only(given: set[str], allowed: set[str], what: str) -> None:
    extra = sorted(given - allowed)
    if extra:
        raise ValueError(f"{what} does not take {', '.join(extra)}; it takes {', '.join(sorted(allowed))}")


class Follow(_Strict):
    """Entities reached from the rule's entity over relations."""

    type: str | list[str] | None = Field(None, description="Relation type(s); default: any.")
    direction: Direction = "both"
    depth: int = Field(1, ge=1, le=3)
    min_weight: float | None = Field(None, allow_inf_nan=False)

    @model_validator(mode="after")
    def _types(self) -> Follow:
        for name in [self.type] if isinstance(self.type, str) else self.type or []:
            if not TYPE_NAME.fullmatch(name):
                raise ValueError(f"'{name}' is not a relation type (lowercase letters, digits, _ and -)")
        return self

    @property
    def types(self) -> list[str]:
        return [self.type] if isinstance(self.type, str) else list(self.type or [])


class Targets(_Strict):
    """Whom a rule's actions act on: the entity (``self``), and those reached with ``follow``."""

    follow: Follow | None = None
    self_: bool | None = Field(None, alias="self", description="Also the entity itself. Default: only without follow.")

    @property
    def includes_self(self) -> bool:
        return self.follow is None if self.self_ is None else self.self_


# Placeholders a message may use; {entity.name} and {target.name} are filled as each reader may see them.
PLACEHOLDERS = {
    "entity.name", "entity.id", "entity.kind", "target.name", "target.id", "label", "value", "unit", "time",
    "time_index", "score", "severity", "rule",
}  # fmt: skip


class AlertAction(Targets):
    action: Literal["alert"]
    severity: Severity = "medium"
    message: str | None = Field(None, max_length=500, description="A template: " + ", ".join(sorted(PLACEHOLDERS)))

    @model_validator(mode="after")
    def _template(self) -> AlertAction:
        if self.message is not None:
            check_template(self.message)
        return self


class WriteAction(Targets):
    """Writes a value into each target's tensor of ``schema`` (made if it has none), at the time of the value that
    fired the rule: a number, or ``"value"``/``"score"`` (the firing's); ``mode: add`` adds to what is there."""

    action: Literal["write"]
    schema_name: str = Field(alias="schema", pattern=NAME)
    label: str = Field(min_length=1, max_length=128)
    where: dict[str, str] = Field(default_factory=dict, description="Labels of the schema's other axes.")
    value: float | Literal["value", "score"] = 1.0
    mode: Literal["set", "add"] = "set"


class AttributeAction(Targets):
    action: Literal["attribute"]
    set: Attributes = Field(min_length=1, description="Attributes merged into each target's.")


class WeightAction(Targets):
    """Changes the weight of the relations ``follow`` walks in its first hop: add, multiply or set (``value``)."""

    action: Literal["weight"]
    add: float | None = Field(None, allow_inf_nan=False)
    multiply: float | None = Field(None, ge=0, allow_inf_nan=False)
    value: float | None = Field(None, allow_inf_nan=False, description="The new weight.")

    @model_validator(mode="after")
    def _one(self) -> WeightAction:
        if self.follow is None:
            raise ValueError("a weight action names the relations to change with follow")
        if self.follow.depth != 1:
            raise ValueError("a weight action changes the relations of the first hop: follow.depth must be 1")
        if sum(x is not None for x in (self.add, self.multiply, self.value)) != 1:
            raise ValueError("a weight action takes exactly one of add, multiply and value")
        return self


class WebhookAction(_Strict):
    action: Literal["webhook"]
    url: str = Field(min_length=1, max_length=2048)


BUILTIN_ACTIONS = registry.OWN_ACTIONS  # alert, write, attribute, weight, webhook: the models above
STORED = "stored"  # validation context: a rule as stored, whose plugin actions may be gone (see PluginAction)


class PluginAction(Targets):
    """An action a plugin adds (``dust_trigger_actions``; ``dust.engine.actions``): its name, whom it acts on, and
    its settings, the action's other keys, as the plugin's model checked them. Stored flat, as it was written."""

    action: str
    settings: Any = Field(None, exclude=True)  # an instance of the plugin's settings model
    unavailable: str | None = Field(None, exclude=True)  # a stored rule's: why it cannot run (the plugin is gone)
    document: dict[str, Any] = Field(default_factory=dict, exclude=True)  # as written, for an unavailable one

    @model_serializer(mode="wrap")
    def _flat(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> dict[str, Any]:
        if self.unavailable is not None:
            return self.document
        mine: dict[str, Any] = handler(self)
        settings = self.settings.model_dump(mode=info.mode, by_alias=True, exclude_none=info.exclude_none)
        return {"action": mine.pop("action"), **mine, **settings}


def _dump_action(value: Any, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
    """A plugin's action by its own serializer (the union's is DUST's own actions')."""
    if isinstance(value, PluginAction):
        return value.model_dump(mode=info.mode, by_alias=info.by_alias, exclude_none=info.exclude_none)
    return handler(value)


def _action(value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
    """DUST's own actions by their model; any other name is a plugin's (or unknown: a 422 that lists them all)."""
    if isinstance(value, PluginAction):
        return value
    name = value.get("action") if isinstance(value, dict) else None
    if not isinstance(name, str) or name in BUILTIN_ACTIONS:
        return handler(value)
    try:
        return _plugin_action(name, value)
    except ValidationError as problem:
        if not (info.context or {}).get(STORED):
            raise
        reason = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in problem.errors())
        return PluginAction.model_construct(action=name, unavailable=reason, document=dict(value))


def _plugin_action(name: str, value: dict[str, Any]) -> PluginAction:
    known = registry.trigger_actions()
    if name not in known:
        everything = [*BUILTIN_ACTIONS, *sorted(known)]
        message = f"unknown action '{name}' (the actions are {', '.join(everything)}){did_you_mean(name, everything)}"
        raise _errors([{"type": PydanticCustomError("unknown_action", message), "loc": ("action",), "input": name}])
    taken = {"action", "follow", "self"}
    settings, problems = None, []
    try:
        targets = Targets.model_validate({k: v for k, v in value.items() if k in taken and k != "action"})
    except ValidationError as problem:
        problems += problem.errors()
    try:
        settings = known[name].settings.model_validate({k: v for k, v in value.items() if k not in taken})
    except ValidationError as problem:
        problems += problem.errors()
    if problems:  # located as DUST's own actions' are: then.0.<action>.<setting>
        raise _errors([{"type": PydanticCustomError(e["type"], e["msg"]), "loc": (name, *e["loc"]), "input": e["input"]}
                       for e in problems])  # fmt: skip
    return PluginAction(action=name, follow=targets.follow, self_=targets.self_, settings=settings)


def _errors(lines: list[Any]) -> ValidationError:
    return ValidationError.from_exception_data("Action", lines)


class _ActionSchema:
    """In OpenAPI: DUST's own actions, or a plugin's (an object with its ``action`` name and its settings)."""

    @classmethod
    def __get_pydantic_json_schema__(cls, schema: Any, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        plugin = {"type": "object", "properties": {"action": {"type": "string"}}, "required": ["action"],
                  "description": "An action a plugin adds (GET /plugins lists them), with its settings."}  # fmt: skip
        return {"anyOf": [handler(schema), plugin]}


if TYPE_CHECKING:
    Action = AlertAction | WriteAction | AttributeAction | WeightAction | WebhookAction | PluginAction
else:
    Action = Annotated[
        AlertAction | WriteAction | AttributeAction | WeightAction | WebhookAction,
        Field(discriminator="action"),
        WrapValidator(_action),
        WrapSerializer(_dump_action),
        _ActionSchema,
    ]


class TriggerCreate(_Strict):
    name: str = Field(pattern=NAME, description="Unique.")
    description: str | None = Field(None, max_length=2000)
    enabled: bool = True
    when: When
    for_: Targets | None = Field(None, alias="for", description="Default targets of the actions without their own.")
    then: list[Action] = Field(min_length=1, max_length=MAX_ACTIONS)


class TriggerUpdate(_Strict):
    """Fields given replace the rule's; a changed document makes a new version."""

    name: str | None = Field(None, pattern=NAME)
    description: str | None = Field(None, max_length=2000)
    enabled: bool | None = None
    when: When | None = None
    for_: Targets | None = Field(None, alias="for")
    then: list[Action] | None = Field(None, min_length=1, max_length=MAX_ACTIONS)


class TriggerPublic(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: uuid.UUID
    name: str
    description: str | None
    version: int
    enabled: bool
    when: dict[str, Any]
    for_: dict[str, Any] | None = Field(serialization_alias="for")
    then: list[dict[str, Any]]
    created_by: str | None
    created_at: datetime
    updated_at: datetime


class TriggerCreated(TriggerPublic):
    secret: str = Field(description="Signs this rule's webhook bodies (HMAC-SHA256). Shown only now.")


class TriggerList(BaseModel):
    items: list[TriggerPublic]


class TriggerVersionPublic(BaseModel):
    version: int
    enabled: bool
    document: dict[str, Any]
    changed_by: str | None
    changed_at: datetime


class FiringPublic(BaseModel):
    model_config = ConfigDict(populate_by_name=True, from_attributes=True)

    id: int
    trigger_id: uuid.UUID
    trigger_version: int
    entity_id: uuid.UUID
    tensor_id: uuid.UUID | None
    schema_name: str | None = Field(serialization_alias="schema")
    label: str | None
    time_index: int | None
    value: float | None
    depth: int = Field(description="0 for a write; n for a firing caused by the effects of n earlier ones.")
    cause: list[dict[str, Any]] = Field(description="The firings that led here, first first.")
    effects: dict[str, Any]
    created_at: datetime


class FiringList(BaseModel):
    items: list[FiringPublic]
    next_cursor: str | None = None


def check_template(message: str) -> None:
    try:
        fields = [name for _, name, spec, _ in string.Formatter().parse(message) if name is not None]
    except ValueError as error:
        raise ValueError(f"message is not a valid template ({error}); write braces as {{{{ and }}}}") from None
    for name in fields:
        if name not in PLACEHOLDERS:
            raise ValueError(f"message has an unknown placeholder {{{name}}}; known: {', '.join(sorted(PLACEHOLDERS))}")


# --- keeping rules ------------------------------------------------------------------------------------------


def create(session: Session, data: TriggerCreate, *, allow_private: bool) -> TriggerCreated:
    access.require(session, Permission.admin)
    _check_document(session, data, allow_private)
    if repo.by_name(session, data.name) is not None:
        raise Conflict(f"a trigger named '{data.name}' exists; choose another name or PATCH it")
    document = _document(data)
    row = repo.add(session, document, _scope(data.when), enabled=data.enabled, secret=secrets.token_urlsafe(32),
                   by=_username(session))  # fmt: skip
    _changed(session, row)
    return TriggerCreated(**_public(row).model_dump(), secret=row.secret)


def get(session: Session, trigger_id: uuid.UUID) -> TriggerPublic:
    access.require(session, Permission.admin)
    return _public(_row(session, trigger_id))


def list_(session: Session) -> TriggerList:
    access.require(session, Permission.admin)
    return TriggerList(items=[_public(row) for row in repo.all_(session)])


def update(session: Session, trigger_id: uuid.UUID, data: TriggerUpdate, *, allow_private: bool) -> TriggerPublic:
    access.require(session, Permission.admin)
    row = _row(session, trigger_id, lock=True)
    given = data.model_dump(by_alias=True, exclude_unset=True)
    # Actions kept as they are may name a plugin that is gone: the rule can still be renamed or disabled.
    kept = None if "then" in given else {STORED: True}
    merged = TriggerCreate.model_validate({**row.document, "enabled": row.enabled, **given}, context=kept)
    _check_document(session, merged, allow_private)
    if merged.name != row.name and repo.by_name(session, merged.name) is not None:
        raise Conflict(f"a trigger named '{merged.name}' exists; choose another name")
    document = _document(merged)
    if document != row.document or merged.enabled != row.enabled:
        repo.new_version(session, row, document, _scope(merged.when), enabled=merged.enabled, by=_username(session))
        _changed(session, row)
    return _public(row)


def delete(session: Session, trigger_id: uuid.UUID) -> None:
    access.require(session, Permission.admin)
    row = _row(session, trigger_id, lock=True)
    repo.delete(session, row)
    _changed(session, row, "delete")


def versions(session: Session, trigger_id: uuid.UUID) -> list[TriggerVersionPublic]:
    access.require(session, Permission.admin)
    _row(session, trigger_id)
    return [TriggerVersionPublic.model_validate(v, from_attributes=True) for v in repo.versions(session, trigger_id)]


def firings(session: Session, trigger_id: uuid.UUID, *, limit: int = 50, cursor: str | None = None) -> FiringList:
    """The rule's firings, newest first."""
    access.require(session, Permission.admin)
    _row(session, trigger_id)
    walk = id_walk(cursor)
    rows, in_progress = repo.firings_page(session, trigger_id, walk, limit + 1)
    items = [FiringPublic.model_validate(r) for r in rows[:limit]]
    return FiringList(items=items, next_cursor=id_next_cursor(walk, rows, in_progress, limit))


def _row(session: Session, trigger_id: uuid.UUID, *, lock: bool = False) -> Trigger:
    row = repo.get(session, trigger_id, lock=lock)
    if row is None:
        raise NotFound(f"trigger {trigger_id} does not exist")
    return row


def _document(data: TriggerCreate) -> dict[str, Any]:
    return data.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"enabled"})


def _scope(when: When) -> dict[str, Any]:
    return {"event": when.event, "kind": when.kind, "schema_name": when.schema_name, "label": when.label}


def _public(row: Trigger) -> TriggerPublic:
    doc = row.document
    return TriggerPublic(
        id=row.id,
        name=row.name,
        description=doc.get("description"),
        version=row.version,
        enabled=row.enabled,
        when=doc["when"],
        for_=doc.get("for"),
        then=doc["then"],
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _username(session: Session) -> str | None:
    who = access.principal(session)
    return None if who is None else who.username


def _changed(session: Session, row: Trigger, action: audit.Action = "update") -> None:
    """Every process reads the rules afresh once this commits; the change is audited."""
    caches.changed(session, caches.TRIGGERS)
    session.info.pop(_INDEX, None)
    audit.record(session, action, "trigger", row.id)


def _check_document(session: Session, data: TriggerCreate, allow_private: bool) -> None:
    """What the model cannot know: that schemas and labels exist, and that webhook addresses may be called."""
    when = data.when
    if when.schema_name is not None:
        sdef = _schema(session, when.schema_name, "when.schema")
        if when.label is not None:
            _check_label(sdef, when.label, "when.label")
    for n, action in enumerate(data.then):
        if isinstance(action, WriteAction):
            sdef = _schema(session, action.schema_name, f"then[{n}].schema")
            _check_cell(sdef, action, n)
        elif isinstance(action, WebhookAction):
            webhooks.check_url(action.url, allow_private=allow_private)


def _schema(session: Session, name: str, where: str) -> SchemaDef:
    try:
        return schemas.get_def(session, name)
    except NotFound:
        known = [s.name for s in schemas.list_(session)]
        raise InvalidInput(f"{where}: schema '{name}' does not exist{did_you_mean(name, known)}") from None


def _check_label(sdef: SchemaDef, label: str, where: str) -> None:
    labels = [x for axis in sdef.axes for x in axis.labels]
    if label not in labels:
        raise InvalidInput(f"{where}: schema '{sdef.name}' has no label '{label}'{did_you_mean(label, labels)}")


def _check_cell(sdef: SchemaDef, action: WriteAction, n: int) -> None:
    """The label and ``where`` name exactly one cell: one label on each axis."""
    picks = {**action.where}
    owner = next((a.name for a in sdef.axes if action.label in a.labels), None)
    if owner is None:
        _check_label(sdef, action.label, f"then[{n}].label")
    picks[str(owner)] = action.label
    for axis in sdef.axes:
        if axis.name not in picks:
            raise InvalidInput(f"then[{n}].where: schema '{sdef.name}' needs a label for axis '{axis.name}'")
        if picks[axis.name] not in axis.labels:
            raise InvalidInput(f"then[{n}].where: axis '{axis.name}' has no label '{picks[axis.name]}'")
    unknown = set(picks) - {a.name for a in sdef.axes}
    if unknown:
        raise InvalidInput(f"then[{n}].where: schema '{sdef.name}' has no axis {', '.join(sorted(unknown))}")


# --- the index the write path fires by ----------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """One enabled rule as the write path uses it."""

    id: uuid.UUID
    name: str
    version: int
    secret: str
    when: When
    targets: Targets | None
    then: list[Any]


@dataclass(frozen=True)
class Index:
    """The enabled rules by what they watch: values and anomalies by schema, attributes by kind (None: any)."""

    values: dict[str, dict[str, list[Rule]]] = field(default_factory=dict)  # by schema, then label
    anomalies: dict[str, list[Rule]] = field(default_factory=dict)
    attributes: dict[str | None, list[Rule]] = field(default_factory=dict)
    back: dict[str, int] = field(default_factory=dict)  # per schema: how many steps back its value rules look
    _cells: dict[tuple[str, int, str], np.ndarray] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.values or self.anomalies or self.attributes)

    def label_cells(self, sdef: SchemaDef, label: str) -> np.ndarray:
        """True for the flat cells of ``sdef`` that have ``label`` on one of their axes."""
        key = (sdef.name, sdef.version, label)
        if key not in self._cells:  # two threads may both work it out: the same either way
            coords = np.unravel_index(np.arange(math.prod(sdef.shape)), sdef.shape)
            mine = np.zeros(math.prod(sdef.shape), dtype=bool)
            for axis, along in zip(sdef.axes, coords, strict=True):
                if label in axis.labels:
                    mine |= along == axis.labels.index(label)
            self._cells[key] = mine
        return self._cells[key]


def index(session: Session) -> Index:
    """The rules this transaction fires by: read once per transaction at most, and shared by the app's requests
    while no rule has changed (a write to a schema without rules then costs a dictionary lookup)."""
    found: Index | None = session.info.get(_INDEX)
    if found is not None:
        return found
    app = caches.of(session)
    found = None if app is None else app.get(session, caches.TRIGGERS, "index")
    if found is None:
        found = _read_index(session)
        if app is not None:
            app.put(session, caches.TRIGGERS, "index", found)
    session.info[_INDEX] = found
    return found


# Rules as parsed, by (id, version): a version never changes, so a process parses each once. Bounded by the
# number of versions in use; cleared if it ever grows past that many.
_PARSED: dict[tuple[uuid.UUID, int], Rule] = {}


def _read_index(session: Session) -> Index:
    built = Index()
    versions = repo.enabled(session)
    if len(_PARSED) > 4 * len(versions) + 1000:
        _PARSED.clear()
    for row in repo.by_ids(session, [id_ for id_, version in versions if (id_, version) not in _PARSED]):
        # A plugin action whose plugin is gone (or changed) is kept as unavailable: the rule's other actions fire.
        doc = TriggerCreate.model_validate(row.document | {"enabled": True}, context={STORED: True})
        _PARSED[(row.id, row.version)] = Rule(row.id, row.name, row.version, row.secret, doc.when, doc.for_, doc.then)
    for key in versions:
        rule = _PARSED.get(key)
        if rule is None:  # changed between the two reads: its new version comes with the next transaction
            continue
        when = rule.when
        if when.event == "attribute":
            built.attributes.setdefault(when.kind, []).append(rule)
            continue
        schema = str(when.schema_name)
        if when.event == "anomaly":
            built.anomalies.setdefault(schema, []).append(rule)
            continue
        built.values.setdefault(schema, {}).setdefault(str(when.label), []).append(rule)
        built.back[schema] = max(built.back.get(schema, 0), _looks_back(when))
    return built


def _looks_back(when: When) -> int:
    """How many steps before a value its rule reads."""
    steps = [test.steps for test in (when.change, when.rate) if test is not None]
    return max([*steps, 0 if when.count is None else when.count.of - 1])


@event.listens_for(Session, "after_transaction_end")
def _forget_index(session: Session, transaction: SessionTransaction) -> None:
    """The next transaction takes the rules afresh; a rolled-back savepoint may have changed them."""
    session.info.pop(_INDEX, None)
