"""bench/demos.py at a tiny size: one case measured in-process on each backend, and its anchor's COPY format."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import NO_POSTGRES, POSTGRES_URL

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))  # the scripts import their neighbour ``host``, as when run from there
spec = importlib.util.spec_from_file_location("demos_bench", BENCH / "demos.py")
assert spec is not None and spec.loader is not None
demos = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = demos  # a dataclass looks its module up there
spec.loader.exec_module(demos)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_case_loads_the_pack_and_times_it_beside_the_anchor(backend: str, tmp_path: Path) -> None:
    if backend == "postgresql" and POSTGRES_URL is None:
        pytest.skip(NO_POSTGRES)
    row = demos.case("supply-chain", 40, backend, 7, 7, POSTGRES_URL or "", str(tmp_path))
    assert row["entities"] == 12 + 40  # the products, then every site
    assert row["relations"] == row["made"]["relations"] > 40
    assert row["values"] == row["anchor_rows"] > 0
    assert row["progress_total"] == 40 and row["progress_updates"] >= 4  # one a kind of site at least
    assert row["seconds"] > 0 and row["anchor_seconds"] > 0 and row["database_bytes"] > 0
    assert list(tmp_path.iterdir()) == []  # the files went with the temporary directory


def test_the_anchors_binary_copy_rows_read_back_as_written() -> None:
    if POSTGRES_URL is None:
        pytest.skip(NO_POSTGRES)
    columns = next(demos.anchor_batches(2_500))
    plain = make_url(POSTGRES_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain) as conn:  # a temporary table: nothing is left in the database
        conn.execute("CREATE TEMPORARY TABLE anchor (series integer, cell integer, day integer, value float8)")
        with conn.cursor().copy("COPY anchor FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(b"PGCOPY\n\xff\r\n\x00" + bytes(8) + demos.binary_rows(*columns) + b"\xff\xff")
        got = np.array(conn.execute("SELECT series, cell, day, value FROM anchor ORDER BY 1, 2, 3").fetchall())
    assert got.shape == (2_500, 4)
    np.testing.assert_array_equal(got, np.column_stack(columns))
