"""For backup, restore, export and import tests: a demo database with every kind of row, throwaway databases
to put it back into, and a dump of every table to compare row for row."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import create_engine, inspect, select, text
from sqlalchemy.engine import make_url

from dust.core.config import Settings
from dust.core.security import Role
from dust.domains import healthcare
from dust.embedded import Dust
from dust.engine import access, anomalies, audit, blocks, entities, kinds, relations, schemas, tensors, users
from dust.engine.anomalies import RuleSet, ScanRequest
from dust.engine.kinds import KindPolicy
from dust.engine.relations import RelationUpdate
from dust.engine.schemas import SchemaUpdate
from dust.engine.tensors import TensorUpdate
from dust.storage.db import make_engine, upgrade
from dust.storage.models import Base, Relation, Tensor
from dust.storage.repositories import models as model_repo
from dust.storage.repositories import users as user_repo
from tests.conftest import POSTGRES_URL
from tests.databases import throwaway_postgres

SECRET_TABLES = ("refresh_tokens", "api_keys", "revoked_tokens", "login_failures", "idempotency_keys")
VITALS_V2 = SchemaUpdate.model_validate(
    {"axes": [{**healthcare.VITALS.axes[0].model_dump(), "labels": [*healthcare.VITALS.axes[0].labels, "waist"]}]}
)


@dataclass
class Demo:
    """What ``fill`` made that tests look at again."""

    tensor_id: uuid.UUID  # a tensor with overwritten values and blocks of two cell shapes
    before_overwrite: datetime  # an "as of" moment between its first values and the overwrite
    password_hash: str
    api_key: str


def fill(url: str, password_hash: str) -> Demo:
    """The healthcare demo (8 patients × 20 days) and, on top, every table DUST has: users with passwords
    (``password_hash``: hashing one costs ~0.4 s), a refresh token, an API key, a revoked token and a failed
    sign-in; a kind policy of our own; a second schema version with a tensor moved onto it; overwritten values
    (history); relation weight changes; audit records of an admin's work; a trained and a queued model."""
    settings = Settings(database_url=url, secret_key="k" * 40)
    with Dust(url, migrate=False) as db:
        with db.session() as s:
            healthcare.generate(s, size=8, days=20)
            kinds.put(s, "device", KindPolicy(description="A monitor.", sensitive=["serial"], public=["name"]))
            schemas.publish(s, "vitals", VITALS_V2)
            # anomaly rules, detector states and flagged values (a low threshold flags some of any series)
            anomalies.put_rule(
                s, "vitals", "heart_rate", RuleSet(detector="mad", settings={"warmup": 3}, threshold=0.01)
            )
            anomalies.scan(s, ScanRequest(schema="vitals", label="heart_rate"))
        doctor = db.entities(kind="practitioner").items[0]
        patient = db.entities(kind="patient").items[0]
        with db.session() as s:
            admin = users.create(s, users.UserCreate(username="admin", role=Role.admin))
            users.create(s, users.UserCreate(username="dr-who", role=Role.clinician, entity_id=doctor.id))
            users.create(s, users.UserCreate(username="robot", role=Role.viewer))
            for name in ("admin", "dr-who"):
                row = user_repo.by_username(s, name)
                assert row is not None
                row.password_hash = password_hash
            soon = datetime.now().astimezone() + timedelta(minutes=5)
            user_repo.add_refresh(s, user_id=admin.id, family_id=uuid.uuid4(), token_hash="f" * 64, expires_at=soon)
            user_repo.add_failure(s, "dr-who", "127.0.0.1", datetime.now().astimezone())
            user_repo.revoke_access(s, "a-logged-out-token", soon)
            key = users.create_key(s, settings, admin.id, "nightly job")
            _models(s)
        with db.session() as s:
            access.act_as(s, _principal(admin.id))
            tensor_id = _overwrite(s)
        time.sleep(0.002)
        before = datetime.now().astimezone()
        time.sleep(0.002)
        with db.session() as s:
            access.act_as(s, _principal(admin.id))
            tensors.write_values(s, tensor_id, [{"time": 2, "metric": "heart_rate", "value": 99}], max_batch=100)
            tensors.update(s, tensor_id, TensorUpdate(schema_version=2))
            tensors.write_values(s, tensor_id, [{"time": 70, "metric": "waist", "value": 81.5}], max_batch=100)
            _reweigh(s)
            entities.get(s, patient.id)
            audit.record(s, "read", "export-test")
    return Demo(tensor_id, before, password_hash, key.key)


def _principal(user_id: uuid.UUID) -> access.Principal:
    return access.Principal(
        user_id=user_id,
        username="admin",
        role=Role.admin,
        entity_id=None,
        secret="s" * 40,
        grant_types=["treats"],
        depth=2,
        default_sensitive=["name"],
        may_grant=True,
        request_id="req-1",
        client="127.0.0.1",
        method="POST",
        path="/api/v1/test",
    )


def _models(session: Any) -> None:
    """Two versions of a model: one trained (its artefact: any bytes, for the export), one queued (none yet)."""
    fields = {"task": "entity-classification", "name": "risk", "kind": "patient", "target": {"attribute": "risk"}}
    trained = model_repo.add(session, {**fields, "version": 1, "settings": {"epochs": 5}})
    assert trained is not None
    now = datetime.now().astimezone()
    model_repo.succeed(
        session, trained.id, metrics={"test_accuracy": 1.0}, data_version=now, artefact=bytes(range(256)), now=now
    )
    model_repo.add(session, {**fields, "version": 2, "settings": {"epochs": 6}})


def _overwrite(session: Any) -> uuid.UUID:
    """Overwrite two values of the first patient's vitals (their old values go to history); its id."""
    tensor_id = session.scalars(select(Tensor.id).where(Tensor.schema_name == "vitals").order_by(Tensor.id)).first()
    values = [{"time": 1, "metric": "heart_rate", "value": 88}, {"time": 2, "metric": "spo2", "value": 91}]
    tensors.write_values(session, tensor_id, values, max_batch=100)
    return tensor_id


def _reweigh(session: Any) -> None:
    for weight, relation_id in zip(
        (0.25, 0.5), session.scalars(select(Relation.id).order_by(Relation.id)), strict=False
    ):
        relations.update(session, relation_id, RelationUpdate(weight=weight))


def dump(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of every DUST table, in key order, as plain dicts; without ``txid``, which names the transaction
    that wrote a row into this very database (for stable paging) and is not carried over."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return {
                table.name: [
                    {key: value for key, value in row._mapping.items() if key != "txid"}
                    for row in conn.execute(select(table).order_by(*table.primary_key))
                ]
                for table in Base.metadata.sorted_tables
            }
    finally:
        engine.dispose()


def without_secrets(tables: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """``tables`` as an export carries them over: no credentials (nor idempotency keys), and users without a
    password whose token version moved on by one."""
    kept = {name: [] if name in SECRET_TABLES else rows for name, rows in tables.items()}
    kept["users"] = [
        {**user, "password_hash": None, "token_version": user["token_version"] + 1} for user in tables["users"]
    ]
    kept["cache_epochs"] = []  # a running server's counters (an anomaly rule raised one): never exported
    kept["triggers"] = _no_secrets(tables["triggers"])
    return kept


def as_imported(tables: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """``tables`` of an imported database, but for the trigger rules' new webhook secrets and the database's new
    cache identity (dust.engine.caches.forget_all), both checked to be there."""
    assert all(len(rule["secret"]) >= 32 for rule in tables["triggers"])
    assert [row["name"] for row in tables["cache_epochs"]] == ["identity"]
    return {**tables, "triggers": _no_secrets(tables["triggers"]), "cache_epochs": []}


def identity_renewed(
    before: dict[str, list[dict[str, Any]]], after: dict[str, list[dict[str, Any]]]
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    """``before`` and ``after`` a restore without their cache identity, checked to be new after it: no copy a
    server made of the contents before may be used (dust.engine.caches.forget_all)."""

    def split(tables: dict[str, list[dict[str, Any]]]) -> tuple[Any, dict[str, list[dict[str, Any]]]]:
        found = [row["value"] for row in tables["cache_epochs"] if row["name"] == "identity"]
        rest = [row for row in tables["cache_epochs"] if row["name"] != "identity"]
        return found, {**tables, "cache_epochs": rest}

    old, before = split(before)
    new, after = split(after)
    assert len(new) == 1 and new != old
    return before, after


def _no_secrets(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in rule.items() if k != "secret"} for rule in rules]


def assert_same(expected: dict[str, list[dict[str, Any]]], actual: dict[str, list[dict[str, Any]]]) -> None:
    """Row for row, value for value; block bytes also decoded and compared as values and stamps."""
    assert expected.keys() == actual.keys()
    for name in expected:
        assert len(actual[name]) == len(expected[name]), name
        for want, got in zip(expected[name], actual[name], strict=True):
            assert got == want, (name, want, got)
    for want, got in zip(expected["tensor_blocks"], actual["tensor_blocks"], strict=True):
        shape = blocks.parse_shape(want["shape"])
        values, stamps = blocks.decode(got["shape"], got["data"], got["stamps"], shape)
        old_values, old_stamps = blocks.decode(want["shape"], want["data"], want["stamps"], shape)
        np.testing.assert_array_equal(values, old_values)  # NaN equals NaN here
        np.testing.assert_array_equal(stamps, old_stamps)


def assert_reads_alike(source: str, target: str, demo: Demo) -> None:
    """The same tensor reads the same, now and "as of" before its overwrite, in both databases."""
    with Dust(source, migrate=False) as old, Dust(target, migrate=False) as new:
        for selection in ({}, {"as_of": demo.before_overwrite}):
            np.testing.assert_array_equal(
                new.read_tensor(demo.tensor_id, **selection).to_numpy(),
                old.read_tensor(demo.tensor_id, **selection).to_numpy(),
            )
        assert old.read_tensor(demo.tensor_id, as_of=demo.before_overwrite).to_numpy()[0, 2] != 99


_SPARE = pytest.StashKey[str]()


def _spare_postgres(config: pytest.Config) -> str:
    """A PostgreSQL database of this test process's own to restore and import into, made on first use and
    dropped when the session ends; ``fresh`` empties it for each use (creating and dropping a database per
    test would cost a second or more each)."""
    if _SPARE in config.stash:
        return config.stash[_SPARE]
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL tests need DUST_TEST_POSTGRES_URL (set by .ci/run and `make test`)")
    spare = ExitStack()
    config.add_cleanup(spare.close)
    config.stash[_SPARE] = spare.enter_context(throwaway_postgres(POSTGRES_URL, "dust_spare"))
    return config.stash[_SPARE]


@pytest.fixture(name="fresh")
def fresh_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., str]:
    """``fresh(like, migrated=True)``: the URL of an empty database on the backend of ``like`` (a new SQLite
    file, or the spare PostgreSQL database emptied), migrated or without any table at all. Import it into a
    test module as ``fresh_fixture`` and ask for ``fresh``."""

    def make(like: str, migrated: bool = True) -> str:
        if make_url(like).get_backend_name() == "sqlite":
            url = f"sqlite:///{tmp_path / f'fresh-{uuid.uuid4().hex[:8]}.db'}"
        else:
            url = _spare_postgres(request.config)
            if _emptied(url, migrated):
                return url
        if migrated:
            engine = make_engine(url)
            upgrade(engine)
            engine.dispose()
        return url

    return make


def _emptied(url: str, migrated: bool) -> bool:
    """Empty the PostgreSQL database at ``url``: whether it is still migrated (its tables were emptied), or
    now has no tables at all."""
    engine = create_engine(url)
    tables = [t.name for t in Base.metadata.sorted_tables]
    try:
        with engine.begin() as conn:
            if migrated and set(inspect(conn).get_table_names()) >= {*tables, "alembic_version"}:
                conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
                return True
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
            return False
    finally:
        engine.dispose()
