"""What the benchmarks say about the machine they ran on, and the databases they make on it (imported by the
scripts beside it)."""

from __future__ import annotations

import argparse
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"  # the machine's server, trust auth


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it (or what the platform module knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def database_options(parser: argparse.ArgumentParser) -> None:
    """``--backend`` and ``--postgres-url``, which ``database`` takes."""
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--postgres-url", default=POSTGRES_URL, help="a server where CREATE DATABASE is allowed")


@contextmanager
def database(backend: str, folder: str, *, postgres_url: str = POSTGRES_URL, name: str = "dust_bench") -> Iterator[str]:
    """The URL of a fresh database: an SQLite file in ``folder``, or a throwaway PostgreSQL database named after
    ``name`` on the server of ``postgres_url`` (one where CREATE DATABASE is allowed), dropped at the end."""
    if backend == "sqlite":
        yield f"sqlite:///{folder}/dust.db"
        return
    from tests.databases import throwaway_postgres  # the repository's root is on the caller's path

    with throwaway_postgres(postgres_url, name) as url:
        yield url
