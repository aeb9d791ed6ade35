"""Domain packs: schemas, entity kinds, relation types and generated demo data for one field.

A pack is registered through the plugin hook ``dust_domain_packs`` (healthcare ships with DUST that way), and
``dust demo <name>`` loads it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session

Progress = Callable[[int], None]  # told how many more of ``size`` are done


@dataclass(frozen=True)
class DomainPack:
    name: str  # as in `dust demo <name>`
    description: str
    # generate(session, size=, days=, progress=) -> {what: how many}: ``size`` main entities with ``days`` of data
    generate: Callable[..., dict[str, int]]
    # (kind, external id) of an entity only this pack's data set has: the data set is loaded once per database
    marker: tuple[str, str]
    unit: str = "entities"  # what ``size`` counts, for help and progress text

    def loaded(self, session: Session) -> bool:
        from dust.storage.repositories import entities

        return entities.by_external_id(session, *self.marker) is not None
