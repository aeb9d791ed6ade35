"""The block codec: ``BLOCK`` time steps × all cells of a tensor as two little-endian arrays.

Values are float64 with NaN for "not recorded"; stamps are int64 microseconds since the epoch of each cell's
last write (0 = never). A block remembers the cell shape it was written with, so blocks written before a
schema gained labels read back padded with NaN.
"""

from __future__ import annotations

import numpy as np

BLOCK = 64
VALUES = np.dtype("<f8")
STAMPS = np.dtype("<i8")


def shape_key(shape: tuple[int, ...]) -> str:
    return "x".join(str(n) for n in shape)


def parse_shape(key: str) -> tuple[int, ...]:
    return tuple(int(n) for n in key.split("x"))


def empty(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    return np.full((BLOCK, *shape), np.nan), np.zeros((BLOCK, *shape), dtype=STAMPS)


def decode(key: str, data: bytes, stamps: bytes | None, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray | None]:
    """Values (and stamps, if given) of one block as writable arrays of cell shape ``shape``."""
    stored = parse_shape(key)
    values = np.frombuffer(data, dtype=VALUES).reshape(BLOCK, *stored)
    times = None if stamps is None else np.frombuffer(stamps, dtype=STAMPS).reshape(BLOCK, *stored)
    if stored == shape:
        return values.copy(), None if times is None else times.copy()
    window = (slice(None), *(slice(0, n) for n in stored))
    full_values, full_times = empty(shape)
    full_values[window] = values
    if times is not None:
        full_times[window] = times
    return full_values, None if times is None else full_times


def encode(values: np.ndarray, stamps: np.ndarray) -> tuple[bytes, bytes]:
    return values.astype(VALUES, copy=False).tobytes(), stamps.astype(STAMPS, copy=False).tobytes()
