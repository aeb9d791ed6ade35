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

import functools
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
from sqlalchemy import CompoundSelect, Select, bindparam, func, literal, or_, select
from sqlalchemy.orm import Session

from dust.core.config import Settings
from dust.core.errors import Forbidden, NotFound
from dust.core.security import GRANTS, Permission, Role, pseudonym
from dust.engine import caches
from dust.engine.timegrid import as_utc
from dust.storage import cache_store
from dust.storage.models import Entity, EntityKind, Relation


@dataclass
class Principal:
    """The user a request acts for, with the policy settings that bound what they see."""

    user_id: uuid.UUID
    username: str
    role: Role
    entity_id: uuid.UUID | None
    secret: str = field(repr=False)  # the signing key (it keys pseudonyms): never in a repr or a log
    grant_types: list[str]
    depth: int
    default_sensitive: list[str]
    may_grant: bool = False  # may write relations of the granting types (Settings.granting_roles)
    min_cohort: int = 5  # Settings.min_cohort: entities behind an aggregate point a de-identified reader may see
    request_id: str | None = None
    client: str | None = None
    method: str | None = None
    path: str | None = None
    _sensitive: dict[str | None, set[str]] = field(default_factory=dict)

    @property
    def scoped(self) -> bool:
        return self.role not in (Role.admin, Role.analyst)

    @property
    def deidentified(self) -> bool:
        return self.role == Role.analyst

    def may(self, permission: Permission) -> bool:
        return permission in GRANTS[self.role]


class Person(Protocol):
    """A user as a stored row or as the API presents one (read-only: either will do)."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def username(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def entity_id(self) -> uuid.UUID | None: ...


def principal_for(
    user: Person,
    settings: Settings,
    *,
    request_id: str | None = None,
    client: str | None = None,
    method: str | None = None,
    path: str | None = None,
) -> Principal:
    """The principal ``user`` acts as under ``settings``' policy, and where from, for the audit trail."""
    assert settings.secret_key is not None  # callers refuse to work without one
    return Principal(
        user_id=user.id,
        username=user.username,
        role=Role(user.role),
        entity_id=user.entity_id,
        secret=settings.secret_key.get_secret_value(),
        grant_types=settings.access_relation_types,
        depth=settings.access_depth,
        default_sensitive=settings.sensitive_fields,
        may_grant=user.role in settings.granting_roles,
        min_cohort=settings.min_cohort,
        request_id=request_id,
        client=client,
        method=method,
        path=path,
    )


def principal(session: Session) -> Principal | None:
    return session.info.get("principal")


def act_as(session: Session, who: Principal | None) -> None:
    session.info["principal"] = who


def require(session: Session, permission: Permission) -> None:
    who = principal(session)
    if who is not None and not who.may(permission):
        raise Forbidden(refusal(who.role, permission))


def refusal(role: Role, permission: Permission) -> str:
    """Why ``role`` cannot do what needs ``permission``, as a person would say it."""
    if permission is Permission.admin:
        return f"only an admin can do this, and you are signed in as {_a(role)}; ask an admin"
    if permission is Permission.write and Permission.read in GRANTS[role]:
        return f"you are signed in as {_a(role)}, who can read but not change data; ask an admin"
    return f"you are signed in as {_a(role)}, who cannot {permission.value} here; ask an admin"


def _a(role: Role) -> str:
    return f"{'an' if role.value[0] in 'aeiou' else 'a'} {role.value}"


def visible_ids(session: Session) -> CompoundSelect[Any] | Select[Any] | None:
    """A query of the entity ids the principal may see, or None when they may see every entity."""
    who = principal(session)
    if who is None or not who.scoped:
        return None
    return _visible_query(who.user_id, who.entity_id, tuple(who.grant_types), who.depth)


@functools.lru_cache(maxsize=4096)
def _visible_query(
    user_id: uuid.UUID, entity_id: uuid.UUID | None, grant_types: tuple[str, ...], depth: int
) -> CompoundSelect[Any] | Select[Any]:
    """``visible_ids``' query for one principal, built once: building it cost a scoped read more than running
    it. It holds no state that changes: "now" is taken when the query runs, and what it reaches is read then."""
    created = select(Entity.id).where(Entity.created_by == user_id)
    if entity_id is None:
        return created
    return _reach_query(entity_id, grant_types, depth).union(created)


@functools.lru_cache(maxsize=4096)
def _reach_query(entity_id: uuid.UUID, grant_types: tuple[str, ...], depth: int) -> Select[Any]:
    """The ids reached from ``entity_id`` over relations of ``grant_types`` valid now, ``depth`` steps out."""
    now = bindparam("reach_now", type_=Relation.valid_from.type, callable_=lambda: datetime.now(UTC))
    reach = select(literal(entity_id, Entity.id.type).label("id"), literal(0).label("depth")).cte(
        "reach", recursive=True
    )
    step = (
        select(Relation.target_id, reach.c.depth + 1)
        .join(reach, Relation.source_id == reach.c.id)
        .where(
            Relation.type.in_(grant_types),
            reach.c.depth < depth,
            or_(Relation.valid_from.is_(None), Relation.valid_from <= now),
            or_(Relation.valid_to.is_(None), Relation.valid_to > now),
        )
    )
    reach = reach.union(step)
    return select(reach.c.id)


def sees(session: Session, entity_id: uuid.UUID) -> bool:
    """Whether the principal may see ``entity_id``, as far as is known without asking the database: True if they
    see every entity, or it is in their reach as the shared cache holds it; False means "ask" (``visible_ids``:
    the entities they created, or a reach not cached). A caller that gets False runs the query whether the
    entity exists or not, so a missing one and another's answer alike, in time too."""
    who = principal(session)
    if who is None or not who.scoped:
        return True
    if who.entity_id is None:
        return False
    reach = _cached_reach(session, who, who.entity_id)
    return reach is not None and entity_id in reach


Reach = tuple[frozenset[uuid.UUID], datetime | None]  # the ids reached, and until when (None: until a change)


def _cached_reach(session: Session, who: Principal, start: uuid.UUID) -> frozenset[uuid.UUID] | None:
    """The ids reached from ``start``, from the shared cache or read and kept there; None without caches (the CLI,
    scripts). Kept under the relations epoch, which every change of a relation raises, and until the first moment
    after now at which a relation of the granting types starts or stops being valid: the reach then changes with
    no write at all."""
    shared = caches.of(session)
    if shared is None:
        return None
    key = ("reach", str(start), tuple(who.grant_types), who.depth)
    now = datetime.now(UTC)
    found = shared.find(session, caches.RELATIONS, key, _unpack_reach)
    if found is not None and (found[1] is None or now < found[1]):
        return found[0]
    ids = frozenset(session.scalars(_reach_query(start, tuple(who.grant_types), who.depth)))
    reached: Reach = (ids, _next_change(session, who.grant_types, now))
    shared.keep(session, caches.RELATIONS, key, reached, _pack_reach, 64 * len(ids) + 256)
    return ids


def _next_change(session: Session, grant_types: list[str], now: datetime) -> datetime | None:
    """The first moment after ``now`` at which a relation of ``grant_types`` starts or stops being valid."""
    granting = Relation.type.in_(grant_types)
    starts = session.scalar(select(func.min(Relation.valid_from)).where(granting, Relation.valid_from > now))
    stops = session.scalar(select(func.min(Relation.valid_to)).where(granting, Relation.valid_to > now))
    moments = [as_utc(m) for m in (starts, stops) if m is not None]
    return min(moments) if moments else None


def _pack_reach(reached: Reach) -> bytes:
    ids = np.frombuffer(b"".join(i.bytes for i in sorted(reached[0])), dtype=np.uint8)
    return cache_store.pack({"until": None if reached[1] is None else reached[1].isoformat()}, {"ids": ids})


def _unpack_reach(raw: bytes) -> Reach:
    header, arrays = cache_store.unpack(raw)
    packed = arrays["ids"].tobytes()
    ids = frozenset(uuid.UUID(bytes=packed[i : i + 16]) for i in range(0, len(packed), 16))
    return ids, None if header["until"] is None else datetime.fromisoformat(header["until"])


def can_see(session: Session, entity_id: uuid.UUID) -> bool:
    ids = visible_ids(session)
    if ids is None:
        return True
    sub = ids.subquery()
    return session.scalar(select(sub.c.id).where(sub.c.id == entity_id).limit(1)) is not None


def require_visible(session: Session, entity_id: uuid.UUID, what: str = "entity") -> None:
    if not can_see(session, entity_id):
        raise NotFound(f"{what} {entity_id} does not exist")


def require_grant(session: Session, relation_type: str) -> None:
    """Relations of the granting types decide who sees what: writing one is for the granting roles only.

    Otherwise a clinician could relate their own entity to anything visible and so reach what lies beyond it,
    or hand another user's entity access to a patient.
    """
    who = principal(session)
    if who is not None and relation_type in who.grant_types and not who.may_grant:
        raise Forbidden(
            f"'{relation_type}' relations decide who can see which entities, so only the roles named in "
            "DUST_GRANTING_ROLES can create, change or delete them; ask an admin"
        )


def sensitive_fields(session: Session, kind: str | None) -> set[str]:
    """The fields de-identified readers do not get: the defaults, less those the kind's policy makes public, plus
    those it makes sensitive; for ``None`` (a query that may match any kind), the defaults plus every kind's."""
    who = principal(session)
    if who is None:
        return set()
    if kind not in who._sensitive:
        fields = set(who.default_sensitive)
        if kind is None:
            for listed in session.scalars(select(EntityKind.sensitive)):
                fields.update(listed)
        elif (policy := session.get(EntityKind, kind)) is not None:
            fields = (fields - set(policy.public)) | set(policy.sensitive)
        who._sensitive[kind] = fields
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


def present_attributes(session: Session, attributes: dict[str, Any]) -> dict[str, Any]:
    """A relation's attributes as the principal may read them: a relation belongs to no one kind, so a
    de-identified reader loses every key that is sensitive for any kind."""
    who = principal(session)
    if who is None or not who.deidentified:
        return attributes
    hidden = sensitive_fields(session, None)
    return {k: v for k, v in attributes.items() if k not in hidden}
