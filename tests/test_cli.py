"""The `dust` command: users, demo, migrations, and serve's refusal to run unsigned."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from dust.cli import app
from dust.core.config import Settings
from dust.embedded import Dust
from dust.engine import users
from dust.engine.users import TokenPair
from dust.storage import db as db_module
from tests.api.conftest import ONE_BACKEND
from tests.roundtrip import fresh_fixture  # noqa: F401  (the fixture `fresh`)

PASSWORD = "a long enough password"


@pytest.fixture
def run(database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Invoke the CLI on the test database, in a scratch directory, with no signing key set."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DUST_DATABASE_URL", database_url)
    monkeypatch.setenv("DUST_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("COLUMNS", "80")  # Rich's width when output is not a terminal, whatever runs the tests
    monkeypatch.setenv("DUST_SECRET_KEY", "")  # restored by monkeypatch after the demo sets one
    monkeypatch.delenv("DUST_SECRET_KEY")
    runner = CliRunner()

    def invoke(*args: str, stdin: str | None = None):  # type: ignore[no-untyped-def]
        return runner.invoke(app, list(args), input=stdin)

    return invoke


def sign_in(database_url: str, username: str, password: str) -> object:
    settings = Settings(database_url=database_url, secret_key="k" * 40)
    with Dust(database_url, migrate=False) as db, db.session() as session:
        return users.login(session, settings, username, password, "cli-test")


def test_users_lifecycle(run, database_url: str) -> None:  # type: ignore[no-untyped-def]
    created = run("users", "create", "alice", "--role", "clinician", "--password-stdin", stdin=PASSWORD + "\n")
    assert created.exit_code == 0, created.output
    assert "Created clinician alice" in created.output
    assert isinstance(sign_in(database_url, "alice", PASSWORD), TokenPair)
    again = run("users", "create", "alice", "--role", "viewer", "--password-stdin", stdin=PASSWORD + "\n")
    assert again.exit_code == 1 and "exists" in again.output
    short = run("users", "create", "bob", "--role", "viewer", "--password-stdin", stdin="short\n")
    assert short.exit_code == 1 and "password" in short.output
    renewed = "a new long password"
    assert run("users", "set-password", "alice", "--password-stdin", stdin=renewed + "\n").exit_code == 0
    assert not isinstance(sign_in(database_url, "alice", PASSWORD), TokenPair)
    assert isinstance(sign_in(database_url, "alice", renewed), TokenPair)
    assert run("users", "set-role", "alice", "analyst").exit_code == 0
    listed = run("users", "list")
    assert "alice" in listed.output and "analyst" in listed.output
    assert run("users", "disable", "alice").exit_code == 0
    assert not isinstance(sign_in(database_url, "alice", PASSWORD), TokenPair)
    missing = run("users", "disable", "nobody")
    assert missing.exit_code == 1 and "does not exist" in missing.output


def test_serve_refuses_without_a_secret_key(run) -> None:  # type: ignore[no-untyped-def]
    result = run("serve", "--port", "8999")
    assert result.exit_code == 2
    assert "DUST_SECRET_KEY" in result.output


def test_demo_loads_once_and_prints_a_working_admin_login(run, database_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    first = run("demo", "healthcare", "--size", "4", "--days", "10")
    assert first.exit_code == 0, first.output
    assert "4 patients" in first.output
    password = first.output.split("with password")[1].split()[0]
    assert isinstance(sign_in(database_url, "admin", password), TokenPair)
    served = no_server(monkeypatch)
    second = run("demo", "--size", "4", "--days", "10", "--serve", "--port", "8999")
    assert second.exit_code == 0, second.output
    assert served and served[0]["port"] == 8999
    assert "already loaded" in second.output
    assert banner(second.output, 8999)
    new_password = second.output.split("with password")[1].split()[0]
    assert new_password != password
    assert isinstance(sign_in(database_url, "admin", new_password), TokenPair)
    with Dust(database_url, migrate=False) as db:
        assert len(db.entities(kind="patient").items) == 4


@ONE_BACKEND
def test_demo_of_an_unknown_pack_names_the_installed_ones(run) -> None:  # type: ignore[no-untyped-def]
    refused = run("demo", "healthcar")
    assert refused.exit_code == 2
    assert "No domain pack 'healthcar'; did you mean 'healthcare'?" in refused.output
    assert "installed: healthcare" in refused.output


def test_db_upgrade(run) -> None:  # type: ignore[no-untyped-def]
    done = run("db", "upgrade")
    assert done.exit_code == 0 and "Up to date" in done.output


class Logged:
    """Stands in for dust.storage.db's logger: the events logged (the real one writes from a thread, after the
    CLI runner has given stderr back)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, object]]] = []

    def info(self, event: str, **fields: object) -> None:
        self.events.append((event, fields))

    error = info


def test_migrations_are_logged_only_when_one_is_applied(  # type: ignore[no-untyped-def]
    run, database_url: str, monkeypatch: pytest.MonkeyPatch, fresh
) -> None:
    logged = Logged()
    monkeypatch.setattr(db_module, "log", logged)
    monkeypatch.setenv("DUST_DATABASE_URL", fresh(database_url, migrated=False))
    first = run("db", "upgrade")
    assert first.exit_code == 0, first.output
    ((event, fields),) = logged.events
    assert event == "migrations applied" and fields["applied"][0] == "0001"  # type: ignore[index]
    assert fields["revision"] == fields["applied"][-1]  # type: ignore[index]
    assert "Applied migrations 0001, " in first.output
    assert run("users", "list").exit_code == 0
    assert run("db", "upgrade").exit_code == 0
    assert len(logged.events) == 1


def banner(output: str, port: int) -> bool:
    """Whether one line of ``output`` holds the whole start banner, both URLs unbroken."""
    return any(
        f"DUST is serving at http://127.0.0.1:{port}/" in line and f"http://127.0.0.1:{port}/docs" in line
        for line in output.splitlines()
    )


def no_server(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    """uvicorn.run replaced by a stand-in that only collects the options of each call."""
    import uvicorn

    served: list[dict[str, object]] = []
    monkeypatch.setattr(uvicorn, "run", lambda *_, **options: served.append(options))
    return served


def test_serve_prints_whole_urls_when_output_is_not_a_terminal(  # type: ignore[no-untyped-def]
    run, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = no_server(monkeypatch)
    monkeypatch.setenv("DUST_SECRET_KEY", "k" * 40)
    result = run("serve", "--port", "8999")
    assert result.exit_code == 0, result.output
    assert served and served[0]["port"] == 8999
    assert banner(result.output, 8999), result.output  # 82 characters: Rich would break it at 80


def test_users_list_shows_whole_ids(run, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    for name in ("alice", "a-rather-long-username-for-a-table"):
        made = run("users", "create", name, "--role", "viewer", "--password-stdin", stdin=PASSWORD + "\n")
        assert made.exit_code == 0, made.output
    with Dust(database_url, migrate=False) as db, db.session() as session:
        ids = {u.username: str(u.id) for u in users.list_(session)}
    plain = run("users", "list")  # not a terminal: tab-separated lines
    lines = [line.split("\t") for line in plain.stdout.splitlines()]
    assert lines[0] == ["username", "role", "entity", "status", "id"]
    assert {line[0]: line[4] for line in lines[1:]} == ids
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("COLUMNS", "150")
    table = run("users", "list")  # a terminal wide enough: a table
    assert "\t" not in table.stdout and all(i in table.stdout for i in ids.values())
    monkeypatch.setenv("COLUMNS", "60")
    narrow = run("users", "list")  # too narrow for the table: the lines again, never cut
    assert narrow.stdout == plain.stdout


def _said(result) -> str:  # type: ignore[no-untyped-def]
    """The command's output with Rich's line wrapping undone."""
    return " ".join(result.output.split())


def test_db_backup_and_restore(run, database_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with Dust(database_url, migrate=False) as db:
        db.create_entity("patient", "Jane Doe")
    wrote = run("db", "backup", str(tmp_path / "dust.backup"))
    assert wrote.exit_code == 0, wrote.output
    assert f"Wrote {tmp_path / 'dust.backup'}" in _said(wrote) and "1 entities" in _said(wrote)
    logical = run("db", "backup", "--logical", str(tmp_path / "dust.tar.gz"))
    assert logical.exit_code == 0 and "logical export, tar.gz" in _said(logical)
    refused = run("db", "restore", str(tmp_path / "dust.backup"))
    assert refused.exit_code == 1 and "needs --force" in _said(refused)
    restored = run("db", "restore", "--force", str(tmp_path / "dust.backup"))
    assert restored.exit_code == 0, restored.output
    assert "Restored" in _said(restored) and "1 entities" in _said(restored)


def test_export_and_import_dust(  # type: ignore[no-untyped-def]
    run, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh
) -> None:
    with Dust(database_url, migrate=False) as db:
        db.create_entity("patient", "Jane Doe", external_id="MRN-1")
    exported = run("export", str(tmp_path / "export"))
    assert exported.exit_code == 0, exported.output
    assert "Exported into" in _said(exported) and "1 entities" in _said(exported)
    twice = run("import", "dust", str(tmp_path / "export"))
    assert twice.exit_code == 1 and "already holds data" in _said(twice)
    target = fresh(database_url, migrated=False)  # `dust import dust` migrates it
    monkeypatch.setenv("DUST_DATABASE_URL", target)
    imported = run("import", "dust", str(tmp_path / "export"))
    assert imported.exit_code == 0, imported.output
    assert "Imported" in _said(imported) and "1 entities" in _said(imported)
    with Dust(target, migrate=False) as db:
        assert [e.external_id for e in db.entities().items] == ["MRN-1"]
