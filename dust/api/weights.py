"""/weight-policies: how the weights of each relation type decay with time and grow with interactions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path, Response, status

from dust.api.deps import Router, SessionDep, allow
from dust.core.security import Permission
from dust.engine import weights
from dust.engine.relations import TYPE
from dust.engine.weights import PolicyPublic, PolicySet

router = Router(prefix="/weight-policies", tags=["relations"])
Type = Annotated[str, Path(pattern=TYPE, description="The relation type, e.g. treats.")]
NO_POLICY: dict[int | str, dict[str, Any]] = {404: {"description": "The type has no weight policy."}}


@router.get("", response_model=list[PolicyPublic], **allow(Permission.read))
def list_(session: SessionDep) -> list[PolicyPublic]:
    """Every relation type's weight policy."""
    return weights.list_policies(session)


@router.get("/{type}", response_model=PolicyPublic, responses=NO_POLICY, **allow(Permission.read))
def get(type: Type, session: SessionDep) -> PolicyPublic:
    """One relation type's weight policy."""
    return weights.get_policy(session, type)


@router.put("/{type}", response_model=PolicyPublic, **allow(Permission.admin))
def put(type: Type, data: PolicySet, session: SessionDep) -> PolicyPublic:
    """Set how the type's weights decay (half-life), grow (reinforce) and are bounded (floor, cap), from now on."""
    return weights.put_policy(session, type, data)


@router.delete("/{type}", status_code=status.HTTP_204_NO_CONTENT, responses=NO_POLICY, **allow(Permission.admin))
def delete(type: Type, session: SessionDep) -> Response:
    """Remove the type's policy: its weights read as recorded again."""
    weights.delete_policy(session, type)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
