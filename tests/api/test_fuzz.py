"""API fuzzing from the server's own OpenAPI document (schemathesis), on SQLite and PostgreSQL.

Every operation in /openapi.json is a test of its own, collected from the document, so a route added later is
fuzzed without anyone listing it: as an admin, and again as a clinician linked to a doctor (the access paths;
operations without security only once). Each answer must not be a 5xx, must have a status code and a content
type the document gives for the operation, and must match the schema documented for it; a request generated to
break the document must be refused.

Known ids. A random UUID finds nothing, so with generated ids alone only the 404s would be exercised. Each test
seeds a small world of its own (a schema; a hospital, two doctors and two patients; a tensor per patient holding
values, one of them replaced; relations between them; a kind policy; a user with API keys to act on) and points
most generated ids, in the parts of a request generated valid, at it: path parameters, query parameters and body
fields named like ids. A values write gets the world's axis labels too.

Who fuzzes. Each test signs in with an API key of a new user of its own, so nothing one test does to its user
reaches another:
- ``POST /auth/logout?everywhere=true`` revokes every key the caller holds, so that operation mints a new key
  before each example: it is fuzzed too, without every example after the first such one answering 401.
- The fuzzing user's own id and key are never among the known ids: ``PATCH /users/{user_id}`` and
  ``DELETE /auth/api-keys/{key_id}`` act on another user and on spare keys, and never disable, demote or revoke
  the fuzzer. A test fails if its key stopped working.

Examples per operation: ``DUST_FUZZ_EXAMPLES`` (default 12 as the admin and 8 as the clinician, which keeps the
file to under two minutes of one core for both backends); ``make fuzz`` runs 1,000 for each role.
``DUST_FUZZ_STATS=FILE`` turns the tests into a measurement: nothing is checked, and each request appends a JSON
line (operation, role, backend, generation mode, status, detail) to FILE, to count what the server refuses.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.python.asgi import get_client
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from dust.api.app import create_app
from dust.core.config import Settings
from dust.embedded import Dust
from dust.engine import entities, kinds, relations, schemas, tensors, users
from dust.engine.entities import EntityCreate
from dust.engine.kinds import KindPolicy
from dust.engine.relations import RelationCreate
from dust.engine.schemas import SchemaCreate
from dust.engine.tensors import TensorCreate
from dust.engine.users import UserCreate
from tests.conftest import BACKENDS

SECRET = "fuzz-secret-key-" + "x" * 32
ASKED = os.environ.get("DUST_FUZZ_EXAMPLES")
EXAMPLES = {"admin": int(ASKED or 12), "clinician": int(ASKED or 8)}
STATS = os.environ.get("DUST_FUZZ_STATS")
LABELS = ["heart_rate", "temperature"]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
# Where known values go besides every path parameter: these query parameters and body fields (a body's "name"
# is a display name or a new schema's, never a reference).
QUERY_KNOWN = {"entity_id", "kind", "type"}
BODY_KNOWN = {"entity_id", "source_id", "target_id", "user_id", "schema", "type"}


def _document() -> dict[str, Any]:
    """The OpenAPI document, from an app that never touches its database."""
    offline = Settings(database_url="sqlite://", secret_key=SECRET, log_level="WARNING")
    return create_app(offline, migrate=False).openapi()


def _operations() -> list[Any]:
    """(role, method, path) for every operation in the document: as an admin, and as a clinician unless the
    operation needs no credential."""
    found = []
    for path, operations in _document()["paths"].items():
        for method, operation in operations.items():
            for role in ["admin", "clinician"] if operation.get("security") else ["admin"]:
                found.append(pytest.param(role, method.upper(), path, id=f"{role} {method.upper()} {path}"))
    return found


@dataclass
class Served:
    """One backend's app, its OpenAPI document as schemathesis loaded it, and the engine that seeds it."""

    backend: str
    app: FastAPI
    settings: Settings
    schema: Any
    db: Dust


@dataclass
class World:
    """A test's own world: the values a generated request may be pointed at, and the fuzzing user's key."""

    known: dict[str, list[str]]
    fuzzer: uuid.UUID
    key: str
    statuses: list[int] = field(default_factory=list)


@pytest.fixture(scope="module", params=BACKENDS)
def served(
    request: pytest.FixtureRequest, sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """One app per backend for the module. Each test seeds a world of its own, so they share the database
    (on PostgreSQL the worker's, which other modules' tests may empty between these tests: no world outlives its
    test)."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("fuzz") / "dust.db"
        shutil.copy(sqlite_template, path)
        url = f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("postgres_database")
    config = Settings(database_url=url, log_level="WARNING", secret_key=SECRET)
    app = create_app(config, migrate=False)
    db = Dust(url, migrate=False)
    try:
        yield Served(request.param, app, config, schemathesis.openapi.from_dict(app.openapi()), db)
    finally:
        db.close()
        app.state.engine.dispose()


def seed(served: Served, role: str) -> World:
    """Hospital H; doctors A and B work there; A treats patient PA and B patient PB (each also `consults` their
    patient); a tensor per patient with values, one replaced; a policy for kind patient; a user to act on with a
    key; and the fuzzer — a clinician is doctor A — with its key and a spare."""
    tag = uuid.uuid4().hex[:8]
    name = f"vitals_{tag}"
    with served.db.session() as s:
        schemas.create(s, SchemaCreate.model_validate({"name": name, "axes": [{"name": "metric", "labels": LABELS}]}))
        made = entities.create_many(
            s,
            [
                EntityCreate(kind="hospital", name="General"),
                EntityCreate(kind="doctor", name="Dr A"),
                EntityCreate(kind="doctor", name="Dr B"),
                EntityCreate(kind="patient", name="Pat A", external_id=f"MRN-A-{tag}", attributes={"ssn": "1"}),
                EntityCreate(kind="patient", name="Pat B", external_id=f"MRN-B-{tag}"),
            ],
        )
        h, a, b, pa, pb = (entity.id for entity in made)
        edges = [(a, h, "works_at"), (b, h, "works_at"), (a, pa, "treats"), (b, pb, "treats")]
        edges += [(a, pa, "consults"), (b, pb, "consults")]
        related = [relations.create(s, RelationCreate(source_id=x, target_id=y, type=t)).id for x, y, t in edges]
        # From 1970, so that most generated timestamps fall on the tensors' grids (none falls before its origin).
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        charts = tensors.create_many(s, [TensorCreate(entity_id=p, schema=name, origin=epoch) for p in (pa, pb)])
        for chart in charts:
            cells = [{"time": t, "metric": label, "value": 36.0 + t} for t in range(3) for label in LABELS]
            tensors.write_values(s, chart.id, cells)
            tensors.write_values(s, chart.id, [{"time": 1, "metric": "heart_rate", "value": 72.0}])  # history
        kinds.put(s, "patient", KindPolicy(sensitive=["diagnosis"]))
        fuzzer = users.create(
            s, UserCreate(username=f"fuzz-{role}-{tag}", role=role, entity_id=a if role == "clinician" else None)
        )
        target = users.create(s, UserCreate(username=f"target-{tag}", role="viewer", entity_id=pb))
        key = users.create_key(s, served.settings, fuzzer.id, "fuzz").key
        spare = users.create_key(s, served.settings, fuzzer.id, "spare").id
        theirs = users.create_key(s, served.settings, target.id, "theirs").id
    people = [str(i) for i in (a, b, h, pa, pb)]
    known = {
        "entity_id": people,
        "source_id": people,
        "target_id": people,
        "tensor_id": [str(chart.id) for chart in charts],
        "relation_id": [str(r) for r in related],
        "name": [name],
        "schema": [name],
        "kind": ["patient", "doctor", "hospital"],
        "type": ["treats", "works_at", "consults"],
        "user_id": [str(target.id)],
        "key_id": [str(spare), str(theirs)],
    }
    return World(known, fuzzer.id, key)


def point_at_world(case: Any, world: World, data: st.DataObject) -> None:
    """Point most generated ids at the world's, in the parts of the request generated valid (a known id could
    repair what a part generated invalid breaks; schemathesis re-checks any part changed here)."""

    def mostly() -> bool:
        # Seven times in eight or so. Hypothesis draws 0 most often (the simplest choice), so 0 must mean yes.
        return data.draw(st.integers(0, 7)) < 7

    def known(name: str, value: Any) -> Any:
        choices = world.known.get(name)
        return data.draw(st.sampled_from(choices), label=name) if choices and mostly() else value

    if valid(case, ParameterLocation.PATH):
        for name, value in (case.path_parameters or {}).items():
            case.path_parameters[name] = known(name, value)
    if "Idempotency-Key" in (case.headers or {}) and valid(case, ParameterLocation.HEADER) and mostly():
        # Hypothesis reuses small values ("0"); a key spent on another body is refused, which says nothing new.
        case.headers["Idempotency-Key"] = uuid.uuid4().hex
    if valid(case, ParameterLocation.QUERY):
        for name, value in (case.query or {}).items():
            if name in QUERY_KNOWN:
                case.query[name] = known(name, value)
    if not isinstance(case.body, dict) or not valid(case, ParameterLocation.BODY):
        return
    for name, value in case.body.items():
        if name in BODY_KNOWN:
            case.body[name] = known(name, value)
    cells = case.body.get("values")
    if isinstance(cells, list) and mostly():
        # A cell names its labels by its tensor's axes: keep the generated time and value, give it the world's.
        case.body["values"] = [
            {"time": c.get("time"), "value": c.get("value"), "metric": data.draw(st.sampled_from(LABELS))}
            if isinstance(c, dict)
            else c
            for c in cells
        ]


def valid(case: Any, location: ParameterLocation) -> bool:
    component = case.meta.components.get(location) if case.meta else None
    return component is None or component.mode.is_positive


def fresh_key(served: Served, world: World) -> str:
    with served.db.session() as s:
        return users.create_key(s, served.settings, world.fuzzer, "fuzz").key


def record(served: Served, role: str, case: Any, response: Any) -> None:
    assert STATS is not None
    line = {
        "operation": case.operation.label,
        "role": role,
        "backend": served.backend,
        "mode": case.meta.generation.mode.value if case.meta else None,
        "status": response.status_code,
    }
    if response.status_code >= 400:
        line["detail"] = str(json.loads(response.content or b"{}").get("detail"))[:300]
    with open(STATS, "a") as out:
        out.write(json.dumps(line) + "\n")


@pytest.mark.parametrize(("role", "method", "path"), _operations())
def test_operation_conforms(role: str, method: str, path: str, served: Served) -> None:
    world = seed(served, role)
    operation = served.schema[path][method]
    client = get_client(served.app)  # not entered: no lifespan to start; the fixture disposes of the engine
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))
    logout = path.endswith("/auth/logout")

    @settings(
        max_examples=EXAMPLES[role],
        deadline=None,  # a database round trip is not a fixed cost
        suppress_health_check=list(HealthCheck),  # slow, large and filtered generation is the point here
        # In make test the same examples every run, so a submission is judged on what it changed; make fuzz
        # (DUST_FUZZ_EXAMPLES set) explores, and replays what it found first.
        derandomize=not ASKED,
        database=DirectoryBasedExampleDatabase(str(Path(__file__).parents[2] / ".pytest_cache" / "hypothesis"))
        if ASKED
        else None,
        print_blob=True,
    )
    @given(case=cases, data=st.data())
    def fuzz(case: Any, data: st.DataObject) -> None:
        point_at_world(case, world, data)
        key = fresh_key(served, world) if logout else world.key  # everywhere=true revokes the key it is sent with
        credential = {"Authorization": f"Bearer {key}"}
        note(f"as {role}: {case.as_curl_command(headers=credential)}")
        response = case.call(session=client, headers=credential)
        world.statuses.append(response.status_code)
        if STATS:  # a measurement, not a test: every example runs, none stops the run
            record(served, role, case, response)
            return
        case.validate_response(response, checks=CHECKS, headers=credential)

    # Hypothesis keys its example database by the test's source, the same for every operation: name this one.
    label = f"{served.backend} {role} {method} {path}".encode()
    fuzz.hypothesis.inner_test._hypothesis_internal_add_digest = label  # type: ignore[attr-defined]
    fuzz()
    assert logout or not operation.definition.raw.get("security") or 401 not in world.statuses, (
        f"the fuzzing key stopped working, so examples ran as nobody: {world.statuses}"
    )
