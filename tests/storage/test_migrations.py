"""Migrations that change existing rows: what they do to data already there, and that they go back down."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine

from dust.embedded import Dust
from dust.engine import blocks as codec
from dust.engine.timegrid import from_us
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


# --- 0011: block length from the cell count ----------------------------------------------------------------

WRITTEN_US = 1_767_225_600_000_000  # 2026-01-01: when every value below was first written
CHANGED_US = WRITTEN_US + 60_000_000  # a minute later: one value overwritten and one erased
OLD_STEPS = 64
_WHEN = UTCDateTime()
_TABLES = {  # as revision 0010 has them (the columns written here)
    "schemas": sa.table(
        "schemas",
        sa.column("name"),
        sa.column("version"),
        sa.column("definition", sa.JSON()),
        sa.column("created_at", _WHEN),
    ),
    "entities": sa.table(
        "entities",
        sa.column("id", sa.Uuid()),
        sa.column("kind"),
        sa.column("name"),
        sa.column("attributes", sa.JSON()),
        *(sa.column(c, _WHEN) for c in ("created_at", "updated_at")),
    ),
    "tensors": sa.table(
        "tensors",
        *(sa.column(c, sa.Uuid()) for c in ("id", "entity_id")),
        *(sa.column(c) for c in ("schema_name", "schema_version", "time_min", "time_max", "stamped_us")),
        *(sa.column(c, _WHEN) for c in ("origin", "created_at", "updated_at")),
    ),
    "tensor_blocks": sa.table(
        "tensor_blocks",
        sa.column("tensor_id", sa.Uuid()),
        sa.column("block"),
        sa.column("shape"),
        *(sa.column(c, sa.LargeBinary()) for c in ("data", "stamps")),
    ),
    "tensor_history": sa.table(
        "tensor_history",
        sa.column("tensor_id", sa.Uuid()),
        sa.column("labels", sa.JSON()),
        *(sa.column(c) for c in ("time_index", "value", "written_us", "replaced_us", "new_value")),
    ),
}


@dataclass
class OldTensor:
    """A tensor as revision 0010 stored it: blocks of 64 steps, each with the cell shape it was written with."""

    name: str
    labels: list[str]
    blocks: dict[int, int]  # block number -> labels the block was written with (versions append labels)
    values: np.ndarray = field(init=False)  # (cells, time) from ``first``, NaN = none
    first: int = field(init=False)


def _old_tensors() -> list[OldTensor]:
    return [
        OldTensor("one", ["x"], {-2: 1, 0: 1, 1: 1, 5: 1}),  # 1 cell: 1,024 steps a block after
        OldTensor("quad", ["a", "b", "c", "d"], {0: 2, 1: 4, 3: 4}),  # 256 steps; block 0 from version 1
        OldTensor("wide", [f"c{i}" for i in range(500)], {0: 500, 1: 500}),  # 2 steps: each block cut in 32
    ]


def _store_at_0010(engine: Engine, tensors: list[OldTensor]) -> dict[str, uuid.UUID]:
    """Schemas (``quad`` in two versions), entities, tensors and their 64-step blocks, and in ``quad`` one value
    overwritten and one erased with their history, as revision 0010 wrote them; the tensors' ids by schema."""
    t, rng, now, ids = _TABLES, np.random.default_rng(11), datetime.now(UTC), {}
    with engine.begin() as conn:
        for tensor in tensors:
            sizes = sorted(set(tensor.blocks.values()))
            for version, size in enumerate(sizes, 1):
                axes = [{"name": "k", "labels": tensor.labels[:size]}]
                definition = {"name": tensor.name, "axes": axes, "time": {"unit": "day", "step": 1}}
                row = {"name": tensor.name, "version": version, "definition": definition, "created_at": now}
                conn.execute(sa.insert(t["schemas"]).values(row))
            ids[tensor.name] = tensor_id = uuid.uuid4()
            entity = {"id": uuid.uuid4(), "kind": "thing", "name": tensor.name, "attributes": {}}
            conn.execute(sa.insert(t["entities"]).values(**entity, created_at=now, updated_at=now))
            numbers = sorted(tensor.blocks)
            tensor.first = numbers[0] * OLD_STEPS
            tensor.values = np.full((len(tensor.labels), (numbers[-1] + 1) * OLD_STEPS - tensor.first), np.nan)
            blocks = []
            for number, size in tensor.blocks.items():
                values = rng.normal(50, 10, size=(OLD_STEPS, size)).round(1)
                values[rng.random(values.shape) < 0.6] = np.nan
                values[0, 0] = 1.0  # every block holds something
                at = number * OLD_STEPS - tensor.first
                tensor.values[:size, at : at + OLD_STEPS] = values.T
                data, stamps = _plain(str(size), values, np.where(np.isnan(values), 0, WRITTEN_US))
                blocks.append(
                    {"tensor_id": tensor_id, "block": number, "shape": str(size), "data": data, "stamps": stamps}
                )
            recorded = np.flatnonzero(~np.isnan(tensor.values).all(axis=0)) + tensor.first
            origin, version = datetime(2026, 1, 1, tzinfo=UTC), len(sizes)
            span = {"time_min": int(recorded[0]), "time_max": int(recorded[-1]), "stamped_us": CHANGED_US}
            row = {"id": tensor_id, "entity_id": entity["id"], "schema_name": tensor.name, "schema_version": version}
            conn.execute(sa.insert(t["tensors"]).values(**row, origin=origin, created_at=now, updated_at=now, **span))
            conn.execute(sa.insert(t["tensor_blocks"]), blocks)
        _change_quad(conn, ids["quad"], next(tensor for tensor in tensors if tensor.name == "quad"))
    return ids


def _plain(key: str, values: np.ndarray, stamps: np.ndarray) -> tuple[bytes, bytes]:
    """A block as revision 0010 stored every one: plain float64 values (no sparse form yet)."""
    key, data, stamp_bytes = codec.encode(key, values, stamps)
    return codec.dense(key, data)[1], stamp_bytes


def _change_quad(conn: sa.Connection, tensor_id: uuid.UUID, quad: OldTensor) -> None:
    """c at time 64 went from 7.0 to 8.0 and d at time 65 (9.0) was erased, a minute after the first writes."""
    blocks = _TABLES["tensor_blocks"]
    which = (blocks.c.tensor_id == tensor_id, blocks.c.block == 1)
    shape, data, stamp_bytes = conn.execute(
        sa.select(blocks.c.shape, blocks.c.data, blocks.c.stamps).where(*which)
    ).one()
    values, stamps = codec.decode(shape, data, stamp_bytes, (4,))
    assert stamps is not None
    values[0, 2], stamps[0, 2], values[1, 3], stamps[1, 3] = 8.0, CHANGED_US, np.nan, CHANGED_US
    data, stamp_bytes = _plain(shape, values, stamps)
    conn.execute(sa.update(blocks).where(*which).values(data=data, stamps=stamp_bytes))
    quad.values[2, 64 - quad.first], quad.values[3, 65 - quad.first] = 8.0, np.nan
    history = [
        {"time_index": 64, "labels": ["c"], "value": 7.0, "new_value": 8.0},
        {"time_index": 65, "labels": ["d"], "value": 9.0, "new_value": None},
    ]
    times = {"tensor_id": tensor_id, "written_us": WRITTEN_US, "replaced_us": CHANGED_US}
    conn.execute(sa.insert(_TABLES["tensor_history"]), [{**h, **times} for h in history])


def _reads(url: str, ids: dict[str, uuid.UUID]) -> dict[str, Any]:
    """What readers see: every tensor's values, as of before the change, its history, and quad's daily means."""
    seen: dict[str, Any] = {}
    with Dust(url, migrate=False) as db:
        for name, tensor_id in ids.items():
            view = db.read_tensor(tensor_id)
            seen[name] = (view.coords["time"], _listed(view.to_numpy()))
            seen[f"{name} as of"] = _listed(db.read_tensor(tensor_id, as_of=from_us(WRITTEN_US + 1)).to_numpy())
            seen[f"{name} history"] = [h.model_dump() for h in db.tensor_history(tensor_id).items]
        seen["quad c mean"] = [(p["time"], p["value"], p["count"]) for p in db.aggregate("quad", "c", "mean")]
    return seen


def _listed(values: np.ndarray) -> list[Any]:
    """Values as lists, None for NaN (which equals nothing, itself included)."""
    return np.where(np.isnan(values), None, values).tolist()


def _stored(engine: Engine, tensor_id: uuid.UUID) -> list[tuple[int, str, int]]:
    blocks = _TABLES["tensor_blocks"]
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(blocks.c.block, blocks.c.shape, blocks.c.data).where(blocks.c.tensor_id == tensor_id)
        )
        return sorted((number, shape, codec.steps_of(shape, data)) for number, shape, data in found)


def _sparse_again(engine: Engine) -> int:
    """Every block re-encoded by today's codec (sparse where at most 40% recorded); how many became sparse."""
    blocks = _TABLES["tensor_blocks"]
    sparse = 0
    with engine.begin() as conn:
        stored = conn.execute(
            sa.select(blocks.c.tensor_id, blocks.c.block, blocks.c.shape, blocks.c.data, blocks.c.stamps)
        )
        for tensor_id, number, shape, data, stamp_bytes in stored.all():
            values, stamps = codec.decode(shape, data, stamp_bytes, codec.parse_shape(shape))
            key, data, stamp_bytes = codec.encode(shape, values, stamps)
            which = (blocks.c.tensor_id == tensor_id, blocks.c.block == number)
            conn.execute(sa.update(blocks).where(*which).values(shape=key, data=data, stamps=stamp_bytes))
            sparse += key.endswith(codec.SPARSE)
    return sparse


def test_0011_recuts_blocks_to_the_cell_count_and_reads_answer_as_before(empty: Engine) -> None:
    upgrade(empty, "0010")
    old = _old_tensors()
    ids = _store_at_0010(empty, old)
    upgrade(empty, "0011")
    url = empty.url.render_as_string(hide_password=False)
    seen = _reads(url, ids)
    for tensor in old:  # the values written at 0010, from the first recorded step
        times, values = seen[tensor.name]
        assert values == _listed(tensor.values[:, times[0] - tensor.first : times[-1] - tensor.first + 1])
    assert (
        seen["quad as of"][2][64 - seen["quad"][0][0]] == 7.0 and seen["quad as of"][3][65 - seen["quad"][0][0]] == 9.0
    )
    assert [(h["time"], h["value"], h["new_value"]) for h in seen["quad history"]] == [(64, 7.0, 8.0), (65, 9.0, None)]
    one, quad, wide = (_stored(empty, ids[name]) for name in ("one", "quad", "wide"))
    assert one == [(-1, "1", 1024), (0, "1", 1024)]
    assert quad == [(0, "4", 256)]  # blocks 0 (2 labels), 1 and 3 (4 labels) in one, the first padded
    assert {steps for _, _, steps in wide} == {2} and len(wide) <= 64  # cut in 32 each; those holding nothing go
    mean = [(when, value, count) for when, value, count in seen["quad c mean"] if count]
    c = old[1].values[2]
    expected = [(i + old[1].first, float(c[i])) for i in np.flatnonzero(~np.isnan(c)).tolist()]
    assert [(value, count) for _, value, count in mean] == [(v, 1) for _, v in expected]

    assert _sparse_again(empty) > 0  # as DUST writes them now: the downgrade meets the sparse form too
    assert _reads(url, ids) == seen
    downgrade(empty, "0010")
    assert all(steps == OLD_STEPS for tensor_id in ids.values() for _, _, steps in _stored(empty, tensor_id))
    upgrade(empty, "0011")
    assert _reads(url, ids) == seen
