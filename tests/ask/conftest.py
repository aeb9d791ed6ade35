"""The fixed data set the questions are asked of: the three domain packs' generators, small, with seed 7."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dust.domains import finance, healthcare, supply_chain
from dust.embedded import Dust

DAYS = 30  # healthcare and supply chain: day 0 is DAYS days before today, the last day yesterday


@pytest.fixture
def world(db: Dust) -> Dust:
    """Healthcare (20 patients), supply chain (32 sites) over 30 days, and finance (50 accounts, 14 days)."""
    with db.session() as session:
        healthcare.generate(session, size=20, days=DAYS, seed=7)
    with db.session() as session:
        supply_chain.generate(session, size=32, days=DAYS, seed=7)
    with db.session() as session:
        finance.generate(session, size=50, days=14, seed=7)
    return db


def day(n: int) -> datetime:
    """The start of day ``n`` of the generated healthcare and supply-chain data."""
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=DAYS - n)
