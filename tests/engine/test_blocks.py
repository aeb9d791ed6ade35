"""The block codec: BLOCK steps × all cells as bytes, read back under a grown schema."""

from __future__ import annotations

import numpy as np

from dust.engine import blocks


def test_encode_then_decode_is_exact() -> None:
    values, stamps = blocks.empty((2, 3))
    values[5, 1, 2], stamps[5, 1, 2] = 118.25, 1_767_225_600_000_001
    data, stamp_bytes = blocks.encode(values, stamps)
    assert len(data) == len(stamp_bytes) == blocks.BLOCK * 6 * 8
    read, read_stamps = blocks.decode("2x3", data, stamp_bytes, (2, 3))
    np.testing.assert_array_equal(read, values)
    assert read_stamps is not None and read_stamps[5, 1, 2] == 1_767_225_600_000_001


def test_decoded_arrays_are_writable_copies() -> None:
    data, stamps = blocks.encode(*blocks.empty((2,)))
    read, _ = blocks.decode("2", data, stamps, (2,))
    read[0, 0] = 1.0  # a view of the bytes would be read-only
    assert np.isnan(blocks.decode("2", data, None, (2,))[0][0, 0])


def test_a_block_of_a_smaller_shape_reads_padded_with_nan() -> None:
    # Written when each axis had fewer labels; the schema then appended labels to both axes.
    values, stamps = blocks.empty((2, 2))
    values[0] = [[1.0, 2.0], [3.0, 4.0]]
    stamps[0] = 7
    read, read_stamps = blocks.decode("2x2", *blocks.encode(values, stamps), (3, 3))
    np.testing.assert_array_equal(read[0], [[1.0, 2.0, np.nan], [3.0, 4.0, np.nan], [np.nan] * 3])
    assert read_stamps is not None
    assert read_stamps[0].tolist() == [[7, 7, 0], [7, 7, 0], [0, 0, 0]]
    assert blocks.decode("2x2", blocks.encode(values, stamps)[0], None, (3, 3))[1] is None
