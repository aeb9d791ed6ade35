"""``dust import paysim FILE``: a PaySim transactions CSV onto the finance pack's mapping (dust.domains.finance).

A row that cannot be read is reported with its line and reason and the import goes on. Re-running adds nothing:
accounts and merchants are found by their names (external ids), and a transaction whose (payer, payee) ``pays``
relation exists is already there. The import commits as it goes (``finance.store`` says when and why), then
flags the transactions the fraud score rates high as anomalies and alerts (``dust.engine.fraud.flag``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dust.core.errors import InvalidInput
from dust.domains import finance
from dust.domains.finance import Sessions, Transaction
from dust.engine import fraud
from dust.importers.report import Report

Progress = Callable[[int, int | None], None]
COLUMNS = ("step", "type", "amount", "nameOrig", "oldbalanceOrg", "newbalanceOrig", "nameDest", "oldbalanceDest",
           "newbalanceDest", "isFraud", "isFlaggedFraud")  # fmt: skip
TYPES = ("CASH_IN", "CASH_OUT", "DEBIT", "PAYMENT", "TRANSFER")
MAX_STEP = 24 * 366 * 10  # ten years of hours: far beyond a simulation, short of a typo's reach


class BadRow(ValueError):
    """A row this importer cannot use; the message says why."""


def import_file(sessions: Sessions, path: Path, progress: Progress | None = None) -> Report:
    """Import the PaySim CSV at ``path``; what was imported and skipped, with reasons. ``sessions()`` opens one
    transaction (``Dust.session``). Commits as it goes (``finance.store`` says when and why); then scores the
    file's transactions for fraud and flags the high ones as anomalies and alerts (``fraud.flag``), once."""
    if not path.is_file():
        raise InvalidInput(f"{path} is not a file: give a PaySim CSV (columns {', '.join(COLUMNS)})")
    report = Report()
    # The bar goes on past reading (a quarter): writing entities, balances and relations is most of the time
    lines = _lines(path)
    total = 4 * lines + 1
    tell = progress or (lambda done, total: None)
    found = list(read(path, report, lambda done, _: tell(done, total)))
    finance.store(sessions, found, report, lambda n: tell(lines + n, total))
    with sessions() as session:
        flagged = fraud.flag(session, found)
    report.imported["fraud anomalies"] += flagged.anomalies
    report.imported["fraud alerts"] += flagged.alerts
    report.existing["fraud anomalies"] += flagged.existing
    tell(total, total)
    return report


def read(path: Path, report: Report, progress: Progress | None = None) -> Iterator[Transaction]:
    """The file's transactions in order; unreadable rows reported and skipped."""
    total = _lines(path)
    with path.open(newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InvalidInput(f"{path.name} is not a PaySim CSV: no column {', '.join(missing)} (needs {COLUMNS})")
        done = 0
        for row in reader:
            where = f"{path.name}:{reader.line_num}"
            try:
                yield _parse(row, where)
            except BadRow as problem:
                report.skip("rows", str(problem), where)
            done += 1
            if progress and done % 5000 == 0:
                progress(done, total)
        if progress:
            progress(done, total)


def _lines(path: Path) -> int:
    with path.open("rb") as file:
        return max(sum(1 for _ in file) - 1, 0)


def _parse(row: dict[str, Any], where: str) -> Transaction:
    if None in row:
        raise BadRow(f"more fields than the header's {len(row) - 1}")
    if any(v is None for v in row.values()):
        raise BadRow(f"fewer fields than the header's {len(row)}")
    step = _number(row, "step")
    if step != int(step) or not 0 <= step <= MAX_STEP:
        raise BadRow(f"step {row['step'][:40]!r} is not a whole hour from 0 to {MAX_STEP}")
    if row["type"] not in TYPES:
        raise BadRow(f"type {row['type'][:40]!r} is not one of {', '.join(TYPES)}")
    payer, payee = row["nameOrig"], row["nameDest"]
    if not (payer[:1] == "C" and len(payer) > 1):
        raise BadRow(f"nameOrig {payer[:40]!r} is not an account name (C followed by its number)")
    if not (payee[:1] in ("C", "M") and len(payee) > 1):
        raise BadRow(f"nameDest {payee[:40]!r} is not an account (C…) or merchant (M…) name")
    if payer == payee:
        raise BadRow(f"{payer} pays itself")
    amount = _number(row, "amount")
    return Transaction(
        int(step),
        row["type"],
        amount,
        payer,
        _number(row, "oldbalanceOrg"),
        _number(row, "newbalanceOrig"),
        payee,
        _number(row, "oldbalanceDest"),
        _number(row, "newbalanceDest"),
        _flag(row, "isFraud"),
        _flag(row, "isFlaggedFraud"),
        where,
    )


def _number(row: dict[str, str], field: str) -> float:
    try:
        value = float(row[field])
    except ValueError:
        raise BadRow(f"{field} {row[field][:40]!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise BadRow(f"{field} {row[field][:40]!r} is not a finite number of 0 or more")
    return value


def _flag(row: dict[str, str], field: str) -> bool:
    if row[field] not in ("0", "1", "0.0", "1.0"):
        raise BadRow(f"{field} {row[field][:40]!r} is not 0 or 1")
    return row[field].startswith("1")
