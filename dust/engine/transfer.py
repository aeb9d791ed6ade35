"""Export and import (``dust export DIR`` / ``dust import dust DIR``); ``dust.engine.backups`` builds on them.

An export is a directory of documented files (docs/reliability.md has the full description):

- ``manifest.json``: format and version, DUST version, when, from what (dialect, migration), rows per table,
  and each file's size and SHA-256. Written last: a directory without it is an unfinished export.
- one JSON Lines file per table (``entities.jsonl``, ``users.jsonl``, …), written by streaming the table in
  key order: one object per row, keys = the table's columns (dust/storage/models.py), UUIDs as strings, times
  as ISO 8601 UTC.
- ``tensor_blocks.bin``: the tensors' values as stored, each block's values (float64, or the sparse form its
  shape key names) and its zlib-compressed write stamps (dust/engine/blocks.py), which the lines of
  ``tensor_blocks.jsonl`` point into with ``[offset, length]``. The blocks themselves rather than one array per
  tensor: their stamps are what "as of" reads answer from, the cell shape each block was written with survives
  a schema that later gained labels, and copying bytes costs neither a decode nor a re-encode.

Users are exported without secrets: no password hash, and neither API keys, refresh tokens, revoked tokens
nor sign-in failures. Imported users have no password (and a bumped token version, so tokens issued by the
source stop working) until an admin sets one. Idempotency keys (a 24-hour replay cache) are not exported.
Trigger rules are exported without the secrets that sign their webhooks: an import gives each a new one. The
webhook outbox and the jobs (work in flight of the source's processes) are not exported.

An import goes into an empty, migrated database, in one transaction, and only after every file matched its
checksum: a damaged or edited export writes nothing, and importing into a database that holds anything (a
second import, say) is refused as a Conflict. Rows keep their ids, so tensors and relations point at the same
entity UUIDs, and audit and history ids keep their order.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, cast

from pydantic import BaseModel, ValidationError
from sqlalchemy import LargeBinary, Table, Uuid
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import dust
from dust.core.errors import Conflict, InvalidInput
from dust.engine import caches
from dust.storage import backup as snapshots
from dust.storage.backup import Progress
from dust.storage.db import make_engine, make_sessionmaker, unit_of_work, upgrade
from dust.storage.models import (
    Alert,
    Anomaly,
    AnomalyRule,
    AnomalyState,
    AuditRecord,
    Base,
    Entity,
    EntityKind,
    Model,
    Relation,
    RelationWeight,
    Schema,
    Tensor,
    TensorBlock,
    TensorHistory,
    Trigger,
    TriggerFiring,
    TriggerVersion,
    User,
    UTCDateTime,
    WeightPolicy,
)
from dust.storage.repositories import transfer as repo

FORMAT = "dust-export"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INSERT_ROWS = 1_000  # rows per INSERT while importing
NOT_EXPORTED = {
    "refresh_tokens": "credentials",
    "api_keys": "credentials",
    "revoked_tokens": "credentials (of tokens that are not exported either)",
    "login_failures": "sign-in throttle state",
    "idempotency_keys": "a 24-hour replay cache of responses",
    "cache_epochs": "counters that keep a running server's caches exact; a new database starts them afresh",
    "webhook_deliveries": "the source's outbox: calls in flight, signed with secrets that are not exported",
    "jobs": "the source's background work in flight",
}


@dataclass(frozen=True)
class Family:
    """One exported table: its rows in ``order``, without the ``omit`` columns."""

    model: type[Base]
    order: tuple[str, ...]
    omit: tuple[str, ...] = ()

    @property
    def table(self) -> Table:
        return cast(Table, self.model.__table__)

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def binary(self) -> list[str]:
        return [c.name for c in self.table.columns if isinstance(c.type, LargeBinary)]

    def files(self) -> list[str]:
        return [f"{self.name}.jsonl", *([f"{self.name}.bin"] if self.binary else [])]


# In the order an import inserts them: every row after the rows it refers to.
FAMILIES = (
    Family(EntityKind, ("kind",)),
    Family(Schema, ("id",)),
    Family(Entity, ("created_at", "id"), omit=("txid",)),
    Family(User, ("username",), omit=("password_hash",)),
    Family(Tensor, ("id",)),
    Family(TensorBlock, ("tensor_id", "block")),
    Family(TensorHistory, ("id",)),
    Family(Relation, ("id",), omit=("txid",)),
    Family(RelationWeight, ("id",)),
    Family(AuditRecord, ("id",), omit=("txid",)),
    Family(AnomalyRule, ("schema_name", "label")),
    Family(AnomalyState, ("tensor_id", "cell", "detector")),
    Family(Anomaly, ("id",), omit=("txid",)),
    Family(WeightPolicy, ("type",)),
    Family(Trigger, ("name",), omit=("secret",)),
    Family(TriggerVersion, ("trigger_id", "version")),
    Family(TriggerFiring, ("id",), omit=("txid",)),
    Family(Alert, ("id",), omit=("txid",)),
    Family(Model, ("name", "version")),
)


class FileEntry(BaseModel):
    bytes: int
    sha256: str


class Manifest(BaseModel):
    format: str
    format_version: int
    dust_version: str
    created_at: datetime
    source: dict[str, str | None]
    counts: dict[str, int]
    files: dict[str, FileEntry]
    not_exported: dict[str, str] = {}


@dataclass
class Outcome:
    """What a backup, restore, export or import did, for the terminal."""

    path: Path
    method: str
    bytes: int
    counts: dict[str, int]
    seconds: float


# --- export -----------------------------------------------------------------------------------------------


def export(session: Session, directory: Path, progress: Progress | None = None) -> Manifest:
    """Write every exported table into ``directory`` (new or empty), as ``session`` sees the database."""
    _empty_directory(directory)
    counts = {f.name: repo.count(session, f.table) for f in FAMILIES}
    tick = _ticker(progress, sum(counts.values()))
    files: dict[str, FileEntry] = {}
    for family in FAMILIES:
        counts[family.name], written = _write_family(session, directory, family, tick)
        files.update(written)
    manifest = Manifest(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        dust_version=dust.__version__,
        created_at=datetime.now(UTC),
        source={"dialect": session.get_bind().dialect.name, "migration": repo.migration(session)},
        counts=counts,
        files=files,
        not_exported=NOT_EXPORTED,
    )
    private(directory / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
    return manifest


def _empty_directory(directory: Path) -> None:
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise InvalidInput(f"{directory} exists and is not an empty directory; export into a new one")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)


def _write_family(
    session: Session, directory: Path, family: Family, tick: Callable[[int], None]
) -> tuple[int, dict[str, FileEntry]]:
    """Stream one table into its files; (rows, the files' entries)."""
    binary = family.binary
    plain = [c for c in family.table.columns if c.name not in family.omit and c.name not in binary]
    encoders = [(c.name, _encoder(c.type)) for c in plain]
    rows = 0
    with _Sink(directory / f"{family.name}.jsonl") as lines, _Sink(directory / f"{family.name}.bin", binary) as blobs:
        for batch in repo.stream(session, family.table, [c.name for c in plain] + binary, family.order):
            out = []
            for row in batch:
                record = {
                    name: row[i] if encode is None or row[i] is None else encode(row[i])
                    for i, (name, encode) in enumerate(encoders)
                }
                for i, name in enumerate(binary, len(encoders)):
                    record[name] = None if row[i] is None else [blobs.write(row[i]), len(row[i])]
                out.append(json.dumps(record, separators=(",", ":"), ensure_ascii=False))
            lines.write(("\n".join(out) + "\n").encode())
            rows += len(batch)
            tick(len(batch))
    return rows, {sink.path.name: sink.entry() for sink in (lines, blobs) if sink.wanted}


def _encoder(kind: Any) -> Callable[[Any], Any] | None:
    if isinstance(kind, Uuid):
        return str
    if isinstance(kind, UTCDateTime):
        return datetime.isoformat
    return None


class _Sink:
    """A file written once, front to back, that knows its size and SHA-256 as it goes."""

    def __init__(self, path: Path, wanted: object = True) -> None:
        self.path, self.wanted = path, bool(wanted)
        self.size, self._hash = 0, hashlib.sha256()
        self._file: IO[bytes] | None = private(path).open("wb") if self.wanted else None

    def write(self, data: bytes) -> int:
        """Append ``data``; the offset it starts at."""
        assert self._file is not None
        offset = self.size
        self._file.write(data)
        self._hash.update(data)
        self.size += len(data)
        return offset

    def entry(self) -> FileEntry:
        return FileEntry(bytes=self.size, sha256=self._hash.hexdigest())

    def __enter__(self) -> _Sink:
        return self

    def __exit__(self, *_: object) -> None:
        if self._file is not None:
            self._file.close()


def private(path: Path) -> Path:
    """``path``, created readable by its owner only: exports hold personal data (names, record numbers)."""
    path.touch(mode=0o600, exist_ok=False)
    return path


# --- import -----------------------------------------------------------------------------------------------


def import_(session: Session, directory: Path, *, replace: bool = False, progress: Progress | None = None) -> Manifest:
    """Load the export in ``directory`` into the (empty, migrated) database of ``session``; with ``replace``,
    whatever the database holds is deleted first, in the same transaction."""
    manifest = verify(directory)
    held = repo.occupied(session)
    if held and not replace:
        raise Conflict(
            f"the database already holds data (in {', '.join(held)}): an import goes into an empty database, "
            "so it is not imported twice; use a new database"
        )
    if replace:
        repo.clear(session)
    tick = _ticker(progress, sum(manifest.counts.values()))
    for family in FAMILIES:
        rows = _read_family(session, directory, family, tick)
        if rows != manifest.counts.get(family.name):
            raise InvalidInput(
                f"{family.name}.jsonl holds {rows} rows; the manifest says {manifest.counts.get(family.name)}"
            )
    repo.reset_sequences(session, [f.table for f in FAMILIES])
    caches.forget_all(session)  # new contents: no copy a running server made of the old ones may be used
    return manifest


def verify(directory: Path) -> Manifest:
    """The manifest of the export in ``directory``, once every file it lists matched its size and SHA-256."""
    manifest = _manifest(directory)
    needed = {name for family in FAMILIES for name in family.files()}
    missing = sorted(needed - manifest.files.keys())
    if missing:
        raise InvalidInput(f"the manifest lists no {', '.join(missing)}; this export is incomplete")
    for name, entry in manifest.files.items():
        path = directory / name
        if name != path.name or not path.is_file():  # a name may not point outside the directory
            raise InvalidInput(f"{name} is in the manifest but not in {directory}; nothing was imported")
        size, digest = _digest(path)
        if (size, digest) != (entry.bytes, entry.sha256):
            raise InvalidInput(
                f"{name} does not match its checksum in the manifest ({size} bytes, sha256 {digest[:12]}…; "
                f"expected {entry.bytes} bytes, {entry.sha256[:12]}…): the export is damaged or was edited. "
                "Nothing was imported"
            )
    return manifest


def _manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST
    if not path.is_file():
        raise InvalidInput(f"{directory} holds no {MANIFEST}: not a DUST export, or an unfinished one")
    try:
        raw = json.loads(path.read_text())
    except ValueError as error:
        raise InvalidInput(f"{MANIFEST} is not JSON: {error}") from None
    found = (raw.get("format"), raw.get("format_version")) if isinstance(raw, dict) else (None, None)
    if found != (FORMAT, FORMAT_VERSION):
        raise InvalidInput(
            f"{MANIFEST} is format {found[0]!r} version {found[1]!r}; this DUST reads {FORMAT!r} version "
            f"{FORMAT_VERSION}"
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as error:
        raise InvalidInput(f"{MANIFEST} is not a valid DUST manifest: {error}") from None


def _digest(path: Path) -> tuple[int, str]:
    hashed, size = hashlib.sha256(), 0
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            hashed.update(chunk)
            size += len(chunk)
    return size, hashed.hexdigest()


def _read_family(session: Session, directory: Path, family: Family, tick: Callable[[int], None]) -> int:
    """Insert the rows of one table's files, ``INSERT_ROWS`` at a time; how many."""
    reader = _Reader(family)
    prepare = _ON_IMPORT.get(family.name)
    rows = 0
    blobs = (directory / f"{family.name}.bin").open("rb") if reader.binary else None
    try:
        for number, batch in _batches(directory / f"{family.name}.jsonl"):
            records = [
                reader.record(raw, blobs, f"{family.name}.jsonl line {number + i}") for i, raw in enumerate(batch)
            ]
            if prepare is not None:
                records = [prepare(record) for record in records]
            try:
                repo.insert_rows(session, family.table, records)
            except IntegrityError as error:  # the transaction is rolled back as this propagates
                raise InvalidInput(
                    f"{family.name}.jsonl lines {number}..{number + len(batch) - 1} break a constraint of the "
                    f"database: {error.orig}"
                ) from None
            rows += len(batch)
            tick(len(batch))
    finally:
        if blobs is not None:
            blobs.close()
    return rows


def _batches(path: Path) -> Iterator[tuple[int, list[Any]]]:
    """(number of the first line, parsed lines) of a JSON Lines file, ``INSERT_ROWS`` lines at a time."""
    with path.open("rb") as file:
        batch: list[Any] = []
        first = 1
        for number, line in enumerate(file, 1):
            try:
                batch.append(json.loads(line))
            except ValueError as error:
                raise InvalidInput(f"{path.name} line {number} is not JSON: {error}") from None
            if len(batch) == INSERT_ROWS:
                yield first, batch
                batch, first = [], number + 1
        if batch:
            yield first, batch


class _Reader:
    """Turns the lines of one table's file back into rows."""

    def __init__(self, family: Family) -> None:
        columns = [c for c in family.table.columns if c.name not in family.omit]
        self.binary = set(family.binary)
        self.decoders = {c.name: _decoder(c.type) for c in columns}
        self.required = {c.name for c in columns if c.primary_key} | self.binary
        # A column added after the export was made (by a later migration) takes its default.
        self.defaults = {c.name: _default(c) for c in columns if c.name not in self.required}

    def record(self, raw: Any, blobs: IO[bytes] | None, where: str) -> dict[str, Any]:
        if not isinstance(raw, dict) or not self.required <= raw.keys() <= self.decoders.keys():
            found = sorted(raw) if isinstance(raw, dict) else "not an object"
            raise InvalidInput(f"{where}: fields {found}; needs {sorted(self.required)}, knows {sorted(self.decoders)}")
        try:
            record = dict(self.defaults)
            for name, value in raw.items():
                decode = self.decoders[name]
                record[name] = value if decode is None or value is None or name in self.binary else decode(value)
            for name in self.binary:
                assert blobs is not None
                if raw[name] is None:  # a nullable column's null (a model not trained: no artefact)
                    record[name] = None
                    continue
                offset, length = raw[name]
                blobs.seek(offset)
                record[name] = blobs.read(length)
                if len(record[name]) != length:
                    raise ValueError(f"{name} reaches past the end of the .bin file")
        except (ValueError, TypeError) as error:
            raise InvalidInput(f"{where}: {error}") from None
        return record


def _default(column: Any) -> Any:
    default = column.default
    if default is None:
        return None
    return default.arg(None) if default.is_callable else default.arg


def _decoder(kind: Any) -> Callable[[Any], Any] | None:
    if isinstance(kind, Uuid):
        return uuid.UUID
    if isinstance(kind, UTCDateTime):
        return datetime.fromisoformat
    return None


def _without_secrets(user: dict[str, Any]) -> dict[str, Any]:
    """No password until an admin sets one, and no token issued by the source database is honoured here."""
    return {**user, "password_hash": None, "token_version": user.get("token_version", 0) + 1}


def _new_secret(trigger: dict[str, Any]) -> dict[str, Any]:
    """A new key to sign the rule's webhooks: the source's is not exported."""
    return {**trigger, "secret": secrets.token_urlsafe(32)}


_ON_IMPORT: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"users": _without_secrets, "triggers": _new_secret}


def _ticker(progress: Progress | None, total: int) -> Callable[[int], None]:
    done = 0

    def tick(rows: int) -> None:
        nonlocal done
        done += rows
        if progress is not None:
            progress(done, total)

    tick(0)
    return tick


# --- whole databases: what the CLI runs -------------------------------------------------------------------


def export_database(url: str, directory: Path, progress: Progress | None = None) -> Outcome:
    """Export one consistent moment of the database at ``url`` into ``directory``, without holding up writers."""
    start = time.monotonic()
    with snapshots.read_snapshot(url) as session:
        manifest = export(session, directory, progress)
    size = sum(entry.bytes for entry in manifest.files.values()) + (directory / MANIFEST).stat().st_size
    return Outcome(directory, "export", size, manifest.counts, time.monotonic() - start)


def import_database(url: str, directory: Path, *, replace: bool = False, progress: Progress | None = None) -> Outcome:
    """Migrate the database at ``url`` if need be, and import ``directory`` into it in one transaction."""
    start = time.monotonic()
    engine = make_engine(url)
    try:
        upgrade(engine)
        with unit_of_work(make_sessionmaker(engine)) as session:
            manifest = import_(session, directory, replace=replace, progress=progress)
    finally:
        engine.dispose()
    size = sum(entry.bytes for entry in manifest.files.values())
    return Outcome(directory, "import", size, manifest.counts, time.monotonic() - start)


def counts(session: Session) -> dict[str, int]:
    """Rows per exported table."""
    return {f.name: repo.count(session, f.table) for f in FAMILIES}
