"""``dust import paysim FILE``: a PaySim transactions CSV onto the finance pack's mapping (dust.domains.finance).

A row that cannot be read is reported with its line and reason and the import goes on. Re-running adds nothing:
accounts and merchants are found by their names (external ids), and a transaction whose (payer, payee) ``pays``
relation exists is already there. The import commits as it goes (``import_file`` says when and why).
"""

from __future__ import annotations

import csv
import math
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from dust.core.errors import InvalidInput
from dust.domains import finance
from dust.domains.finance import Transaction
from dust.engine import entities, relations, tensors
from dust.engine.entities import EntityCreate
from dust.engine.relations import RelationCreate
from dust.engine.tensors import TensorCreate
from dust.importers.report import Report
from dust.storage.repositories import entities as entity_repo
from dust.storage.repositories import tensors as tensor_repo

Progress = Callable[[int, int | None], None]
Sessions = Callable[[], AbstractContextManager[Session]]
COLUMNS = ("step", "type", "amount", "nameOrig", "oldbalanceOrg", "newbalanceOrig", "nameDest", "oldbalanceDest",
           "newbalanceDest", "isFraud", "isFlaggedFraud")  # fmt: skip
TYPES = ("CASH_IN", "CASH_OUT", "DEBIT", "PAYMENT", "TRANSFER")
MAX_STEP = 24 * 366 * 10  # ten years of hours: far beyond a simulation, short of a typo's reach
CHUNK = 5_000  # ids per IN (...) list: under SQLite's variable limit, few statements
TENSORS = 2_000  # tensors written per transaction: PostgreSQL's lock table holds ~6,400 locks by default


class BadRow(ValueError):
    """A row this importer cannot use; the message says why."""


def import_file(sessions: Sessions, path: Path, progress: Progress | None = None) -> Report:
    """Import the PaySim CSV at ``path``; what was imported and skipped, with reasons. ``sessions()`` opens one
    transaction (``Dust.session``).

    Commits as it goes, a transaction each: entities, then balances by batches of accounts (PostgreSQL holds a
    lock per tensor written until the transaction ends, and has room for a few thousand), then the relations.
    The relations come last because they mark transactions as imported: a run cut short leaves them out, and
    the next run writes those transactions' balances again (the same values) and then the relations."""
    if not path.is_file():
        raise InvalidInput(f"{path} is not a file: give a PaySim CSV (columns {', '.join(COLUMNS)})")
    report = Report()
    # The bar goes on past reading (a quarter): writing entities, balances and relations is most of the time
    lines = _lines(path)
    total = 4 * lines + 1
    tell = progress or (lambda done, total: None)
    found = list(read(path, report, lambda done, _: tell(done, total)))
    kind_of = {name: finance.MERCHANT if name.startswith("M") else finance.ACCOUNT for t in found
               for name in (t.payer, t.payee)}  # fmt: skip
    ids: dict[str, uuid.UUID] = {}
    with sessions() as session:
        finance.prepare(session)
        for kind, what in ((finance.ACCOUNT, "accounts"), (finance.MERCHANT, "merchants")):
            ids.update(_put_entities(session, kind, [n for n, k in kind_of.items() if k == kind], report, what))
        pairs = _new_pairs(session, found, ids, report)
    tell(2 * lines, total)
    fresh = [t for paid in pairs.values() for t in paid]
    _put_balances(sessions, fresh, ids, report, lambda n: tell(2 * lines + n, total))
    with sessions() as session:
        _put_payments(session, pairs, report)
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


def _put_entities(session: Session, kind: str, names: list[str], report: Report, what: str) -> dict[str, uuid.UUID]:
    """The entity id of each name: existing entities found, the others created together."""
    ids: dict[str, uuid.UUID] = {}
    for i in range(0, len(names), CHUNK):
        ids.update(entity_repo.ids_by_external_id(session, kind, names[i : i + CHUNK]))
    new = [n for n in names if n not in ids]
    made = entities.create_many(session, [EntityCreate(kind=kind, name=n, external_id=n) for n in new])
    ids.update({n: e.id for n, e in zip(new, made, strict=True)})
    report.imported[what] += len(new)
    report.existing[what] += len(names) - len(new)
    return ids


def _new_pairs(
    session: Session, found: list[Transaction], ids: dict[str, uuid.UUID], report: Report
) -> dict[tuple[uuid.UUID, uuid.UUID], list[Transaction]]:
    """The transactions by (payer, payee) of the pairs no ``pays`` relation links yet; the others are already
    there (a later payment between two accounts an earlier import linked is not merged: see docs/finance.md)."""
    pairs: dict[tuple[uuid.UUID, uuid.UUID], list[Transaction]] = defaultdict(list)
    for t in found:
        pairs[(ids[t.payer], ids[t.payee])].append(t)
    existing = relations.repo.find_edges(session, [(s, t, finance.PAYS) for s, t in pairs])
    for key in [key for key in pairs if (*key, finance.PAYS) in existing]:
        report.existing["transactions"] += len(pairs.pop(key))
    report.existing["pays relations"] += len(existing)
    return pairs


def _put_payments(
    session: Session, pairs: dict[tuple[uuid.UUID, uuid.UUID], list[Transaction]], report: Report
) -> None:
    """One ``pays`` relation per pair: weight the total paid, valid from the first payment's hour, the payments
    in its attributes."""
    items = [
        RelationCreate(
            source_id=source,
            target_id=target,
            type=finance.PAYS,
            weight=sum(t.amount for t in paid),
            attributes={"payments": [t.attributes() for t in paid]},
            valid_from=finance.ORIGIN + timedelta(hours=min(t.step for t in paid)),
        )
        for (source, target), paid in pairs.items()
    ]
    for i in range(0, len(items), CHUNK):
        relations.create_many(session, items[i : i + CHUNK])
    report.imported["transactions"] += sum(len(paid) for paid in pairs.values())
    report.imported["pays relations"] += len(items)


def _put_balances(
    sessions: Sessions, fresh: list[Transaction], ids: dict[str, uuid.UUID], report: Report, done: Callable[[int], None]
) -> None:
    """The accounts' balances around ``fresh`` transactions into their balance tensors (made if missing): per hour
    the first old and the last new balance, in file order. A transaction per ``TENSORS`` accounts; ``done(n)``:
    n of ``len(fresh)`` done."""
    hours: dict[uuid.UUID, dict[int, list[float]]] = defaultdict(dict)
    for t in fresh:
        sides = [(t.payer, t.payer_old, t.payer_new)]
        if not t.payee.startswith("M"):
            sides.append((t.payee, t.payee_old, t.payee_new))
        for name, old, new in sides:
            cell = hours[ids[name]].setdefault(t.step, [old, new])
            cell[1] = new
    accounts = list(hours)
    for i in range(0, len(accounts), TENSORS):
        batch = accounts[i : i + TENSORS]
        with sessions() as session:
            _write_balances(session, {a: hours[a] for a in batch}, report)
        done(len(fresh) * (i + len(batch)) // len(accounts))


def _write_balances(session: Session, hours: dict[uuid.UUID, dict[int, list[float]]], report: Report) -> None:
    """Each account's (old, new) by hour into its balance tensor, one ``write_arrays`` per first hour."""
    tensor_of = _balance_tensors(session, set(hours))
    by_start: dict[int, dict[uuid.UUID, np.ndarray]] = defaultdict(dict)
    for account, cells in hours.items():
        first = min(cells)
        array = np.full((2, max(cells) - first + 1), np.nan)
        for step, (old, new) in cells.items():
            array[:, step - first] = (old, new)
        by_start[first][tensor_of[account]] = array
    for first, arrays in sorted(by_start.items()):
        report.imported["balance values"] += sum(tensors.write_arrays(session, arrays, first).values())


def _balance_tensors(session: Session, accounts: set[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    """The balance tensor of each account, missing ones created."""
    wanted = list(accounts)
    out: dict[uuid.UUID, uuid.UUID] = {}
    for i in range(0, len(wanted), CHUNK):
        out.update(tensor_repo.ids_of_entities(session, finance.BALANCE.name, wanted[i : i + CHUNK]))
    missing = [a for a in wanted if a not in out]
    for i in range(0, len(missing), CHUNK):
        made = tensors.create_many(
            session,
            [
                TensorCreate(entity_id=a, schema_name=finance.BALANCE.name, origin=finance.ORIGIN)
                for a in missing[i : i + CHUNK]
            ],
        )
        out.update({t.entity_id: t.id for t in made})
    return out
