"""The block codec: a tensor's steps × all cells as bytes, read back under a grown schema, sliced by label; the
block length a cell count gets."""

from __future__ import annotations

import numpy as np

from dust.engine import blocks


def test_encode_then_decode_is_exact() -> None:
    values, stamps = blocks.empty((2, 3), 64)
    values[5, 1, 2], stamps[5, 1, 2] = 118.25, 1_767_225_600_000_001
    values[:40] = 1.5  # most of it recorded: stored plain
    key, data, stamp_bytes = blocks.encode("2x3", values, stamps)
    assert key == "2x3" and len(data) == 64 * 6 * 8 and blocks.steps_of("2x3", data) == 64
    assert len(stamp_bytes) < 64  # compressed: nearly every cell has the same stamp (0, never written)
    read, read_stamps = blocks.decode("2x3", data, stamp_bytes, (2, 3))
    np.testing.assert_array_equal(read, values)
    assert read_stamps is not None and read_stamps[5, 1, 2] == 1_767_225_600_000_001


def test_decoded_arrays_are_writable_copies() -> None:
    for values, stamps in (blocks.empty((2,), 16), (np.ones((16, 2)), np.ones((16, 2), dtype=blocks.STAMPS))):
        key, data, stamp_bytes = blocks.encode("2", values, stamps)
        read, _ = blocks.decode(key, data, stamp_bytes, (2,))
        read[0, 0] = 7.0  # a view of the bytes would be read-only
        assert blocks.decode(key, data, None, (2,))[0][0, 0] != 7.0


def test_a_block_of_a_smaller_shape_reads_padded_with_nan() -> None:
    # Written when each axis had fewer labels; the schema then appended labels to both axes.
    values, stamps = blocks.empty((2, 2), 32)
    values[0] = [[1.0, 2.0], [3.0, 4.0]]
    stamps[0] = 7
    key, data, stamp_bytes = blocks.encode("2x2", values, stamps)
    read, read_stamps = blocks.decode(key, data, stamp_bytes, (3, 3))
    np.testing.assert_array_equal(read[0], [[1.0, 2.0, np.nan], [3.0, 4.0, np.nan], [np.nan] * 3])
    assert read_stamps is not None
    assert read_stamps[0].tolist() == [[7, 7, 0], [7, 7, 0], [0, 0, 0]]
    assert blocks.decode(key, data, None, (3, 3))[1] is None


def test_some_time_steps_of_a_block_read_as_those_of_the_whole_block() -> None:
    """``rows`` (a point read asks for one step of a block): plain and sparse, at the block's shape and padded to a
    grown one, with stamps; writable copies."""
    rng = np.random.default_rng(11)
    for recorded in (1.0, 0.05):  # plain, then sparse
        values, stamps = blocks.empty((2, 3), 64)
        chosen = rng.random(values.shape) < recorded
        values[chosen] = rng.normal(size=int(chosen.sum()))
        stamps[chosen] = rng.integers(1, 2**40, size=int(chosen.sum()))
        key, data, stamp_bytes = blocks.encode("2x3", values, stamps)
        for shape in ((2, 3), (3, 4)):
            whole, whole_stamps = blocks.decode(key, data, stamp_bytes, shape)
            for rows in (slice(5, 6), slice(0, 64), slice(60, 64), slice(7, 7)):
                read, read_stamps = blocks.decode(key, data, stamp_bytes, shape, rows=rows)
                np.testing.assert_array_equal(read, whole[rows])
                assert read_stamps is not None and whole_stamps is not None
                np.testing.assert_array_equal(read_stamps, whole_stamps[rows])
                assert read.flags.writeable and read_stamps.flags.writeable


def test_a_label_of_the_first_axis_is_one_contiguous_slice() -> None:
    rng = np.random.default_rng(5)
    values, stamps = blocks.empty((3, 2), 128)
    values[:] = rng.normal(size=values.shape)
    key, data, _ = blocks.encode("3x2", values, stamps)
    assert key == "3x2"  # every value recorded: plain, so the database can cut a label's slice
    for label in range(3):
        offset, length = blocks.label_slice((3, 2), label, 128)
        assert (offset, length) == (len(data) // 3 * label, len(data) // 3)  # the label-th third, as SQL cuts it
        part = np.frombuffer(data[offset : offset + length], dtype=blocks.VALUES).reshape(2, 128)
        np.testing.assert_array_equal(part, values[:, label, :].T)
    assert blocks.label_slice((3, 2), 3, 128) == (0, 0)  # a label the shape does not have yet


def test_stamps_of_cells_written_at_different_times_survive_compression() -> None:
    values, stamps = blocks.empty((4,), 256)
    stamps[:] = np.random.default_rng(9).integers(1, 2**62, size=stamps.shape)
    _, read_stamps = blocks.decode(*blocks.encode("4", values, stamps), (4,))
    assert read_stamps is not None
    np.testing.assert_array_equal(read_stamps, stamps)


def test_a_block_holds_about_8_kib_of_values_in_a_power_of_two_of_steps() -> None:
    assert blocks.steps_for((1,)) == 1024  # the most: 8 KiB
    assert blocks.steps_for((4,)) == 256
    assert blocks.steps_for((2, 3)) == 128  # 6 cells: 170.7 steps is nearest 128 in ratio
    assert blocks.steps_for((5,)) == 256  # 204.8
    assert blocks.steps_for((500,)) == 2
    assert blocks.steps_for((2000,)) == 1  # a step alone is more than 8 KiB: a block is one step
    for cells in range(1, 3000):
        steps = blocks.steps_for((cells,))
        assert steps & (steps - 1) == 0 and 1 <= steps <= 1024
        assert steps == 1 or 5792 <= steps * cells * 8 <= 11586  # within a factor of √2 of 8 KiB


def test_the_length_of_a_stored_block_is_read_from_its_bytes() -> None:
    for steps in (1, 2, 256, 1024):
        for share in (0.0, 1.0):  # sparse and plain
            values, stamps = blocks.empty((3,), steps)
            values[: int(steps * share)] = 2.0
            key, data, stamp_bytes = blocks.encode("3", values, stamps)
            assert blocks.steps_of(key, data) == steps
            read, times = blocks.decode(key, data, stamp_bytes, (5,))  # and under a grown schema
            assert read.shape == (steps, 5) and times is not None and times.shape == (steps, 5)


def test_a_mostly_empty_block_is_stored_sparse_and_reads_back_exactly() -> None:
    rng = np.random.default_rng(3)
    values, stamps = blocks.empty((2,), 512)  # an account's hourly balance: a few hours a week recorded
    hours = rng.choice(512, size=20, replace=False)
    values[hours] = rng.normal(1000, 300, size=(20, 2))
    values[hours[0], 1] = -0.0  # every float64 bit pattern survives, not just the value
    stamps[hours] = 1_767_225_600_000_001
    key, data, stamp_bytes = blocks.encode("2", values, stamps)
    assert key == "2" + blocks.SPARSE and len(data) < 512 * 2 * 8 // 10
    read, read_stamps = blocks.decode(key, data, stamp_bytes, (2,))
    np.testing.assert_array_equal(read, values)
    assert np.signbit(read[hours[0], 1]) and read_stamps is not None
    np.testing.assert_array_equal(read_stamps, stamps)
    plain_key, plain = blocks.dense(key, data)
    assert plain_key == "2" and plain == values.T.tobytes()
    assert blocks.dense("2", plain) == ("2", plain)  # a plain block as it is


def test_the_sparse_form_is_chosen_by_the_share_recorded() -> None:
    for recorded, form in ((0, "/s"), (40, "/s"), (41, ""), (100, "")):
        values, stamps = blocks.empty((1,), 100)
        values[:recorded] = 1.0
        assert blocks.encode("1", values, stamps)[0] == "1" + form


def test_one_value_unpacked_alone_is_the_decoded_blocks() -> None:
    """``value_at`` (a point read's value) against ``decode``: every cell and step of plain and sparse blocks, at
    the block's shape and under a grown one (a label the block predates reads as not recorded)."""
    rng = np.random.default_rng(5)
    for recorded in (1.0, 0.6, 0.05, 0.0):  # plain, plain with gaps, sparse, empty (sparse)
        values, stamps = blocks.empty((3, 2), 16)
        chosen = rng.random(values.shape) < recorded
        values[chosen] = rng.normal(size=int(chosen.sum()))
        key, data, _ = blocks.encode("3x2", values, stamps)
        assert key.endswith(blocks.SPARSE) == (recorded < 0.4)
        for shape in ((3, 2), (4, 3)):
            whole, _ = blocks.decode(key, data, None, shape)
            for step, *cell in np.ndindex(whole.shape):
                np.testing.assert_array_equal(blocks.value_at(key, data, tuple(cell), step), whole[(step, *cell)])
