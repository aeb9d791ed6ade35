"""``dust import fhir FILE…``: FHIR R4 bundles (Patient, Practitioner, PractitionerRole, Organization, Encounter,
Observation, Condition) through the healthcare mapping of ``dust.importers.health``.

Each entry's resource is validated on its own with the ``fhir.resources`` models (its R4B package: version 8
ships R5, R4B and STU3, and R4B's models of these resources are R4's), so one bad resource is reported with its
file, entry and reason and the others are imported. Other resource types are counted, not read.

External ids are the resource ids, which a Synthea run shares with its CSV export (``Id`` columns), so the two
sources meet on one entity. Synthea's references are ``urn:uuid:<id>``, or conditional:
``Organization?identifier=https://github.com/synthetichealth/synthea|<id>`` (the id again) and
``Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|<npi>``; an NPI is resolved through the Practitioner
resources of the same files, else a practitioner imported before with that ``npi`` attribute.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import ijson
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from dust.core.errors import InvalidInput
from dust.importers import health
from dust.importers.health import Reading, Record
from dust.importers.report import Report
from dust.storage.models import Entity
from dust.storage.repositories import entities as entity_repo

MAPPED = ("Patient", "Practitioner", "PractitionerRole", "Organization", "Encounter", "Observation", "Condition")
SYNTHEA = "https://github.com/synthetichealth/synthea"  # the identifier system whose value is the resource id
NPI = "http://hl7.org/fhir/sid/us-npi"
LOINC = "http://loinc.org"
GENDER = {"male": "M", "female": "F"}  # as Synthea's CSV writes it, so neither source overwrites the other's
Progress = Callable[[int, int | None], None]


class BadResource(ValueError):
    """A resource this importer cannot use; the message says why."""


@dataclass
class _Found:
    """What the files hold, by resource id, before anything is written."""

    patients: dict[str, Record] = field(default_factory=dict)
    conditions: dict[str, list[tuple[dict[str, Any], str]]] = field(default_factory=lambda: defaultdict(list))
    practitioners: dict[str, Record] = field(default_factory=dict)
    npis: dict[str, str] = field(default_factory=dict)  # NPI → practitioner id
    organizations: dict[str, Record] = field(default_factory=dict)
    roles: list[tuple[tuple[str | None, str], tuple[str | None, str], str | None, str]] = field(default_factory=list)
    encounters: list[tuple[str, tuple[str | None, str], datetime, str]] = field(default_factory=list)
    readings: list[Reading] = field(default_factory=list)
    not_mapped: Counter[str] = field(default_factory=Counter)


def import_files(session: Session, paths: Sequence[Path], progress: Progress | None = None) -> Report:
    """Import the FHIR bundles in ``paths``; what was imported and skipped, with reasons."""
    if not paths:
        raise InvalidInput("No FHIR bundle given: name one or more JSON files")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise InvalidInput(f"No such file: {', '.join(missing)} (give FHIR R4 bundles as JSON files)")
    report, found = Report(), _Found()
    total, done = sum(p.stat().st_size for p in paths), 0
    for path in paths:
        for share in _read_file(path, found, report):
            if progress:
                progress(done + int(share * path.stat().st_size), total)
        done += path.stat().st_size
    if progress:
        progress(total, total)
    health.prepare(session)
    _write(session, found, report)
    if found.not_mapped:
        counts = ", ".join(f"{n} {kind}" for kind, n in sorted(found.not_mapped.items()))
        report.notes.append(f"Not read (not mapped yet): {counts}.")
    return report


def _read_file(path: Path, found: _Found, report: Report) -> Iterator[float]:
    """Each entry of the bundle in ``path`` into ``found``; yields the share of the file read, now and then.

    Two streaming passes (ijson, in C): the first checks that the file is JSON and a Bundle without building
    anything, so a bad file is skipped before any of it is taken; the second builds one entry at a time.
    """
    try:
        with path.open("rb") as file:
            kinds = list(ijson.items(file, "resourceType"))  # the top-level one; parses to the end
    except (OSError, ijson.JSONError, UnicodeDecodeError) as problem:
        report.skip("files", f"not JSON ({str(problem).splitlines()[0][:80]})", path.name)
        return
    if kinds[:1] != ["Bundle"]:
        report.skip("files", "not a FHIR Bundle (no resourceType 'Bundle' at the top)", path.name)
        return
    size = max(1, path.stat().st_size)
    with path.open("rb") as file:
        for index, entry in enumerate(ijson.items(file, "entry.item", use_float=True)):
            _entry(entry, found, report, f"{path.name} entry[{index}]")
            if index % 500 == 499:
                yield file.tell() / size
    yield 1.0


def _entry(entry: Any, found: _Found, report: Report, where: str) -> None:
    """One bundle entry's resource, validated, into ``found``; a bad one reported."""
    resource = entry.get("resource") if isinstance(entry, dict) else None
    kind = resource.get("resourceType") if isinstance(resource, dict) else None
    if kind not in MAPPED:
        if isinstance(kind, str):
            found.not_mapped[kind] += 1
        else:
            report.skip("bundle entries", "no resource with a resourceType", where)
        return
    try:
        _take(get_fhir_model_class(kind).model_validate(resource), found, report, where)
    except ValidationError as problem:
        report.skip(f"{kind} resources", _invalid(problem), where)
    except BadResource as problem:
        report.skip(f"{kind} resources", str(problem), where)


def _invalid(problem: ValidationError) -> str:
    first = problem.errors()[0]
    place = ".".join(str(part) for part in first["loc"]) or "the resource"
    more = f" (and {problem.error_count() - 1} more)" if problem.error_count() > 1 else ""
    return f"not valid FHIR R4: {place}: {first['msg']}{more}"


def _take(resource: Any, found: _Found, report: Report, where: str) -> None:
    """One validated resource into ``found``."""
    kind = resource.get_resource_type()
    if not resource.id:
        raise BadResource("no id (the resource id is the external id)")
    if kind == "Patient":
        found.patients.setdefault(resource.id, _patient(resource))
    elif kind == "Practitioner":
        record = Record(health.PRACTITIONER, resource.id, _name(resource.name, prefix=False), _person(resource))
        found.practitioners.setdefault(resource.id, record)
        for npi in (i.value for i in resource.identifier or [] if i.system == NPI and i.value):
            found.npis[npi] = resource.id
            record.attributes.setdefault("npi", npi)
    elif kind == "Organization":
        found.organizations.setdefault(resource.id, _organization(resource))
    elif kind == "PractitionerRole":
        if resource.practitioner is None or resource.organization is None:
            raise BadResource("no practitioner or no organization")
        specialty = next((s.text for s in resource.specialty or [] if s.text), None)
        found.roles.append((_ref(resource.practitioner), _ref(resource.organization), specialty, where))
    elif kind == "Encounter":
        found.encounters.append(_encounter(resource, where))
    elif kind == "Condition":
        patient, condition = _condition(resource)
        found.conditions[patient].append((condition, where))
    else:
        found.readings.extend(_readings(resource, report, where))


def _ref(reference: Any) -> tuple[str | None, str]:
    """(identifier system, value) of a Reference; system None when the value is the resource id itself."""
    if reference.reference:
        text = reference.reference
        if text.startswith("urn:uuid:"):
            return None, text.removeprefix("urn:uuid:")
        if "?identifier=" in text:
            system, _, value = text.partition("?identifier=")[2].rpartition("|")
            return (None if system == SYNTHEA else system or None), value
        return None, text.rpartition("/")[2]
    if reference.identifier is not None and reference.identifier.value:
        system = reference.identifier.system
        return (None if system == SYNTHEA else system), reference.identifier.value
    raise BadResource("a reference with neither a reference nor an identifier")


def _subject(resource: Any) -> str:
    if resource.subject is None:
        raise BadResource("no subject (the patient)")
    system, value = _ref(resource.subject)
    if system is not None:
        raise BadResource(f"subject by {system} identifier: only the patient's resource id is resolved")
    return value


def _utc(moment: Any, what: str) -> datetime:
    """A FHIR dateTime as an aware UTC time; a bare date is its midnight UTC."""
    if isinstance(moment, datetime):
        return moment.astimezone(UTC)
    if isinstance(moment, date):
        return datetime.combine(moment, time(), tzinfo=UTC)
    raise BadResource(f"no {what}")


def _day(moment: Any) -> str | None:
    """The date a dateTime names, as written (Synthea's CSV dates are the same local dates)."""
    if moment is None:
        return None
    return (moment.date() if isinstance(moment, datetime) else moment).isoformat()


def _name(names: Any, *, prefix: bool) -> str:
    if not names:
        raise BadResource("no name")
    name = next((n for n in names if n.use == "official"), names[0])
    parts = [*(name.prefix or [] if prefix else []), *(name.given or []), name.family or "", *(name.suffix or [])]
    return health.person_name(*parts)


def _person(resource: Any) -> dict[str, Any]:
    return {"gender": GENDER[resource.gender]} if resource.gender in GENDER else {}


def _patient(resource: Any) -> Record:
    if resource.birthDate is None or resource.gender is None:
        raise BadResource("no birthDate or no gender")
    attributes: dict[str, Any] = {"birth_date": _day(resource.birthDate), "gender": GENDER.get(resource.gender)}
    if attributes["gender"] is None:
        attributes["gender"] = resource.gender
    if resource.deceasedDateTime is not None:
        attributes["death_date"] = _day(resource.deceasedDateTime)
    address = (resource.address or [None])[0]
    if address is not None:
        attributes |= {k: v for k, v in (("city", address.city), ("zip", address.postalCode)) if v}
    return Record(health.PATIENT, resource.id, _name(resource.name, prefix=True), attributes)


def _organization(resource: Any) -> Record:
    if not resource.name:
        raise BadResource("no name")
    attributes: dict[str, Any] = {}
    address = (resource.address or [None])[0]
    if address is not None:
        # Synthea's CSV writes a comma in text as a space: the same here, so the sources never undo each other
        line = (address.line or [None])[0]
        line = line.replace(",", " ") if line else None
        fields = (("address", line), ("city", address.city), ("state", address.state), ("zip", address.postalCode))
        attributes |= {k: v for k, v in fields if v}
    phone = next((t.value for t in resource.telecom or [] if t.system == "phone" and t.value), None)
    if phone:
        attributes["phone"] = phone
    return Record(health.ORGANIZATION, resource.id, resource.name, attributes)


def _encounter(resource: Any, where: str) -> tuple[str, tuple[str | None, str], datetime, str]:
    patient = _subject(resource)
    if resource.period is None or resource.period.start is None:
        raise BadResource("no period.start")
    performers = [p for p in resource.participant or [] if p.individual is not None]
    primary = [p for p in performers if any(c.code == "PPRF" for t in p.type or [] for c in t.coding or [])]
    if not performers:
        raise BadResource("no participant with an individual (the practitioner)")
    return patient, _ref((primary or performers)[0].individual), _utc(resource.period.start, "period.start"), where


def _condition(resource: Any) -> tuple[str, dict[str, Any]]:
    patient = _subject(resource)
    coding = next((c for c in (resource.code.coding if resource.code else None) or [] if c.code), None)
    if coding is None:
        raise BadResource("no code")
    start = _day(resource.onsetDateTime)
    if start is None:
        raise BadResource("no onsetDateTime")
    description = resource.code.text or coding.display or coding.code
    return patient, {
        "code": coding.code,
        "description": description,
        "start": start,
        "stop": _day(resource.abatementDateTime),
    }


def _readings(resource: Any, report: Report, where: str) -> Iterator[Reading]:
    """The vital-sign and lab readings of an Observation: its own value and its components' (a blood-pressure
    panel holds systolic and diastolic as components)."""
    patient = _subject(resource)
    parts = [(resource.code, resource.valueQuantity), *((c.code, c.valueQuantity) for c in resource.component or [])]
    known = [(code, quantity) for concept, quantity in parts if (code := _loinc(concept)) in health.BY_LOINC]
    if not known:
        category = next((c.code for cat in resource.category or [] for c in cat.coding or [] if c.code), None)
        report.skip(
            "observations (not vitals or labs)",
            f"LOINC code not among the vitals' or labs' ({category or 'no category'})",
            where,
        )
        return
    moment = resource.effectiveDateTime or resource.effectiveInstant
    if moment is None and resource.effectivePeriod is not None:
        moment = resource.effectivePeriod.start
    at = _utc(moment, "effective time")
    for code, quantity in known:
        if quantity is None or quantity.value is None:
            raise BadResource(f"LOINC {code} has no valueQuantity")
        found, why = health.measure(code, quantity.code or quantity.unit or "", float(quantity.value))
        if found is None:
            raise BadResource(str(why))
        places = None if found.converted else health.decimals(repr(float(quantity.value)))
        yield Reading(patient, found.schema, found.label, at, found.value, where, found.converted, places)


def _loinc(concept: Any) -> str | None:
    return next((c.code for c in (concept.coding if concept else None) or [] if c.system == LOINC), None)


def _write(session: Session, found: _Found, report: Report) -> None:
    """Entities, then relations, then vitals and labs, through the healthcare mapping."""
    for patient, conditions in found.conditions.items():
        if patient not in found.patients:
            for _, where in conditions:
                report.skip("Condition resources", "the patient is not in these bundles", where)
    for patient_id, record in found.patients.items():
        listed = sorted(found.conditions.get(patient_id, []), key=lambda c: (c[0]["start"], c[0]["code"]))
        record.attributes["conditions"] = [c for c, _ in listed]
    organizations, _ = health.put_entities(session, list(found.organizations.values()), report, "organizations")
    resolve = _Practitioners(session, found)
    works = _works_at(found, resolve, report)
    for practitioner_id, specialty in works.specialties.items():
        found.practitioners[practitioner_id].attributes.setdefault("speciality", specialty)
    practitioners, _ = health.put_entities(session, list(found.practitioners.values()), report, "practitioners")
    patients, fresh = health.put_entities(session, list(found.patients.values()), report, "patients")
    for patient_id in found.patients:
        n = len(found.conditions.get(patient_id, []))
        (report.imported if patient_id in fresh else report.existing)["conditions"] += n
    known = _Patients(session, patients, found)
    links: dict[tuple[Any, Any], list[datetime]] = {
        (practitioners[p], organizations[o]): []
        for p, o in works.links
        if p in practitioners and o in organizations  # one that is not was reported by _works_at
    }
    health.put_relations(session, "works_at", links, {}, report)
    _treats(session, found, resolve, known, report)
    readings = []
    for reading in found.readings:
        if known.id(reading.patient) is None:
            report.skip("Observation resources", "the patient is not in these bundles or the database", reading.where)
        else:
            readings.append(reading)
    health.put_readings(session, known.ids, known.origins, readings, report)


class _Practitioners:
    """Practitioner ids from references: the resource id, or an NPI found in the files or on a practitioner
    imported before."""

    def __init__(self, session: Session, found: _Found) -> None:
        self.session, self.found, self.cache = session, found, dict(found.npis)

    def __call__(self, reference: tuple[str | None, str]) -> str | None:
        system, value = reference
        if system is None:
            return value
        if system != NPI:
            return None
        if value not in self.cache:
            stmt = entity_repo.filtered(self.session, select(Entity.external_id), health.PRACTITIONER, {"npi": value})
            self.cache[value] = self.session.scalars(stmt.limit(1)).first()  # type: ignore[assignment]
        return self.cache[value]


@dataclass
class _WorksAt:
    links: list[tuple[str, str]]
    specialties: dict[str, str]


def _works_at(found: _Found, resolve: _Practitioners, report: Report) -> _WorksAt:
    """(practitioner, organization) ids from the PractitionerRoles, and each role's specialty, upper-cased as
    Synthea's CSV writes it."""
    out = _WorksAt([], {})
    for practitioner_ref, organization_ref, specialty, where in found.roles:
        practitioner, (system, organization) = resolve(practitioner_ref), organization_ref
        if practitioner is None or practitioner not in found.practitioners:
            report.skip("PractitionerRole resources", "the practitioner is not in these bundles", where)
        elif system is not None or organization not in found.organizations:
            report.skip("PractitionerRole resources", "the organization is not in these bundles", where)
        else:
            out.links.append((practitioner, organization))
            if specialty:
                out.specialties[practitioner] = specialty.upper()
    return out


class _Patients:
    """Patients by resource id: those of the files and, for references to others, those imported before."""

    def __init__(self, session: Session, ids: dict[str, Any], found: _Found) -> None:
        self.session, self.looked_up = session, dict(ids)
        self.attributes = {p: r.attributes for p, r in found.patients.items()}
        self.origins = {p: health.birth_origin(a.get("birth_date")) for p, a in self.attributes.items()}

    def id(self, patient: str) -> Any:
        """The entity id of a patient, None if neither the files nor the database have it."""
        if patient not in self.looked_up:
            row = entity_repo.by_external_id(self.session, health.PATIENT, patient)
            self.looked_up[patient] = None if row is None else row.id
            if row is not None:
                self.attributes[patient] = row.attributes
                self.origins[patient] = health.birth_origin(row.attributes.get("birth_date"))
        return self.looked_up[patient]

    @property
    def ids(self) -> dict[str, Any]:
        """The patients found (put_readings takes each one it is given as having readings)."""
        return {p: i for p, i in self.looked_up.items() if i is not None}


def _treats(session: Session, found: _Found, resolve: _Practitioners, known: _Patients, report: Report) -> None:
    """``treats`` relations from the encounters: one per practitioner and patient, reinforced by each encounter."""
    practitioners: dict[str, Any] = {}
    links: dict[tuple[Any, Any], list[datetime]] = defaultdict(list)
    for patient, reference, start, where in found.encounters:
        practitioner = resolve(reference)
        if practitioner is not None and practitioner not in practitioners:
            row = entity_repo.by_external_id(session, health.PRACTITIONER, practitioner)
            practitioners[practitioner] = None if row is None else row.id
        if known.id(patient) is None:
            report.skip("Encounter resources", "the patient is not in these bundles or the database", where)
        elif practitioner is None or practitioners[practitioner] is None:
            why = f"the practitioner ({reference[1]}) is not in these bundles or the database"
            report.skip("Encounter resources", why, where)
        else:
            links[(practitioners[practitioner], known.id(patient))].append(start)
    ends = {}
    for patient, attributes in known.attributes.items():
        died = health.birth_origin(attributes.get("death_date"))
        if died is not None and known.id(patient) is not None:
            ends[known.id(patient)] = died
    health.put_relations(session, "treats", dict(links), ends, report)
