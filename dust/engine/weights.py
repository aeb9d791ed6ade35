"""Relationship strength over time: a weight policy per relation type, decay, reinforcement and rule changes.

A relation's weight history (``relation_weights``) holds each recorded weight ``w0`` and when it took effect
``t0``; nothing is written while a weight decays. The weight read at time ``t`` is computed from the last row at
or before ``t`` (or the first row, for a ``t`` before it) and the policy of the relation's type:

    weight(t) = max(floor, w0 * 0.5 ** ((t - t0) / half_life))    with a half-life (t before t0 counts as t0)
    weight(t) = w0                                                 without one, or without a policy

A change at ``t`` starts from ``weight(t)``: an interaction adds ``reinforce`` (or the amount given), a rule adds,
multiplies or sets (``adjust``), PATCH sets. The result, clamped to [floor, cap] of the policy (no clamp without
one), is recorded as a new history row at ``t``. Changes are recorded in time order: never before the last one.

A policy is not history. Saved, it applies to every read from then on, computed from each relation's last
recorded change, so a read ``at`` a past time also uses the policy in force now; weights already recorded are not
rewritten (one recorded above a new cap keeps decaying from there).
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from dust.core.errors import Conflict, InvalidInput, NotFound
from dust.engine import audit, caches
from dust.engine.timegrid import as_utc
from dust.storage.models import Relation, WeightPolicy
from dust.storage.repositories import relations as relation_repo
from dust.storage.repositories import weights as repo

DAY = 86_400.0
MAX_HALF_LIFE_DAYS = 36_500  # a century: any longer is no decay worth computing
_POLICIES = "dust.weight_policies"  # session.info: every policy, as this transaction first read them
_NUMBER = r"\d{1,9}(?:\.\d{1,9})?"
_DURATION = re.compile(
    rf"P(?:(?P<weeks>{_NUMBER})W)?(?:(?P<days>{_NUMBER})D)?"
    rf"(?:T(?=\d)(?:(?P<hours>{_NUMBER})H)?(?:(?P<minutes>{_NUMBER})M)?(?:(?P<seconds>{_NUMBER})S)?)?",
    re.ASCII,
)
_UNIT_SECONDS = {"weeks": 7 * DAY, "days": DAY, "hours": 3600.0, "minutes": 60.0, "seconds": 1.0}
HALF_LIFE_FORM = 'an ISO 8601 duration in weeks, days, hours, minutes and seconds, such as "P30D", "PT12H" or "P1DT6H"'


def _number(value: Any) -> Any:
    # pydantic would take true as 1.0 and "0.5" as 0.5; JSON says which is a number.
    if isinstance(value, bool | str):
        raise ValueError(f"must be a number, not {'true or false' if isinstance(value, bool) else 'text'}")
    return value


def _finite(value: float | None) -> float | None:
    if value is not None and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


def half_life_seconds(text: Any) -> float:
    """The seconds of an ISO 8601 duration (``P30D``); ValueError saying what is allowed otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"half_life must be {HALF_LIFE_FORM}, not {'a number' if _is_number(text) else 'that'}")
    found = _DURATION.fullmatch(text.strip().upper())
    if found is None or not any(found.groupdict().values()):
        if re.match(r"\s*-", text):
            raise ValueError(f"half_life must be longer than zero, not {text[:40]!r}")
        if re.search(r"\d[YM]", text.upper().split("T")[0]):  # before the T, M is months
            raise ValueError('months and years vary in length: give the half-life in days, e.g. "P365D"')
        raise ValueError(f"half_life must be {HALF_LIFE_FORM}, not {text[:40]!r}")
    seconds = sum(float(v) * _UNIT_SECONDS[unit] for unit, v in found.groupdict().items() if v)
    if seconds <= 0:
        raise ValueError(f"half_life must be longer than zero, not {text[:40]!r}")
    if seconds > MAX_HALF_LIFE_DAYS * DAY:
        raise ValueError(f"half_life may be at most P{MAX_HALF_LIFE_DAYS}D (a century); for no decay, give null")
    return seconds


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def iso_duration(seconds: float) -> str:
    """``seconds`` as an ISO 8601 duration in days, hours, minutes and seconds: 2592000 -> "P30D"."""
    days, rest = divmod(seconds, DAY)
    hours, rest = divmod(rest, 3600.0)
    minutes, rest = divmod(rest, 60.0)
    clock = "".join(f"{_plain(v)}{unit}" for v, unit in ((hours, "H"), (minutes, "M"), (round(rest, 9), "S")) if v)
    return f"P{_plain(days) + 'D' if days else ''}{'T' + clock if clock else ''}" if days or clock else "PT0S"


def _plain(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:.9f}".rstrip("0")


class PolicySet(BaseModel):
    """A relation type's weight policy, as PUT replaces it: a field left out takes its default."""

    model_config = ConfigDict(extra="forbid")

    reinforce: float = Field(0.0, description="Added to the weight on each interaction (negative weakens).")
    half_life: str | None = Field(
        None,
        max_length=64,
        description=f"How long a weight takes to halve: {HALF_LIFE_FORM}. Null: weights do not decay.",
        examples=["P30D"],
    )
    cap: float | None = Field(None, description="The highest weight a change may record; null: no cap.")
    floor: float = Field(0.0, description="The lowest weight a change may record, and decay never goes below.")

    _numbers = field_validator("reinforce", "cap", "floor", mode="before")(_number)
    _finite_numbers = field_validator("reinforce", "cap", "floor")(_finite)

    @field_validator("half_life", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if value is not None:
            half_life_seconds(value)
        return value

    @model_validator(mode="after")
    def _range(self) -> PolicySet:
        if self.cap is not None and self.cap < self.floor:
            raise ValueError(f"cap {self.cap} is below floor {self.floor}; the cap must be at least the floor")
        return self


class PolicyPublic(BaseModel):
    type: str
    reinforce: float
    half_life: str | None = Field(description="ISO 8601 duration; null: weights of this type do not decay.")
    half_life_seconds: float | None
    cap: float | None
    floor: float
    updated_at: datetime

    @classmethod
    def of(cls, row: WeightPolicy) -> PolicyPublic:
        seconds = row.half_life_seconds
        return cls(
            type=row.type,
            reinforce=row.reinforce,
            half_life=None if seconds is None else iso_duration(seconds),
            half_life_seconds=seconds,
            cap=row.cap,
            floor=row.floor,
            updated_at=row.updated_at,
        )


@dataclass(frozen=True)
class Policy:
    """A policy as reads and changes use it."""

    reinforce: float
    half_life_seconds: float | None
    cap: float | None
    floor: float

    def clamp(self, value: float) -> float:
        return max(self.floor, value if self.cap is None else min(self.cap, value))


# --- policies -----------------------------------------------------------------------------------------------


def put_policy(session: Session, type_: str, data: PolicySet) -> PolicyPublic:
    """Create or replace the policy of ``type_``; it applies to reads from now on (see the module's docstring)."""
    seconds = None if data.half_life is None else half_life_seconds(data.half_life)
    row, created = repo.put(
        session, type_, reinforce=data.reinforce, half_life_seconds=seconds, cap=data.cap, floor=data.floor
    )
    session.info.pop(_POLICIES, None)
    audit.record(session, "create" if created else "update", "weight_policy", type_)
    return PolicyPublic.of(row)


def get_policy(session: Session, type_: str) -> PolicyPublic:
    return PolicyPublic.of(_policy_row(session, type_))


def list_policies(session: Session) -> list[PolicyPublic]:
    return [PolicyPublic.of(row) for row in repo.all_(session)]


def delete_policy(session: Session, type_: str) -> None:
    """Weights of ``type_`` read as recorded again, without decay; the history stays."""
    repo.delete(session, _policy_row(session, type_, lock=True))
    session.info.pop(_POLICIES, None)
    audit.record(session, "delete", "weight_policy", type_)


def _policy_row(session: Session, type_: str, *, lock: bool = False) -> WeightPolicy:
    row = repo.get(session, type_, lock=lock)
    if row is None:
        raise NotFound(f"relation type '{type_}' has no weight policy: its weights neither decay nor are clamped")
    return row


def policies(session: Session) -> dict[str, Policy]:
    """Every type's policy, read once per transaction."""
    found: dict[str, Policy] | None = session.info.get(_POLICIES)
    if found is None:
        found = session.info[_POLICIES] = {
            r.type: Policy(r.reinforce, r.half_life_seconds, r.cap, r.floor) for r in repo.all_(session)
        }
    return found


def policy(session: Session, type_: str) -> Policy | None:
    return policies(session).get(type_)


def decaying(session: Session, types: Sequence[str] | None = None) -> list[str]:
    """The types (of ``types``, or all) whose weights decay, sorted."""
    found = [t for t, p in policies(session).items() if p.half_life_seconds is not None]
    return sorted(found if not types else set(found) & set(types))


@event.listens_for(Session, "after_transaction_end")
def _forget_policies(session: Session, transaction: SessionTransaction) -> None:
    """The next transaction reads the policies afresh."""
    if transaction.parent is None:
        session.info.pop(_POLICIES, None)


# --- reading weights ----------------------------------------------------------------------------------------


def weigh(
    policies: Mapping[str, Policy],
    types: Sequence[str],
    recorded: Sequence[float],
    since: Sequence[float | None],
    moment: datetime,
) -> list[float]:
    """weight(moment) of many relations at once: their ``types``, ``recorded`` weights and when each was
    recorded (``since``, seconds since 1970; None: not needed, the type does not decay). Vectorised: the
    master tensor's 35,000 relations cost milliseconds."""
    decays = {t: p for t, p in policies.items() if p.half_life_seconds is not None}
    if decays.keys().isdisjoint(types):
        return list(recorded)
    # each relation's policy by position: 0 for none, i + 1 for the i-th decaying type
    position = {t: i for i, t in enumerate(decays, start=1)}
    which = np.fromiter((position.get(t, 0) for t in types), dtype=np.intp, count=len(types))
    half_life = np.array([np.nan, *(p.half_life_seconds for p in decays.values())], dtype=np.float64)[which]
    floor = np.array([np.nan, *(p.floor for p in decays.values())], dtype=np.float64)[which]
    start = np.array(since, dtype=np.float64)  # None becomes NaN
    w0 = np.asarray(recorded, dtype=np.float64)
    elapsed = np.maximum(moment.timestamp() - start, 0.0)  # a time before the change reads the change
    decayed = np.maximum(floor, w0 * 0.5 ** (elapsed / half_life))
    return np.where(np.isnan(decayed), w0, decayed).tolist()


def weight_at(recorded: float, since: datetime, moment: datetime, policy: Policy | None) -> float:
    """weight(moment) of one relation whose weight ``recorded`` took effect at ``since``."""
    if policy is None or policy.half_life_seconds is None:
        return recorded
    return weigh({"": policy}, [""], [recorded], [since.timestamp()], moment)[0]


def weights_of(session: Session, rows: Sequence[relation_repo.EdgeRow], at: datetime | None = None) -> list[float]:
    """The weight of each relation at ``at`` (default now): what graph walks and the master tensor show."""
    known = policies(session)
    if at is None and set(decaying(session)).isdisjoint(r.type for r in rows):
        return [r.weight for r in rows]  # the common case, as before weights could decay: nothing to compute
    types = [r.type for r in rows]
    if at is not None:
        then = relation_repo.weights_as_of(session, [r.id for r in rows], at)
        pairs = [then.get(r.id, (r.weight, None)) for r in rows]
        since = [None if t is None else t.timestamp() for _, t in pairs]
        return weigh(known, types, [w for w, _ in pairs], since, at)
    slow = set(decaying(session, types))
    unknown = [r.id for r in rows if r.type in slow and r.changed is None]
    changed = relation_repo.last_changes(session, unknown) if unknown else {}
    since = [r.changed if r.changed is not None else changed.get(r.id) for r in rows]
    return weigh(known, types, [r.weight for r in rows], since, datetime.now(UTC))


def live(
    session: Session, rows: Sequence[relation_repo.EdgeRow], at: datetime | None = None
) -> list[tuple[relation_repo.EdgeRow, float]]:
    """The relations of ``rows`` valid at ``at`` (default now: valid_from <= at < valid_to, a null bound open),
    each with its weight then."""
    moment = at or datetime.now(UTC)
    valid = [
        r
        for r in rows
        if (r.valid_from is None or r.valid_from <= moment) and (r.valid_to is None or moment < r.valid_to)
    ]
    return list(zip(valid, weights_of(session, valid, at), strict=True))


def current_weight(session: Session, relation_id: uuid.UUID, at: datetime | None = None) -> float:
    """The weight of a relation at ``at`` (default now), for readers acting as the process (no access check)."""
    row = relation_repo.get(session, relation_id)
    if row is None:
        raise NotFound(f"relation {relation_id} does not exist")
    edge = relation_repo.EdgeRow(row.id, row.source_id, row.target_id, row.type, row.weight, None, None)
    return weights_of(session, [edge], None if at is None else as_utc(at, "at"))[0]


# --- changing weights ---------------------------------------------------------------------------------------


def adjust(
    session: Session,
    relation_id: uuid.UUID,
    *,
    add: float | None = None,
    set: float | None = None,
    multiply: float | None = None,
    at: datetime | None = None,
) -> float:
    """Change a relation's weight as a rule does: exactly one of ``add``, ``set`` or ``multiply``, applied to its
    weight at ``at`` (default now; not before its last change, not in the future), clamped to [floor, cap] of its
    type's policy and recorded in its history. The new weight. No access check: rules act as the process."""
    given = {name: v for name, v in (("add", add), ("set", set), ("multiply", multiply)) if v is not None}
    if len(given) != 1:
        raise InvalidInput(f"adjust takes exactly one of add, set and multiply, not {sorted(given) or 'none'}")
    ((name, value),) = given.items()
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{name} must be a finite number, not {value!r}")
    row = relation_repo.get(session, relation_id, lock=True)
    if row is None:
        raise NotFound(f"relation {relation_id} does not exist")
    operations: dict[str, Callable[[float], float]] = {
        "add": lambda w: w + value,
        "set": lambda _: value,
        "multiply": lambda w: w * value,
    }
    weight, _ = change(session, row, operations[name], at)
    audit.record(session, "update", "relation", row.id, [row.source_id, row.target_id])
    return weight


def change(
    session: Session, row: Relation, how: Callable[[float], float], at: datetime | None = None
) -> tuple[float, datetime]:
    """Record ``how(weight at at)``, clamped, as the weight of ``row`` (locked by the caller) from ``at``
    (default now): the new weight and when it took effect."""
    last = relation_repo.last_change(session, row.id) or row.created_at
    moment = _when(row, at, last)
    rules = policy(session, row.type)
    value = how(weight_at(row.weight, last, moment, rules))
    if rules is not None:
        value = rules.clamp(value)
    if not math.isfinite(value):
        raise InvalidInput(f"the new weight of relation {row.id} would be {value}, beyond a float; give less")
    caches.changed(session, caches.RELATIONS)  # the master tensor's rows hold the weight and when it was set
    row.weight = value
    relation_repo.add_weight(session, row.id, value, moment)
    return value, moment


def clamp(session: Session, type_: str, value: float) -> float:
    """``value`` within [floor, cap] of the type's policy (as it is without one)."""
    rules = policy(session, type_)
    return value if rules is None else rules.clamp(value)


def _when(row: Relation, at: datetime | None, last: datetime) -> datetime:
    now = datetime.now(UTC)
    if at is None:
        return max(now, last)  # this clock may be a little behind the one that recorded the last change
    at = as_utc(at, "at")
    if at > now:
        raise InvalidInput(
            f"at {at.isoformat()} is in the future (now is {now.isoformat()}); record a change when it happens"
        )
    if at < last:
        raise Conflict(
            f"relation {row.id}'s weight was last recorded at {last.isoformat()}, after at {at.isoformat()}: "
            "changes are recorded in time order, so at must be at or after the last change"
        )
    return at
