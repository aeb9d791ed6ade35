"""Domain packs: schemas, entity kinds, relation types and generated demo data for one field.

A pack is registered through the plugin hook ``dust_domain_packs`` (healthcare ships with DUST that way), and
``dust demo <name>`` loads it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session

Progress = Callable[[int], None]  # told how many more of ``size`` are done


@dataclass(frozen=True)
class DomainPack:
    name: str  # as in `dust demo <name>`
    description: str
    # generate(session, size=, days=, seed=, progress=) -> {what: how many}: ``size`` main entities, ``days`` of data
    generate: Callable[..., dict[str, int]]
    # (kind, external id) of an entity only this pack's data set has: the data set is loaded once per database
    marker: tuple[str, str]
    unit: str = "entities"  # what ``size`` counts, for help and progress text
    rules: str | None = None  # a JSON file beside this module: the pack's default trigger rules (data, not code)
    tour: str = ""  # what `dust demo <name>` prints after loading: where to look and what to expect there

    def loaded(self, session: Session) -> bool:
        from dust.storage.repositories import entities

        return entities.by_external_id(session, *self.marker) is not None


def load_rules(session: Session, pack: DomainPack) -> int:
    """Create the pack's default trigger rules that the database has no rule of the same name for; how many.
    A rule an admin has changed keeps the changes."""
    from dust.engine import triggers
    from dust.storage.repositories import triggers as repo

    if pack.rules is None:
        return 0
    made = 0
    for document in json.loads((Path(__file__).parent / pack.rules).read_text(encoding="utf-8")):
        if repo.by_name(session, document["name"]) is None:
            triggers.create(session, triggers.TriggerCreate.model_validate(document), allow_private=False)
            made += 1
    return made
