"""Export and import: every row comes back but secrets, ids kept; damaged exports and second imports are
refused without writing; the logical backup restores into either backend."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import dust
from dust.core.config import Settings
from dust.core.errors import Conflict, InvalidInput
from dust.core.security import digest
from dust.embedded import Dust
from dust.engine import backups, schemas, transfer, users
from dust.engine.users import Refused
from dust.storage import backup
from dust.storage.models import Base
from tests.conftest import PASSWORD, POSTGRES_URL
from tests.roundtrip import (
    SECRET_TABLES,
    VITALS_V2,
    as_imported,
    assert_reads_alike,
    assert_same,
    dump,
    fill,
    fresh_fixture,  # noqa: F401  (the fixture `fresh`)
    without_secrets,
)

FILES = {
    "manifest.json",
    "entity_kinds.jsonl",
    "schemas.jsonl",
    "entities.jsonl",
    "users.jsonl",
    "tensors.jsonl",
    "tensor_blocks.jsonl",
    "tensor_blocks.bin",
    "tensor_history.jsonl",
    "relations.jsonl",
    "relation_weights.jsonl",
    "audit_log.jsonl",
    "anomaly_rules.jsonl",
    "anomaly_states.jsonl",
    "anomalies.jsonl",
    "weight_policies.jsonl",
    "triggers.jsonl",
    "trigger_versions.jsonl",
    "trigger_firings.jsonl",
    "alerts.jsonl",
    "models.jsonl",
    "models.bin",
}


def small(url: str) -> None:
    """A schema, an entity with a tensor and two values: enough to export, quickly."""
    with Dust(url, migrate=False) as db:
        db.create_schema({"name": "vitals", "axes": [{"name": "metric", "labels": ["hr"]}]})
        jane = db.create_entity("patient", "Jane Doe", external_id="MRN-1")
        tensor = db.create_tensor(jane.id, "vitals", origin="2026-01-01T00:00:00Z")
        db.write_values(tensor.id, [{"time": 0, "metric": "hr", "value": 70}, {"time": 1, "metric": "hr", "value": 72}])


def test_export_and_import_give_back_every_row_but_secrets(
    database_url: str, tmp_path: Path, password_hash: str, fresh: Callable[..., str]
) -> None:
    demo = fill(database_url, password_hash)
    out = tmp_path / "export"
    exported = transfer.export_database(database_url, out)
    assert {p.name for p in out.iterdir()} == FILES
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "dust-export" and manifest["format_version"] == 1
    assert manifest["dust_version"] == dust.__version__ and manifest["counts"] == exported.counts
    assert (
        manifest["counts"]["tensor_history"] >= 2
        and manifest["counts"]["relation_weights"] > manifest["counts"]["relations"]
    )
    written = b"".join(p.read_bytes() for p in out.iterdir())
    rule_secrets = [rule["secret"] for rule in dump(database_url)["triggers"]]
    assert rule_secrets  # the healthcare pack's rules
    for secret in (demo.password_hash, "$argon2", digest(demo.api_key), demo.api_key, *rule_secrets):
        assert secret.encode() not in written
    target = fresh(database_url)
    imported = transfer.import_database(target, out)
    assert imported.counts == exported.counts
    source = dump(database_url)
    assert all(source[name] for name in SECRET_TABLES if name != "idempotency_keys")
    assert_same(without_secrets(source), as_imported(dump(target)))
    assert_reads_alike(database_url, target, demo)
    settings = Settings(database_url=target, secret_key="k" * 40)
    with Dust(target, migrate=False) as db, db.session() as s:
        assert isinstance(users.login(s, settings, "admin", PASSWORD, "test"), Refused)  # until reset
        schemas.publish(s, "vitals", VITALS_V2)  # a generated id after the imported ones


def test_a_second_import_is_refused(database_url: str, tmp_path: Path) -> None:
    small(database_url)
    transfer.export_database(database_url, tmp_path / "export")
    with pytest.raises(Conflict, match=r"already holds data .*entities"):
        transfer.import_database(database_url, tmp_path / "export")


def _flip_a_byte(directory: Path) -> None:
    data = bytearray((directory / "tensor_blocks.bin").read_bytes())
    data[10] ^= 0x01
    (directory / "tensor_blocks.bin").write_bytes(bytes(data))


def _rename_jane(directory: Path) -> None:
    path = directory / "entities.jsonl"
    path.write_text(path.read_text().replace("Jane Doe", "Jane Roe"))


def _newer_format(directory: Path) -> None:
    path = directory / "manifest.json"
    path.write_text(path.read_text().replace('"format_version": 1', '"format_version": 2'))


DAMAGE = {
    "a flipped byte": (_flip_a_byte, "tensor_blocks.bin does not match its checksum"),
    "an edited row": (_rename_jane, "entities.jsonl does not match its checksum"),
    "a file missing": (lambda d: (d / "users.jsonl").unlink(), "users.jsonl is in the manifest but not in"),
    "no manifest": (lambda d: (d / "manifest.json").unlink(), "holds no manifest.json"),
    "a newer format": (_newer_format, "version 2; this DUST reads 'dust-export' version 1"),
}


@pytest.mark.parametrize(("damage", "message"), DAMAGE.values(), ids=DAMAGE.keys())
def test_a_damaged_or_edited_export_is_refused_and_writes_nothing(
    database_url: str,
    tmp_path: Path,
    fresh: Callable[..., str],
    damage: Callable[[Path], object],
    message: str,
) -> None:
    small(database_url)
    transfer.export_database(database_url, tmp_path / "export")
    target = fresh(database_url)
    damage(tmp_path / "export")
    with pytest.raises(InvalidInput, match=message):
        transfer.import_database(target, tmp_path / "export")
    assert all(rows == [] for name, rows in dump(target).items() if name != "cache_epochs")  # but its identity


def _rewrite(directory: Path, name: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Change every line of one file and fix its checksum, as a careful forger would."""
    path = directory / name
    path.write_text("".join(json.dumps(change(json.loads(line))) + "\n" for line in path.read_text().splitlines()))
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["files"][name] = {"bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    (directory / "manifest.json").write_text(json.dumps(manifest))


FORGED = {
    "an unknown field": (
        "entities.jsonl",
        lambda row: {**row, "colour": "red"},
        r"entities.jsonl line 1: fields .*colour",
    ),
    "a broken constraint": (
        "tensors.jsonl",
        lambda row: {**row, "entity_id": str(uuid.uuid4())},
        "tensors.jsonl lines 1..1 break a constraint",
    ),
    "data past the .bin": (
        "tensor_blocks.jsonl",
        lambda row: {**row, "data": [0, 10**6]},
        "reaches past the end of the .bin file",
    ),
}


@pytest.mark.parametrize(("name", "change", "message"), FORGED.values(), ids=FORGED.keys())
def test_an_export_with_valid_checksums_but_bad_rows_is_refused_and_writes_nothing(
    database_url: str,
    tmp_path: Path,
    fresh: Callable[..., str],
    name: str,
    change: Callable[[dict[str, Any]], dict[str, Any]],
    message: str,
) -> None:
    small(database_url)
    transfer.export_database(database_url, tmp_path / "export")
    target = fresh(database_url)
    _rewrite(tmp_path / "export", name, change)
    with pytest.raises(InvalidInput, match=message):
        transfer.import_database(target, tmp_path / "export")
    assert all(rows == [] for name, rows in dump(target).items() if name != "cache_epochs")  # but its identity


def test_export_refuses_a_directory_that_holds_files(database_url: str, tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(InvalidInput, match="not an empty directory"):
        transfer.export_database(database_url, tmp_path / "full")
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]


def test_a_logical_backup_restores_into_either_backend(
    database_url: str, tmp_path: Path, password_hash: str, fresh: Callable[..., str]
) -> None:
    demo = fill(database_url, password_hash)
    file = tmp_path / "dust.tar.gz"
    made = backups.backup(database_url, file, logical=True)
    assert made.method == "logical export, tar.gz" and backup.kind_of(file) is backup.BackupKind.logical
    expected = without_secrets(dump(database_url))
    backends = [database_url] if not POSTGRES_URL or "postgresql" in database_url else [database_url, POSTGRES_URL]
    for like in backends:
        target = fresh(like, migrated=False)
        assert backups.restore(target, file).counts == made.counts
        assert_same(expected, as_imported(dump(target)))
        assert_reads_alike(database_url, target, demo)


def test_without_pg_dump_a_postgresql_backup_is_logical(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("pg_dump concerns PostgreSQL only")
    small(database_url)
    monkeypatch.setattr(backup, "pg_tool", lambda _name: None)
    made = backups.backup(database_url, tmp_path / "dust.backup")
    assert made.method == "logical export, tar.gz" and made.counts["entities"] == 1
    backups.restore(database_url, tmp_path / "dust.backup", force=True)
    with Dust(database_url, migrate=False) as db:
        assert [e.name for e in db.entities().items] == ["Jane Doe"]


def test_an_archive_with_members_outside_its_directory_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "evil.tar.gz"
    with tarfile.open(file, "w:gz") as tar:
        member = tarfile.TarInfo("../escaped.txt")
        member.size = 3
        tar.addfile(member, io.BytesIO(b"bad"))
    with pytest.raises(InvalidInput, match="not a readable export archive"):
        backups.unpack(file, tmp_path / "inside")
    assert not (tmp_path / "escaped.txt").exists()


def test_every_table_is_exported_or_said_not_to_be() -> None:
    """A new table must be given a place: a family of the export, or a reason in NOT_EXPORTED."""
    exported = {family.name for family in transfer.FAMILIES}
    assert exported.isdisjoint(transfer.NOT_EXPORTED)
    assert exported | transfer.NOT_EXPORTED.keys() == {t.name for t in Base.metadata.sorted_tables}
