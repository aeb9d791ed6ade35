"""Ingest and cross-patient aggregate: DUST (embedded, SQLite) against raw sqlite3 and DuckDB, in one run.

    .venv/bin/python bench/ingest_aggregate.py                         # 10,000 patients × 4 vitals × 250 days
    .venv/bin/python bench/ingest_aggregate.py --patients 1000 --days 100   # a quick run

(a) DUST ingest, twice into fresh files, committing every ``--batch`` patients in one ``db.session()``:
    bulk (the importer's path: per batch one ``entities.create_many``, one ``tensors.create_many`` and one
    ``tensors.write_arrays``), then per patient (an entity, a tensor and one ``write_array`` of its (4, days)
    array each, as an API client would). The bulk path is the one measured against the target.
(b) The anchor: raw sqlite3 ``executemany`` of the same (patient, vital, day, value) rows into a plain table,
    same PRAGMAs, one transaction per batch (building the Python row tuples is not timed).
(c) DuckDB: the same rows from a pandas DataFrame into a table (load timed separately), then
    ``SELECT day, avg(value) FROM t WHERE vital = 'heart_rate' GROUP BY day``.
(d) DUST: the same mean per day via ``insights.aggregate_by_step``; raw SQLite GROUP BY as a second reference.
Aggregates are the best of ``--repeat`` runs on one open connection. Patients get origins up to 29 days
apart, so "day" is absolute.
Each row reports wall-clock seconds (ratios use these) and this process's CPU seconds, which vary less when
other work shares the machine. ``--what-if`` adds DUST's aggregate with SQLite memory-mapped I/O turned off
(``dust.storage.db`` turns it on), to show what it buys. ``--page-size N`` makes DUST's files with SQLite pages of
N bytes instead of the default 4096 (set before the first table, the only time SQLite takes it), to compare
block layouts: a block holds about 8 KiB of values (``dust.engine.blocks``).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import numpy as np
import pandas as pd
from host import cpu_model
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import event
from sqlalchemy.orm import Session

import dust
from dust.engine import entities, insights, tensors
from dust.engine.entities import EntityCreate
from dust.engine.tensors import TensorCreate

VITALS = {  # label: (mean, sd, valid range)
    "heart_rate": (75.0, 12.0, (20.0, 250.0)),
    "temperature": (36.9, 0.5, (30.0, 45.0)),
    "systolic_bp": (122.0, 15.0, (40.0, 260.0)),
    "resp_rate": (16.0, 3.0, (4.0, 60.0)),
}
LABEL = "heart_rate"
BASE = datetime(2025, 1, 1, tzinfo=UTC)
MAX_SHIFT_DAYS = 30
OUT = Path(__file__).parent / "out" / "ingest_aggregate.json"
console = Console(width=None if sys.stdout.isatty() else 140)
T = TypeVar("T")


def main() -> None:
    args = parse_args()
    data, shifts = make_data(args.patients, args.days, args.seed)
    n_values = data.size
    n_selected = args.patients * args.days
    console.print(
        f"[bold]{args.patients:,} patients × {len(VITALS)} vitals × {args.days} days = {n_values:,} values[/bold]"
    )
    with tempfile.TemporaryDirectory(prefix="dust-bench-", dir=args.tmp) as tmp:
        work = Path(tmp)
        profiler = cProfile.Profile() if args.profile else None
        for name in ("dust", "dust_per_patient"):
            if args.page_size:
                new_file(work / f"{name}.db", args.page_size)
        ingest = dust_ingest(work / "dust.db", data, shifts, args.batch, profiler, bulk=True)
        one_by_one = dust_ingest(work / "dust_per_patient.db", data, shifts, args.batch, None, bulk=False)
        raw = raw_ingest(work / "raw.db", data, shifts, args.batch)
        duck_load, duck_agg, duck_result = duckdb_run(data, shifts, args.repeat)
        dust_agg, dust_result = dust_aggregate(work / "dust.db", args.repeat, profiler)
        raw_agg, raw_result = raw_aggregate(work / "raw.db", args.repeat)
        if args.what_if:
            unmapped_agg, unmapped_result = dust_aggregate(work / "dust.db", args.repeat, None, mmap_bytes=0)
        sizes = {name: file_size(work / f"{name}.db") for name in ("dust", "dust_per_patient", "raw")}
        if profiler is not None:
            dump_profile(profiler)

    checks = {
        "dust_vs_duckdb_max_abs_diff": compare(dust_result, duck_result),
        "raw_sqlite_vs_duckdb_max_abs_diff": compare(raw_result, duck_result),
        "days": len(duck_result),
    }
    rows = [
        row("DUST (embedded, SQLite)", "ingest, bulk: create_many + write_arrays", ingest["total"], n_values, raw),
        row("  of which", "entities + tensors create_many", ingest["create"], n_values, None),
        row("  of which", "write_arrays", ingest["write"], n_values, None),
        row("DUST (embedded, SQLite)", "ingest, per patient: create + write_array", one_by_one["total"], n_values, raw),
        row("  of which", "create entity + tensor", one_by_one["create"], n_values, None),
        row("  of which", "write_array", one_by_one["write"], n_values, None),
        row("raw sqlite3", "ingest: executemany (anchor)", raw, n_values, raw),
        row("DuckDB", "load DataFrame → table", duck_load, n_values, None),
        row("DuckDB", f"mean {LABEL} per day (anchor)", duck_agg, n_selected, duck_agg),
        row("DUST (embedded, SQLite)", f"mean {LABEL} per day (aggregate_by_step)", dust_agg, n_selected, duck_agg),
        row("raw sqlite3", f"mean {LABEL} per day (GROUP BY)", raw_agg, n_selected, duck_agg),
    ]
    if args.what_if:
        checks["dust_unmapped_vs_duckdb_max_abs_diff"] = compare(unmapped_result, duck_result)
        what_if = f"mean {LABEL} per day, what-if PRAGMA mmap_size=0"
        rows.append(row("DUST (embedded, SQLite)", what_if, unmapped_agg, n_selected, duck_agg))
    report = {
        "benchmark": "ingest_aggregate",
        "run_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "params": {
            "patients": args.patients,
            "vitals": len(VITALS),
            "days": args.days,
            "values": n_values,
            "batch_patients": args.batch,
            "repeat": args.repeat,
            "seed": args.seed,
            "dust_page_size": args.page_size or 4096,
        },
        "machine": machine(),
        "rows": rows,
        "targets": {
            "ingest_dust_over_raw_sqlite": {"ratio": ingest["total"].wall / raw.wall, "target": 2.0},
            "ingest_per_patient_dust_over_raw_sqlite": {"ratio": one_by_one["total"].wall / raw.wall, "target": None},
            "aggregate_dust_over_duckdb": {"ratio": dust_agg.wall / duck_agg.wall, "target": 1.0},
        },
        "checks": checks,
        "database_bytes": sizes,
    }
    show(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"written to {out}")
    if checks["dust_vs_duckdb_max_abs_diff"] >= 1e-9:
        sys.exit("DUST's aggregate differs from DuckDB's")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=250)
    parser.add_argument("--batch", type=int, default=500, help="patients per transaction")
    parser.add_argument("--repeat", type=int, default=3, help="aggregate repetitions; the best counts")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--tmp", default=None, help="directory for the database files (default: the system's)")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--profile", action="store_true", help="cProfile DUST bulk ingest and aggregate to bench/out")
    parser.add_argument(
        "--what-if", action="store_true", help="also time DUST's aggregate with SQLite memory-mapped I/O off"
    )
    parser.add_argument("--page-size", type=int, default=None, help="SQLite page size of DUST's files (default 4096)")
    return parser.parse_args()


def make_data(patients: int, days: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Values (patients, vitals, days), rounded to 0.1 as a monitor reports them, and origin shifts in days."""
    rng = np.random.default_rng(seed)
    data = np.empty((patients, len(VITALS), days))
    for i, (mean, sd, (low, high)) in enumerate(VITALS.values()):
        data[:, i, :] = np.clip(rng.normal(mean, sd, size=(patients, days)).round(1), low, high)
    return data, rng.integers(0, MAX_SHIFT_DAYS, size=patients)


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("patients"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


# --- (a) DUST ingest --------------------------------------------------------------------------------------


def dust_ingest(
    path: Path, data: np.ndarray, shifts: np.ndarray, batch: int, profiler: cProfile.Profile | None, *, bulk: bool
) -> dict[str, Span]:
    db = dust.open(f"sqlite:///{path}")  # migrations: not timed
    total, create, write = Span(), Span(), Span()
    if profiler is not None:
        profiler.enable()
    with measure(total):
        ingest_into(db, data, shifts, batch, create, write, bulk)
    if profiler is not None:
        profiler.disable()
    db.close()
    return {"total": total, "create": create, "write": write}


def ingest_into(
    db: dust.Dust, data: np.ndarray, shifts: np.ndarray, batch: int, create: Span, write: Span, bulk: bool
) -> None:
    db.create_schema(
        {
            "name": "vitals",
            "axes": [
                {
                    "name": "vital",
                    "labels": list(VITALS),
                    "ranges": {label: spec[2] for label, spec in VITALS.items()},
                }
            ],
            "time": {"unit": "day", "step": 1},
        }
    )
    add = add_batch if bulk else add_one_by_one
    with progress() as bar:
        task = bar.add_task(f"DUST ingest, {'bulk' if bulk else 'per patient'}", total=len(data))
        for first in range(0, len(data), batch):
            patients = range(first, min(first + batch, len(data)))
            with db.session() as s:
                add(s, data, shifts, patients, create, write)
            bar.advance(task, len(patients))


def add_batch(s: Session, data: np.ndarray, shifts: np.ndarray, patients: range, create: Span, write: Span) -> None:
    with measure(create):
        people = entities.create_many(s, [EntityCreate(kind="patient", name=f"Patient {p}") for p in patients])
        new = [new_tensor(entity.id, shifts[p]) for entity, p in zip(people, patients, strict=True)]
        made = tensors.create_many(s, new)
    with measure(write):
        tensors.write_arrays(s, {tensor.id: data[p] for tensor, p in zip(made, patients, strict=True)})


def add_one_by_one(
    s: Session, data: np.ndarray, shifts: np.ndarray, patients: range, create: Span, write: Span
) -> None:
    for p in patients:
        with measure(create):
            entity = entities.create(s, EntityCreate(kind="patient", name=f"Patient {p}"))
            tensor = tensors.create(s, new_tensor(entity.id, shifts[p]))
        with measure(write):
            tensors.write_array(s, tensor.id, data[p])


def new_tensor(entity_id: uuid.UUID, shift: np.integer) -> TensorCreate:
    origin = BASE + timedelta(days=int(shift))
    return TensorCreate.model_validate({"entity_id": entity_id, "schema": "vitals", "origin": origin})


def new_file(path: Path, page_size: int) -> None:
    """An empty SQLite file with pages of ``page_size`` bytes: SQLite fixes the size when the first table is made."""
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA page_size={page_size}")
    conn.execute("CREATE TABLE page_size_set (x)")
    conn.execute("DROP TABLE page_size_set")
    conn.close()


# --- (b) the anchor: raw sqlite3 --------------------------------------------------------------------------


def raw_connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def raw_ingest(path: Path, data: np.ndarray, shifts: np.ndarray, batch: int) -> Span:
    conn = raw_connect(path)
    conn.execute("CREATE TABLE t (patient INTEGER, vital TEXT, day INTEGER, value REAL)")
    spent = Span()
    with progress() as bar:
        task = bar.add_task("raw sqlite3 executemany", total=len(data))
        for first in range(0, len(data), batch):
            rows = list(zip(*long_columns(data, shifts, first, min(first + batch, len(data))), strict=True))
            with measure(spent):
                conn.execute("BEGIN")
                conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", rows)
                conn.execute("COMMIT")
            bar.advance(task, min(batch, len(data) - first))
    conn.close()
    return spent


def long_columns(data: np.ndarray, shifts: np.ndarray, first: int, stop: int) -> tuple[list[Any], ...]:
    """Patients ``first..stop-1`` as (patient, vital, day, value) columns; day counts from BASE."""
    part = data[first:stop]
    n_patients, n_vitals, n_days = part.shape
    patient = np.repeat(np.arange(first, stop), n_vitals * n_days)
    vital = np.tile(np.repeat(np.array(list(VITALS), dtype=object), n_days), n_patients)
    day = (shifts[first:stop, None] + np.arange(n_days)[None, :])[:, None, :].repeat(n_vitals, axis=1)
    return patient.tolist(), vital.tolist(), day.ravel().tolist(), part.ravel().tolist()


# --- (c) DuckDB -------------------------------------------------------------------------------------------


def duckdb_run(data: np.ndarray, shifts: np.ndarray, repeat: int) -> tuple[Span, Span, dict[int, float]]:
    patient, vital, day, value = long_columns(data, shifts, 0, len(data))
    frame = pd.DataFrame(
        {
            "patient": np.asarray(patient, dtype=np.int32),
            "vital": pd.Series(vital, dtype="str"),
            "day": np.asarray(day, dtype=np.int32),
            "value": np.asarray(value, dtype=np.float64),
        }
    )
    del patient, vital, day, value
    con = duckdb.connect()
    con.register("frame", frame)
    load, _ = timed(lambda: con.execute("CREATE TABLE t AS SELECT * FROM frame"))
    con.unregister("frame")
    query = f"SELECT day, avg(value) FROM t WHERE vital = '{LABEL}' GROUP BY day"
    seconds, result = best_of(repeat, lambda: timed(lambda: dict(con.execute(query).fetchall())))
    con.close()
    return load, seconds, result


# --- (d) the aggregates -----------------------------------------------------------------------------------


def dust_aggregate(
    path: Path, repeat: int, profiler: cProfile.Profile | None, mmap_bytes: int | None = None
) -> tuple[Span, dict[int, float]]:
    """Best of ``repeat`` on one open database, as in a running service."""
    db = dust.open(f"sqlite:///{path}", migrate=False)
    if mmap_bytes is not None:  # what-if: another mmap_size than dust.storage.db sets (it runs first)
        event.listen(db.engine, "connect", lambda conn, _: conn.execute(f"PRAGMA mmap_size={mmap_bytes}"))
    try:
        if profiler is not None:
            profiler.enable()
        span, series = best_of(repeat, lambda: timed(lambda: aggregate(db)))
        if profiler is not None:
            profiler.disable()
    finally:
        db.close()
    return span, {(point["time"] - BASE).days: point["value"] for point in series}


def aggregate(db: dust.Dust) -> list[dict[str, Any]]:
    with db.session() as s:
        return insights.aggregate_by_step(s, "vitals", LABEL, "mean")


def raw_aggregate(path: Path, repeat: int) -> tuple[Span, dict[int, float]]:
    conn = raw_connect(path)
    query = f"SELECT day, avg(value) FROM t WHERE vital = '{LABEL}' GROUP BY day"
    span, result = best_of(repeat, lambda: timed(lambda: dict(conn.execute(query).fetchall())))
    conn.close()
    return span, result


@dataclass
class Span:
    """Wall-clock and CPU seconds (this process, all threads): on a busy machine CPU time varies less."""

    wall: float = 0.0
    cpu: float = 0.0


@contextmanager
def measure(span: Span) -> Iterator[None]:
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        span.wall += time.perf_counter() - wall
        span.cpu += time.process_time() - cpu


def timed(run: Callable[[], T]) -> tuple[Span, T]:
    span = Span()
    with measure(span):
        result = run()
    return span, result


def best_of(repeat: int, run: Callable[[], tuple[Span, T]]) -> tuple[Span, T]:
    """The fastest (wall clock) of ``repeat`` timed runs, with its result."""
    return min((run() for _ in range(repeat)), key=lambda timed_result: timed_result[0].wall)


def compare(got: dict[int, float], want: dict[int, float]) -> float:
    if got.keys() != want.keys():
        return float("inf")
    return max((abs(got[k] - want[k]) for k in want), default=0.0)


# --- report -----------------------------------------------------------------------------------------------


def row(system: str, operation: str, span: Span, values: int, anchor: Span | None) -> dict[str, Any]:
    return {
        "system": system,
        "operation": operation,
        "seconds": span.wall,
        "cpu_seconds": span.cpu,
        "values": values,
        "values_per_s": values / span.wall if span.wall > 0 else None,
        "ratio_to_anchor": None if anchor is None else span.wall / anchor.wall,
    }


def show(report: dict[str, Any]) -> None:
    table = Table(title=f"ingest + aggregate, {report['params']['values']:,} values")
    for column in ("system", "operation", "seconds", "CPU s", "values/s", "× anchor"):
        table.add_column(column, justify="left" if column in ("system", "operation") else "right")
    for r in report["rows"]:
        ratio = "" if r["ratio_to_anchor"] is None else f"{r['ratio_to_anchor']:.2f}×"
        rate = "" if r["values_per_s"] is None else f"{r['values_per_s']:,.0f}"
        table.add_row(r["system"], r["operation"], f"{r['seconds']:.4f}", f"{r['cpu_seconds']:.4f}", rate, ratio)
    console.print(table)
    for name, target in report["targets"].items():
        if target["target"] is None:  # shown for comparison, not held to a target
            console.print(f"{name}: {target['ratio']:.2f}×")
            continue
        verdict = "[green]met[/green]" if target["ratio"] <= target["target"] else "[red]missed[/red]"
        console.print(f"{name}: {target['ratio']:.2f}× (target ≤ {target['target']}×) {verdict}")
    checks = report["checks"]
    console.print(
        f"DUST mean per day vs DuckDB over {checks['days']} days: max abs diff "
        f"{checks['dust_vs_duckdb_max_abs_diff']:.3g} (raw SQLite: {checks['raw_sqlite_vs_duckdb_max_abs_diff']:.3g})"
    )
    sizes = report["database_bytes"]
    console.print(
        f"on disk: DUST {sizes['dust'] / 1e6:.1f} MB (per patient: {sizes['dust_per_patient'] / 1e6:.1f} MB), "
        f"raw table {sizes['raw'] / 1e6:.1f} MB"
    )
    m = report["machine"]
    console.print(
        f"machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, SQLite {m['sqlite']}, "
        f"NumPy {m['numpy']}, DuckDB {m['duckdb']}, {m['platform']}, load average {m['load_average_1_5_15min']}"
    )


def machine() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "numpy": np.__version__,
        "duckdb": duckdb.__version__,
        "pandas": pd.__version__,
        "platform": platform.platform(),
        "load_average_1_5_15min": [round(x, 2) for x in os.getloadavg()],
    }


def file_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


def dump_profile(profiler: cProfile.Profile) -> None:
    target = OUT.parent / "ingest_aggregate.prof"
    target.parent.mkdir(parents=True, exist_ok=True)
    profiler.dump_stats(target)
    console.print(f"profile written to {target} (python -m pstats {target})")


if __name__ == "__main__":
    main()
