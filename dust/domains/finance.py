"""Finance: customers, accounts and merchants; payments as ``pays`` relations and an hourly ``balance`` per account.

The mapping (``store``: used by ``dust import paysim`` and by ``dust demo finance``, see docs/finance.md):

- an ``account`` entity per customer account (PaySim's ``C…`` names, the external id), a ``merchant`` entity per
  merchant (``M…``). PaySim gives one account per customer and no customer of its own, so its import makes no
  ``customer`` entities; the kind is for sources that tell customers from their accounts (``holds``), such as
  the demo (dust.domains.finance_demo).
- each transaction is a ``pays`` relation from the paying account to the payee: weight = amount, valid from the
  transaction's hour; the relation's attributes keep the transaction (type, amount, step, balances, label).
- each account's ``balance`` tensor holds, per hour, its balance before the hour's first transaction (``old``)
  and after its last (``new``), as the source reports them; merchants' balances are not reported by PaySim.

The pack has no anomaly rules (``DomainPack.anomalies``): its fraud scoring makes its anomalies.
"""

from __future__ import annotations

import itertools
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from dust.core.errors import InvalidInput
from dust.domains import DomainPack, load_rules
from dust.engine import entities, kinds, relations, schemas, tensors
from dust.engine.entities import EntityCreate
from dust.engine.fields import oversized
from dust.engine.kinds import KindPolicy
from dust.engine.relations import RelationCreate
from dust.engine.schemas import SchemaCreate
from dust.engine.tensors import TensorCreate
from dust.importers.report import Report
from dust.storage.repositories import entities as entity_repo
from dust.storage.repositories import tensors as tensor_repo

Sessions = Callable[[], AbstractContextManager[Session]]

CUSTOMER, ACCOUNT, MERCHANT = "customer", "account", "merchant"
PAYS, HOLDS = "pays", "holds"
# Hour 0 of the simulated month: PaySim's step n is the hour starting at ORIGIN + n hours (step counts from 1).
ORIGIN = datetime(2024, 1, 1, tzinfo=UTC)
BALANCE = SchemaCreate.model_validate(
    {
        "name": "balance",
        "description": "An account's balance in the hour: before its first transaction (old), after its last (new).",
        "axes": [{"name": "measure", "labels": ["old", "new"]}],
        "time": {"unit": "hour", "step": 1, "origin": ORIGIN.isoformat()},
    }
)
POLICIES = {
    CUSTOMER: KindPolicy(description="A person or firm; holds accounts."),
    ACCOUNT: KindPolicy(
        description="A customer's account; pays other accounts and merchants. External id: the source's account name."
    ),
    MERCHANT: KindPolicy(description="Is paid by accounts; its balance is not known.", public=["name"]),
}


def prepare(session: Session) -> None:
    """The balance schema and the kinds' field policies; with the schema's first making, the pack's default rules
    (only then: a rule an admin deleted stays deleted through later imports)."""
    if schemas.repo.latest(session, BALANCE.name) is None:
        schemas.create(session, BALANCE)
        load_rules(session, PACK)
    for kind, policy in POLICIES.items():
        kinds.put(session, kind, policy)


@dataclass(frozen=True, slots=True)
class Transaction:
    """One PaySim row: who paid whom how much at which hour, the balances around it, and its labels."""

    step: int
    type: str
    amount: float
    payer: str
    payer_old: float
    payer_new: float
    payee: str
    payee_old: float
    payee_new: float
    fraud: bool
    flagged: bool
    where: str
    planted: str = ""  # generated data: the planted pattern it belongs to ("ring-1"); never a feature

    def attributes(self) -> dict[str, Any]:
        planted = {"planted": self.planted} if self.planted else {}
        return planted | {
            "step": self.step,
            "type": self.type,
            "amount": self.amount,
            "old_balance_payer": self.payer_old,
            "new_balance_payer": self.payer_new,
            "old_balance_payee": self.payee_old,
            "new_balance_payee": self.payee_new,
            "is_fraud": self.fraud,
            "flagged_fraud": self.flagged,
        }


# --- storing transactions: the mapping -------------------------------------------------------------------------

CHUNK = 5_000  # ids per IN (...) list: under SQLite's variable limit, few statements
TENSORS = 1_000  # tensors written per transaction: PostgreSQL's lock table holds ~6,400 locks by default, shared by all
ALIGN = 256  # hours: balances of accounts whose first hour is in the same ALIGN hours are written together
SMALL = 50  # payments of one pair that cannot reach MAX_ATTRIBUTES_BYTES (each is under 400 bytes as JSON)


def store(
    sessions: Sessions, found: Sequence[Transaction], report: Report, progress: Callable[[int], None] | None = None
) -> dict[str, uuid.UUID]:
    """``found`` as entities, balances and ``pays`` relations; the entity id of every account and merchant named.
    Accounts and merchants already there (by external id) are kept; transactions already stored are counted,
    not stored again. ``sessions()`` opens one transaction; ``progress(n)``: n of 2 × len(found) done.

    Commits as it goes, a transaction each: entities, then balances by batches of accounts (PostgreSQL holds a
    lock per tensor written until the transaction ends, and has room for a few thousand), then the relations.
    The relations come last because they mark transactions as stored: a run cut short leaves them out, and
    the next run writes those transactions' balances again (the same values) and then the relations."""
    done = progress or (lambda n: None)
    kind_of = {name: MERCHANT if name.startswith("M") else ACCOUNT for t in found for name in (t.payer, t.payee)}
    ids: dict[str, uuid.UUID] = {}
    made: set[uuid.UUID] = set()
    with sessions() as session:
        prepare(session)
        for kind, what in ((ACCOUNT, "accounts"), (MERCHANT, "merchants")):
            names = [n for n, k in kind_of.items() if k == kind]
            ids.update(_put_entities(session, kind, names, report, what, made))
        pairs = _new_pairs(session, found, ids, report)
    fresh = [t for t in found if (ids[t.payer], ids[t.payee]) in pairs]  # in file order: the balances need it
    _put_balances(sessions, fresh, ids, made, report, lambda n: done(len(found) * n // max(1, len(fresh))))
    with sessions() as session:
        _put_payments(session, pairs, report, lambda n: done(len(found) + len(found) * n // max(1, len(pairs))))
    done(2 * len(found))
    return ids


def _put_entities(
    session: Session, kind: str, names: list[str], report: Report, what: str, made: set[uuid.UUID]
) -> dict[str, uuid.UUID]:
    """The entity id of each name: existing entities found, the others created together (their ids added to
    ``made``)."""
    ids: dict[str, uuid.UUID] = {}
    for i in range(0, len(names), CHUNK):
        ids.update(entity_repo.ids_by_external_id(session, kind, names[i : i + CHUNK]))
    new = [n for n in names if n not in ids]
    created = entities.create_many(session, [EntityCreate(kind=kind, name=n, external_id=n) for n in new])
    ids.update({n: e.id for n, e in zip(new, created, strict=True)})
    made.update(e.id for e in created)
    report.imported[what] += len(new)
    report.existing[what] += len(names) - len(new)
    return ids


def _new_pairs(
    session: Session, found: Sequence[Transaction], ids: dict[str, uuid.UUID], report: Report
) -> dict[tuple[uuid.UUID, uuid.UUID], list[Transaction]]:
    """The transactions by (payer, payee) of the pairs no ``pays`` relation links yet; the others are already
    there (a later payment between two accounts an earlier import linked is not merged: see docs/finance.md).
    Sorted by payer: a batch of them then touches few accounts, and the duplicate checks of
    ``relations.create_many`` read few relations back."""
    pairs: dict[tuple[uuid.UUID, uuid.UUID], list[Transaction]] = defaultdict(list)
    for t in found:
        pairs[(ids[t.payer], ids[t.payee])].append(t)
    pairs = defaultdict(list, sorted(pairs.items()))
    existing = relations.repo.find_edges(session, [(s, t, PAYS) for s, t in pairs])
    for key in [key for key in pairs if (*key, PAYS) in existing]:
        report.existing["transactions"] += len(pairs.pop(key))
    report.existing["pays relations"] += len(existing)
    return pairs


def _put_payments(
    session: Session,
    pairs: dict[tuple[uuid.UUID, uuid.UUID], list[Transaction]],
    report: Report,
    done: Callable[[int], None],
) -> None:
    """One ``pays`` relation per pair: weight the total paid, valid from the first payment's hour, the payments
    in its attributes; made ``CHUNK`` pairs at a time, so that only a chunk's attributes are in memory.
    ``done(n)``: n of ``len(pairs)`` made.

    Built without pydantic's checks, which were half the time of a load: a payment's attributes are fixed keys,
    finite numbers (``Transaction`` holds only those), booleans and a type or planted label of our own, nothing
    the checks could refuse but the size, checked here."""
    keys = list(pairs)
    for i in range(0, len(keys), CHUNK):
        relations.create_many(session, [_payment(key, pairs[key]) for key in keys[i : i + CHUNK]])
        done(min(len(keys), i + CHUNK))
    report.imported["transactions"] += sum(len(paid) for paid in pairs.values())
    report.imported["pays relations"] += len(keys)


def _payment(pair: tuple[uuid.UUID, uuid.UUID], paid: list[Transaction]) -> RelationCreate:
    attributes = {"payments": [t.attributes() for t in paid]}
    too_big = oversized(attributes) if len(paid) > SMALL else None
    if too_big:
        raise InvalidInput(f"{paid[0].payer} pays {paid[0].payee} {len(paid)} times: {too_big}")
    return RelationCreate.model_construct(
        source_id=pair[0],
        target_id=pair[1],
        type=PAYS,
        weight=float(sum(t.amount for t in paid)),
        attributes=attributes,
        valid_from=ORIGIN + timedelta(hours=min(t.step for t in paid)),
        valid_to=None,
    )


def _put_balances(
    sessions: Sessions,
    fresh: list[Transaction],
    ids: dict[str, uuid.UUID],
    made: set[uuid.UUID],
    report: Report,
    done: Callable[[int], None],
) -> None:
    """The accounts' balances around ``fresh`` transactions into their balance tensors (made if missing; the
    accounts in ``made`` are new and have none): per hour the first old and the last new balance, in file order.
    A transaction per ``TENSORS`` accounts; ``done(n)``: n of ``len(fresh)`` done."""
    cells = _hourly(fresh)
    accounts = cells["name"].cat.categories
    # rows are sorted by account: each batch of accounts is one slice of them
    bounds = np.searchsorted(cells["name"].cat.codes.to_numpy(), np.arange(0, len(accounts) + TENSORS, TENSORS))
    for k, (start, stop) in enumerate(itertools.pairwise(bounds)):
        if start == stop:
            continue
        with sessions() as session:
            _write_balances(session, cells.iloc[start:stop], ids, made, report)
        done(len(fresh) * min(len(accounts), (k + 1) * TENSORS) // len(accounts))


def _hourly(fresh: list[Transaction]) -> pd.DataFrame:
    """Per account (``name``, a categorical, sorted) and hour (``step``): the ``old`` balance before the hour's
    first transaction and the ``new`` one after its last. Merchants' balances are not known."""
    payees = [i for i, t in enumerate(fresh) if not t.payee.startswith("M")]
    sides = pd.DataFrame(
        {
            "name": [t.payer for t in fresh] + [fresh[i].payee for i in payees],
            "step": [t.step for t in fresh] + [fresh[i].step for i in payees],
            "old": [t.payer_old for t in fresh] + [fresh[i].payee_old for i in payees],
            "new": [t.payer_new for t in fresh] + [fresh[i].payee_new for i in payees],
            "order": np.concatenate([np.arange(len(fresh)) * 2, np.array(payees, dtype=np.int64) * 2 + 1]),
        }
    )
    sides["name"] = sides["name"].astype("category")
    sides = sides.sort_values(["name", "step", "order"], kind="stable")
    return (
        sides.groupby(["name", "step"], observed=True, sort=False)
        .agg(old=("old", "first"), new=("new", "last"))
        .reset_index()
    )


def _write_balances(
    session: Session, cells: pd.DataFrame, ids: dict[str, uuid.UUID], made: set[uuid.UUID], report: Report
) -> None:
    """Each account's (old, new) by hour into its balance tensor, one ``write_arrays`` per ALIGN hours the first
    hours fall in: a call per first hour was most of a load's time, and NaN (not written) pads the rest."""
    names = cells["name"].to_numpy()
    steps, values = cells["step"].to_numpy(), cells[["old", "new"]].to_numpy().T
    starts = np.flatnonzero(np.r_[True, names[1:] != names[:-1]])
    tensor_of = _balance_tensors(session, {ids[names[s]] for s in starts}, made)
    by_start: dict[int, dict[uuid.UUID, np.ndarray]] = defaultdict(dict)
    for start, stop in itertools.pairwise([*starts, len(names)]):
        hours = steps[start:stop]  # ascending
        first = int(hours[0]) // ALIGN * ALIGN
        array = np.full((2, int(hours[-1]) - first + 1), np.nan)
        array[:, hours - first] = values[:, start:stop]
        by_start[first][tensor_of[ids[names[start]]]] = array
    for first, arrays in sorted(by_start.items()):
        report.imported["balance values"] += sum(tensors.write_arrays(session, arrays, first).values())


def _balance_tensors(session: Session, accounts: set[uuid.UUID], made: set[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    """The balance tensor of each account, missing ones created. Accounts in ``made`` were created by this import
    and have none yet: not looking them up saves a query per batch that PostgreSQL, whose statistics lag behind
    a bulk load, planned as a scan of every balance tensor (a third of a load's time)."""
    wanted = list(accounts)
    out: dict[uuid.UUID, uuid.UUID] = {}
    older = [a for a in wanted if a not in made]
    for i in range(0, len(older), CHUNK):
        out.update(tensor_repo.ids_of_entities(session, BALANCE.name, older[i : i + CHUNK]))
    missing = [a for a in wanted if a not in out]
    for i in range(0, len(missing), CHUNK):
        created = tensors.create_many(
            session,
            [TensorCreate(entity_id=a, schema_name=BALANCE.name, origin=ORIGIN) for a in missing[i : i + CHUNK]],
        )
        out.update({t.entity_id: t.id for t in created})
    return out


# --- the pack ----------------------------------------------------------------------------------------------------


def generate(
    session: Session, size: int = 1000, days: int = 90, seed: int = 7, progress: Callable[[int], None] | None = None
) -> dict[str, int]:
    """``dust demo finance``: see dust.domains.finance_demo."""
    from dust.domains import finance_demo  # it imports the fraud score, which imports this module

    return finance_demo.generate(session, size=size, days=days, seed=seed, progress=progress)


TOUR = """\
What to look at (sign in at /docs; ids are in GET /api/v1/entities?kind=account&external_id=...):
  - Planted fraud: accounts the fraud controls have attribute `planted` (GET /api/v1/entities?kind=account&
    attr.planted=ring-1); each planted payment has is_fraud and planted in its `pays` relation's payments.
  - A ring: C000000001 -> C000000002 -> C000000003 -> C000000001, transfers of 30,000-60,000 within hours
    (GET /api/v1/relations?type=pays&source_id=<id of C000000001>, then follow the targets).
  - Fraud anomalies: GET /api/v1/anomalies?schema=balance&label=new: one per payer and hour the fraud score
    (dust.engine.fraud: a model fitted on PaySim, plus rules for rings, mules, bursts and spikes) puts at 0.9
    or more, with the reason: "transfer of 41,220.00 by {account} (...): on a ring of transfers ...".
  - Alerts: GET /api/v1/alerts: the pack's rule `finance-fraud-score` raised one per anomaly on the account.
  - Balances: each account's hourly `balance` tensor (old/new); a drained account falls to 0 in one hour.
  - Customers hold accounts (`holds`); salaries are paid on the 25th by employers' accounts (a payroll run is
    many transfers in an hour, and is not flagged: it is the employer's usual).
"""

PACK = DomainPack(
    name="finance",
    description="Customers, accounts and merchants with hourly payments and balances; planted fraud rings, "
    "mules, drained accounts, bursts and spikes, scored into anomalies and alerts.",
    generate=generate,
    marker=(ACCOUNT, "C000000001"),
    unit="accounts",
    rules="finance_triggers.json",
    tour=TOUR,
)
