"""Fixtures for engine tests that act as a signed-in user."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from dust.core.security import Role
from dust.engine import access


@pytest.fixture
def member() -> Callable[[str], access.Principal]:
    """``member(name)``: a member principal, who sees the entities they created and no others here."""

    def make(name: str) -> access.Principal:
        return access.Principal(
            user_id=uuid.uuid5(uuid.NAMESPACE_DNS, name),
            username=name,
            role=Role.member,
            entity_id=None,
            secret="test-secret",
            grant_types=["treats"],
            depth=1,
            default_sensitive=[],
        )

    return make


def principal(
    role: Role, entity_id: uuid.UUID | None = None, sensitive: tuple[str, ...] = ("ssn",)
) -> access.Principal:
    """A principal of ``role`` (linked to ``entity_id``) whom ``treats`` relations grant access, one step deep."""
    return access.Principal(
        user_id=uuid.uuid4(),
        username=role.value,
        role=role,
        entity_id=entity_id,
        secret="k" * 32,
        grant_types=["treats"],
        depth=1,
        default_sensitive=list(sensitive),
    )
