"""Revocations under a race: two requests revoking the same sign-in at once must both succeed."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from dust.storage.db import make_engine, make_sessionmaker
from dust.storage.models import RevokedToken
from dust.storage.repositories import users as repo


def test_revoking_one_id_twice_concurrently_is_not_an_error(database_url: str) -> None:
    sessions = make_sessionmaker(make_engine(database_url))
    until = datetime.now(UTC) + timedelta(minutes=15)
    errors: list[BaseException] = []
    first = sessions()
    first.begin()
    repo.revoke_access(first, "sid:raced", until)  # holds its row uncommitted (PostgreSQL: a unique-index lock)

    def second_request() -> None:
        try:
            with sessions() as session, session.begin():
                repo.revoke_access(session, "sid:raced", until)  # waits for the first, then must not collide
        except BaseException as problem:  # the thread's error is the test's
            errors.append(problem)

    racer = threading.Thread(target=second_request)
    racer.start()
    racer.join(timeout=0.5)  # on PostgreSQL it is now waiting for the first transaction; on SQLite, for the lock
    first.commit()
    first.close()
    racer.join(timeout=30)
    assert not racer.is_alive() and not errors, errors
    with sessions() as session:
        assert session.query(RevokedToken).filter_by(jti="sid:raced").count() == 1
