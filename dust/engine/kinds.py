"""Entity kinds and their field policy: which fields are sensitive (hidden from de-identified readers).

A policy adds to ``Settings.sensitive_fields``, the defaults every kind starts from; a default can only be
released by naming it in ``public``, so forgetting a field in a policy never exposes it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from dust.core.errors import NotFound
from dust.engine.fields import FieldName, Plain
from dust.storage.models import EntityKind


class KindPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", from_attributes=True)

    description: Plain | None = Field(None, max_length=2000)
    sensitive: list[FieldName] = Field(
        default_factory=list,
        max_length=200,
        description="Fields hidden from de-identified readers on top of the defaults (DUST_SENSITIVE_FIELDS): "
        "'name', 'external_id' or attribute keys.",
    )
    public: list[FieldName] = Field(
        default_factory=list,
        max_length=200,
        description="Default-sensitive fields this kind shows de-identified readers after all (e.g. a hospital's "
        "name).",
    )

    @model_validator(mode="after")
    def _disjoint(self) -> KindPolicy:
        both = sorted(set(self.sensitive) & set(self.public))
        if both:
            raise ValueError(f"{both} cannot be both sensitive and public")
        return self


class KindPublic(KindPolicy):
    kind: str


def put(session: Session, kind: str, policy: KindPolicy) -> KindPublic:
    row = session.get(EntityKind, kind)
    if row is None:
        row = EntityKind(kind=kind)
        session.add(row)
    row.description, row.sensitive, row.public = (
        policy.description,
        sorted(set(policy.sensitive)),
        sorted(set(policy.public)),
    )
    session.flush()
    return KindPublic.model_validate(row)


def get(session: Session, kind: str) -> KindPublic:
    row = session.get(EntityKind, kind)
    if row is None:
        raise NotFound(f"kind '{kind}' has no policy; the default sensitive fields apply")
    return KindPublic.model_validate(row)


def list_(session: Session) -> list[KindPublic]:
    return [KindPublic.model_validate(r) for r in session.scalars(select(EntityKind).order_by(EntityKind.kind))]
