"""Queries over users and their credentials: refresh tokens, API keys, revocations, login failures."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from dust.storage.models import ApiKey, LoginFailure, RefreshToken, RevokedToken, User


def add(session: Session, **fields: object) -> User:
    row = User(**fields)
    session.add(row)
    session.flush()
    return row


def get(session: Session, user_id: uuid.UUID) -> User | None:
    return session.get(User, user_id)


def by_username(session: Session, username: str) -> User | None:
    return session.scalars(select(User).where(User.username == username)).first()


def all_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))


# refresh tokens
def add_refresh(session: Session, **fields: object) -> None:
    session.add(RefreshToken(**fields))
    session.flush()


def refresh_by_hash(session: Session, token_hash: str) -> RefreshToken | None:
    return session.scalars(select(RefreshToken).where(RefreshToken.token_hash == token_hash)).first()


def revoke_family(session: Session, family_id: uuid.UUID, when: datetime) -> None:
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=when)
    )


def revoke_user_refresh(session: Session, user_id: uuid.UUID, when: datetime) -> None:
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=when)
    )


# access-token revocations
def revoke_access(session: Session, jti: str, expires_at: datetime) -> None:
    """Revoke a token's jti or a sign-in's id. Idempotent even under a race: two requests revoking the same
    sign-in at once (a stolen refresh token replayed twice) must both succeed, not collide on the key."""
    insert = sqlite_insert if session.get_bind().dialect.name == "sqlite" else postgresql_insert
    stmt = insert(RevokedToken).values(jti=jti, expires_at=expires_at).on_conflict_do_nothing(index_elements=["jti"])
    session.execute(stmt)


def is_revoked(session: Session, *ids: str) -> bool:
    """Whether any of ``ids`` (a token's jti, its sign-in's ``sid:<family>``) is revoked: one query for all."""
    return session.scalar(select(RevokedToken.jti).where(RevokedToken.jti.in_(ids)).limit(1)) is not None


def forget_expired(session: Session, now: datetime) -> None:
    session.execute(delete(RevokedToken).where(RevokedToken.expires_at < now))


# API keys
def add_key(session: Session, **fields: object) -> ApiKey:
    row = ApiKey(**fields)
    session.add(row)
    session.flush()
    return row


def key_by_prefix(session: Session, prefix: str) -> ApiKey | None:
    return session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).first()


def keys_of(session: Session, user_id: uuid.UUID | None) -> list[ApiKey]:
    stmt = select(ApiKey).order_by(ApiKey.created_at)
    if user_id is not None:
        stmt = stmt.where(ApiKey.user_id == user_id)
    return list(session.scalars(stmt))


def touch_key(session: Session, key_id: uuid.UUID, now: datetime, *, stale: datetime) -> None:
    """Record that a key was used, unless it was so since ``stale``.

    On PostgreSQL in a transaction of its own, one statement long: in the request's transaction the row lock
    would last as long as the request and every other request of the key would wait for it. SQLite serialises
    its writers anyway, and a second connection would wait for the request's own write lock.
    """
    stmt = (
        update(ApiKey)
        .where(ApiKey.id == key_id, or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < stale))
        .values(last_used_at=now)
    )
    bind = session.get_bind()
    if bind.dialect.name == "sqlite":
        session.execute(stmt)
        return
    with bind.engine.connect() as own:
        own.execution_options(isolation_level="AUTOCOMMIT").execute(stmt)


def get_key(session: Session, key_id: uuid.UUID) -> ApiKey | None:
    return session.get(ApiKey, key_id)


def revoke_user_keys(session: Session, user_id: uuid.UUID, when: datetime) -> None:
    session.execute(
        update(ApiKey).where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None)).values(revoked_at=when)
    )


# login failures
def add_failure(session: Session, username: str, client: str, when: datetime) -> None:
    session.add(LoginFailure(username=username, client=client, at=when))
    session.flush()


def failures_since(session: Session, since: datetime, *, username: str | None = None, client: str | None = None) -> int:
    stmt = select(func.count()).select_from(LoginFailure).where(LoginFailure.at >= since)
    if username is not None:
        stmt = stmt.where(LoginFailure.username == username)
    if client is not None:
        stmt = stmt.where(LoginFailure.client == client)
    return session.scalar(stmt) or 0


def failures_of(session: Session, username: str, client: str, since: datetime) -> tuple[int, datetime | None]:
    """How often ``client`` failed to sign in as ``username`` since ``since``, and when it last did."""
    row = session.execute(
        select(func.count(), func.max(LoginFailure.at)).where(
            LoginFailure.username == username, LoginFailure.client == client, LoginFailure.at >= since
        )
    ).one()
    return row[0], row[1]


def clear_failures(session: Session, username: str, client: str) -> None:
    session.execute(delete(LoginFailure).where(LoginFailure.username == username, LoginFailure.client == client))


def linked_to(session: Session, entity_id: uuid.UUID) -> list[str]:
    """Usernames of the users linked to ``entity_id``."""
    return list(session.scalars(select(User.username).where(User.entity_id == entity_id).order_by(User.username)))
