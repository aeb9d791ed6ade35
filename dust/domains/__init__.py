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
    # a JSON file beside this module: the pack's anomaly rules, [{schema, label, detector, settings, threshold}]
    anomalies: str | None = None
    # the pack's relation types that should grant a linked user access (Settings.access_relation_types decides)
    grants: tuple[str, ...] = ()
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


def load_anomaly_rules(session: Session, pack: DomainPack) -> int:
    """Put the pack's anomaly rules for the (schema, label)s the database has no rule for; how many. A rule an
    admin has put keeps its detector and settings. Demos call this after generating their history, so that the
    history is not scored value by value: values written afterwards are scored as they come (each series after
    its detector's warm-up), and POST /anomalies/scan scores the history on demand."""
    from dust.engine import anomalies
    from dust.storage.repositories import anomalies as repo

    if pack.anomalies is None:
        return 0
    made = 0
    for document in json.loads((Path(__file__).parent / pack.anomalies).read_text(encoding="utf-8")):
        schema, label = document.pop("schema"), document.pop("label")
        if repo.rule(session, schema, label) is None:
            anomalies.put_rule(session, schema, label, anomalies.RuleSet.model_validate(document))
            made += 1
    return made


def missing_grants(pack: DomainPack, granting: list[str]) -> list[str]:
    """The pack's relation types that should grant access but are not among ``granting`` (the configured ones)."""
    return [kind for kind in pack.grants if kind not in granting]
