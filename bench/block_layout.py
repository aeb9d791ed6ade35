"""Block layouts compared: the cross-patient aggregate, the file size and the cost of a one-value write for
several (SQLite page size, steps a block) pairs, on DUST's own code with only the block length swapped.

    .venv/bin/python bench/block_layout.py                                   # 10,000 patients × 4 vitals × 250 days
    .venv/bin/python bench/block_layout.py --patients 1000 --rounds 5        # a quick run
    .venv/bin/python bench/block_layout.py --layouts 4096:256 16384:256      # page:steps pairs

Aggregate: one file per layout, bulk-ingested as ``ingest_aggregate.py`` does (4 cells a step), then the mean
heart_rate per day (``insights.aggregate_by_step``) timed in interleaved rounds, so load from other processes
falls on every layout alike; min and median of wall and CPU seconds. Writes: per layout and cell count (1, 4,
500), ``--writes`` appends of one value, one transaction each (a monitor's path), after 50 not timed; CPU ms a
write. The layouts' steps replace ``dust.engine.blocks.steps_for`` for the whole run; ``auto`` keeps DUST's.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import ingest_aggregate as ia

import dust
from dust.engine import blocks

DEFAULT_LAYOUTS = ["4096:64", "4096:auto", "16384:auto", "16384:128"]


def main() -> None:
    args = parse_args()
    layouts = [(int(page), steps) for page, steps in (layout.split(":") for layout in args.layouts)]
    with tempfile.TemporaryDirectory(prefix="dust-layout-", dir=args.tmp) as tmp:
        aggregates(Path(tmp), layouts, args)
        writes(Path(tmp), layouts, args.writes)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=250)
    parser.add_argument("--rounds", type=int, default=15, help="aggregate rounds over all layouts")
    parser.add_argument("--writes", type=int, default=1_000, help="one-value writes timed per layout and cell count")
    parser.add_argument("--layouts", nargs="+", default=DEFAULT_LAYOUTS, help="page:steps, steps a number or auto")
    parser.add_argument("--tmp", default=None, help="directory for the database files (default: the system's)")
    return parser.parse_args()


def use(steps: str) -> None:
    """Blocks of ``steps`` steps for tensors created from now on (``auto``: DUST's choice)."""
    blocks.steps_for = _AUTO if steps == "auto" else (lambda _shape: int(steps))  # type: ignore[assignment]


_AUTO = blocks.steps_for


def aggregates(work: Path, layouts: list[tuple[int, str]], args: argparse.Namespace) -> None:
    data, shifts = ia.make_data(args.patients, args.days, 42)
    opened: dict[tuple[int, str], dust.Dust] = {}
    for page, steps in layouts:
        path = work / f"agg_{page}_{steps}.db"
        ia.new_file(path, page)
        use(steps)
        ia.dust_ingest(path, data, shifts, 500, None, bulk=True)
        opened[(page, steps)] = dust.open(f"sqlite:///{path}", migrate=False)
        print(f"page {page:>6} steps {steps:>5}: {ia.file_size(path) / 1e6:6.1f} MB", flush=True)
    spans: dict[tuple[int, str], list[ia.Span]] = {layout: [] for layout in opened}
    for _ in range(args.rounds):
        for layout, db in opened.items():
            spans[layout].append(ia.timed(lambda db=db: ia.aggregate(db))[0])
    print(f"aggregate over {data.size:,} values, {args.rounds} rounds: wall min / median, CPU min / median (s)")
    for (page, steps), runs in spans.items():
        walls, cpus = [s.wall for s in runs], [s.cpu for s in runs]
        print(
            f"page {page:>6} steps {steps:>5}: wall {min(walls):.4f} / {statistics.median(walls):.4f}   "
            f"CPU {min(cpus):.4f} / {statistics.median(cpus):.4f}"
        )
    for db in opened.values():
        db.close()


def writes(work: Path, layouts: list[tuple[int, str]], count: int) -> None:
    print(f"one-value writes, one transaction each ({count} a row): CPU ms a write")
    for page, steps in layouts:
        use(steps)
        costs = [
            f"{cells} cells {append_cost(work / f'w_{page}_{steps}_{cells}.db', page, cells, count):.2f}"
            for cells in (1, 4, 500)
        ]
        print(f"page {page:>6} steps {steps:>5}: " + ", ".join(costs), flush=True)


def append_cost(path: Path, page: int, cells: int, count: int) -> float:
    ia.new_file(path, page)
    with dust.open(f"sqlite:///{path}") as db:
        labels = [f"c{i}" for i in range(cells)]
        db.create_schema({"name": "s", "axes": [{"name": "c", "labels": labels}], "time": {"unit": "day"}})
        tensor_id = db.create_tensor(db.create_entity(kind="thing", name="x").id, "s").id

        def write(t: int) -> None:
            db.write_values(tensor_id, [{"time": t, "c": "c0", "value": 1.0}])

        for t in range(50):
            write(t)
        cpu = time.process_time()
        for t in range(50, 50 + count):
            write(t)
        return (time.process_time() - cpu) / count * 1e3


if __name__ == "__main__":
    main()
