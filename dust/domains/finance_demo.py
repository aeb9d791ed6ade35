"""`dust demo finance`: customers, their accounts and merchants, with a few months of hourly payments and planted
fraud of known structure, stored by the PaySim import's mapping (``finance.store``) and scored (``fraud.flag``).

Normal life: every person's account is paid a salary by an employer's account on the 25th (a payroll run: one
transfer per employee within the hour), pays rent to a landlord on the 1st, shops about once a week at one of
its two favourite merchants, sends money to one of two contacts every other month, and takes cash out at (and
pays cash in through) an agent's account, as PaySim's CASH_OUT and CASH_IN do. A payment the payer cannot
afford is not made.

Planted fraud (``Plan``; each such transaction has ``is_fraud`` and ``planted`` = "<pattern>-<k>" in its
payment's attributes, each account the fraud controls ``planted`` in its attributes), ``n`` of each pattern:

- ring-k: 3 (even k: 4) accounts pass a sum round, A -> B -> C (-> D) -> A, each leg within hours of the last,
  a little shaved off at each hop; A was funded by a cash-in just before;
- mule-k: six people each transfer most of their balance to one account within a day (a scam), which sends it
  all on to three accounts the next day (fan-in, then fan-out);
- drain-k: a person's whole balance is transferred to an account that cashes it all out within hours
  (PaySim's own fraud);
- burst-k: a person's account makes 15 payments at random merchants within three hours (a stolen card);
- spike-k: a person's account transfers most of its balance, many times its usual payment, to a new payee.

Account names are ``C0`` and 8 digits in plan order: the fraud-controlled accounts come first, so ring-1 is
always C000000001, C000000002 and C000000003 whatever the size.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy.orm import Session

from dust.domains import finance, load_rules
from dust.domains.finance import Transaction
from dust.engine import entities, fraud, relations
from dust.engine.entities import EntityCreate
from dust.engine.relations import RelationCreate
from dust.importers.report import Report

MONTH = 30  # days between salaries, rents
SETTLED = 50_000  # events settled between two moves of the progress bar
HOURS = 24
TYPES = ("CASH_IN", "CASH_OUT", "DEBIT", "PAYMENT", "TRANSFER")
CASH_IN, CASH_OUT, _, PAYMENT, TRANSFER = range(5)
_FIRST = ["Ana", "Ben", "Chloe", "David", "Emma", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kira", "Luca"]
_LAST = ["Almeida", "Berg", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Horvat", "Ivanova", "Jansen"]
_SHOPS = ["Grocer", "Pharmacy", "Bakery", "Fuel", "Books", "Electronics", "Cafe", "Clothing", "Hardware", "Cinema"]


def account_name(index: int) -> str:
    return f"C0{index + 1:08d}"


def merchant_name(index: int) -> str:
    return f"M0{index + 1:08d}"


@dataclass
class Plan:
    """Who is who: account indices of every role, and the planted patterns' members."""

    size: int
    days: int
    n: int  # planted of each pattern
    rings: list[list[int]] = field(default_factory=list)
    mules: list[tuple[int, list[int], list[int]]] = field(default_factory=list)  # mule, victims, recipients
    drains: list[tuple[int, int]] = field(default_factory=list)  # victim, fraudster
    bursts: list[int] = field(default_factory=list)
    spikes: list[tuple[int, int]] = field(default_factory=list)  # victim, payee
    agents: list[int] = field(default_factory=list)
    employers: list[int] = field(default_factory=list)
    people: list[int] = field(default_factory=list)
    merchants: int = 0
    landlords: int = 0

    @classmethod
    def of(cls, size: int, days: int) -> Plan:
        """``size`` accounts (at least 50), ``days`` days (at least 14)."""
        size, days = max(50, size), max(14, days)
        plan = cls(size, days, max(1, size // 1000))
        taken = iter(range(size))
        for k in range(plan.n):
            plan.rings.append([next(taken) for _ in range(3 if k % 2 == 0 else 4)])
        controlled = [(next(taken), [next(taken) for _ in range(3)], next(taken), next(taken)) for _ in range(plan.n)]
        plan.agents = [next(taken) for _ in range(max(2, size // 500))]
        plan.employers = [next(taken) for _ in range(max(2, size // 100))]
        plan.people = list(taken)
        # victims: people spread over the population, each in one pattern only
        stride = max(1, len(plan.people) // (9 * plan.n + 1))
        victims = iter(plan.people[stride // 2 :: stride])
        for mule, recipients, fraudster, payee in controlled:
            plan.mules.append((mule, [next(victims) for _ in range(6)], recipients))
            plan.drains.append((next(victims), fraudster))
            plan.bursts.append(next(victims))
            plan.spikes.append((next(victims), payee))
        plan.merchants = max(10, size // 20)
        plan.landlords = max(2, plan.merchants // 10)
        return plan

    def controlled(self) -> dict[int, str]:
        """The accounts the fraud controls, with their pattern (their attribute ``planted``)."""
        out: dict[int, str] = {}
        for k, ring in enumerate(self.rings):
            out.update({a: f"ring-{k + 1}" for a in ring})
        for k, (mule, _, recipients) in enumerate(self.mules):
            out.update({a: f"mule-{k + 1}" for a in [mule, *recipients]})
        for k, (_, fraudster) in enumerate(self.drains):
            out[fraudster] = f"drain-{k + 1}"
        for k, (_, payee) in enumerate(self.spikes):
            out[payee] = f"spike-{k + 1}"
        return out


# Events before balances: (step, type, amount or -share of the payer's balance, payer, payee, planted label).
# A payee is an account index, or -1 - merchant index. Shares are settled against the balance at the time.
Event = tuple[int, int, float, int, int, str]


def _normal(plan: Plan, rng: np.random.Generator) -> list[Event]:
    """Salaries, rents, shopping, transfers to contacts, cash out and in: the people's months."""
    people = np.array(plan.people)
    count, steps = len(people), plan.days * HOURS
    salary = np.round(rng.lognormal(np.log(2600), 0.35, count), 2)
    employer = np.array(plan.employers)[np.arange(count) % len(plan.employers)]
    agent = np.array(plan.agents)[np.arange(count) % len(plan.agents)]
    landlord = -1 - (np.arange(count) % plan.landlords)
    favourite = plan.landlords + rng.integers(0, plan.merchants - plan.landlords, (count, 2))
    contacts = people[rng.integers(0, count, (count, 2))]
    events: list[Event] = []
    for month in range(0, plan.days, MONTH):
        if month + 25 < plan.days:  # payroll: each employer pays its staff within the hour
            at = (month + 25) * HOURS + 9 + rng.integers(0, 2, count)
            events += [(int(s), TRANSFER, float(a), int(e), int(p), "") for s, a, e, p in
                       zip(at, salary * rng.uniform(0.99, 1.01, count), employer, people, strict=True)]  # fmt: skip
        at = (month + 1) * HOURS + rng.integers(7, 20, count)
        events += [(int(s), PAYMENT, float(a), int(p), int(m), "") for s, a, p, m in
                   zip(at, np.round(0.35 * salary, 2), people, landlord, strict=True)]  # fmt: skip

    def some(
        per_month: float, kind: int, amounts: Callable[[int], np.ndarray], payee: Callable[[np.ndarray], np.ndarray]
    ) -> None:
        n = rng.poisson(per_month * plan.days / MONTH, count)
        who = np.repeat(np.arange(count), n)
        at = rng.integers(0, plan.days, who.size) * HOURS + rng.integers(8, 22, who.size)
        paid = np.round(amounts(who.size), 2)
        events.extend((int(s), kind, float(a), int(people[w]), int(t), "")
                      for s, a, w, t in zip(at, paid, who, payee(who), strict=True))  # fmt: skip

    some(
        4, PAYMENT, lambda k: rng.lognormal(np.log(40), 0.7, k), lambda w: -1 - favourite[w, rng.integers(0, 2, w.size)]
    )
    some(0.5, TRANSFER, lambda k: rng.lognormal(np.log(120), 0.6, k), lambda w: contacts[w, rng.integers(0, 2, w.size)])
    some(1, CASH_OUT, lambda k: rng.lognormal(np.log(150), 0.5, k), lambda w: agent[w])
    some(0.3, CASH_IN, lambda k: rng.lognormal(np.log(200), 0.5, k), lambda w: agent[w])
    return [e for e in events if e[0] < steps]


def _planted(plan: Plan, rng: np.random.Generator) -> list[Event]:
    """The fraud, in the last half of the period (the victims have a history by then)."""
    events: list[Event] = []
    late = plan.days * HOURS // 2

    def when() -> int:
        return int(rng.integers(late, plan.days * HOURS - 72))

    for k in range(plan.n):
        label = f"-{k + 1}"
        ring, start, amount = plan.rings[k], when(), float(np.round(rng.uniform(30_000, 60_000), 2))
        events.append((start - 1, CASH_IN, amount, ring[0], plan.agents[0], ""))  # the funding: a deposit
        at = start
        for hop, (a, b) in enumerate(zip(ring, ring[1:] + ring[:1], strict=True)):
            events.append((at, TRANSFER, round(amount * (1 - 0.02 * hop), 2), a, b, "ring" + label))
            at += int(rng.integers(2, 12))
        mule, victims, recipients = plan.mules[k]
        start = when()
        for v in victims:
            events.append((start + int(rng.integers(0, 20)), TRANSFER, -float(rng.uniform(0.6, 0.9)), v, mule,
                           "mule" + label))  # fmt: skip
        for j, r in enumerate(recipients):  # equal parts of all that came in
            events.append((start + 26 + j, TRANSFER, -1 / (len(recipients) - j), mule, r, "mule" + label))
        victim, fraudster = plan.drains[k]
        start = when()
        events.append((start, TRANSFER, -1.0, victim, fraudster, "drain" + label))
        events.append((start + int(rng.integers(1, 4)), CASH_OUT, -1.0, fraudster, plan.agents[-1], "drain" + label))
        start, shops = when(), rng.integers(plan.landlords, plan.merchants, 15)
        events += [(start + j // 5, PAYMENT, -0.05, plan.bursts[k], -1 - int(m), "burst" + label)
                   for j, m in enumerate(shops)]  # fmt: skip
        victim, payee = plan.spikes[k]  # the day after a payday: there is a salary to take
        payday = max((25 + MONTH * m for m in range(plan.days // MONTH + 1) if 25 + MONTH * m < plan.days), default=0)
        at = payday * HOURS + int(rng.integers(12, 36))
        events.append(
            (at if late <= at < plan.days * HOURS else when(), TRANSFER, -0.9, victim, payee, "spike" + label)
        )
    return events


def _settle(
    plan: Plan, events: list[Event], rng: np.random.Generator, done: Callable[[int], None]
) -> list[Transaction]:
    """The events in time order with balances before and after; those the payer cannot afford are dropped.
    ``done(n)``: n of ``len(events)`` settled."""
    balance = np.round(rng.lognormal(np.log(3000), 0.6, plan.size), 2)
    payroll = 3000.0 * len(plan.people) / len(plan.employers) * (plan.days / MONTH + 1)
    balance[plan.employers] = payroll
    balance[plan.agents] = 1e7
    balance[list(plan.controlled())] = 0.0
    made = []
    order = sorted(range(len(events)), key=lambda i: (events[i][0], events[i][5] != "", i))
    for n, i in enumerate(order):
        if n % SETTLED == 0:
            done(n)
        step, kind, amount, payer, payee, planted = events[i]
        if amount < 0:
            amount = round(-amount * float(balance[payer]), 2)
        if amount <= 0 or (kind != CASH_IN and amount > balance[payer]):
            continue
        sign = 1 if kind == CASH_IN else -1
        payer_old, payee_old = float(balance[payer]), float(balance[payee]) if payee >= 0 else 0.0
        balance[payer] = round(payer_old + sign * amount, 2)
        if payee >= 0:
            balance[payee] = round(payee_old - sign * amount, 2)
        made.append(
            Transaction(
                step,
                TYPES[kind],
                amount,
                account_name(payer),
                payer_old,
                float(balance[payer]),
                account_name(payee) if payee >= 0 else merchant_name(-1 - payee),
                payee_old,
                float(balance[payee]) if payee >= 0 else 0.0,
                bool(planted),
                False,
                "generated",
                planted,
            )
        )
    return made


def transactions(plan: Plan, seed: int, done: Callable[[float], None] | None = None) -> list[Transaction]:
    """The plan's payments, the same for the same seed; ``done(f)``: the share f of the work done."""
    rng = np.random.default_rng(seed)
    events = _normal(plan, rng) + _planted(plan, rng)
    tell = done or (lambda f: None)
    return _settle(plan, events, rng, lambda n: tell(n / len(events)))


def generate(
    session: Session, size: int = 1000, days: int = 90, seed: int = 7, progress: Callable[[int], None] | None = None
) -> dict[str, int]:
    """``size`` accounts (at least 50) with ``days`` of payments and planted fraud; what was made."""
    plan = Plan.of(size, days)
    bar = _Bar(plan.size, progress)
    finance.prepare(session)
    load_rules(session, finance.PACK)  # before the scores: its anomaly rule raises the alerts
    made = transactions(plan, seed, lambda f: bar.at(0.2 * f))
    customers = _entities(session, plan, np.random.default_rng(seed + 1), lambda f: bar.at(0.2 + 0.1 * f))
    report = Report()
    # the mapping's progress counts 2 per transaction
    finance.store(lambda: nullcontext(session), made, report, lambda n: bar.at(0.3 + 0.6 * n / max(1, 2 * len(made))))
    flagged = fraud.flag(session, made)
    bar.at(1.0)
    return {
        "customers": customers,
        "accounts": plan.size,
        "merchants": plan.merchants,
        "transactions": len(made),
        "values": report.imported["balance values"],
        "planted fraud transactions": sum(t.fraud for t in made),
        "fraud anomalies": flagged.anomalies,
        "alerts": flagged.alerts,
    }


class _Bar:
    """The progress bar's ``total`` units told as shares of the work done (each stage its part of the bar)."""

    def __init__(self, total: int, progress: Callable[[int], None] | None) -> None:
        self.total, self.progress, self.told = total, progress, 0

    def at(self, share: float) -> None:
        now = int(self.total * min(1.0, share))
        if self.progress and now > self.told:
            self.progress(now - self.told)
            self.told = now


def _entities(session: Session, plan: Plan, rng: np.random.Generator, done: Callable[[float], None]) -> int:
    """Accounts (the fraud's marked ``planted``), the customers who hold them (firms hold the employers' and
    agents' accounts), and the merchants; how many customers. ``done(f)``: the share f made."""
    controlled = plan.controlled()
    roles = {a: "agent" for a in plan.agents} | {a: "employer" for a in plan.employers}
    accounts = [
        EntityCreate(
            kind=finance.ACCOUNT,
            name=account_name(a),
            external_id=account_name(a),
            attributes={"role": roles.get(a, "personal")} | ({"planted": controlled[a]} if a in controlled else {}),
        )
        for a in range(plan.size)
    ]
    account_ids = [e.id for e in _chunked(session, accounts)]
    done(0.4)
    holders: list[list[int]] = []
    people = set(plan.people)
    for a in range(plan.size):  # every sixth account, if a person's, is its predecessor's holder's second
        if holders and a in people and len(holders[-1]) == 1 and holders[-1][0] in people and a % 6 == 0:
            holders[-1].append(a)
        else:
            holders.append([a])
    customers = [
        EntityCreate(
            kind=finance.CUSTOMER,
            name=_customer_name(rng, held[0] in roles, held[0]),
            external_id=f"P0{n + 1:08d}",
        )
        for n, held in enumerate(holders)
    ]
    customer_ids = [e.id for e in _chunked(session, customers)]
    done(0.7)
    holds = [
        RelationCreate(source_id=c, target_id=account_ids[a], type=finance.HOLDS, weight=1.0)
        for c, held in zip(customer_ids, holders, strict=True)
        for a in held
    ]
    for i in range(0, len(holds), finance.CHUNK):
        relations.create_many(session, holds[i : i + finance.CHUNK])
    done(0.9)
    shops = [
        EntityCreate(
            kind=finance.MERCHANT,
            name=f"Landlord {m + 1}" if m < plan.landlords else f"{_SHOPS[m % len(_SHOPS)]} {m + 1}",
            external_id=merchant_name(m),
        )
        for m in range(plan.merchants)
    ]
    _chunked(session, shops)
    done(1.0)
    return len(customers)


def _chunked(session: Session, items: list[EntityCreate]) -> list[entities.EntityPublic]:
    out: list[entities.EntityPublic] = []
    for i in range(0, len(items), finance.CHUNK):
        out += entities.create_many(session, items[i : i + finance.CHUNK])
    return out


def _customer_name(rng: np.random.Generator, firm: bool, index: int) -> str:
    if firm:
        return f"{_LAST[index % len(_LAST)]} {'Holdings' if index % 2 else 'Trading'} {index + 1}"
    return f"{_FIRST[int(rng.integers(len(_FIRST)))]} {_LAST[int(rng.integers(len(_LAST)))]}"
