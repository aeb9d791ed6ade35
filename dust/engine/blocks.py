"""The block codec: ``BLOCK`` time steps × all cells of a tensor as two byte strings.

Values are little-endian float64 with NaN for "not recorded", stored cell-major (cells, then time): the
``BLOCK`` values of one cell are contiguous, and so are those of one label of the first axis, which lets an
aggregate over that label read just its slice (``label_slice``) and decode it without a copy.

Stamps are the int64 microseconds since the epoch of each cell's last write (0 = never), zlib-compressed:
cells written together share a stamp, so a block's stamps shrink from 8 bytes a cell to a few dozen bytes in
all. That keeps a block of a 4-cell schema (2 KiB of values) on one 4 KiB SQLite page rather than spilling
onto an overflow page, and stamps are decoded only where needed ("as of" reads and overwrites).

A block remembers the cell shape it was written with, so blocks written before a schema gained labels read
back padded with NaN.
"""

from __future__ import annotations

import zlib

import numpy as np

BLOCK = 64
VALUES = np.dtype("<f8")
STAMPS = np.dtype("<i8")
_LEVEL = 1  # stamps are long runs of one value: the fastest level already shrinks them ~50×


def shape_key(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape)


def parse_shape(key: str) -> tuple[int, ...]:
    return tuple(int(n) for n in key.split("x"))


def empty(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Values and stamps of a block that holds nothing, as (time, *cells) arrays."""
    return np.full((BLOCK, *shape), np.nan), np.zeros((BLOCK, *shape), dtype=STAMPS)


def decode(key: str, data: bytes, stamps: bytes | None, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray | None]:
    """Values (and stamps, if given) of one block as writable (time, *cells) arrays of cell shape ``shape``."""
    stored = parse_shape(key)
    values = _time_first(np.frombuffer(data, dtype=VALUES), stored)
    times = None if stamps is None else _time_first(np.frombuffer(zlib.decompress(stamps), dtype=STAMPS), stored)
    if stored == shape:
        return values.copy(), None if times is None else times.copy()
    window = (slice(None), *(slice(0, n) for n in stored))
    full_values, full_times = empty(shape)
    full_values[window] = values
    if times is not None:
        full_times[window] = times
    return full_values, None if times is None else full_times


def encode(values: np.ndarray, stamps: np.ndarray) -> tuple[bytes, bytes]:
    """The stored form of (time, *cells) values and stamps (cells may also come flattened into one axis)."""
    cell_major = values.reshape(BLOCK, -1).T.astype(VALUES, copy=False).tobytes()
    stamp_bytes = stamps.reshape(BLOCK, -1).T.astype(STAMPS, copy=False).tobytes()
    return cell_major, zlib.compress(stamp_bytes, _LEVEL)


def label_slice(shape: tuple[int, ...], index: int) -> tuple[int, int]:
    """(byte offset, length) in a block's values of label ``index`` of the first axis, for cell shape ``shape``:
    its ``prod(shape[1:])`` cells × ``BLOCK`` steps, cell-major. Empty if the shape has no such label."""
    length = int(np.prod(shape[1:], dtype=np.int64)) * BLOCK * VALUES.itemsize
    return (index * length, length) if index < shape[0] else (0, 0)


def _time_first(flat: np.ndarray, stored: tuple[int, ...]) -> np.ndarray:
    """A (time, *cells) view of cell-major values."""
    return flat.reshape(-1, BLOCK).T.reshape(BLOCK, *stored)
