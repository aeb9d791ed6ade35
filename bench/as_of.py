"""An "as of" read that restores many replaced values, against a plain read of the same tensor.

    .venv/bin/python bench/as_of.py                  # 80,000 values, each replaced once
    .venv/bin/python bench/as_of.py --values 20000   # a quick run

One tensor of 4 labels × ``values / 4`` days on a fresh SQLite file, written once, then every value overwritten
by a second write, so the history holds ``values`` replaced values. Prints the best of ``--repeat`` runs of a
plain read (``tensors.read``) and of a read as of a moment between the two writes, which has to take every value
back from the history, and checks that the as-of read gives the first write's values.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

import dust
from dust.engine import tensors

LABELS = ["a", "b", "c", "d"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--values", type=int, default=80_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    days = args.values // len(LABELS)
    folder = Path(tempfile.mkdtemp())
    with dust.open(f"sqlite:///{folder}/dust.db") as db:
        db.create_schema({"name": "bench", "axes": [{"name": "metric", "labels": LABELS}]})
        entity = db.create_entity("thing", "bench")
        tensor = db.create_tensor(entity.id, "bench", origin="2026-01-01T00:00:00Z")
        first = np.arange(len(LABELS) * days, dtype=np.float64).reshape(len(LABELS), days)
        db.write_array(tensor.id, first)
        time.sleep(0.002)
        between = datetime.now(UTC)
        time.sleep(0.002)
        db.write_array(tensor.id, first + 0.5)
        with db.session() as session:
            plain = _best(args.repeat, lambda: tensors.read(session, tensor.id))
            as_of = _best(args.repeat, lambda: tensors.read(session, tensor.id, as_of=between))
            view = tensors.read(session, tensor.id, as_of=between)
        if not np.array_equal(view.values, first):
            raise SystemExit("the as-of read did not give the first write's values")
    print(f"{args.values:,} values, each replaced once; best of {args.repeat}")
    print(f"plain read  {plain:8.3f} s")
    print(f"as_of read  {as_of:8.3f} s   ({as_of / plain:.1f}× the plain read)")


def _best(repeat: int, run: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - began)
    return best


if __name__ == "__main__":
    main()
