"""Reading a database back: values as written, and damage reported rather than skipped."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

from dust.embedded import Dust
from tests.reliability import snapshot
from tests.reliability.crash import ORIGIN, SCHEMA


def written(tmp_path: Path) -> tuple[str, Path, str]:
    path = tmp_path / "dust.db"
    url = f"sqlite:///{path}"
    with Dust(url) as db:
        db.create_schema(SCHEMA)
        thing = db.create_entity("thing", "one")
        tensor = db.create_tensor(thing.id, "crash", origin=ORIGIN)
        db.write_values(tensor.id, [{"time": 70, "metric": "b", "value": 5.5}])
        db.write_values(tensor.id, [{"time": 70, "metric": "b", "value": 6.5}])
    return url, path, str(tensor.id)


def test_values_and_replaced_values_are_read_back(tmp_path: Path) -> None:
    url, _, tensor = written(tmp_path)
    taken = snapshot.take(url)
    assert taken.problems == []
    assert taken.cells == {(tensor, 70, "b"): 6.5}
    assert list(taken.history) == [(tensor, 70, "b", 5.5, 6.5)]


def test_a_block_that_does_not_decode_is_a_problem(tmp_path: Path) -> None:
    url, path, _ = written(tmp_path)
    with sqlite3.connect(path) as raw:
        raw.execute("UPDATE tensor_blocks SET data = x'0001'")
    assert any("does not decode" in p for p in snapshot.take(url).problems)


def test_rows_whose_parent_is_gone_are_problems(tmp_path: Path) -> None:
    url, path, _ = written(tmp_path)
    with sqlite3.connect(path) as raw:  # foreign keys are off on a plain connection: damage as a bug would do
        raw.execute("UPDATE tensors SET entity_id = ?", (uuid.uuid4().hex,))
    problems = snapshot.take(url).problems
    assert any("tensors without their entity" in p for p in problems)
    assert any("foreign_key_check" in p for p in problems)
