"""/users: user management, for admins."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import status

from dust.api.deps import Router, SessionDep, allow
from dust.core.security import Permission
from dust.engine import users
from dust.engine.users import UserCreate, UserPublic, UserUpdate

router = Router(prefix="/users", tags=["users"])
NO_USER: dict[int | str, dict[str, Any]] = {404: {"description": "No such user."}}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=UserPublic,
    responses={409: {"description": "The username is taken."}},
    **allow(Permission.admin),
)
def create(data: UserCreate, session: SessionDep) -> UserPublic:
    """Create a user, optionally linked to the entity they are."""
    return users.create(session, data)


@router.get("", response_model=list[UserPublic], **allow(Permission.admin))
def list_(session: SessionDep) -> list[UserPublic]:
    """Every user."""
    return users.list_(session)


@router.get("/{user_id}", response_model=UserPublic, responses=NO_USER, **allow(Permission.admin))
def get(user_id: uuid.UUID, session: SessionDep) -> UserPublic:
    """One user."""
    return users.get(session, user_id)


@router.patch("/{user_id}", response_model=UserPublic, responses=NO_USER, **allow(Permission.admin))
def update(user_id: uuid.UUID, data: UserUpdate, session: SessionDep) -> UserPublic:
    """Change role, link, password, or disable; a change of role, password or status revokes their tokens."""
    return users.update(session, user_id, data)
