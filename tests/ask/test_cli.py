"""`dust ask`: prints the answer and the query, as the operator or under a user's access policy."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from dust.cli import app
from dust.embedded import Dust


@pytest.fixture
def run(database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DUST_DATABASE_URL", database_url)
    monkeypatch.setenv("DUST_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("DUST_SECRET_KEY", "k" * 40)
    return lambda *args: CliRunner().invoke(app, list(args))


def test_dust_ask_prints_the_answer_and_the_query(run, db: Dust) -> None:  # type: ignore[no-untyped-def]
    db.create_entity(kind="warehouse", name="Warehouse North")
    db.create_entity(kind="warehouse", name="Warehouse South")
    answered = run("ask", "how many warehouses are there?")
    assert answered.exit_code == 0, answered.output
    assert answered.output.splitlines() == [
        "There are 2 warehouses.",
        'query: {"intent": "count", "cohort": {"kind": "warehouse"}}',
    ]
    refused = run("ask", "tell me a joke")
    assert refused.exit_code == 1 and "could not tell what to look up" in refused.output
    unknown = run("ask", "how many warehouses", "--as", "nobody")
    assert unknown.exit_code == 1 and "user 'nobody' does not exist" in unknown.output


def test_dust_ask_as_a_clinician_sees_only_their_patients(run, db: Dust) -> None:  # type: ignore[no-untyped-def]
    doctor = db.create_entity(kind="practitioner", name="Dr Grey")
    for name in ("Ann Lee", "Bob Ray"):
        db.create_entity(kind="patient", name=name)
    ann = db.entities(kind="patient", q="Ann Lee").items[0]
    db.relate(doctor.id, ann.id, "treats")
    db.create_user(username="grey", password="a long enough password", role="clinician", entity_id=doctor.id)
    assert run("ask", "how many patients are there").output.startswith("There are 2 patients.")
    mine = run("ask", "how many patients are there", "--as", "grey")
    assert mine.exit_code == 0, mine.output
    assert mine.output.startswith("There is 1 patient.")
    unseen = run("ask", "who treats bob ray", "--as", "grey")
    assert unseen.exit_code == 1 and "found no entity matching 'bob ray'" in unseen.output
