"""The Python API covers what REST covers: every REST operation has a method of ``Dust`` or a reason not to.

``PYTHON`` maps each operation to its method; ``REST_ONLY`` names the operations that only HTTP needs, each with
the reason (docs/python.md repeats the list for users). A new route fails here until it is in one of the two.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from dust.embedded import Dust

PYTHON = {
    ("POST", "/entities"): "create_entity",
    ("GET", "/entities"): "entities",
    ("GET", "/entities/{entity_id}"): "get_entity",
    ("PATCH", "/entities/{entity_id}"): "update_entity",
    ("DELETE", "/entities/{entity_id}"): "delete_entity",
    ("GET", "/entities/{entity_id}/tensors"): "entity_tensors",
    ("POST", "/patients"): "create_patient",
    ("GET", "/patients"): "patients",
    ("GET", "/patients/{entity_id}"): "get_patient",
    ("PATCH", "/patients/{entity_id}"): "update_patient",
    ("DELETE", "/patients/{entity_id}"): "delete_patient",
    ("GET", "/kinds"): "kinds",
    ("GET", "/kinds/{kind}"): "get_kind",
    ("PUT", "/kinds/{kind}"): "set_kind",
    ("POST", "/schemas"): "create_schema",
    ("GET", "/schemas"): "schemas",
    ("GET", "/schemas/{name}"): "get_schema",
    ("PUT", "/schemas/{name}"): "update_schema",
    ("DELETE", "/schemas/{name}"): "delete_schema",
    ("POST", "/tensors"): "create_tensor",
    ("GET", "/tensors/{tensor_id}"): "read_tensor",
    ("GET", "/tensor/{tensor_id}"): "read_tensor",
    ("PATCH", "/tensors/{tensor_id}"): "update_tensor",
    ("DELETE", "/tensors/{tensor_id}"): "delete_tensor",
    ("POST", "/tensors/{tensor_id}/values"): "write_values",
    ("DELETE", "/tensors/{tensor_id}/values"): "erase_values",
    ("GET", "/tensors/{tensor_id}/history"): "tensor_history",
    ("GET", "/tensors/{tensor_id}/meta"): "get_tensor",
    ("POST", "/relations"): "relate",
    ("GET", "/relations"): "relations",
    ("GET", "/relations/{relation_id}"): "get_relation",
    ("PATCH", "/relations/{relation_id}"): "update_relation",
    ("DELETE", "/relations/{relation_id}"): "delete_relation",
    ("GET", "/query_master"): "query_master",
    ("GET", "/query_master/tensor"): "master_tensor",
    ("POST", "/relations/{relation_id}/interactions"): "interact",
    ("GET", "/domains/supply-chain/bottlenecks"): "supply_chain_bottlenecks",
    ("POST", "/domains/supply-chain/what-if"): "supply_chain_what_if",
    ("POST", "/ask"): "ask",
    ("GET", "/weight-policies"): "weight_policies",
    ("GET", "/weight-policies/{type}"): "get_weight_policy",
    ("PUT", "/weight-policies/{type}"): "set_weight_policy",
    ("DELETE", "/weight-policies/{type}"): "delete_weight_policy",
    ("POST", "/users"): "create_user",
    ("GET", "/users"): "users",
    ("GET", "/users/{user_id}"): "get_user",
    ("PATCH", "/users/{user_id}"): "update_user",
    ("GET", "/audit"): "audit",
    ("GET", "/plugins"): "plugins",
    ("GET", "/insights/aggregate"): "aggregate",
    ("GET", "/tensors/{tensor_id}/analysis"): "analysis",
    ("GET", "/anomalies"): "anomalies",
    ("GET", "/anomalies/rules"): "anomaly_rules",
    ("PUT", "/anomalies/rules/{schema}/{label}"): "put_anomaly_rule",
    ("DELETE", "/anomalies/rules/{schema}/{label}"): "delete_anomaly_rule",
    ("POST", "/anomalies/scan"): "scan_anomalies",
    ("GET", "/jobs/{job_id}"): "get_job",
    ("GET", "/jobs"): "jobs",
    ("GET", "/alerts"): "alerts",
    ("GET", "/alerts/{alert_id}"): "get_alert",
    ("PATCH", "/alerts/{alert_id}"): "update_alert",
    ("GET", "/webhooks/deliveries"): "webhook_deliveries",
    ("POST", "/triggers"): "create_trigger",
    ("GET", "/triggers"): "triggers",
    ("GET", "/triggers/{trigger_id}"): "trigger",
    ("PATCH", "/triggers/{trigger_id}"): "update_trigger",
    ("DELETE", "/triggers/{trigger_id}"): "delete_trigger",
    ("GET", "/triggers/{trigger_id}/versions"): "trigger_versions",
    ("GET", "/triggers/{trigger_id}/firings"): "firings",
    ("POST", "/webhooks/deliveries/{delivery_id}/retry"): "retry_webhook_delivery",
    ("POST", "/models"): "train_model",
    ("GET", "/models"): "models",
    ("GET", "/models/{model_id}"): "get_model",
    ("POST", "/models/{model_id}/predict"): "predict",
}

# In process there is no request to authenticate: the caller holds the database itself and acts as the process
# (full access, like the CLI), so credentials, which exist to say who an HTTP request acts for, have no use.
CREDENTIALS = "credentials say who an HTTP request acts for; in process the caller holds the database itself"
# Probes for load balancers and orchestrators: in process, any call that reaches the database is the check.
PROBE = "a probe for load balancers; in process, a call that reaches the database is the check"
REST_ONLY = {
    ("POST", "/auth/token"): CREDENTIALS,
    ("POST", "/auth/refresh"): CREDENTIALS,
    ("GET", "/auth/me"): CREDENTIALS,
    ("POST", "/auth/logout"): CREDENTIALS,
    ("GET", "/auth/api-keys"): CREDENTIALS,
    ("POST", "/auth/api-keys"): CREDENTIALS,
    ("DELETE", "/auth/api-keys/{key_id}"): CREDENTIALS,
    ("GET", "/healthz"): PROBE,
    ("GET", "/readyz"): PROBE,
    ("GET", "/metrics"): "counts of a server's HTTP requests, pool and queue, for Prometheus; in process there is none",
}
RENAMED = {"from": "start", "to": "end"}  # query parameters Python cannot name (``from`` is a keyword)
# Public methods that are not REST operations' counterparts and need no argument checks of their own.
NOT_CHECKED = {
    "session": "hands out a session; engine functions check their own input",
    "close": "takes no input",
    "read_tensor": "dust.engine.tensors.read checks the selection itself",
}


def _operations(app: FastAPI) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path.removeprefix("/api/v1")): operation
        for path, operations in app.openapi()["paths"].items()
        for method, operation in operations.items()
    }


def test_every_rest_operation_has_a_python_method_or_a_reason(app: FastAPI) -> None:
    operations = _operations(app)
    missing = sorted(set(operations) - PYTHON.keys() - REST_ONLY.keys())
    assert not missing, f"REST operations with neither a Python method (PYTHON) nor a reason (REST_ONLY): {missing}"
    gone = sorted((PYTHON.keys() | REST_ONLY.keys()) - set(operations))
    assert not gone, f"listed operations the API no longer has: {gone}"
    assert not PYTHON.keys() & REST_ONLY.keys()
    absent = sorted({name for name in PYTHON.values() if not callable(getattr(Dust, name, None))})
    assert not absent, f"Dust lacks the methods {absent}"


def test_each_method_takes_its_operations_path_and_query_parameters(app: FastAPI) -> None:
    mismatched = []
    for key, operation in _operations(app).items():
        if key not in PYTHON:
            continue
        parameters = inspect.signature(getattr(Dust, PYTHON[key])).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        for parameter in operation.get("parameters", []):
            if parameter["in"] not in {"path", "query"}:
                continue
            name = RENAMED.get(parameter["name"], parameter["name"])
            if name not in parameters and not takes_any:
                mismatched.append(f"{key[0]} {key[1]} ?{parameter['name']} -> {PYTHON[key]}({name}=)")
    assert not mismatched, f"Python methods without the REST parameter: {mismatched}"


def test_every_public_method_is_documented() -> None:
    page = (Path(__file__).resolve().parents[1] / "docs" / "python.md").read_text()
    public = {name for name, value in vars(Dust).items() if not name.startswith("_") and callable(value)}
    missing = sorted(name for name in public if not re.search(rf"`(db\.)?{name}[(`]", page))
    assert not missing, f"methods docs/python.md does not describe: {missing}"


def test_every_public_method_turns_bad_input_into_dust_errors() -> None:
    """Each is wrapped by ``_checked`` (InvalidInput, never pydantic's ValidationError), or says why not."""
    public = {name for name, value in vars(Dust).items() if not name.startswith("_") and callable(value)}
    unchecked = sorted(name for name in public - NOT_CHECKED.keys() if not hasattr(getattr(Dust, name), "__wrapped__"))
    assert not unchecked, f"methods that may raise pydantic's ValidationError: {unchecked}"
