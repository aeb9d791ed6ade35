"""/auth: sign in (OAuth2 password form), refresh, who am I, sign out, API keys."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import Depends, Form, Request, Response, status
from fastapi.responses import JSONResponse
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import SkipJsonSchema

from dust.api.deps import (
    PrincipalDep,
    PublicSessionDep,
    Router,
    SessionDep,
    SettingsDep,
    SignedInDep,
    allow,
    on_the_loop,
)
from dust.api.problems import problem
from dust.core.errors import Forbidden
from dust.core.security import Permission, Role
from dust.engine import users
from dust.engine.users import ApiKeyCreate, ApiKeyCreated, ApiKeyPublic, Refused, TokenPair, UserPublic

router = Router(prefix="/auth", tags=["auth"])
# POST routes whose answer is a credential. The Idempotency middleware never stores or replays their answers:
# a stored copy would be a secret at rest, a key "shown once" could be shown again, and a replayed refresh
# would answer 200 where reusing a spent refresh token must revoke the sign-in.
CREDENTIAL_PATHS = frozenset({"/auth/token", "/auth/refresh", "/auth/api-keys"})


class SignIn(OAuth2PasswordRequestForm):
    """The OAuth2 password form as the document should describe it: a form field is never null, and an empty
    username or password is no field at all (422)."""

    def __init__(
        self,
        *,
        username: Annotated[str, Form(min_length=1)],
        password: Annotated[str, Form(min_length=1, json_schema_extra={"format": "password"})],
        grant_type: Annotated[Literal["password"] | SkipJsonSchema[None], Form()] = None,
        scope: Annotated[str, Form()] = "",
        client_id: Annotated[str | SkipJsonSchema[None], Form()] = None,
        client_secret: Annotated[str | SkipJsonSchema[None], Form(json_schema_extra={"format": "password"})] = None,
    ) -> None:
        super().__init__(
            grant_type=grant_type,
            username=username,
            password=password,
            scope=scope,
            client_id=client_id,
            client_secret=client_secret,
        )


class RefreshRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: str = Field(max_length=256)  # tokens are 43 characters; a longer one is not one of ours


def _answer(result: TokenPair | Refused) -> TokenPair | JSONResponse:
    # A refusal is returned, not raised: the failure count or the revoked family must still commit.
    if isinstance(result, Refused):
        headers = {"WWW-Authenticate": 'Bearer realm="dust"'}
        if result.retry_after is not None:
            headers["Retry-After"] = str(result.retry_after)
        return problem(result.status, result.detail, type_=result.type, headers=headers)
    return result


@router.post(
    "/token",
    response_model=TokenPair,
    responses={
        401: {"description": "Wrong username or password, or the user is disabled."},
        429: {
            "description": "Too many failed sign-ins as this user from this client, or from this client in a "
            "minute: wait Retry-After seconds."
        },
    },
)
def token(
    form: Annotated[SignIn, Depends()],
    request: Request,
    session: PublicSessionDep,
    settings: SettingsDep,
) -> TokenPair | JSONResponse:
    """Sign in with username and password: an access token and a refresh token."""
    client = request.client.host if request.client else "-"
    return _answer(users.login(session, settings, form.username, form.password, client))


@router.post(
    "/refresh",
    response_model=TokenPair,
    responses={
        401: {
            "description": "The refresh token is invalid, expired, revoked, or already used (which revokes "
            "every token of its sign-in)."
        }
    },
)
def refresh(data: RefreshRequest, session: PublicSessionDep, settings: SettingsDep) -> TokenPair | JSONResponse:
    """Trade a refresh token for a new pair; the old one is retired (reusing it revokes the sign-in)."""
    return _answer(users.refresh(session, settings, data.refresh_token))


@router.get("/me", response_model=UserPublic, **allow(Permission.self))
@on_the_loop()
def me(signed: SignedInDep) -> UserPublic:
    """The signed-in user."""
    return signed.user


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, **allow(Permission.self))
def logout(
    signed: SignedInDep, who: PrincipalDep, session: SessionDep, settings: SettingsDep, everywhere: bool = False
) -> Response:
    """Revoke this access token and your refresh tokens; ``everywhere=true`` every token and API key you hold."""
    users.logout(session, settings, who.user_id, signed.claims, everywhere)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/api-keys",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyCreated,
    responses={
        403: {"description": "Only admins make keys for other users."},
        404: {"description": "No such user."},
    },
    **allow(Permission.self),
)
def create_key(data: ApiKeyCreate, who: PrincipalDep, session: SessionDep, settings: SettingsDep) -> ApiKeyCreated:
    """A key for a machine client (shown once, expiring); admins may make one for another user."""
    owner = data.user_id or who.user_id
    if owner != who.user_id and who.role != Role.admin:
        raise Forbidden("only admins create keys for other users")
    return users.create_key(session, settings, owner, data.name, data.expires_in_days)


@router.get("/api-keys", response_model=list[ApiKeyPublic], **allow(Permission.self))
def list_keys(who: PrincipalDep, session: SessionDep) -> list[ApiKeyPublic]:
    """Your keys (an admin sees every key)."""
    return users.keys(session, None if who.role == Role.admin else who.user_id)


@router.delete(
    "/api-keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={404: {"description": "No such key, or not yours."}},
    **allow(Permission.self),
)
def revoke_key(key_id: uuid.UUID, who: PrincipalDep, session: SessionDep) -> Response:
    """Revoke a key at once."""
    users.revoke_key(session, key_id, None if who.role == Role.admin else who.user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
