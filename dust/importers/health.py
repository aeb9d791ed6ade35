"""The healthcare mapping shared by importers (Synthea CSV, FHIR): source records onto engine calls.

- Patients, practitioners and organizations become entities of those kinds whose external id is the source id
  (Synthea's ``Id``, which is also the FHIR resource id), so a record imported twice, from either source, is one
  entity. Conditions are the patient's ``conditions`` attribute.
- Vital-sign readings (by LOINC code) go to the patient's ``vitals`` tensor, a daily grid in UTC from the
  patient's birth date. A reading falls in the day that holds it. Several readings of one vital in one day:
  the last one (by time) is the day's value; the earlier ones are written first and replaced, so they stay in
  the tensor's history (one equal to its successor leaves no entry: nothing was replaced).
- Encounters make ``treats`` relations (practitioner → patient), valid from the first encounter (to the
  patient's death, if any), whose weight grows by the ``treats`` policy's reinforce at each encounter and decays
  with its half-life in between. Practitioners ``works_at`` their organization.

Re-running adds nothing: entities, tensors and relations are looked up by their source ids first, and a vital
whose day already holds the value is left alone.
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from dust.domains import healthcare
from dust.engine import entities, kinds, relations, schemas, tensors, weights
from dust.engine.entities import EntityCreate, EntityUpdate
from dust.engine.relations import RelationCreate
from dust.engine.schemas import SchemaUpdate
from dust.engine.tensors import TensorCreate, TensorUpdate
from dust.engine.timegrid import TimeGrid
from dust.importers.report import Report
from dust.storage.repositories import entities as entity_repo
from dust.storage.repositories import tensors as tensor_repo

PATIENT, PRACTITIONER, ORGANIZATION = "patient", "practitioner", "organization"
VITALS = healthcare.VITALS
BY_LOINC = {code: label for label, code in healthcare.LOINC.items()}
_METRIC = VITALS.axes[0]
# One encounter adds 1; a year without one halves the weight; at most 10 (a long-standing, frequent carer).
TREATS_POLICY = weights.PolicySet(reinforce=1.0, half_life="P365D", cap=10.0, floor=0.0)
DAY = 86_400
_SYNTHETIC_NUMBER = re.compile(r"(?<=[^\W\d])\d+\b")  # Synthea appends digits to names: "Maude482"


@dataclass(frozen=True)
class Record:
    """An entity as a source gives it."""

    kind: str
    external_id: str
    name: str
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reading:
    """One vital-sign reading of a patient (by source id)."""

    patient: str
    label: str
    at: datetime
    value: float
    where: str


@dataclass(frozen=True)
class Encounter:
    patient: str
    practitioner: str
    start: datetime
    where: str


def person_name(*parts: str) -> str:
    """A display name from name parts, without the digits Synthea appends to make names look synthetic."""
    return " ".join(_SYNTHETIC_NUMBER.sub("", p).strip() for p in parts if p and p.strip())


def vital(code: str, unit: str, value: float) -> tuple[str | None, str | None]:
    """(label, None) for a reading of a vital sign the schema holds, else (None, why not)."""
    label = BY_LOINC.get(code)
    if label is None:
        return None, f"LOINC {code} is not one of the vitals"
    expected = _METRIC.units.get(label)
    if unit != expected:
        return None, f"{label} in '{unit}', not the schema's UCUM unit '{expected}'"
    low, high = _METRIC.ranges[label]
    if not (low <= value <= high):
        return None, f"{label} {value} is outside its valid range [{low:g}, {high:g}]"
    return label, None


def prepare(session: Session) -> None:
    """The vitals schema with every label, the kinds' field policies and the ``treats`` weight policy (a policy
    someone set already is kept)."""
    if schemas.repo.latest(session, VITALS.name) is None:
        schemas.create(session, VITALS)
    else:  # e.g. the demo's, from before weight, height and BMI: a new version appends them
        current = schemas.get_def(session, VITALS.name)
        if not set(_METRIC.labels) <= set(current.axes[0].labels):
            data = VITALS.model_dump(exclude={"name", "sensitive"}) | {"sensitive": current.sensitive}
            schemas.publish(session, VITALS.name, SchemaUpdate.model_validate(data))
    for kind in (PATIENT, PRACTITIONER, ORGANIZATION):
        kinds.put(session, kind, healthcare.POLICIES[kind])
    if weights.policy(session, "treats") is None:
        weights.put_policy(session, "treats", TREATS_POLICY)


def put_entities(
    session: Session, records: list[Record], report: Report, what: str
) -> tuple[dict[str, uuid.UUID], set[str]]:
    """The entity id of each record's external id: existing ones found (attributes the record changes
    updated), the others created together; and the external ids created or updated."""
    if not records:
        return {}, set()
    kind = records[0].kind
    taken = entity_repo.taken_external_ids(session, kind, [r.external_id for r in records])
    ids: dict[str, uuid.UUID] = {}
    changed: set[str] = set()
    for record in (r for r in records if r.external_id in taken):
        row = entity_repo.by_external_id(session, kind, record.external_id)
        assert row is not None  # taken just now, in this transaction
        ids[record.external_id] = row.id
        patch = {k: v for k, v in record.attributes.items() if row.attributes.get(k) != v}
        if patch:
            entities.update(session, row.id, EntityUpdate(attributes=patch))
            changed.add(record.external_id)
    new = [r for r in records if r.external_id not in taken]
    made = entities.create_many(
        session, [EntityCreate(kind=kind, name=r.name, external_id=r.external_id, attributes=r.attributes) for r in new]
    )
    ids.update({r.external_id: e.id for r, e in zip(new, made, strict=True)})
    report.imported[what] += len(new)
    report.existing[what] += len(records) - len(new)
    if changed:
        report.notes.append(f"{len(changed)} {what} already there had attributes changed by the source.")
    return ids, changed | {r.external_id for r in new}


def put_relations(
    session: Session,
    type_: str,
    links: dict[tuple[uuid.UUID, uuid.UUID], list[datetime]],
    ends: dict[uuid.UUID, datetime],
    report: Report,
) -> set[tuple[uuid.UUID, uuid.UUID]]:
    """``type_`` relations (source, target) → the times of their encounters (empty: a plain relation of weight
    1): valid from the first to ``ends[target]`` if given, the first encounter weighing the policy's reinforce
    and each later one reinforcing it. Existing relations are left as they are. The (source, target) made."""
    existing = relations.repo.find_edges(session, [(s, t, type_) for s, t in links])
    items, interactions, made = [], [], set()
    for (source, target), times in links.items():
        if (source, target, type_) in existing:
            continue
        made.add((source, target))
        first = min(times) if times else None
        end = ends.get(target)
        attributes = {"encounters": len(times), "last_encounter": max(times).isoformat()} if times else {}
        items.append(
            RelationCreate(
                source_id=source,
                target_id=target,
                type=type_,
                weight=TREATS_POLICY.reinforce if times else 1.0,
                attributes=attributes,
                valid_from=first,
                valid_to=end if end is not None and first is not None and end > first else None,
            )
        )
        interactions.append(sorted(times)[1:])
    relations.create_many(session, items, interactions)
    report.imported[f"{type_} relations"] += len(items)
    report.existing[f"{type_} relations"] += len(links) - len(items)
    return made


def birth_origin(birth_date: str | None) -> datetime | None:
    """Midnight UTC of a birth date: the origin of a patient's daily vitals (time index = age in days)."""
    return None if not birth_date else datetime.combine(date.fromisoformat(birth_date), time(), tzinfo=UTC)


def put_vitals(
    session: Session,
    patients: dict[str, uuid.UUID],
    origins: dict[str, datetime | None],
    readings: list[Reading],
    report: Report,
) -> None:
    """Each patient's readings into their vitals tensor (made if missing), in passes by rank within a day so that
    the last reading of a day stands and the earlier ones are in the history."""
    by_patient: dict[str, list[Reading]] = defaultdict(list)
    for reading in readings:
        by_patient[reading.patient].append(reading)
    tensor_of = _vitals_tensors(session, {p: patients[p] for p in by_patient}, origins, by_patient)
    passes: list[dict[uuid.UUID, list[dict[str, Any]]]] = []
    written = kept = superseded = 0
    for patient, found in by_patient.items():
        row = tensor_of[patient]
        grid = TimeGrid(row.origin, DAY)
        cells: dict[tuple[int, str], list[Reading]] = defaultdict(list)
        for reading in sorted(found, key=lambda r: r.at):  # stable: rows at one time keep the file's order
            cells[(grid.step_of(reading.at), reading.label)].append(reading)
        stored = _stored(session, row)
        for (index, label), day in cells.items():
            if stored.get((index, label)) == day[-1].value:
                kept += len(day)
                continue
            for rank, reading in enumerate(day):
                while len(passes) <= rank:
                    passes.append(defaultdict(list))
                passes[rank][row.id].append({"time": index, "metric": label, "value": reading.value})
            written += len(day)
            superseded += len(day) - 1
    for batch in passes:
        for tensor_id, values in batch.items():
            tensors.write_values(session, tensor_id, values)
    report.imported["vital readings"] += written
    report.existing["vital readings"] += kept
    if superseded:
        report.notes.append(
            f"{superseded} vital readings shared a day with a later reading of the same vital: the last of the day "
            "is the day's value, the earlier ones are in the tensor's history."
        )


def _vitals_tensors(
    session: Session,
    ids: dict[str, uuid.UUID],
    origins: dict[str, datetime | None],
    readings: dict[str, list[Reading]],
) -> dict[str, Any]:
    """Each patient's vitals tensor row, on the latest schema version; missing ones created from their birth (or
    first reading's) day."""
    latest = schemas.get_def(session, VITALS.name).version
    found = {p: tensor_repo.of_entity(session, entity_id, VITALS.name) for p, entity_id in ids.items()}
    missing = [p for p, rows in found.items() if not rows]
    tensors.create_many(
        session,
        [
            TensorCreate(entity_id=ids[p], schema_name=VITALS.name, origin=_origin(p, origins, readings))
            for p in missing
        ],
    )
    out = {}
    for patient, entity_id in ids.items():
        row = found[patient][0] if found[patient] else tensor_repo.of_entity(session, entity_id, VITALS.name)[0]
        if row.schema_version < latest:
            tensors.update(session, row.id, TensorUpdate(schema_version=latest))
        out[patient] = row
    return out


def _origin(patient: str, origins: dict[str, datetime | None], readings: dict[str, list[Reading]]) -> datetime:
    born = origins.get(patient)
    if born is not None:
        return born
    first = min(r.at for r in readings[patient])
    return datetime.combine(first.date(), time(), tzinfo=UTC)


def _stored(session: Session, row: Any) -> dict[tuple[int, str], float]:
    """The values a tensor holds, by (time index, label); empty for a tensor never written."""
    if row.time_max is None:
        return {}
    view = tensors.read(session, row.id)
    labels = list(view.coords[view.dims[0]])
    times = np.asarray(view.coords["time"])
    out = {}
    for k, t in zip(*np.nonzero(~np.isnan(view.values)), strict=True):
        out[(int(times[t]), str(labels[k]))] = float(view.values[k, t])
    return out
