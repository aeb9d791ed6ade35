"""Users, sign-in and credentials: passwords (argon2), access tokens (JWT), rotating refresh tokens, API keys.

Refresh tokens rotate: each use returns a new one and retires the old. A retired token used again means it
was stolen (or replayed), so the whole family — every token descended from that sign-in — is revoked.
"""

from __future__ import annotations

import hmac
import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dust.core.config import Settings
from dust.core.errors import Conflict, InvalidInput, NotFound, ProblemType
from dust.core.security import (
    AccessClaims,
    Role,
    TokenError,
    api_key_prefix,
    digest,
    hash_password,
    issue_access_token,
    new_api_key,
    new_secret_token,
    read_access_token,
    verify_password,
)
from dust.engine import audit, caches
from dust.engine.fields import Integer, Text
from dust.storage.db import after_commit
from dust.storage.models import ApiKey, User
from dust.storage.repositories import entities as entity_repo
from dust.storage.repositories import users as repo

USERNAME = r"^[A-Za-z0-9_.@\-]{3,64}$"
MIN_PASSWORD = 10
# last_used_at is kept to the minute: writing it on every request made all requests of one key queue on its row.
KEY_USE_PRECISION = timedelta(minutes=1)
# How long failed sign-ins count towards a throttle (a successful sign-in from that client forgets them
# sooner). Far longer than the longest throttle, so a client that keeps guessing stays at the cap instead of
# its old failures ageing out and the backoff starting again from 1 minute.
FAILURE_MEMORY = timedelta(hours=24)


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(pattern=USERNAME)
    password: str | None = Field(
        None, min_length=MIN_PASSWORD, max_length=1024, description="None for a key-only service user."
    )
    role: Role
    entity_id: uuid.UUID | None = Field(None, description="The entity this user is (a clinician's doctor).")


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role | None = None
    disabled: bool | None = Field(None, strict=True)  # not 0, "no" or "off": those were read as false
    entity_id: uuid.UUID | None = None
    password: str | None = Field(None, min_length=MIN_PASSWORD, max_length=1024)


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    username: str
    role: Role
    entity_id: uuid.UUID | None
    disabled: bool
    created_at: datetime


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires.")


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text = Field(min_length=1, max_length=128)
    user_id: uuid.UUID | None = Field(None, description="Whose key (admins only); default yourself.")
    expires_in_days: Integer | None = Field(
        None,
        json_schema_extra={"minimum": 1},  # the most is a setting, checked by create_key
        description="Days until the key expires: 1..DUST_API_KEY_MAX_DAYS (365); default DUST_API_KEY_DAYS (90).",
    )


class ApiKeyPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    expires_at: datetime


class ApiKeyCreated(ApiKeyPublic):
    key: str = Field(description="The key itself; shown this once only.")


@dataclass(frozen=True)
class Refused:
    """A sign-in or refresh that failed; ``status`` 401, or 429 while locked out."""

    status: int
    detail: str
    retry_after: int | None = None
    type: ProblemType = ProblemType.unauthorized


class AuthError(Exception):
    """Credentials that do not identify an active user; the API answers 401."""


# --- users ------------------------------------------------------------------------------------------------


def create(session: Session, data: UserCreate) -> UserPublic:
    if repo.by_username(session, data.username) is not None:
        raise Conflict(f"a user named '{data.username}' already exists")
    _check_entity(session, data.entity_id)
    try:
        with session.begin_nested():
            row = repo.add(
                session,
                username=data.username,
                password_hash=hash_password(data.password) if data.password else None,
                role=data.role.value,
                entity_id=data.entity_id,
            )
    except IntegrityError:
        raise Conflict(f"a user named '{data.username}' already exists") from None
    audit.record(session, "create", "user", row.id)
    return UserPublic.model_validate(row)


def list_(session: Session) -> list[UserPublic]:
    return [UserPublic.model_validate(u) for u in repo.all_users(session)]


def get(session: Session, user_id: uuid.UUID) -> UserPublic:
    return UserPublic.model_validate(_row(session, user_id))


def by_username(session: Session, username: str) -> UserPublic:
    row = repo.by_username(session, username)
    if row is None:
        raise NotFound(f"user '{username}' does not exist")
    return UserPublic.model_validate(row)


def update(session: Session, user_id: uuid.UUID, data: UserUpdate) -> UserPublic:
    """Change role, link, password or disable; anything but the link signs the user out everywhere."""
    row = _row(session, user_id)
    changes = data.model_dump(exclude_unset=True)
    if "entity_id" in changes:
        _check_entity(session, changes["entity_id"])
        row.entity_id = changes["entity_id"]
    if changes.get("role") is not None:
        row.role = Role(changes["role"]).value
    if changes.get("disabled") is not None:
        row.disabled = bool(changes["disabled"])
    if changes.get("password") is not None:
        row.password_hash = hash_password(changes["password"])
    if {"role", "disabled", "password"} & changes.keys():
        _sign_out_everywhere(session, row, datetime.now(UTC))
    caches.changed(session, caches.CREDENTIALS)  # a signed-in copy of the user holds the role and link too
    session.flush()
    audit.record(session, "update", "user", row.id)
    return UserPublic.model_validate(row)


def _row(session: Session, user_id: uuid.UUID) -> User:
    row = repo.get(session, user_id)
    if row is None:
        raise NotFound(f"user {user_id} does not exist")
    return row


def _check_entity(session: Session, entity_id: uuid.UUID | None) -> None:
    if entity_id is not None and entity_repo.get(session, entity_id) is None:
        raise InvalidInput(f"entity {entity_id} does not exist; link users to existing entities")


def _sign_out_everywhere(session: Session, user: User, now: datetime) -> None:
    """Every credential the user holds stops working: access tokens (by version), refresh tokens and API
    keys — a key minted with a stolen token must not survive the response to the theft."""
    user.token_version += 1
    repo.revoke_user_refresh(session, user.id, now)
    repo.revoke_user_keys(session, user.id, now)
    caches.changed(session, caches.CREDENTIALS)


# --- sign-in ----------------------------------------------------------------------------------------------


def login(session: Session, settings: Settings, username: str, password: str, client: str) -> TokenPair | Refused:
    """Tokens for a correct password; otherwise a refusal, with failures counted towards a throttle."""
    now = datetime.now(UTC)
    name, client = username[:64], client[:64]  # as the failures table keeps them
    if repo.failures_since(session, now - timedelta(minutes=1), client=client) >= settings.login_rate_per_minute:
        detail = "too many failed sign-ins from this client; wait a minute"
        return Refused(429, detail, retry_after=60, type=ProblemType.too_many_requests)
    wait = _throttle(session, settings, name, client, now)
    if wait is not None:
        detail = f"too many failed sign-ins as this user from this client; retry in {wait} s"
        return Refused(429, detail, retry_after=wait, type=ProblemType.too_many_requests)
    user = repo.by_username(session, username)
    if not verify_password(user.password_hash if user else None, password) or user is None or user.disabled:
        repo.add_failure(session, name, client, now)
        return Refused(401, "wrong username or password, or the user is disabled")
    repo.clear_failures(session, name, client)
    return _issue(session, settings, user, family=uuid.uuid4())


def _throttle(session: Session, settings: Settings, username: str, client: str, now: datetime) -> int | None:
    """Seconds ``client`` must still wait before trying ``username`` again, or None.

    Per user and client, so a stranger's guesses cannot lock the owner out from their own machine. After
    ``login_max_failures`` failures the client waits 1 minute from the last one, twice as long after each
    further failure, up to ``login_lockout_minutes``.
    """
    failures, last = repo.failures_of(session, username, client, now - FAILURE_MEMORY)
    if failures < settings.login_max_failures or last is None:
        return None
    doublings = min(failures - settings.login_max_failures, 20)  # 2**20 minutes is past any cap; keeps it small
    until = last + timedelta(minutes=min(2**doublings, settings.login_lockout_minutes))
    return math.ceil((until - now).total_seconds()) if until > now else None


def refresh(session: Session, settings: Settings, token: str) -> TokenPair | Refused:
    now = datetime.now(UTC)
    row = repo.refresh_by_hash(session, digest(token))
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        return Refused(401, "refresh token is invalid, expired or revoked; sign in again")
    if row.used_at is not None:
        _revoke_sign_in(session, settings, row.family_id, now)
        detail = "this refresh token was already used, so every token of its sign-in is now revoked; sign in again"
        return Refused(401, detail, type=ProblemType.refresh_token_reused)
    user = repo.get(session, row.user_id)
    if user is None or user.disabled:
        return Refused(401, "the user is disabled")
    row.used_at = now
    return _issue(session, settings, user, family=row.family_id)


def _issue(session: Session, settings: Settings, user: User, family: uuid.UUID) -> TokenPair:
    ttl = timedelta(minutes=settings.access_token_minutes)
    access, _ = issue_access_token(_secret(settings), user.id, user.role, user.token_version, ttl, family)
    refresh_token = new_secret_token()
    repo.add_refresh(
        session,
        user_id=user.id,
        family_id=family,
        token_hash=digest(refresh_token),
        expires_at=datetime.now(UTC) + timedelta(days=settings.refresh_token_days),
    )
    return TokenPair(access_token=access, refresh_token=refresh_token, expires_in=int(ttl.total_seconds()))


def _revoke_sign_in(session: Session, settings: Settings, family: uuid.UUID, now: datetime) -> None:
    """Revoke every refresh token of one sign-in and, through their ``sid``, its access tokens at once."""
    repo.revoke_family(session, family, now)
    caches.changed(session, caches.CREDENTIALS)
    # Kept as long as an access token issued until now can live; none of this sign-in is issued after.
    repo.revoke_access(session, _sid(family), now + timedelta(minutes=settings.access_token_minutes))


def _sid(family: uuid.UUID | str) -> str:
    """The revocation key of a sign-in, beside the jtis of single tokens (which are hex, never "sid:")."""
    return f"sid:{family}"


def logout(
    session: Session, settings: Settings, user_id: uuid.UUID, claims: AccessClaims | None, everywhere: bool
) -> None:
    """End the presented token's sign-in (all its access tokens) and revoke the user's refresh tokens;
    ``everywhere``: every token and key."""
    user = _row(session, user_id)
    now = datetime.now(UTC)
    caches.changed(session, caches.CREDENTIALS)
    if claims is not None:
        repo.revoke_access(session, claims.jti, claims.expires_at)
        if claims.session_id is not None:
            _revoke_sign_in(session, settings, uuid.UUID(str(claims.session_id)), now)
    if everywhere:
        _sign_out_everywhere(session, user, now)
    else:
        repo.revoke_user_refresh(session, user.id, now)
    repo.forget_expired(session, now)
    session.flush()


@dataclass
class SignedIn:
    """Who a bearer credential is: the user, the token's claims (None for an API key), until when it holds."""

    user: UserPublic
    claims: AccessClaims | None
    expires_at: datetime
    key_id: uuid.UUID | None = None
    key_used_at: datetime | None = None  # an API key's last recorded use, kept to KEY_USE_PRECISION


def authenticate(session: Session, settings: Settings, credential: str) -> SignedIn:
    """The active user behind a bearer credential (an access token or an API key).

    With the app's caches on the session, a credential checked before under the current credentials epoch is
    taken as checked (one query: the epoch); every revocation raises that epoch (``caches.changed``)."""
    shared = caches.of(session)
    if shared is None:
        return _check(session, settings, credential)
    key = digest(credential)
    now = datetime.now(UTC)
    found: SignedIn | None = shared.get(session, caches.CREDENTIALS, key)
    if found is None or found.expires_at <= now:
        found = _check(session, settings, credential)
        shared.put(session, caches.CREDENTIALS, key, found)
    _note_key_use(session, found, now)
    return found


def _check(session: Session, settings: Settings, credential: str) -> SignedIn:
    prefix = api_key_prefix(credential)
    if prefix is not None:
        return _by_api_key(session, credential, prefix)
    try:
        claims = read_access_token(_secret(settings), credential)
    except TokenError as problem:
        raise AuthError(str(problem)) from None
    user = repo.get(session, claims.user_id)
    if user is None or user.disabled:
        raise AuthError("the user is unknown or disabled")
    # The token and its sign-in in one query.
    revocable = (claims.jti,) if claims.session_id is None else (claims.jti, _sid(claims.session_id))
    if claims.version != user.token_version or claims.role != user.role or repo.is_revoked(session, *revocable):
        raise AuthError("token has been revoked")
    return SignedIn(UserPublic.model_validate(user), claims, claims.expires_at)


def _by_api_key(session: Session, key: str, prefix: str) -> SignedIn:
    row = repo.key_by_prefix(session, prefix)
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.key_hash, digest(key)):
        raise AuthError("API key is invalid or revoked")
    if row.expires_at <= datetime.now(UTC):
        raise AuthError("API key has expired")
    user = repo.get(session, row.user_id)
    if user is None or user.disabled:
        raise AuthError("the key's user is disabled")
    return SignedIn(UserPublic.model_validate(user), None, row.expires_at, row.id, row.last_used_at)


def _note_key_use(session: Session, signed: SignedIn, now: datetime) -> None:
    """Record an API key's use, to the minute: after the request's transaction, so the key's row is never
    locked for the length of a request (every other request of the key would wait for it)."""
    if signed.key_id is None or (signed.key_used_at is not None and now - signed.key_used_at <= KEY_USE_PRECISION):
        return
    signed.key_used_at = now
    key_id, stale = signed.key_id, now - KEY_USE_PRECISION
    after_commit(session, lambda writer: repo.touch_key(writer, key_id, now, stale=stale))


def _secret(settings: Settings) -> str:
    if not settings.secret_key:
        raise RuntimeError("DUST_SECRET_KEY is not set")
    return settings.secret_key.get_secret_value()


# --- API keys ---------------------------------------------------------------------------------------------


def create_key(
    session: Session, settings: Settings, user_id: uuid.UUID, name: str, expires_in_days: int | None = None
) -> ApiKeyCreated:
    _row(session, user_id)
    expires_at = datetime.now(UTC) + timedelta(days=_key_days(settings, expires_in_days))
    key, prefix = new_api_key()
    row = repo.add_key(session, user_id=user_id, name=name, prefix=prefix, key_hash=digest(key), expires_at=expires_at)
    audit.record(session, "create", "api_key", row.id)
    return ApiKeyCreated(**ApiKeyPublic.model_validate(row).model_dump(), key=key)


def _key_days(settings: Settings, asked: int | None) -> int:
    most = settings.api_key_max_days
    if asked is None:
        return min(settings.api_key_days, most)
    if not 1 <= asked <= most:
        raise InvalidInput(f"expires_in_days must be 1..{most} (DUST_API_KEY_MAX_DAYS), not {asked}")
    return asked


def keys(session: Session, user_id: uuid.UUID | None) -> list[ApiKeyPublic]:
    return [ApiKeyPublic.model_validate(k) for k in repo.keys_of(session, user_id)]


def revoke_key(session: Session, key_id: uuid.UUID, owner: uuid.UUID | None) -> None:
    """Revoke a key; with ``owner``, only one of theirs (others answer 404)."""
    row: ApiKey | None = repo.get_key(session, key_id)
    if row is None or (owner is not None and row.user_id != owner):
        raise NotFound(f"API key {key_id} does not exist")
    row.revoked_at = row.revoked_at or datetime.now(UTC)
    caches.changed(session, caches.CREDENTIALS)
    session.flush()
    audit.record(session, "delete", "api_key", row.id)
