"""`dust import paysim FILE` on the shared PaySim sample: every row accounted for, values as in the file."""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dust.cli import app
from dust.domains import finance
from dust.embedded import Dust
from dust.engine import relations
from dust.importers import paysim
from dust.importers.report import Report
from dust.storage.repositories import entities as entity_repo

PAYSIM = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "paysim" / "paysim_sample.csv"
pytestmark = pytest.mark.skipif(not PAYSIM.is_file(), reason="the shared PaySim sample is not here")
HEADER = ",".join(paysim.COLUMNS)


HEAD_ROWS = 6_000  # 172 frauds, 9,863 accounts: ten batches of them


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    """The sample's first rows: the whole file (its every row read by the test below) took a minute or two more
    of every test run, for the same mapping code; ``finance.TENSORS`` accounts a batch, so these cross many
    batches."""
    head = tmp_path / "paysim_head.csv"
    with PAYSIM.open() as file:
        head.write_text("".join(line for _, line in zip(range(HEAD_ROWS + 1), file, strict=False)))
    return head


def test_every_row_of_the_shared_sample_reads() -> None:
    report = Report()
    found = list(paysim.read(PAYSIM, report))
    assert len(found) == len(rows(PAYSIM)) == 51_392 and not report.skipped
    assert len({t.payee for t in found if t.payee.startswith("M")}) == 17_112
    assert sum(t.fraud for t in found) == 1_392


def load(db: Dust, path: Path) -> Report:
    return paysim.import_file(db.session, path)


def entity(db: Dust, kind: str, name: str) -> object:
    with db.session() as session:
        row = entity_repo.by_external_id(session, kind, name)
        assert row is not None, (kind, name)
        return row.id


def balance(db: Dust, account: str, step: int) -> list[float]:
    (tensor,) = db.entity_tensors(entity(db, finance.ACCOUNT, account))  # type: ignore[arg-type]
    view = db.read_tensor(tensor.id, time=(finance.ORIGIN + timedelta(hours=step)).isoformat())
    return [float(v) for v in np.asarray(view.values).ravel()]


def test_the_sample_row_for_row_then_again_adds_nothing(db: Dust, sample: Path) -> None:
    source = rows(sample)
    payers = {r["nameOrig"] for r in source}
    payees = {r["nameDest"] for r in source}
    report = load(db, sample)
    assert report.imported["transactions"] == report.imported["pays relations"] == len(source)
    assert report.imported["accounts"] == len(payers | {p for p in payees if p.startswith("C")})
    assert report.imported["merchants"] == len({p for p in payees if p.startswith("M")})
    assert not report.skipped
    # spot values: a fraud transfer that drained its account, as the file has it
    drained = next(r for r in source if r["isFraud"] == "1.0" and r["type"] == "TRANSFER")
    payer = entity(db, finance.ACCOUNT, drained["nameOrig"])
    payee = entity(db, finance.ACCOUNT, drained["nameDest"])
    with db.session() as session:
        row = relations.repo.find_edge(session, payer, payee, finance.PAYS)  # type: ignore[arg-type]
        assert row is not None
        found = relations.get(session, row.id)
    assert found.type == "pays" and found.weight == pytest.approx(float(drained["amount"]))
    (payment,) = found.attributes["payments"]
    assert payment["is_fraud"] is True and payment["step"] == int(drained["step"])
    step = int(drained["step"])
    assert balance(db, drained["nameOrig"], step) == [float(drained["oldbalanceOrg"]), float(drained["newbalanceOrig"])]
    # the fraud score flagged it on the payer's balance, with an alert; most flags are PaySim's fraud
    flagged = db.anomalies(entity_id=payer, schema="balance").items  # type: ignore[arg-type]
    assert [(a.time_index, a.detector) for a in flagged] == [(step, "fraud")]
    assert (flagged[0].reason or "").startswith(f"transfer of {float(drained['amount']):,.2f} drained")
    assert len(db.alerts(entity_id=payer).items) == 1  # type: ignore[arg-type]
    fraud_rows = sum(r["isFraud"] == "1.0" for r in source)
    assert 0.9 * fraud_rows < report.imported["fraud anomalies"] == report.imported["fraud alerts"] < 1.1 * fraud_rows
    again = load(db, sample)
    assert again.nothing_new
    assert again.existing["transactions"] == len(source)
    assert again.existing["fraud anomalies"] == report.imported["fraud anomalies"]


def test_bad_rows_are_reported_with_their_line_and_the_rest_imported(db: Dust, tmp_path: Path) -> None:
    good = "1,PAYMENT,10.5,C1,100.0,89.5,M1,0.0,0.0,0,0"
    lines = [
        HEADER,
        good,
        "2,REFUND,10.5,C2,100.0,89.5,M1,0.0,0.0,0,0",  # unknown type
        "x,PAYMENT,10.5,C3,100.0,89.5,M1,0.0,0.0,0,0",  # step not a number
        "3,PAYMENT,-1,C4,100.0,89.5,M1,0.0,0.0,0,0",  # negative amount
        "4,TRANSFER,5,C5,5.0,0.0,C6,0.0,5.0,maybe,0",  # label not 0/1
        "5,TRANSFER,5,X7,5.0,0.0,C6,0.0,5.0,1,0",  # not an account name
        "6,TRANSFER,5,C8,5.0,0.0",  # too few fields
        "7,TRANSFER,5.0,C9,5.0,0.0,C6,0.0,5.0,1,0",
    ]
    path = tmp_path / "small.csv"
    path.write_text("\n".join(lines) + "\n")
    report = load(db, path)
    assert report.imported["transactions"] == 2
    assert sum(report.skipped.values()) == 6
    text = "\n".join(report.lines())
    assert "type 'REFUND' is not one of" in text and "small.csv:3" in text
    assert "amount '-1' is not a finite number of 0 or more" in text
    assert "isFraud 'maybe' is not 0 or 1" in text and "fewer fields" in text
    assert balance(db, "C6", 7) == [0.0, 5.0]  # a payee account's balances too


def test_a_file_that_is_not_paysim_is_refused(db: Dust, tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(Exception, match="not a PaySim CSV: no column step"):
        load(db, path)


def test_the_command_reports_and_times_the_import(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "two.csv"
    path.write_text(f"{HEADER}\n1,PAYMENT,10.5,C1,100.0,89.5,M1,0.0,0.0,0,0\n1,CASH_OUT,3,C1,89.5,86.5,C2,0,3,0,0\n")
    monkeypatch.setenv("DUST_DATABASE_URL", database_url)
    result = CliRunner().invoke(app, ["import", "paysim", str(path)])
    assert result.exit_code == 0, result.output
    assert "Imported: 2 accounts, 1 merchants, 4 balance values, 2 transactions" in result.output
    assert "Done in" in result.output
