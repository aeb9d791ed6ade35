"""Demo data sets: how long `dust demo <pack> --size N` takes to load, per pack, size and backend.

    .venv/bin/python bench/demos.py                                   # every pack, 1,000 and 10,000, both backends
    .venv/bin/python bench/demos.py --backend sqlite --sizes 1000     # a quick run
    .venv/bin/python bench/demos.py --pack supply-chain --sizes 100000 --backend sqlite

Each case runs in a fresh process on a fresh database (a file in a temporary directory, or a throwaway
PostgreSQL database that is dropped at the end), migrated before the clock starts. Timed: what `dust demo`
does to load, ``pack.generate(session, size=, days=, seed=, progress=)`` in one ``db.session()`` (one
transaction, committed at the end), with a progress bar as the command shows it. Then, untimed: the entities and
relations in the database, the values the pack reports, the database's size, the process's peak memory, and the
longest time the bar stood still (how far apart its updates were).

The anchor, in the same process and database server right after: bulk-inserting as many rows as the pack wrote
values, each (series, cell, day, value), into a bare table with no index and no key, in one transaction —
sqlite3 ``executemany`` (same PRAGMAs as DUST: WAL, synchronous=NORMAL) into another file, or psycopg binary
``COPY`` into a table of the throwaway database. Building the rows is not timed. It is the floor of storing that
many numbers one row each with the database alone; DUST also stores entities, relations, the history of each
value's write time, audit rows, and runs the pack's trigger rules on every value.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from host import cpu_model
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for its tests' helpers
from tests.databases import throwaway_postgres

OUT = Path(__file__).parent / "out" / "demos.json"
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PACKS = ["healthcare", "supply-chain", "finance"]  # the issue's; any other registered pack is measured too
ANCHOR_BATCH = 500_000  # rows built (untimed) and inserted at a time: memory stays bounded at any size
console = Console(width=None if sys.stdout.isatty() else 160)


def main() -> None:
    args = parse_args()
    from dust.plugins import registry

    installed = registry.domain_packs()
    wanted = args.pack or list(dict.fromkeys([*PACKS, *installed]))
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    rows, skipped = [], []
    for name in wanted:
        if name not in installed:
            console.print(f"[yellow]No domain pack '{name}' registered yet: skipped.[/yellow]")
            skipped.append(name)
            continue
        for size in args.sizes:
            for backend in backends:
                console.print(f"{name}, size {size:,}, {backend} …")
                try:
                    rows.append(run_case(name, size, backend, args))
                except Exception as failure:  # one case failing says so in the table; the others still run
                    rows.append({"pack": name, "size": size, "backend": backend, "error": first_line(failure)})
                show_row(rows[-1])
    report = {
        "benchmark": "demos",
        "run_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": {k: v for k, v in vars(args).items() if k != "postgres_url"}
        | {"postgres_url": make_url(args.postgres_url).render_as_string(hide_password=True)},
        "machine": machine(args.postgres_url if "postgresql" in backends else None),
        "rows": rows,
        "skipped_packs": skipped,
    }
    show(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"written to {out}")
    if any("error" in r for r in rows):
        sys.exit("some cases failed: see the table")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--pack", action="append", help="a pack to measure (several allowed; default: all)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000], help="--size of the demo")
    parser.add_argument("--days", type=int, default=90, help="--days of the demo (its default)")
    parser.add_argument("--seed", type=int, default=7, help="--seed of the demo (its default)")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--postgres-url", default=POSTGRES_URL, help="a server where CREATE DATABASE is allowed")
    parser.add_argument("--tmp", default=None, help="directory for the SQLite files (default: the system's)")
    parser.add_argument("--out", default=str(OUT))
    return parser.parse_args(argv)


# --- one case, in a process of its own ---------------------------------------------------------------------


def run_case(pack: str, size: int, backend: str, args: argparse.Namespace) -> dict[str, Any]:
    """One (pack, size, backend) in a fresh process, so that its peak memory and CPU time are its own."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(case, (pack, size, backend, args.days, args.seed, args.postgres_url, args.tmp))


def case(
    pack: str, size: int, backend: str, days: int, seed: int, postgres_url: str, tmp: str | None
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="dust-bench-demos-", dir=tmp) as work:
        if backend == "sqlite":
            return measure_case(pack, size, backend, days, seed, f"sqlite:///{Path(work) / 'dust.db'}", Path(work))
        with throwaway_postgres(postgres_url, "dust_bench_demos") as url:
            return measure_case(pack, size, backend, days, seed, url, Path(work))


def measure_case(pack: str, size: int, backend: str, days: int, seed: int, url: str, work: Path) -> dict[str, Any]:
    import dust
    from dust.plugins import registry

    chosen = registry.domain_packs()[pack]
    db = dust.open(url)  # migrations: not timed
    bar = Bar()
    spent = Span()
    try:
        with progress() as shown, measure(spent):
            task = shown.add_task(f"{pack} ({chosen.unit})", total=size)

            def advance(n: int) -> None:
                bar.tick(n)
                shown.advance(task, n)

            bar.start()
            with db.session() as session:
                made = chosen.generate(session, size=size, days=days, seed=seed, progress=advance)
            bar.tick(0)  # the commit: the bar stands still until the command prints
        entities, relations = count_rows(db)
        db_bytes = database_bytes(db, url, work)
        values = int(made.get("values", 0))
        anchor = sqlite_anchor(work / "anchor.db", values) if backend == "sqlite" else postgres_anchor(url, values)
    finally:
        db.close()
    return {
        "pack": pack,
        "size": size,
        "backend": backend,
        "seconds": spent.wall,
        "cpu_seconds": spent.cpu,
        "entities": entities,
        "relations": relations,
        "values": values,
        "values_per_s": values / spent.wall if spent.wall > 0 else None,
        "database_bytes": db_bytes,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "progress_updates": bar.updates,
        "progress_total": bar.total,
        "longest_progress_pause_s": bar.longest,
        "anchor_rows": values,
        "anchor_seconds": anchor.wall,
        "anchor_cpu_seconds": anchor.cpu,
        "ratio_to_anchor": spent.wall / anchor.wall if anchor.wall > 0 else None,
        "made": made,
    }


class Bar:
    """What a user sees of the progress bar: how many updates, their sum, and the longest wait between two."""

    def __init__(self) -> None:
        self.updates = self.total = 0
        self.longest = 0.0
        self.last = time.perf_counter()

    def start(self) -> None:
        self.last = time.perf_counter()

    def tick(self, n: int) -> None:
        now = time.perf_counter()
        self.longest = max(self.longest, now - self.last)
        self.last = now
        self.updates += 1 if n else 0
        self.total += n


def count_rows(db: Any) -> tuple[int, int]:
    with db.engine.connect() as conn:
        entities = conn.execute(text("SELECT count(*) FROM entities")).scalar_one()
        relations = conn.execute(text("SELECT count(*) FROM relations")).scalar_one()
    return int(entities), int(relations)


def database_bytes(db: Any, url: str, work: Path) -> int:
    """The SQLite file with its WAL, or what PostgreSQL reports for the database."""
    if url.startswith("sqlite"):
        return sum(p.stat().st_size for p in work.glob("dust.db*"))
    with db.engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one())


# --- the anchor: a bare table ------------------------------------------------------------------------------


def anchor_batches(rows: int) -> Iterator[tuple[np.ndarray, ...]]:
    """(series, cell, day, value) columns, ``ANCHOR_BATCH`` rows at a time: 12 cells × 90 days a series."""
    rng = np.random.default_rng(0)
    for first in range(0, rows, ANCHOR_BATCH):
        index = np.arange(first, min(first + ANCHOR_BATCH, rows))
        yield index // 1080, index // 90 % 12, index % 90, rng.normal(100.0, 20.0, len(index)).round()


def sqlite_anchor(path: Path, rows: int) -> Span:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE t (series INTEGER, cell INTEGER, day INTEGER, value REAL)")
    spent = Span()
    with measure(spent):
        conn.execute("BEGIN")
    for columns in anchor_batches(rows):
        batch = list(zip(*(c.tolist() for c in columns), strict=True))
        with measure(spent):
            conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", batch)
    with measure(spent):
        conn.execute("COMMIT")
    conn.close()
    return spent


def postgres_anchor(url: str, rows: int) -> Span:
    """psycopg binary COPY: the fastest way into PostgreSQL; the table is dropped with the database."""
    import psycopg

    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    spent = Span()
    with psycopg.connect(plain) as conn:
        conn.execute("CREATE TABLE anchor (series integer, cell integer, day integer, value double precision)")
        conn.commit()
        with conn.cursor() as cursor:
            copying = cursor.copy("COPY anchor FROM STDIN (FORMAT BINARY)")
            with measure(spent):
                copy = copying.__enter__()
                copy.write(b"PGCOPY\n\xff\r\n\x00" + bytes(8))  # signature, flags, header extension length
            for columns in anchor_batches(rows):
                data = binary_rows(*columns)  # built outside the clock
                with measure(spent):
                    copy.write(data)
            with measure(spent):
                copy.write(b"\xff\xff")  # the trailer
                copying.__exit__(None, None, None)  # the end of the COPY: the server has every row
                conn.commit()
    return spent


def binary_rows(series: np.ndarray, cell: np.ndarray, day: np.ndarray, value: np.ndarray) -> bytes:
    """Rows in PostgreSQL's binary COPY format: a field count, then each field's length and big-endian value."""
    layout = [("n", ">i2")]
    for name, kind in (("series", ">i4"), ("cell", ">i4"), ("day", ">i4"), ("value", ">f8")):
        layout += [(f"{name}_len", ">i4"), (name, kind)]
    out = np.empty(len(series), dtype=np.dtype(layout))
    out["n"] = 4
    for name, column in (("series", series), ("cell", cell), ("day", day), ("value", value)):
        out[f"{name}_len"] = out.dtype[name].itemsize
        out[name] = column
    return out.tobytes()


# --- timing ------------------------------------------------------------------------------------------------


@dataclass
class Span:
    """Wall-clock and CPU seconds of this process (a PostgreSQL server's own CPU is not in it)."""

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


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )


# --- report ------------------------------------------------------------------------------------------------

COLUMNS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("pack", lambda r: r["pack"]),
    ("size", lambda r: f"{r['size']:,}"),
    ("backend", lambda r: r["backend"]),
    ("wall s", lambda r: f"{r['seconds']:.1f}"),
    ("CPU s", lambda r: f"{r['cpu_seconds']:.1f}"),
    ("entities", lambda r: f"{r['entities']:,}"),
    ("relations", lambda r: f"{r['relations']:,}"),
    ("values", lambda r: f"{r['values']:,}"),
    ("values/s", lambda r: "" if r["values_per_s"] is None else f"{r['values_per_s']:,.0f}"),
    ("DB MB", lambda r: f"{r['database_bytes'] / 1e6:,.1f}"),
    ("peak RSS MB", lambda r: f"{r['peak_rss_bytes'] / 1e6:,.0f}"),
    ("bar: updates, longest pause s", lambda r: f"{r['progress_updates']}, {r['longest_progress_pause_s']:.1f}"),
    ("anchor s", lambda r: f"{r['anchor_seconds']:.1f}"),
    ("× anchor", lambda r: "" if r["ratio_to_anchor"] is None else f"{r['ratio_to_anchor']:.1f}×"),
]


def first_line(failure: Exception) -> str:
    return f"{type(failure).__name__}: {str(failure).strip().splitlines()[0] if str(failure).strip() else ''}"


def show_row(r: dict[str, Any]) -> None:
    if "error" in r:
        console.print(f"  [red]failed:[/red] {r['error']}", markup=True, highlight=False)
        return
    console.print("  " + ", ".join(f"{name} {cell(r)}" for name, cell in COLUMNS[3:]))


def show(report: dict[str, Any]) -> None:
    table = Table(title="dust demo: load time per pack, size and backend")
    for name, _ in COLUMNS:
        table.add_column(name, justify="left" if name in ("pack", "backend") else "right")
    for r in report["rows"]:
        if "error" in r:  # the rest of the row: what failed
            table.add_row(r["pack"], f"{r['size']:,}", r["backend"], f"[red]failed: {r['error']}[/red]")
            continue
        table.add_row(*(cell(r) for _, cell in COLUMNS))
    console.print(table)
    console.print(
        "anchor: as many rows as values, (series, cell, day, value), into a bare table in one transaction — "
        "sqlite3 executemany (WAL, synchronous=NORMAL) or psycopg binary COPY; building the rows is not timed"
    )
    for name in report["skipped_packs"]:
        console.print(f"skipped: no pack '{name}' registered")
    m = report["machine"]
    console.print(
        f"machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, SQLite {m['sqlite']}, "
        f"PostgreSQL {m['postgresql'] or '-'}, {m['platform']}, load average {m['load_average_1_5_15min']}"
    )


def machine(postgres_url: str | None) -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "numpy": np.__version__,
        "postgresql": postgres_version(postgres_url) if postgres_url else None,
        "platform": platform.platform(),
        "load_average_1_5_15min": [round(x, 2) for x in os.getloadavg()],
    }


def postgres_version(url: str) -> str:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SHOW server_version")).scalar_one())
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
