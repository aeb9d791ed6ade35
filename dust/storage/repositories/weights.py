"""Queries over ``weight_policies``: how the weights of each relation type change with time."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dust.storage.models import WeightPolicy


def all_(session: Session) -> list[WeightPolicy]:
    return list(session.scalars(select(WeightPolicy).order_by(WeightPolicy.type)))


def get(session: Session, type_: str, *, lock: bool = False) -> WeightPolicy | None:
    """The type's policy; ``lock``: read afresh and held until commit."""
    if lock:
        return session.get(WeightPolicy, type_, with_for_update=True, populate_existing=True)
    return session.get(WeightPolicy, type_)


def put(
    session: Session, type_: str, *, reinforce: float, half_life_seconds: float | None, cap: float | None, floor: float
) -> tuple[WeightPolicy, bool]:
    """The type's policy set to these values, and whether it is new."""
    row = get(session, type_, lock=True)
    created = row is None
    if row is None:
        try:
            with session.begin_nested():
                row = WeightPolicy(type=type_, reinforce=reinforce, floor=floor)
                session.add(row)
                session.flush()
        except IntegrityError:  # another transaction made it meanwhile: this one replaces it
            row, created = get(session, type_, lock=True), False
            assert row is not None
    row.reinforce, row.half_life_seconds, row.cap, row.floor = reinforce, half_life_seconds, cap, floor
    session.flush()
    return row, created


def delete(session: Session, row: WeightPolicy) -> None:
    session.delete(row)
    session.flush()
