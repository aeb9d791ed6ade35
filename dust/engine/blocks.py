"""The block codec: a tensor's ``steps`` consecutive time steps × all its cells as two byte strings.

Values are little-endian float64 with NaN for "not recorded", stored cell-major (cells, then time): the
``steps`` values of one cell are contiguous, and so are those of one label of the first axis, which lets an
aggregate over that label read just its slice (``label_slice``) and decode it without a copy.

Stamps are the int64 microseconds since the epoch of each cell's last write (0 = never), zlib-compressed:
cells written together share a stamp, so a block's stamps shrink from 8 bytes a cell to a few dozen bytes in
all, and are decoded only where needed ("as of" reads and overwrites).

How many steps a block holds is the tensor's (``tensors.block_steps``), chosen when it is created from its
schema's cell count by ``steps_for``: about ``TARGET_BYTES`` of values a block. What an aggregate over a whole
schema costs is mostly the number of block rows it reads, and what a write costs is the bytes of the blocks it
rewrites; a fixed 64 steps made a 4-cell schema's blocks 2 KiB (four times the rows an 8 KiB block needs) and a
500-cell schema's 256 KiB (rewritten whole to append one step). A block holds one tensor's length for good:
the codec reads the length back from the bytes (values ÷ cells), so blocks need no length of their own.

A block remembers the cell shape it was written with, so blocks written before a schema gained labels read
back padded with NaN.

A block at most ``SPARSE_SHARE`` recorded is stored sparse instead (its shape key ends in ``SPARSE``): the
total of cells × steps as a little-endian uint32, a bitmap of which values are recorded (cell-major, little
bit order), then just those values. An account's hourly balance records a few hours a week, so its 8 KiB
blocks were 97 % NaN: the finance demo's SQLite file was nine times PostgreSQL's, which compresses large values
itself. Readers call ``decode`` (or ``dense`` to get the plain form back); only the aggregate's label slice
(``label_slice``) needs plain blocks, and it asks the database for it only for the plain shape key.
"""

from __future__ import annotations

import functools
import math
import struct
import zlib

import numpy as np

TARGET_BYTES = 8192  # of values a block: with 16 KiB SQLite pages (dust.storage.db), one page per block
MIN_STEPS = 1
MAX_STEPS = TARGET_BYTES // 8  # a one-cell tensor: 1,024 steps
LEGACY_STEPS = 64  # every block before migration 0011, and a tensor imported from an export made before it
VALUES = np.dtype("<f8")
STAMPS = np.dtype("<i8")
_LEVEL = 1  # stamps are long runs of one value: the fastest level already shrinks them ~50×
SPARSE = "/s"  # the shape key's suffix of a sparse block
SPARSE_SHARE = 0.4  # recorded share up to which a block is stored sparse: it is then at most about half the size
_TOTAL = np.dtype("<u4")


def steps_for(shape: tuple[int, ...]) -> int:
    """Time steps a block of a tensor with cell shape ``shape`` holds: the power of two nearest (in ratio) to
    ``TARGET_BYTES`` of values, within ``MIN_STEPS..MAX_STEPS``. A power of two so that the lengths of two
    tensors always divide one another (blocks of one line up with the other's) and re-chunking is a reshape."""
    cells = max(1, math.prod(shape))
    ideal = TARGET_BYTES / (VALUES.itemsize * cells)
    power = 2 ** max(0, round(math.log2(ideal))) if ideal >= 1 else 1
    return min(MAX_STEPS, max(MIN_STEPS, power))


def shape_key(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape)


@functools.lru_cache(maxsize=1024)  # a few shapes, parsed by every read of a block
def parse_shape(key: str) -> tuple[int, ...]:
    return tuple(int(n) for n in key.removesuffix(SPARSE).split("x"))


def empty(shape: tuple[int, ...], steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Values and stamps of a block of ``steps`` steps that holds nothing, as (time, *cells) arrays."""
    return np.full((steps, *shape), np.nan), np.zeros((steps, *shape), dtype=STAMPS)


def steps_of(key: str, data: bytes) -> int:
    """The time steps a stored block holds: its values over its cells."""
    cells = max(1, math.prod(parse_shape(key)))
    if key.endswith(SPARSE):
        return int(struct.unpack_from("<I", data)[0]) // cells  # the total, as _TOTAL
    return len(data) // (VALUES.itemsize * cells)


def dense(key: str, data: bytes) -> tuple[str, bytes]:
    """A stored block's shape key and values in the plain form (float64, cell-major), whatever form it has."""
    if not key.endswith(SPARSE):
        return key, data
    return key.removesuffix(SPARSE), _unsparse(data).tobytes()


def _unsparse(data: bytes) -> np.ndarray:
    total = int(np.frombuffer(data, dtype=_TOTAL, count=1)[0])
    mask_bytes = (total + 7) // 8
    recorded = np.unpackbits(np.frombuffer(data, np.uint8, mask_bytes, _TOTAL.itemsize), count=total, bitorder="little")
    values = np.full(total, np.nan, dtype=VALUES)
    values[recorded.view(bool)] = np.frombuffer(data, VALUES, offset=_TOTAL.itemsize + mask_bytes)
    return values


def decode(
    key: str, data: bytes, stamps: bytes | None, shape: tuple[int, ...], rows: slice = slice(None)
) -> tuple[np.ndarray, np.ndarray | None]:
    """Values (and stamps, if given) of one block as writable (time, *cells) arrays of cell shape ``shape``: its
    time steps ``rows`` only, if given (a point read needs one of its 512: only that one is copied out)."""
    stored = parse_shape(key)
    flat = _unsparse(data) if key.endswith(SPARSE) else np.frombuffer(data, dtype=VALUES)
    values = _time_first(flat, stored)[rows]
    times = None if stamps is None else _time_first(np.frombuffer(zlib.decompress(stamps), dtype=STAMPS), stored)[rows]
    if stored == shape:
        return values.copy(), None if times is None else times.copy()
    window = (slice(None), *(slice(0, n) for n in stored))
    full_values, full_times = empty(shape, values.shape[0])
    full_values[window] = values
    if times is not None:
        full_times[window] = times
    return full_values, None if times is None else full_times


def value_at(key: str, data: bytes, cell: tuple[int, ...], step: int) -> float:
    """One value of a stored block, unpacked alone: the cell at ``cell`` (its label on each axis) at the block's
    time step ``step``; NaN if not recorded, or if the block was written before the schema had that label.
    For a point read, which needs just this: ``decode`` copied out a time step of every cell for it to pick one
    (with the arrays around it, a quarter of a point read's CPU, bench/request_cpu.py)."""
    stored = parse_shape(key)
    if any(i >= n for i, n in zip(cell, stored, strict=True)):
        return math.nan
    flat = 0
    for i, n in zip(cell, stored, strict=True):
        flat = flat * n + i
    position = flat * steps_of(key, data) + step  # cell-major: a cell's steps are contiguous
    if not key.endswith(SPARSE):
        return float(struct.unpack_from("<d", data, position * VALUES.itemsize)[0])
    mask_start = _TOTAL.itemsize
    byte, bit = divmod(position, 8)
    if not data[mask_start + byte] >> bit & 1:
        return math.nan
    before = int.from_bytes(data[mask_start : mask_start + byte + 1], "little") & ((1 << position) - 1)
    mask_bytes = (struct.unpack_from("<I", data)[0] + 7) // 8  # the total, as _TOTAL
    return float(struct.unpack_from("<d", data, mask_start + mask_bytes + before.bit_count() * VALUES.itemsize)[0])


def encode(key: str, values: np.ndarray, stamps: np.ndarray) -> tuple[str, bytes, bytes]:
    """The stored form (shape key, values, stamps) of (time, *cells) values and stamps of cell shape ``key``
    (cells may also come flattened into one axis): sparse if at most ``SPARSE_SHARE`` of the values are
    recorded."""
    steps = values.shape[0]
    cell_major = values.reshape(steps, -1).T.astype(VALUES, copy=False).ravel()
    stamp_bytes = stamps.reshape(steps, -1).T.astype(STAMPS, copy=False).tobytes()
    recorded = ~np.isnan(cell_major)
    if recorded.sum() <= SPARSE_SHARE * cell_major.size:
        total = np.array([cell_major.size], dtype=_TOTAL).tobytes()
        mask = np.packbits(recorded, bitorder="little").tobytes()
        key, data = key + SPARSE, total + mask + cell_major[recorded].tobytes()
    else:
        data = cell_major.tobytes()
    return key, data, zlib.compress(stamp_bytes, _LEVEL)


def label_slice(shape: tuple[int, ...], index: int, steps: int) -> tuple[int, int]:
    """(byte offset, length) in a block's values of label ``index`` of the first axis, for cell shape ``shape``
    and ``steps`` steps: its ``prod(shape[1:])`` cells × ``steps`` steps, cell-major. Empty if the shape has no
    such label. (It is the ``index``-th of ``shape[0]`` equal parts of the values, whatever the length.)"""
    length = int(np.prod(shape[1:], dtype=np.int64)) * steps * VALUES.itemsize
    return (index * length, length) if index < shape[0] else (0, 0)


def _time_first(flat: np.ndarray, stored: tuple[int, ...]) -> np.ndarray:
    """A (time, *cells) view of cell-major values."""
    steps = flat.size // max(1, math.prod(stored))
    return flat.reshape(-1, steps).T.reshape(steps, *stored)
