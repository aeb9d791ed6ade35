"""Backup and restore: native snapshots (SQLite's online backup, pg_dump) taken while writes go on, put back
row for row, and refused where they would overwrite data or do not fit."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from dust.core.errors import Conflict, InvalidInput
from dust.embedded import Dust
from dust.engine import backups
from dust.storage import backup
from tests.roundtrip import (
    assert_reads_alike,
    assert_same,
    dump,
    fill,
    fresh_fixture,  # noqa: F401  (the fixture `fresh`)
    identity_renewed,
)


def test_backup_and_restore_give_back_every_row(
    database_url: str, tmp_path: Path, password_hash: str, fresh: Callable[..., str]
) -> None:
    demo = fill(database_url, password_hash)
    file = tmp_path / "dust.backup"
    made = backups.backup(database_url, file)
    native = "SQLite online backup" if database_url.startswith("sqlite") else "pg_dump, custom format"
    assert made.method == native
    with Dust(database_url, migrate=False) as db:
        entities = db.entities(limit=500).items
    assert made.counts["entities"] == len(entities) > 8 and made.counts["users"] == 3
    assert made.bytes == file.stat().st_size
    assert file.stat().st_mode & 0o077 == 0  # it holds password hashes: the owner's only
    target = fresh(database_url, migrated=False)  # not even the tables
    back = backups.restore(target, file)
    assert back.counts == made.counts
    assert_same(*identity_renewed(dump(database_url), dump(target)))  # everything, credentials included
    assert_reads_alike(database_url, target, demo)


def test_sqlite_backup_while_writing_holds_a_prefix_of_the_acknowledged_writes(
    sqlite_template: Path, tmp_path: Path, password_hash: str
) -> None:
    path = tmp_path / "busy.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    fill(url, password_hash)  # a few hundred pages, copied one page a step below
    acknowledged: list[int] = []
    stop = threading.Event()

    def writer() -> None:
        with Dust(url, migrate=False) as db:
            while not stop.is_set():
                db.create_entity("sensor", f"sensor {len(acknowledged)}", external_id=str(len(acknowledged)))
                acknowledged.append(len(acknowledged))  # only once committed

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(acknowledged) < 20:
            time.sleep(0.005)
        before = len(acknowledged)
        backup.sqlite_backup(url, tmp_path / "snapshot.db", progress=lambda *_: time.sleep(0.002), step_pages=1)
        after = len(acknowledged)
    finally:
        stop.set()
        thread.join()
    assert after > before  # writes were acknowledged while the copy ran
    with closing(sqlite3.connect(tmp_path / "snapshot.db")) as snapshot:
        assert snapshot.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert snapshot.execute("PRAGMA journal_mode").fetchone() == ("delete",)  # one self-contained file
        held = sorted(int(n) for (n,) in snapshot.execute("SELECT external_id FROM entities WHERE kind = 'sensor'"))
    assert held == list(range(len(held)))  # a prefix: no write without the ones acknowledged before it
    assert before <= len(held) <= after


def test_restore_refuses_a_database_that_holds_data_unless_forced(database_url: str, tmp_path: Path) -> None:
    with Dust(database_url, migrate=False) as db:
        db.create_entity("patient", "Jane Doe")
        file = tmp_path / "dust.backup"
        backups.backup(database_url, file)
        late = db.create_entity("patient", "John Doe")
    with pytest.raises(Conflict, match=r"holds data .*needs --force"):
        backups.restore(database_url, file)
    with Dust(database_url, migrate=False) as db:
        assert len(db.entities().items) == 2  # untouched
    backups.restore(database_url, file, force=True)
    with Dust(database_url, migrate=False) as db:
        assert [e.name for e in db.entities().items] == ["Jane Doe"]
        db.create_entity("patient", "After")  # the restored database takes writes again
        assert late.id not in {e.id for e in db.entities().items}


def test_restore_refuses_files_that_are_no_backup_for_this_database(database_url: str, tmp_path: Path) -> None:
    stranger = tmp_path / "notes.txt"
    stranger.write_text("hello")
    with pytest.raises(InvalidInput, match="not a DUST backup"):
        backups.restore(database_url, stranger)
    other = tmp_path / "other.backup"
    if database_url.startswith("sqlite"):
        other.write_bytes(b"PGDMP" + bytes(100))
        expected = "restores only into PostgreSQL; `dust db backup --logical`"
    else:
        other.write_bytes(b"SQLite format 3\x00" + bytes(100))
        expected = "restores only into SQLite; `dust db backup --logical`"
    with pytest.raises(InvalidInput, match=expected):
        backups.restore(database_url, other)


def test_a_damaged_or_foreign_sqlite_file_is_refused_before_anything_is_overwritten(
    sqlite_template: Path, tmp_path: Path
) -> None:
    target = tmp_path / "target.db"
    shutil.copy(sqlite_template, target)
    url = f"sqlite:///{target}"
    foreign = tmp_path / "foreign.db"
    with closing(sqlite3.connect(foreign)) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(InvalidInput, match="not a DUST one"):
        backups.restore(url, foreign)
    damaged = tmp_path / "damaged.db"
    backups.backup(url, damaged)
    with damaged.open("r+b") as file:
        file.seek(4096)  # page 2 onwards: the tables' b-trees
        file.write(b"\xff" * 4096 * 3)
    with pytest.raises(InvalidInput, match="damaged"):
        backups.restore(url, damaged, force=True)
    with closing(sqlite3.connect(target)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)


def test_backup_refuses_to_overwrite_the_database_itself(sqlite_template: Path, tmp_path: Path) -> None:
    path = tmp_path / "dust.db"
    shutil.copy(sqlite_template, path)
    with pytest.raises(InvalidInput, match="the database itself"):
        backups.backup(f"sqlite:///{path}", path)
    assert backup.kind_of(path) is backup.BackupKind.sqlite
