"""Who may see which entities, and what of them: the policy every engine query goes through.

The acting principal rides on the session (``session.info["principal"]``), put there by the API for each
request. No principal means the process itself (the embedded API, the CLI, importers): full access.

- admins see everything;
- analysts see every entity, de-identified: a stable pseudonym for the name, sensitive fields removed;
- members (clinicians) and viewers see the entities reached from their own entity over relation types that
  grant access (``Settings.access_relation_types``, followed outwards up to ``Settings.access_depth``), and
  the entities they created. Anything else answers 404, so its existence does not leak.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import CompoundSelect, Select, and_, literal, or_, select
from sqlalchemy.orm import Session

from dust.core.errors import Forbidden, NotFound
from dust.core.security import GRANTS, Permission, Role, pseudonym
from dust.storage.models import Entity, EntityKind, Relation


@dataclass
class Principal:
    """The user a request acts for, with the policy settings that bound what they see."""

    user_id: uuid.UUID
    username: str
    role: Role
    entity_id: uuid.UUID | None
    secret: str
    grant_types: list[str]
    depth: int
    default_sensitive: list[str]
    request_id: str | None = None
    client: str | None = None
    method: str | None = None
    path: str | None = None
    _sensitive: dict[str, set[str]] = field(default_factory=dict)

    @property
    def scoped(self) -> bool:
        return self.role not in (Role.admin, Role.analyst)

    @property
    def deidentified(self) -> bool:
        return self.role == Role.analyst

    def may(self, permission: Permission) -> bool:
        return permission in GRANTS[self.role]


def principal(session: Session) -> Principal | None:
    return session.info.get("principal")


def act_as(session: Session, who: Principal | None) -> None:
    session.info["principal"] = who


def require(session: Session, permission: Permission) -> None:
    who = principal(session)
    if who is not None and not who.may(permission):
        raise Forbidden(f"role '{who.role}' may not {permission.value}; ask an admin")


def visible_ids(session: Session) -> CompoundSelect[Any] | Select[Any] | None:
    """A query of the entity ids the principal may see, or None when they may see every entity."""
    who = principal(session)
    if who is None or not who.scoped:
        return None
    created = select(Entity.id).where(Entity.created_by == who.user_id)
    if who.entity_id is None:
        return created
    now = datetime.now(UTC)
    reach = select(literal(who.entity_id, Entity.id.type).label("id"), literal(0).label("depth")).cte(
        "reach", recursive=True
    )
    step = (
        select(Relation.target_id, reach.c.depth + 1)
        .join(reach, Relation.source_id == reach.c.id)
        .where(
            Relation.type.in_(who.grant_types),
            reach.c.depth < who.depth,
            or_(Relation.valid_from.is_(None), Relation.valid_from <= now),
            or_(Relation.valid_to.is_(None), Relation.valid_to > now),
        )
    )
    reach = reach.union(step)
    return select(reach.c.id).union(created)


def only_visible(stmt: Select[Any], column: Any, session: Session) -> Select[Any]:
    """``stmt`` restricted to rows whose ``column`` (an entity id) the principal may see."""
    ids = visible_ids(session)
    return stmt if ids is None else stmt.where(column.in_(ids))


def can_see(session: Session, entity_id: uuid.UUID) -> bool:
    ids = visible_ids(session)
    if ids is None:
        return True
    sub = ids.subquery()
    return session.scalar(select(sub.c.id).where(sub.c.id == entity_id).limit(1)) is not None


def see_all(session: Session, entity_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Which of ``entity_ids`` the principal may see."""
    ids = visible_ids(session)
    if ids is None or not entity_ids:
        return set(entity_ids)
    sub = ids.subquery()
    return set(session.scalars(select(sub.c.id).where(sub.c.id.in_(entity_ids))))


def require_visible(session: Session, entity_id: uuid.UUID, what: str = "entity") -> None:
    if not can_see(session, entity_id):
        raise NotFound(f"{what} {entity_id} does not exist")


def sensitive_fields(session: Session, kind: str) -> set[str]:
    """The fields of ``kind`` that de-identified readers do not get (the kind's policy, else the default)."""
    who = principal(session)
    if who is None:
        return set()
    if kind not in who._sensitive:
        policy = session.get(EntityKind, kind)
        who._sensitive[kind] = set(policy.sensitive if policy else who.default_sensitive)
    return who._sensitive[kind]


def present(session: Session, entity: Entity) -> dict[str, Any]:
    """The entity's fields as the principal may read them."""
    data = {
        "id": entity.id,
        "kind": entity.kind,
        "name": entity.name,
        "external_id": entity.external_id,
        "attributes": entity.attributes,
        "created_at": entity.created_at,
        "updated_at": entity.updated_at,
    }
    who = principal(session)
    if who is None or not who.deidentified:
        return data
    hidden = sensitive_fields(session, entity.kind)
    if "name" in hidden:
        data["name"] = pseudonym(who.secret, entity.kind, entity.id)
    if "external_id" in hidden:
        data["external_id"] = None
    data["attributes"] = {k: v for k, v in entity.attributes.items() if k not in hidden}
    return data


def both_ends_visible(session: Session, stmt: Select[Any]) -> Select[Any]:
    """Relations whose source and target the principal may both see."""
    ids = visible_ids(session)
    if ids is None:
        return stmt
    sub = ids.subquery()
    return stmt.where(and_(Relation.source_id.in_(select(sub.c.id)), Relation.target_id.in_(select(sub.c.id))))
