"""Migrations that change existing rows: what they do to data already there, and that they go back down."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine

from dust.storage.db import MIGRATIONS, make_engine, upgrade
from dust.storage.models import Base, UTCDateTime
from tests.conftest import BACKENDS, POSTGRES_URL
from tests.databases import throwaway_postgres


@pytest.fixture(params=BACKENDS)
def empty(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on a database with no tables yet."""
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
        yield engine
        engine.dispose()
        return
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL tests need DUST_TEST_POSTGRES_URL (set by .ci/run and `make test`)")
    with throwaway_postgres(POSTGRES_URL, "dust_migrations") as url:
        engine = make_engine(url)
        yield engine
        engine.dispose()


def downgrade(engine: Engine, revision: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def test_0003_gives_existing_api_keys_the_default_lifetime(empty: Engine) -> None:
    upgrade(empty, "0002")
    users = sa.table(
        "users",
        sa.column("id", sa.Uuid()),
        *(sa.column(c) for c in ("username", "role", "disabled", "token_version")),
        *(sa.column(c, UTCDateTime()) for c in ("created_at", "updated_at")),
    )
    keys = sa.table(
        "api_keys",
        *(sa.column(c, sa.Uuid()) for c in ("id", "user_id")),
        *(sa.column(c) for c in ("name", "prefix", "key_hash")),
        sa.column("created_at", UTCDateTime()),
    )
    user_id, now = uuid.uuid4(), datetime.now(UTC)
    with empty.begin() as conn:
        conn.execute(
            sa.insert(users).values(
                id=user_id,
                username="etl",
                role="member",
                disabled=False,
                token_version=0,
                created_at=now,
                updated_at=now,
            )
        )
        conn.execute(
            sa.insert(keys).values(
                id=uuid.uuid4(), user_id=user_id, name="old", prefix="a" * 12, key_hash="h", created_at=now
            )
        )
    upgrade(empty, "0003")
    expiry = sa.table("api_keys", sa.column("expires_at", UTCDateTime()))
    with empty.connect() as conn:
        (expires_at,) = conn.execute(sa.select(expiry.c.expires_at)).scalars()
    assert abs(expires_at - (now + timedelta(days=90))) < timedelta(minutes=1)
    columns = {c["name"]: c for c in sa.inspect(empty).get_columns("api_keys")}
    assert not columns["expires_at"]["nullable"]  # no key is ever without an expiry
    downgrade(empty, "0002")
    assert "expires_at" not in {c["name"] for c in sa.inspect(empty).get_columns("api_keys")}


def test_every_migration_goes_down_and_up_again(empty: Engine) -> None:
    upgrade(empty)
    tables = set(sa.inspect(empty).get_table_names())
    downgrade(empty, "base")
    assert set(sa.inspect(empty).get_table_names()) <= {"alembic_version"}
    assert upgrade(empty) == [p.stem.split("_", 1)[0] for p in sorted((MIGRATIONS / "versions").glob("0*.py"))]
    assert set(sa.inspect(empty).get_table_names()) == tables


def test_the_models_match_what_the_migrations_make(empty: Engine) -> None:
    """A model changed without a migration (or the other way round) fails here, not on a user's database."""
    upgrade(empty)
    with empty.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": False})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []
