"""Docs that cannot drift: every route, CLI command and setting is documented."""

from __future__ import annotations

import re
from pathlib import Path

import typer
from fastapi import FastAPI

from dust.cli import app as cli
from dust.core.config import Settings

ROOT = Path(__file__).resolve().parents[1]
DOCS = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])


def test_every_route_is_documented(app: FastAPI) -> None:
    missing = []
    for path, operations in app.openapi()["paths"].items():
        short = path.removeprefix("/api/v1")
        pattern = re.compile(re.escape(short) + r"(?![\w/{])")
        lines = [line for line in DOCS.splitlines() if pattern.search(line)]
        for method in operations:
            if not any(re.search(rf"\b{method.upper()}\b", line) for line in lines):
                missing.append(f"{method.upper()} {short}")
    assert not missing, f"routes missing from README.md/docs/*.md: {missing}"


def _commands(group: typer.Typer, prefix: str) -> list[str]:
    found = [f"{prefix} {c.name or (c.callback.__name__ if c.callback else '')}" for c in group.registered_commands]
    for sub in group.registered_groups:
        assert sub.typer_instance is not None
        found += _commands(sub.typer_instance, f"{prefix} {sub.name}")
    return found


def test_every_cli_command_is_documented() -> None:
    commands = _commands(cli, "dust")
    assert "dust users create" in commands
    missing = [c for c in commands if f"`{c}" not in DOCS]
    assert not missing, f"CLI commands missing from the docs: {missing}"


def test_every_setting_is_documented() -> None:
    missing = [f"DUST_{name.upper()}" for name in Settings.model_fields if f"DUST_{name.upper()}" not in DOCS]
    assert not missing, f"settings missing from the README: {missing}"


def test_security_doc_names_tests_that_exist() -> None:
    """The OWASP table's test column: `tests/file.py::test`, `tests/file.py`, or a bare `test` of the file before."""
    rows = [line for line in (ROOT / "docs" / "security.md").read_text().splitlines() if line.startswith("| API")]
    assert len(rows) == 10
    missing = []
    for row in rows:
        current = None
        for token in re.findall(r"`([^`]+)`", row.rstrip(" |").rsplit("|", 1)[1]):
            path, _, test = token.partition("::") if token.startswith("tests/") else ("", "", token)
            if path:
                current = ROOT / path
                if not current.exists():
                    missing.append(path)
            if test and (current is None or f"def {test}(" not in current.read_text()):
                missing.append(token)
    assert not missing, f"docs/security.md names tests that do not exist: {missing}"


def test_every_documented_setting_exists() -> None:
    """A setting removed from the code must leave the docs too (DUST_TEST_* and DUST_FUZZ_* are the suite's)."""
    known = {f"DUST_{name.upper()}" for name in Settings.model_fields}
    named = set(re.findall(r"`(DUST_[A-Z_]+)`", DOCS)) - known
    stale = {n for n in named if not n.startswith(("DUST_TEST_", "DUST_FUZZ_"))}
    assert not stale, f"the docs name settings that do not exist: {sorted(stale)}"
