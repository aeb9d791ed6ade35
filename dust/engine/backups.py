"""Backup and restore (``dust db backup FILE`` / ``dust db restore FILE``): which snapshot to take, and how to
put each kind back.

- SQLite: the online backup API (dust.storage.backup), a copy of the whole file.
- PostgreSQL with ``pg_dump`` on PATH: ``pg_dump --format=custom`` of the same snapshot the reported counts
  come from; restored with ``pg_restore --clean --if-exists`` in one transaction.
- Otherwise, or when asked (``logical``): the export of dust.engine.transfer packed into one tar.gz, without
  secrets; it restores into SQLite or PostgreSQL alike, so it also moves a database from one to the other.

A restore refuses a database that holds data unless forced, and applies pending migrations afterwards.
"""

from __future__ import annotations

import os
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

from dust.core.errors import Conflict, InvalidInput
from dust.engine import caches, transfer
from dust.storage import backup as snapshots
from dust.storage.backup import BackupKind, Progress
from dust.storage.db import make_engine, make_sessionmaker, unit_of_work, upgrade
from dust.storage.repositories import paging
from dust.storage.repositories import transfer as repo

METHODS = {
    BackupKind.sqlite: "SQLite online backup",
    BackupKind.pg_dump: "pg_dump, custom format",
    BackupKind.logical: "logical export, tar.gz",
}


def backup(url: str, file: Path, *, logical: bool = False, progress: Progress | None = None) -> transfer.Outcome:
    """A consistent snapshot of the database at ``url`` in ``file``, taken while it serves: SQLite's online
    backup, else pg_dump where it is on PATH, else (or with ``logical``) the export packed into one tar.gz."""
    start = time.monotonic()
    kind = BackupKind.logical if logical else _native(url)
    if kind is BackupKind.sqlite:
        snapshots.sqlite_backup(url, file, progress)
        with snapshots.read_snapshot(f"sqlite:///{file}") as session:
            counts = transfer.counts(session)
    elif kind is BackupKind.pg_dump:
        with snapshots.read_snapshot(url) as session:
            counts = transfer.counts(session)
            snapshots.pg_backup(session, url, file)
        _done(progress)
    else:
        counts = _logical_backup(url, file, progress)
    return transfer.Outcome(file, METHODS[kind], file.stat().st_size, counts, time.monotonic() - start)


def _done(progress: Progress | None) -> None:
    """pg_dump and pg_restore tell nothing on the way; say at least that they are done."""
    if progress is not None:
        progress(1, 1)


def _native(url: str) -> BackupKind:
    if snapshots.sqlite_file(url) is not None:
        return BackupKind.sqlite
    return BackupKind.pg_dump if snapshots.pg_tool("pg_dump") else BackupKind.logical


def _logical_backup(url: str, file: Path, progress: Progress | None) -> dict[str, int]:
    file.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=file.parent, prefix=".dust-export-") as scratch:
        directory = Path(scratch) / "export"
        with snapshots.read_snapshot(url) as session:
            manifest = transfer.export(session, directory, progress)
        pack(directory, file)
    return manifest.counts


def pack(directory: Path, file: Path) -> None:
    """The export in ``directory`` as one tar.gz (its files at the top level), written beside ``file`` and
    renamed over it when complete."""
    partial = file.with_name(f".{file.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        # Level 1: JSON shrinks most of what it can at the fastest level; float64 values barely shrink at any.
        with tarfile.open(transfer.private(partial), "w:gz", compresslevel=1) as tar:
            for path in sorted(directory.iterdir()):
                tar.add(path, arcname=path.name)
        os.replace(partial, file)
    finally:
        partial.unlink(missing_ok=True)


def unpack(file: Path, directory: Path) -> None:
    """Extract a packed export; the "data" filter refuses members that would land outside ``directory``."""
    try:
        with tarfile.open(file, "r:gz") as tar:
            tar.extractall(directory, filter="data")
    except (tarfile.TarError, OSError, EOFError) as error:
        raise InvalidInput(f"{file} is not a readable export archive: {error}") from None


def restore(url: str, file: Path, *, force: bool = False, progress: Progress | None = None) -> transfer.Outcome:
    """Put the backup in ``file`` back into the database at ``url``, which must be empty unless ``force``."""
    start = time.monotonic()
    kind = snapshots.kind_of(file)
    target = BackupKind.sqlite if snapshots.sqlite_file(url) is not None else BackupKind.pg_dump
    if kind not in (target, BackupKind.logical):
        raise InvalidInput(
            f"{file} is a {METHODS[kind]}, which restores only into "
            f"{'SQLite' if kind is BackupKind.sqlite else 'PostgreSQL'}; `dust db backup --logical` writes a "
            "backup that restores into either"
        )
    _refuse_unless_empty(url, force)
    if kind is BackupKind.logical:
        with tempfile.TemporaryDirectory(prefix="dust-restore-") as scratch:
            unpack(file, Path(scratch))
            transfer.import_database(url, Path(scratch), replace=force, progress=progress)
    elif kind is BackupKind.sqlite:
        snapshots.sqlite_restore(file, url, progress)
    else:
        snapshots.pg_restore(file, url)
        _done(progress)
    engine = make_engine(url)
    try:
        upgrade(engine)  # a backup from an earlier DUST comes back at its migration
        with unit_of_work(make_sessionmaker(engine)) as session:
            if kind is BackupKind.pg_dump:  # its transaction ids are another server's, or of this one's past
                paging.forget_transactions(session)
            # its cache epochs are the backup's, lower than those copies of later contents were made under
            caches.forget_all(session)
    finally:
        engine.dispose()
    with snapshots.read_snapshot(url) as session:
        counts = transfer.counts(session)
    return transfer.Outcome(file, METHODS[kind], file.stat().st_size, counts, time.monotonic() - start)


def _refuse_unless_empty(url: str, force: bool) -> None:
    engine = make_engine(url)
    try:
        with unit_of_work(make_sessionmaker(engine)) as session:
            held = repo.occupied(session)
    finally:
        engine.dispose()
    if held and not force:
        raise Conflict(
            f"the database holds data (in {', '.join(held)}); a restore replaces all of it, so it needs --force"
        )
