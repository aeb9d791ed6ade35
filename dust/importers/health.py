"""The healthcare mapping shared by importers (Synthea CSV, FHIR): source records onto engine calls.

- Patients, practitioners and organizations become entities of those kinds whose external id is the source id
  (Synthea's ``Id``, which is also the FHIR resource id), so a record imported twice, from either source, is one
  entity. Conditions are the patient's ``conditions`` attribute.
- Readings (by LOINC code) go to the patient's ``vitals`` or ``labs`` tensor, daily grids in UTC from the
  patient's birth date. A reading in another UCUM unit than the label's is converted (``dust.importers.units``);
  one that does not convert is skipped with the reason. A reading falls in the day that holds it. Several readings
  of one label in one day: the last one (by time) is the day's value; the earlier ones are written first and
  replaced, so they stay in the tensor's history (one equal to its successor leaves no entry: nothing was
  replaced).
- Encounters make ``treats`` relations (practitioner → patient), valid from the first encounter (to the
  patient's death, if any), whose weight grows by the ``treats`` policy's reinforce at each encounter and decays
  with its half-life in between. Practitioners ``works_at`` their organization.

Re-running adds nothing: entities, tensors and relations are looked up by their source ids first, a reading
whose day already holds the value is left alone, and an encounter at or before a relation's ``last_encounter``
is taken as counted. A later export's new encounters reinforce the existing relation.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from dust.domains import healthcare
from dust.engine import entities, relations, schemas, tensors
from dust.engine.entities import EntityCreate, EntityUpdate
from dust.engine.relations import Interaction, RelationCreate, RelationUpdate
from dust.engine.schemas import SchemaCreate
from dust.engine.tensors import TensorCreate, TensorUpdate
from dust.engine.timegrid import TimeGrid
from dust.importers import units
from dust.importers.report import Report
from dust.storage.models import Relation
from dust.storage.repositories import entities as entity_repo
from dust.storage.repositories import tensors as tensor_repo

PATIENT, PRACTITIONER, ORGANIZATION = healthcare.PATIENT, healthcare.PRACTITIONER, healthcare.ORGANIZATION
VITALS, LABS = healthcare.VITALS, healthcare.LABS
SCHEMAS: dict[str, SchemaCreate] = {VITALS.name: VITALS, LABS.name: LABS}
# LOINC code → (schema, label): the vitals' codes and each lab's (some labs have two: blood, serum or plasma)
BY_LOINC: dict[str, tuple[str, str]] = {code: (VITALS.name, label) for label, code in healthcare.LOINC.items()} | {
    code: (LABS.name, label) for label, codes in healthcare.LAB_LOINC.items() for code in codes
}
READINGS = {VITALS.name: "vital readings", LABS.name: "lab readings"}  # what the report calls them
TREATS_POLICY = healthcare.TREATS_POLICY
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
    """One reading of a patient (by source id): a vital sign or a lab result, in the schema's unit."""

    patient: str
    schema: str
    label: str
    at: datetime
    value: float
    where: str
    converted: str | None = None  # the unit the source gave, when it was not the schema's
    decimals: int | None = None  # how many the source wrote (None: exact, e.g. computed by a conversion)


@dataclass(frozen=True)
class Measure:
    """Where a reading goes and its value in that label's unit; ``converted`` names the unit it came in."""

    schema: str
    label: str
    value: float
    converted: str | None = None


@dataclass(frozen=True)
class Encounter:
    patient: str
    practitioner: str
    start: datetime
    where: str


def person_name(*parts: str) -> str:
    """A display name from name parts, without the digits Synthea appends to make names look synthetic."""
    return " ".join(_SYNTHETIC_NUMBER.sub("", p).strip() for p in parts if p and p.strip())


def measure(code: str, unit: str, value: float) -> tuple[Measure | None, str | None]:
    """(Measure, None) for a reading of a vital sign or lab the schemas hold, converted into the label's UCUM
    unit if it came in another; else (None, why not)."""
    found = BY_LOINC.get(code)
    if found is None:
        return None, f"LOINC {code} is not one of the vitals or labs"
    schema, label = found
    axis = SCHEMAS[schema].axes[0]
    expected = axis.units[label]
    converted = units.convert(value, unit, expected, label)
    if converted is None:
        return None, f"{label} in '{unit}', which does not convert to the schema's UCUM unit '{expected}'"
    low, high = axis.ranges[label]
    if not (low <= converted <= high):
        return None, f"{label} outside its valid range [{low:g}, {high:g}] {expected}"
    return Measure(schema, label, converted, None if units.same(unit, expected) else unit), None


def prepare(session: Session) -> None:
    """The healthcare pack's schemas, kinds and ``treats`` weight policy (``healthcare.prepare``)."""
    healthcare.prepare(session)


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
) -> None:
    """``type_`` relations (source, target) → the times of their encounters (empty: a plain relation of weight
    1): valid from the first to ``ends[target]`` if given, the first encounter weighing the policy's reinforce
    and each later one reinforcing it. An existing relation gets the encounters after its ``last_encounter``."""
    existing = relations.repo.find_edges(session, [(s, t, type_) for s, t in links])
    items, interactions = [], []
    for (source, target), times in links.items():
        if (source, target, type_) in existing:
            continue
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
    if not any(links.values()):
        return
    encounters = f"encounters (as {type_} weights)"
    report.imported[encounters] += sum(len(times) for (s, t), times in links.items() if (s, t, type_) not in existing)
    old = {existing[(s, t, type_)]: times for (s, t), times in links.items() if (s, t, type_) in existing and times}
    if old:
        added, skipped = _more_encounters(session, old, report)
        report.imported[encounters] += added
        report.existing[encounters] += sum(len(times) for times in old.values()) - added - skipped


def _more_encounters(session: Session, links: dict[uuid.UUID, list[datetime]], report: Report) -> tuple[int, int]:
    """Each relation's encounters after its ``last_encounter``, as interactions (its count and last encounter
    updated); how many were added and skipped. One before the relation's last weight change cannot be recorded
    (weights are recorded in time order) and is reported as skipped."""
    added = skipped = 0
    ids = list(links)
    for start in range(0, len(ids), 500):
        rows = session.scalars(select(Relation).where(Relation.id.in_(ids[start : start + 500])))
        for row in rows:
            last = row.attributes.get("last_encounter")
            new = sorted(t for t in links[row.id] if last is None or t > datetime.fromisoformat(last))
            if not new:
                continue
            changed = relations.repo.last_change(session, row.id)
            late = [t for t in new if changed is None or t >= changed]
            for when in new[: len(new) - len(late)]:
                why = f"before the {row.type} relation's last weight change ({changed}): weights are kept in time order"
                report.skip("encounters", why, f"relation {row.id} at {when.isoformat()}")
            for when in late:
                relations.interact(session, row.id, Interaction(at=when))
            if late:
                count = int(row.attributes.get("encounters", 0)) + len(late)
                patch = {"encounters": count, "last_encounter": late[-1].isoformat()}
                relations.update(session, row.id, RelationUpdate(attributes=patch))
            added += len(late)
            skipped += len(new) - len(late)
    return added, skipped


def birth_origin(birth_date: str | None) -> datetime | None:
    """Midnight UTC of a birth date: the origin of a patient's daily vitals (time index = age in days)."""
    return None if not birth_date else datetime.combine(date.fromisoformat(birth_date), time(), tzinfo=UTC)


def put_readings(
    session: Session,
    patients: dict[str, uuid.UUID],
    origins: dict[str, datetime | None],
    readings: list[Reading],
    report: Report,
) -> None:
    """Each patient's readings into their vitals and labs tensors (made if missing), in passes by rank within a
    day so that the last reading of a day stands and the earlier ones are in the history."""
    by_schema: dict[str, list[Reading]] = defaultdict(list)
    conversions: Counter[tuple[str, str, str]] = Counter()
    for reading in readings:
        by_schema[reading.schema].append(reading)
        if reading.converted is not None:
            conversions[(reading.label, reading.converted, SCHEMAS[reading.schema].axes[0].units[reading.label])] += 1
    for schema, found in by_schema.items():
        _put_schema(session, SCHEMAS[schema], patients, origins, found, report)
    for (label, unit, expected), n in sorted(conversions.items()):
        report.notes.append(f"{n} {label} readings in '{unit}' were converted to the schema's '{expected}'.")


def _put_schema(
    session: Session,
    definition: SchemaCreate,
    patients: dict[str, uuid.UUID],
    origins: dict[str, datetime | None],
    readings: list[Reading],
    report: Report,
) -> None:
    """``put_readings`` for the readings of one schema."""
    by_patient: dict[str, list[Reading]] = defaultdict(list)
    for reading in readings:
        by_patient[reading.patient].append(reading)
    tensor_of = _tensors(session, definition.name, {p: patients[p] for p in by_patient}, origins, by_patient)
    axis = definition.axes[0].name
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
            if _same(stored.get((index, label)), day[-1]):
                kept += len(day)
                continue
            for rank, reading in enumerate(day):
                while len(passes) <= rank:
                    passes.append(defaultdict(list))
                passes[rank][row.id].append({"time": index, axis: label, "value": reading.value})
            written += len(day)
            superseded += len(day) - 1
    for batch in passes:
        for tensor_id, values in batch.items():
            tensors.write_values(session, tensor_id, values)
    what = READINGS[definition.name]
    report.imported[what] += written
    report.existing[what] += kept
    if superseded:
        report.notes.append(
            f"{superseded} {what} shared a day with a later reading of the same label: the last of the day is the "
            "day's value, the earlier ones are in the tensor's history."
        )


def _tensors(
    session: Session,
    schema: str,
    ids: dict[str, uuid.UUID],
    origins: dict[str, datetime | None],
    readings: dict[str, list[Reading]],
) -> dict[str, Any]:
    """Each patient's tensor row of ``schema``, on the latest schema version; missing ones created from their
    birth (or first reading's) day."""
    latest = schemas.get_def(session, schema).version
    found = {p: tensor_repo.of_entity(session, entity_id, schema) for p, entity_id in ids.items()}
    missing = [p for p, rows in found.items() if not rows]
    tensors.create_many(
        session,
        [TensorCreate(entity_id=ids[p], schema_name=schema, origin=_origin(p, origins, readings)) for p in missing],
    )
    out = {}
    for patient, entity_id in ids.items():
        row = found[patient][0] if found[patient] else tensor_repo.of_entity(session, entity_id, schema)[0]
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


def decimals(text: str) -> int | None:
    """How many decimals a number is written with ("17.20" → 2), None for a form that does not say."""
    mantissa = text.strip().lower().split("e")[0]
    return None if "e" in text.lower() else len(mantissa.partition(".")[2])


def _same(stored: float | None, reading: Reading) -> bool:
    """Whether the day's stored value is the reading's: equal, or more precise and equal at the reading's
    precision (Synthea's CSV rounds labs to one decimal that its FHIR bundles give in full: the fuller value is
    kept whichever source comes first, so the two never overwrite each other back and forth)."""
    if stored is None:
        return False
    if stored == reading.value:
        return True
    return reading.decimals is not None and round(stored, reading.decimals) == reading.value


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
