"""block length per tensor: about 8 KiB of values a block instead of a fixed 64 time steps

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 10:00:00.000000

``tensors.block_steps`` holds how many time steps each of the tensor's blocks holds (dust/engine/blocks.py).
Existing tensors are re-chunked from 64 steps to the length their schema version's cell count gives: the power
of two nearest to 1,024 ÷ cells, within 1..1,024. Values and write stamps move unchanged, so reads, "as of"
reads and aggregates answer as before; ``tensor_history`` holds single cells by time index and needs nothing.
A new block built from old blocks written under different schema versions takes the largest of their cell
shapes (versions only append labels), the others padded with NaN and stamp 0, as reading them did. Blocks that
would hold nothing (every value NaN, every stamp 0) are not stored, as a write never stores them.

The formula is copied here rather than imported: this migration must keep doing what it did when the engine's
choice changes. The downgrade re-chunks back to 64 steps and drops the column.
"""

import math
import zlib
from collections.abc import Callable

import numpy as np
import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

OLD_STEPS = 64
TARGET_BYTES = 8192
SPARSE = "/s"  # the shape key suffix of a sparse block (a later codec form; see _plain)

_tensors = sa.table(
    "tensors",
    sa.column("id", sa.Uuid()),
    sa.column("schema_name", sa.String()),
    sa.column("schema_version", sa.Integer()),
    sa.column("block_steps", sa.Integer()),
)
_schemas = sa.table(
    "schemas", sa.column("name", sa.String()), sa.column("version", sa.Integer()), sa.column("definition", sa.JSON())
)
_blocks = sa.table(
    "tensor_blocks",
    sa.column("tensor_id", sa.Uuid()),
    sa.column("block", sa.BigInteger()),
    sa.column("shape", sa.String()),
    sa.column("data", sa.LargeBinary()),
    sa.column("stamps", sa.LargeBinary()),
)


def upgrade() -> None:
    with op.batch_alter_table("tensors", schema=None) as batch_op:  # ADD COLUMN: SQLite copies no table for it
        batch_op.add_column(sa.Column("block_steps", sa.Integer(), nullable=False, server_default="64"))
    _rechunk(op.get_bind(), _steps_for)


def downgrade() -> None:
    _rechunk(op.get_bind(), lambda _shape: OLD_STEPS)
    # Not batch mode: on SQLite it would copy ``tensors`` and drop the original, and with foreign keys on (as
    # dust.storage.db sets them) dropping it deletes every block by cascade. DROP COLUMN is SQLite 3.35+.
    op.execute(sa.text("ALTER TABLE tensors DROP COLUMN block_steps"))


def _steps_for(shape: tuple[int, ...]) -> int:
    ideal = TARGET_BYTES / (8 * max(1, math.prod(shape)))
    power = 2 ** max(0, round(math.log2(ideal))) if ideal >= 1 else 1
    return min(TARGET_BYTES // 8, max(1, power))


def _rechunk(conn: sa.Connection, target: Callable[[tuple[int, ...]], int]) -> None:
    """Every tensor's blocks re-cut to ``target(its schema version's cell shape)`` steps, one tensor at a time."""
    shapes = {
        (name, version): tuple(len(axis["labels"]) for axis in definition["axes"])
        for name, version, definition in conn.execute(
            sa.select(_schemas.c.name, _schemas.c.version, _schemas.c.definition)
        )
    }
    tensors = conn.execute(
        sa.select(_tensors.c.id, _tensors.c.schema_name, _tensors.c.schema_version, _tensors.c.block_steps)
    ).all()
    for tensor_id, name, version, old in tensors:
        new = target(shapes[(name, version)])
        if new == old:
            continue
        stored = conn.execute(
            sa.select(_blocks.c.block, _blocks.c.shape, _blocks.c.data, _blocks.c.stamps).where(
                _blocks.c.tensor_id == tensor_id
            )
        ).all()
        rows = _recut(stored, old, new)
        conn.execute(sa.delete(_blocks).where(_blocks.c.tensor_id == tensor_id))
        if rows:
            conn.execute(sa.insert(_blocks), [{"tensor_id": tensor_id, **row} for row in rows])
        conn.execute(sa.update(_tensors).where(_tensors.c.id == tensor_id).values(block_steps=new))


def _plain(key: str, data: bytes) -> np.ndarray:
    """A block's values; the sparse form (dust.engine.blocks, written after this revision was applied: a
    downgrade meets it) is the count, a bitmap of the recorded values, then those values."""
    if not key.endswith(SPARSE):
        return np.frombuffer(data, dtype="<f8")
    count = int(np.frombuffer(data, "<u4", 1)[0])
    mask = np.frombuffer(data, np.uint8, (count + 7) // 8, 4)
    values = np.full(count, np.nan)
    values[np.unpackbits(mask, count=count, bitorder="little") == 1] = np.frombuffer(data, "<f8", offset=4 + mask.size)
    return values


def _recut(stored: list[sa.Row], old: int, new: int) -> list[dict[str, object]]:
    """Blocks of ``old`` steps (number, shape key, values, stamps) as blocks of ``new`` steps."""
    pieces: dict[int, list[tuple[int, tuple[int, ...], np.ndarray, np.ndarray]]] = {}
    for number, key, data, stamps in stored:
        shape = tuple(int(n) for n in key.removesuffix(SPARSE).split("x"))
        cells = math.prod(shape)
        values = _plain(key, bytes(data)).reshape(cells, old)
        times = np.frombuffer(zlib.decompress(bytes(stamps)), dtype="<i8").reshape(cells, old)
        start = number * old
        for target in range(start // new, (start + old - 1) // new + 1):
            low, high = max(start, target * new), min(start + old, (target + 1) * new)
            piece = (
                low - target * new,
                shape,
                values[:, low - start : high - start],
                times[:, low - start : high - start],
            )
            pieces.setdefault(target, []).append(piece)
    rows = []
    for number, parts in sorted(pieces.items()):
        shape = max((shape for _, shape, _, _ in parts), key=math.prod)  # nested: versions only append labels
        values = np.full((*shape, new), np.nan)
        times = np.zeros((*shape, new), dtype="<i8")
        for at, part_shape, part_values, part_times in parts:
            window = (*(slice(0, n) for n in part_shape), slice(at, at + part_values.shape[1]))
            values[window] = part_values.reshape(*part_shape, -1)
            times[window] = part_times.reshape(*part_shape, -1)
        if np.isnan(values).all() and not times.any():
            continue  # holds nothing: a write would not have stored it
        rows.append(
            {
                "block": number,
                "shape": "x".join(map(str, shape)),
                "data": values.reshape(-1, new).astype("<f8").tobytes(),
                "stamps": zlib.compress(times.reshape(-1, new).astype("<i8").tobytes(), 1),
            }
        )
    return rows
