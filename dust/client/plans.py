"""Each method of ``dust.Client`` as a plan: the HTTP calls it makes, the answers it decodes.

``OPERATIONS`` is the table of the methods that are one REST operation each: verb, path, which arguments go to
the query and which to the body, and where the result is in the answer. A method takes the arguments of the
method of ``dust.Dust`` of the same name (its signature, bound the same way) and returns the same type, decoded
from the JSON with the model ``Dust`` returns. The few methods that are more than one call, or whose answer
needs more than a model (``read_tensor``'s ``TensorView``), are plans written out below the table.
"""

from __future__ import annotations

import functools
import inspect
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints
from urllib.parse import quote

from pydantic import BaseModel, TypeAdapter

from dust.client.http import Call, Plan
from dust.embedded import Dust

RENAMED = {"start": "from", "end": "to", "for_": "for"}  # names Python cannot use, as REST spells them
SELF = "self"


@dataclass(frozen=True)
class Op:
    """One REST operation: ``path`` has the path parameters in braces; ``query`` and ``body`` name the method's
    parameters sent there (``None`` left out), ``rest`` where its ``**keywords`` go, ``whole`` the parameter
    that is the whole body, ``unwrap`` the field of the answer that holds the result."""

    verb: str
    path: str
    query: tuple[str, ...] = ()
    body: tuple[str, ...] = ()
    rest: str | None = None  # "query" or "body"
    whole: str | None = None
    unwrap: str | None = None
    post: Callable[[Any], Any] | None = None  # applied to the decoded result


def _aggregate_points(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``{time, value, count}`` with ``time`` a datetime, as the embedded ``aggregate`` gives it (``suppressed``
    only where it is so, as the engine says it)."""
    return [
        {k: v for k, v in p.items() if k != "suppressed" or v} | {"time": datetime.fromisoformat(p["time"])}
        for p in points
    ]


PAGE = ("limit", "cursor")
OPERATIONS: dict[str, Op] = {
    # entities and patients
    "create_entity": Op("POST", "/entities", body=("kind", "name"), rest="body"),
    "get_entity": Op("GET", "/entities/{entity_id}"),
    "update_entity": Op("PATCH", "/entities/{entity_id}", rest="body"),
    "delete_entity": Op("DELETE", "/entities/{entity_id}"),
    "entities": Op("GET", "/entities", query=("kind", "q", *PAGE), rest="query"),
    "entity_tensors": Op("GET", "/entities/{entity_id}/tensors"),
    "create_patient": Op("POST", "/patients", body=("name",), rest="body"),
    "patients": Op("GET", "/patients", query=("q", *PAGE), rest="query"),
    "get_patient": Op("GET", "/patients/{entity_id}"),
    "update_patient": Op("PATCH", "/patients/{entity_id}", rest="body"),
    "delete_patient": Op("DELETE", "/patients/{entity_id}"),
    # kinds
    "kinds": Op("GET", "/kinds"),
    "get_kind": Op("GET", "/kinds/{kind}"),
    "set_kind": Op("PUT", "/kinds/{kind}", body=("description", "sensitive", "public")),
    # schemas
    "create_schema": Op("POST", "/schemas", whole="definition"),
    "schemas": Op("GET", "/schemas"),
    "get_schema": Op("GET", "/schemas/{name}", query=("version",)),
    "update_schema": Op("PUT", "/schemas/{name}", whole="definition"),
    "delete_schema": Op("DELETE", "/schemas/{name}"),
    # tensors
    "create_tensor": Op("POST", "/tensors", body=("entity_id", "schema", "origin")),
    "update_tensor": Op("PATCH", "/tensors/{tensor_id}", body=("schema_version",)),
    "delete_tensor": Op("DELETE", "/tensors/{tensor_id}"),
    "erase_values": Op("DELETE", "/tensors/{tensor_id}/values", body=("values=cells",)),
    "tensor_history": Op("GET", "/tensors/{tensor_id}/history", query=("start", "end", *PAGE)),
    "aggregate": Op(
        "GET",
        "/insights/aggregate",
        query=("schema", "label", "agg", "kind", "axis", "bucket", "start", "end", "related_to", "relation"),
        rest="query",
        unwrap="series",
        post=_aggregate_points,
    ),
    "analysis": Op("GET", "/tensors/{tensor_id}/analysis", query=("label", "horizon", "start", "end"), rest="query"),
    # anomalies
    "put_anomaly_rule": Op("PUT", "/anomalies/rules/{schema}/{label}", body=("detector", "settings", "threshold")),
    "anomaly_rules": Op("GET", "/anomalies/rules"),
    "delete_anomaly_rule": Op("DELETE", "/anomalies/rules/{schema}/{label}"),
    "anomalies": Op(
        "GET",
        "/anomalies",
        query=("entity_id", "tensor_id", "schema", "label", "start", "end", "min_score", *PAGE),
    ),
    "scan_anomalies": Op("POST", "/anomalies/scan", body=("label", "tensor_id", "schema", "start", "end"), rest="body"),
    # relations, the master tensor, weight policies
    "relate": Op("POST", "/relations", body=("source_id", "target_id", "type", "weight"), rest="body"),
    "relations": Op("GET", "/relations", query=("entity_id", "type", *PAGE)),
    "get_relation": Op("GET", "/relations/{relation_id}"),
    "update_relation": Op("PATCH", "/relations/{relation_id}", rest="body"),
    "delete_relation": Op("DELETE", "/relations/{relation_id}"),
    "query_master": Op("GET", "/query_master", query=("entity_id", "type", "direction", "depth", "min_weight", "at")),
    "master_tensor": Op("GET", "/query_master/tensor", query=("type", "at")),
    "interact": Op("POST", "/relations/{relation_id}/interactions", body=("at", "amount")),
    "weight_policies": Op("GET", "/weight-policies"),
    "get_weight_policy": Op("GET", "/weight-policies/{type}"),
    "set_weight_policy": Op("PUT", "/weight-policies/{type}", body=("reinforce", "half_life", "cap", "floor")),
    "delete_weight_policy": Op("DELETE", "/weight-policies/{type}"),
    # domain packs, questions
    "supply_chain_bottlenecks": Op(
        "GET", "/domains/supply-chain/bottlenecks", query=("limit", "horizon_days", "window")
    ),
    "supply_chain_what_if": Op("POST", "/domains/supply-chain/what-if", body=("remove",)),
    "ask": Op("POST", "/ask", body=("question",)),
    # jobs, models
    "get_job": Op("GET", "/jobs/{job_id}"),
    "jobs": Op("GET", "/jobs", query=("state", "kind", "created_by", *PAGE)),
    "models": Op("GET", "/models", query=("name", *PAGE)),
    "get_model": Op("GET", "/models/{model_id}"),
    # alerts, triggers, webhooks
    "alerts": Op(
        "GET",
        "/alerts",
        query=("entity_id", "subject_id", "trigger_id", "severity", "min_severity", "state", "start", "end", *PAGE),
    ),
    "get_alert": Op("GET", "/alerts/{alert_id}"),
    "update_alert": Op("PATCH", "/alerts/{alert_id}", body=("state", "note")),
    "create_trigger": Op("POST", "/triggers", whole="rule"),
    "triggers": Op("GET", "/triggers"),
    "trigger": Op("GET", "/triggers/{trigger_id}"),
    "update_trigger": Op("PATCH", "/triggers/{trigger_id}", rest="body"),
    "delete_trigger": Op("DELETE", "/triggers/{trigger_id}"),
    "trigger_versions": Op("GET", "/triggers/{trigger_id}/versions"),
    "firings": Op("GET", "/triggers/{trigger_id}/firings", query=PAGE),
    "webhook_deliveries": Op("GET", "/webhooks/deliveries", query=("state", "trigger_id", *PAGE)),
    "retry_webhook_delivery": Op("POST", "/webhooks/deliveries/{delivery_id}/retry"),
    # users, the audit trail, plugins
    "create_user": Op("POST", "/users", body=("username", "role", "password", "entity_id")),
    "users": Op("GET", "/users"),
    "get_user": Op("GET", "/users/{user_id}"),
    "update_user": Op("PATCH", "/users/{user_id}", rest="body"),
    "audit": Op("GET", "/audit", query=("entity_id", "user", "start", "end", *PAGE)),
    "plugins": Op("GET", "/plugins", unwrap="items"),
}


def text(value: Any) -> str:
    """A query parameter's value as REST reads it: a list as a comma list, booleans as true/false."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Iterable):
        return ",".join(text(v) for v in value)
    return str(value)


def segment(value: Any) -> str:
    return quote(text(value), safe="")


def returns(name: str) -> Any:
    """The type ``Dust.<name>`` returns."""
    return get_type_hints(getattr(Dust, name))["return"]


@functools.cache
def _adapter(kind: Any) -> TypeAdapter[Any]:
    return TypeAdapter(kind)


def decode(kind: Any, data: Any) -> Any:
    """``data``, JSON as REST sends it, as the ``kind`` the embedded API returns."""
    if kind is None or kind is type(None):
        return None
    return _adapter(kind).validate_python(wire(kind, data))


def wire(kind: Any, data: Any) -> Any:
    """``data`` with the keys a model writes under a serialisation-only alias (``schema`` for ``schema_name``)
    put back under the field's name, which is the only one the model reads."""
    origin, args = get_origin(kind), get_args(kind)
    if origin is Annotated:
        return wire(args[0], data)
    if isinstance(kind, type) and issubclass(kind, BaseModel) and isinstance(data, dict):
        renamed = dict(data)
        for name, field in kind.model_fields.items():
            key = field.serialization_alias if field.validation_alias is None and field.serialization_alias else None
            key = key or (field.alias or name)
            if key in renamed:
                value = wire(field.annotation, renamed.pop(key))
                renamed[name if field.validation_alias is None else key] = value
        return renamed
    if origin in (list, Sequence, tuple) and isinstance(data, list) and args:
        return [wire(args[0], item) for item in data]
    if origin in (dict, Mapping) and isinstance(data, dict) and len(args) == 2:
        return {k: wire(args[1], v) for k, v in data.items()}
    if origin in (Union, _union_type()):
        for arg in args:
            if (isinstance(data, dict) and _is_model(arg)) or (isinstance(data, list) and get_origin(arg) is list):
                return wire(arg, data)
    return data


def _union_type() -> Any:
    import types

    return types.UnionType


def _is_model(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, BaseModel)


def jsonable(value: Any) -> Any:
    """A body value as JSON takes it: models as their JSON (by alias), the rest for orjson (http.py)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_unset=True)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def operation(name: str, op: Op) -> Callable[..., Plan[Any]]:
    """The plan of the method ``name``: its arguments bound as ``Dust.<name>`` binds them, sent as ``op`` says."""
    method = getattr(Dust, name)
    signature = inspect.signature(method)
    keywords = next((p.name for p in signature.parameters.values() if p.kind is p.VAR_KEYWORD), None)
    kind = returns(name)

    def plan(self: Any, *args: Any, **kwargs: Any) -> Plan[Any]:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        given = {k: v for k, v in bound.arguments.items() if k != SELF}
        rest = given.pop(keywords, {}) if keywords else {}
        data = yield call(op, given, rest)
        if op.unwrap is not None:
            data = data[op.unwrap]
        result = decode(kind, data)
        return op.post(result) if op.post is not None else result

    plan.__name__ = name
    return plan


def call(op: Op, given: dict[str, Any], rest: dict[str, Any]) -> Call:
    path = op.path
    for name, value in given.items():
        path = path.replace("{" + name + "}", segment(value))
    params = [(RENAMED.get(n, n), given[n]) for n in op.query]
    body = _named(op.body, given)
    if op.rest == "query":
        params += list(rest.items())
    elif op.rest == "body":
        body |= {RENAMED.get(k, k): v for k, v in rest.items()}
    query = tuple((n, text(v)) for n, v in params if v is not None)
    if op.whole is not None:
        return Call(op.verb, path, query, jsonable(given[op.whole]))
    return Call(op.verb, path, query, jsonable(body) if op.body or op.rest == "body" else None)


def _named(names: tuple[str, ...], given: dict[str, Any]) -> dict[str, Any]:
    """The body fields ``names`` (``"values=cells"``: field values from parameter cells) that are not None."""
    body = {}
    for spec in names:
        field, _, parameter = spec.partition("=")
        value = given[parameter or field]
        if value is not None:
            body[RENAMED.get(field, field)] = value
    return body
