"""Passwords, tokens and keys: the cryptography, with no storage. Policies live in ``dust.engine.access``."""

from __future__ import annotations

import functools
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

ALGORITHM = "HS256"  # the only one accepted: "none" and RS/HS confusion are refused by construction
ISSUER = "dust"
API_KEY_PREFIX = "dust_"
_hasher = PasswordHasher()


@functools.cache
def dummy_hash() -> str:
    """Verified against when a username does not exist, so a wrong name costs as long as a wrong password.
    Made on first use (a server makes it as it starts): hashing costs ~0.1 s, which every process, each CLI
    command among them, paid at import."""
    return _hasher.hash(secrets.token_urlsafe(16))


class Role(StrEnum):
    admin = "admin"
    clinician = "clinician"  # healthcare's name for a member
    member = "member"
    analyst = "analyst"
    viewer = "viewer"


class Permission(StrEnum):
    """What a route needs. Object-level limits (which entities) come on top, from ``dust.engine.access``."""

    read = "read"
    write = "write"
    admin = "admin"
    self = "self"  # any signed-in user, about themselves


GRANTS: dict[Role, frozenset[Permission]] = {
    Role.admin: frozenset(Permission),
    Role.clinician: frozenset({Permission.read, Permission.write, Permission.self}),
    Role.member: frozenset({Permission.read, Permission.write, Permission.self}),
    Role.analyst: frozenset({Permission.read, Permission.self}),
    Role.viewer: frozenset({Permission.read, Permission.self}),
}


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored or dummy_hash(), password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class AccessClaims:
    user_id: uuid.UUID
    role: str
    version: int
    jti: str
    expires_at: datetime
    # The sign-in (refresh-token family) the token came from: revoking it refuses every access token of that
    # sign-in at once. None on tokens issued without one.
    session_id: str | None = None


class TokenError(Exception):
    """The token is not one we issued, or no longer valid; the message says which, for the 401."""


def issue_access_token(
    secret: str, user_id: uuid.UUID, role: str, version: int, ttl: timedelta, session_id: uuid.UUID | None = None
) -> tuple[str, str]:
    """A signed access token and its id (jti); ``session_id`` (claim ``sid``) names the sign-in it belongs to."""
    now = datetime.now(UTC)
    jti = secrets.token_hex(16)
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": str(user_id),
        "role": role,
        "ver": version,
        "typ": "access",
        "jti": jti,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
    }
    if session_id is not None:
        claims["sid"] = str(session_id)
    return jwt.encode(claims, secret, algorithm=ALGORITHM), jti


def read_access_token(secret: str, token: str) -> AccessClaims:
    try:
        header = jwt.get_unverified_header(token)
        if header.get("alg") != ALGORITHM:
            raise TokenError(f"token algorithm {header.get('alg')!r} is not accepted")
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "jti", "iss"]},
        )
        if claims.get("typ") != "access":
            raise TokenError("not an access token")
        _check_times(claims)
        return AccessClaims(
            user_id=uuid.UUID(claims["sub"]),
            role=str(claims.get("role")),
            version=int(claims.get("ver", -1)),
            jti=str(claims["jti"]),
            expires_at=datetime.fromtimestamp(claims["exp"], UTC),
            session_id=claims.get("sid"),
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("token has expired") from None
    except (jwt.InvalidTokenError, ValueError, KeyError, TypeError, AttributeError, OverflowError) as problem:
        # A claim of the wrong type or size (a "sub" that is a number, an "exp" of Infinity) is a bad token.
        raise TokenError(f"token is invalid ({type(problem).__name__})") from None


_LAST_SECOND = 253402300799  # 9999-12-31T23:59:59Z, the last instant a datetime can hold


def _check_times(claims: dict[str, Any]) -> None:
    """exp, iat and nbf as DUST issues them: whole seconds a datetime can hold. A token signed with the key
    but an exp of 10**20 would otherwise overflow datetime.fromtimestamp."""
    for name in ("exp", "iat", "nbf"):
        value = claims.get(name, 0)
        if type(value) is not int or not 0 <= value <= _LAST_SECOND:
            raise TokenError(f"token is invalid ({name} is not a time in whole seconds up to year 9999)")


def new_secret_token(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    """SHA-256 of a high-entropy token: enough to store refresh tokens and API keys (no salt needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_api_key() -> tuple[str, str]:
    """(key, prefix): the key is shown once; the prefix finds it again without storing it."""
    prefix = secrets.token_hex(6)
    return f"{API_KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}", prefix


def api_key_prefix(key: str) -> str | None:
    if not key.startswith(API_KEY_PREFIX):
        return None
    prefix, _, rest = key[len(API_KEY_PREFIX) :].partition("_")
    return prefix if len(prefix) == 12 and rest else None


def pseudonym(secret: str, kind: str, entity_id: uuid.UUID) -> str:
    """A stable, keyed stand-in for an entity's name: the same entity always gets the same one."""
    mac = hashlib.blake2b(str(entity_id).encode(), key=secret.encode()[:64], digest_size=5).hexdigest()
    return f"{kind}-{mac}"
