"""Healthcare: patients, practitioners (doctors and nurses) and organizations; daily vitals and labs; who treats
whom, who works where, and who was referred to which specialist.

The vocabulary is the one imported records use (``dust import synthea``/``fhir``, the FHIR resource names):
kinds ``patient``, ``practitioner`` (attribute ``role``: ``doctor`` or ``nurse``; doctors have a ``speciality``,
upper-cased as Synthea writes it) and ``organization``; relations ``treats`` (practitioner → patient, weighted by
encounters: the ``treats`` weight policy below), ``works_at`` (practitioner → organization) and ``referred_to``
(patient → the specialist practitioner a doctor referred them to; attribute ``referred_by``). Conditions are the
patient's ``conditions`` attribute, ``[{code, description, start, stop}]`` with SNOMED CT codes.

The generator draws vitals around adult reference values (heart rate ~72 bpm, BP ~120/80 mmHg, temperature
~36.8 °C, SpO2 ~97 %, respiratory rate ~15/min) with a per-patient baseline and day-to-day noise, kept inside the
rules' thresholds, and labs about monthly; conditions shift them (hypertension: BP; diabetes: glucose, HbA1c;
chronic kidney disease: creatinine, eGFR; hyperlipidemia: LDL). ``Plan`` says where the anomalies are planted,
so the rules alert exactly those patients and their care teams.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from dust.core.errors import Conflict
from dust.domains import DomainPack, load_rules
from dust.engine import entities, kinds, relations, schemas, tensors, weights
from dust.engine.entities import EntityCreate
from dust.engine.kinds import KindPolicy
from dust.engine.relations import RelationCreate
from dust.engine.schemas import SchemaCreate, SchemaUpdate
from dust.engine.tensors import TensorCreate
from dust.storage.repositories import entities as entity_repo

PATIENT, PRACTITIONER, ORGANIZATION = "patient", "practitioner", "organization"
TREATS, WORKS_AT, REFERRED_TO = "treats", "works_at", "referred_to"
# LOINC code of each vitals label (the vital-signs panel of HL7 FHIR's Observation vital signs profile): how
# importers (dust.importers.health) find a reading's label. The schema model has no per-label metadata, so the
# codes live here and in the schema's description.
LOINC = {
    "heart_rate": "8867-4",
    "systolic_bp": "8480-6",
    "diastolic_bp": "8462-4",
    "temperature": "8310-5",
    "spo2": "2708-6",
    "respiratory_rate": "9279-1",
    "weight": "29463-7",
    "height": "8302-2",
    "bmi": "39156-5",
}
VITALS = SchemaCreate.model_validate(
    {
        "name": "vitals",
        "description": "Daily vital signs (UCUM units); LOINC "
        + ", ".join(f"{label} {code}" for label, code in LOINC.items())
        + ".",
        "axes": [
            {
                "name": "metric",
                "labels": list(LOINC),
                "units": {
                    "heart_rate": "/min",
                    "systolic_bp": "mm[Hg]",
                    "diastolic_bp": "mm[Hg]",
                    "temperature": "Cel",
                    "spo2": "%",
                    "respiratory_rate": "/min",
                    "weight": "kg",
                    "height": "cm",
                    "bmi": "kg/m2",
                },
                "ranges": {
                    "heart_rate": [0, 300],
                    "systolic_bp": [0, 300],
                    "diastolic_bp": [0, 200],
                    "temperature": [25, 45],
                    "spo2": [0, 100],
                    "respiratory_rate": [0, 80],
                    "weight": [0, 700],
                    "height": [0, 300],
                    "bmi": [0, 250],
                },
            }
        ],
        "time": {"unit": "day", "step": 1},
    }
)
# The laboratory tests Synthea records most (its observations.csv, category laboratory, 100+ rows each on the
# shared export): label → (LOINC codes, UCUM unit, valid range). The first code is the label's own; a second one
# is the same analyte measured in serum or plasma (Synthea writes both), read into the same label. Ranges bound
# what a body can hold, not what is normal: they reject typing errors, not illness.
_LABS: dict[str, tuple[tuple[str, ...], str, tuple[float, float]]] = {
    "glucose": (("2339-0", "2345-7"), "mg/dL", (0, 3000)),
    "hba1c": (("4548-4",), "%", (0, 25)),
    "urea_nitrogen": (("6299-2", "3094-0"), "mg/dL", (0, 300)),
    "creatinine": (("38483-4", "2160-0"), "mg/dL", (0, 40)),
    "egfr": (("33914-3",), "mL/min/{1.73_m2}", (0, 300)),
    "calcium": (("49765-1", "17861-6"), "mg/dL", (0, 30)),
    "sodium": (("2947-0", "2951-2"), "mmol/L", (0, 250)),
    "potassium": (("6298-4", "2823-3"), "mmol/L", (0, 20)),
    "chloride": (("2069-3", "2075-0"), "mmol/L", (0, 250)),
    "carbon_dioxide": (("20565-8", "2028-9"), "mmol/L", (0, 100)),
    "cholesterol_total": (("2093-3",), "mg/dL", (0, 2000)),
    "ldl": (("18262-6",), "mg/dL", (0, 1500)),
    "hdl": (("2085-9",), "mg/dL", (0, 300)),
    "triglycerides": (("2571-8",), "mg/dL", (0, 20000)),
    "hemoglobin": (("718-7",), "g/dL", (0, 30)),
    "hematocrit": (("4544-3",), "%", (0, 100)),
    "leukocytes": (("6690-2",), "10*3/uL", (0, 500)),
    "erythrocytes": (("789-8",), "10*6/uL", (0, 15)),
    "platelets": (("777-3",), "10*3/uL", (0, 3000)),
    "mcv": (("787-2",), "fL", (0, 200)),
    "mch": (("785-6",), "pg", (0, 100)),
    "mchc": (("786-4",), "g/dL", (0, 60)),
    "rdw": (("21000-5",), "fL", (0, 200)),
    "mpv": (("32623-1",), "fL", (0, 50)),
    "pdw": (("32207-3",), "fL", (0, 1000)),
    "albumin": (("1751-7",), "g/dL", (0, 10)),
    "protein_total": (("2885-2",), "g/dL", (0, 20)),
    "bilirubin_total": (("1975-2",), "mg/dL", (0, 50)),
    "alkaline_phosphatase": (("6768-6",), "U/L", (0, 5000)),
    "alt": (("1742-6",), "U/L", (0, 10000)),
    "ast": (("1920-8",), "U/L", (0, 10000)),
}
LAB_LOINC = {label: codes for label, (codes, _, _) in _LABS.items()}
LABS = SchemaCreate.model_validate(
    {
        "name": "labs",
        "description": "Laboratory results, one value a day (UCUM units); LOINC "
        + ", ".join(f"{label} {'/'.join(codes)}" for label, codes in LAB_LOINC.items())
        + ".",
        "axes": [
            {
                "name": "test",
                "labels": list(_LABS),
                "units": {label: unit for label, (_, unit, _) in _LABS.items()},
                "ranges": {label: list(bounds) for label, (_, _, bounds) in _LABS.items()},
            }
        ],
        "time": {"unit": "day", "step": 1},
    }
)
# One encounter adds 1; a year without one halves the weight; at most 10 (a long-standing, frequent carer).
TREATS_POLICY = weights.PolicySet(reinforce=1.0, half_life="P365D", cap=10.0, floor=0.0)
# What de-identified readers (analysts) may not see. A patient's name, record number and birth date identify
# them (HIPAA Safe Harbor lists names, record numbers and dates) and are among DUST_SENSITIVE_FIELDS (name,
# external id, ssn, address, birth date, phone, email); a practitioner's or organization's name identifies no
# patient.
POLICIES = {
    PATIENT: KindPolicy(description="A person receiving care."),
    PRACTITIONER: KindPolicy(
        description="A clinician (role: doctor or nurse); linked users see the patients they treat.", public=["name"]
    ),
    ORGANIZATION: KindPolicy(description="A place of care.", public=["name", "external_id"]),
}
MARKER = (ORGANIZATION, "demo-organization-1")
# SNOMED CT codes and descriptions as Synthea writes them; how common each is in the demo; the speciality a
# patient with it may be referred to.
CONDITIONS = {
    "hypertension": ("59621000", "Essential hypertension", 0.25, "CARDIOLOGY"),
    "diabetes": ("44054006", "Diabetes mellitus type 2", 0.10, "ENDOCRINOLOGY"),
    "hyperlipidemia": ("55822004", "Hyperlipidemia", 0.15, None),
    "ckd": ("431855005", "Chronic kidney disease stage 1", 0.05, "NEPHROLOGY"),
}
# Doctors' specialities by turns: two in five are general practitioners, who see every patient.
SPECIALITIES = ["GENERAL PRACTICE", "GENERAL PRACTICE", "CARDIOLOGY", "ENDOCRINOLOGY", "NEPHROLOGY"]
# mean, between-patient sd, day-to-day sd per metric (the first six labels of VITALS)
_REFERENCE = np.array([[72, 8, 4], [120, 12, 6], [78, 7, 4], [36.8, 0.2, 0.15], [97.5, 1.0, 0.6], [15, 2, 1.2]])
# Where unplanted values are kept, just inside the rules' thresholds, so that only planted episodes alert.
_CALM = np.array([[50, 99], [92, 175], [50, 110], [35.8, 37.9], [93, 100], [10, 24]])
# The labs the demo draws (about monthly): mean, between-patient sd, sd between draws.
_LAB_REFERENCE = {
    "glucose": (90, 8, 6),
    "hba1c": (5.4, 0.3, 0.1),
    "creatinine": (0.9, 0.15, 0.05),
    "egfr": (95, 10, 4),
    "sodium": (140, 2, 1),
    "potassium": (4.2, 0.3, 0.2),
    "cholesterol_total": (185, 25, 8),
    "ldl": (105, 20, 6),
    "hdl": (55, 10, 3),
    "hemoglobin": (14, 1.2, 0.4),
}
_CONDITION_SHIFTS: dict[str, dict[str, float]] = {  # what a condition does to a patient's baseline
    "hypertension": {"systolic_bp": 22, "diastolic_bp": 10},
    "diabetes": {"glucose": 70, "hba1c": 2.4},
    "ckd": {"creatinine": 1.1, "egfr": -40},
    "hyperlipidemia": {"ldl": 60, "cholesterol_total": 65},
}
# First names by the gender a patient's record carries; practitioners draw from both.
_FIRST = {
    "F": ["Jane", "Maria", "Aisha", "Sofia", "Yuki", "Elena", "Priya", "Fatima", "Ana", "Zara"],
    "M": ["John", "Wei", "Lucas", "Omar", "Kwame", "Noah", "Liam", "Ivan", "Mateo", "Kenji"],
}
# No "Doe": the only Does are the two Jane Does below, so a search for "jane doe" shows just the two of them.
_LAST = [
    "Smith",
    "Garcia",
    "Wang",
    "Khan",
    "Silva",
    "Rossi",
    "Haddad",
    "Tanaka",
    "Petrova",
    "Mensah",
    "Patel",
    "Jones",
    "Ali",
    "Brown",
    "Li",
    "Costa",
    "Novak",
    "Ahmed",
    "Lopez",
]
_PLACES = ["Riverside", "Hillcrest", "Lakeview", "Oakwood", "Meadowbrook", "Northgate", "Harbour", "Elm Park"]
# The case a name alone cannot settle: the first two patients are both Jane Doe, told apart by id, record number
# and birth date.
JANE_DOES = [{"gender": "F", "birth_date": "1984-03-12"}, {"gender": "F", "birth_date": "1961-08-30"}]
BATCH = 500  # patients written together: a few statements per batch, and the progress bar moves


@dataclass(frozen=True)
class Plan:
    """How many of each the generator makes, who cares for whom, and where anomalies are planted (0-based
    indices; patient ``p`` has external id ``MRN-<100000 + p>``, doctor ``d`` ``demo-doctor-<d + 1>``)."""

    patients: int
    days: int

    @property
    def organizations(self) -> int:
        return max(2, self.patients // 1000)

    @property
    def doctors(self) -> int:
        return max(len(SPECIALITIES), self.patients // 10)

    @property
    def nurses(self) -> int:
        return max(2, self.patients // 20)

    def gp(self, p: int) -> int:
        """Patient ``p``'s general practitioner (doctors 0, 1, 5, 6, 10, …)."""
        count = 2 * (self.doctors // 5) + min(self.doctors % 5, 2)
        k = p % count
        return 5 * (k // 2) + k % 2

    def specialist(self, p: int, speciality: str) -> int:
        """The doctor of ``speciality`` patient ``p`` is referred to."""
        j = SPECIALITIES.index(speciality)
        count = self.doctors // 5 + (1 if self.doctors % 5 > j else 0)
        return 5 * (p % count) + j

    def nurse(self, p: int) -> int:
        return p % self.nurses

    def episodes(self, p: int) -> list[str]:
        """The anomalies planted in patient ``p``'s data, each of which one of the pack's rules alerts on: a fever
        (one patient in twenty), and one in fifty each of hypotension, low SpO2, tachycardia and high potassium."""
        planted = {"fever": p % 20 == 3, "hypotension": p % 50 == 17, "spo2_drop": p % 50 == 29}
        planted |= {"tachycardia": p % 50 == 41, "hyperkalemia": p % 50 == 7}
        return [name for name, there in planted.items() if there]

    def episode_start(self, p: int) -> int:
        """The day a planted episode starts: in the last ten days, so a tour finds it near the end."""
        return max(0, self.days - 10 + p % 5)


def generate(
    session: Session, size: int = 50, days: int = 90, seed: int = 7, progress: Callable[[int], None] | None = None
) -> dict[str, int]:
    """Organizations, doctors, nurses and ``size`` patients with ``days`` of daily vitals and monthly labs;
    returns what was made."""
    if entity_repo.by_external_id(session, "hospital", "demo-hospital-1") is not None:
        raise Conflict(
            "this database holds the earlier healthcare demo (kinds doctor and hospital); load the demo into a new "
            "database (DUST_DATABASE_URL)"
        )
    rng = np.random.default_rng(seed)
    plan = Plan(size, days)
    prepare(session)
    load_rules(session, PACK)  # before the data: the planted episodes raise alerts
    origin = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days)
    staff = _staff(session, plan, rng)
    made = {"relations": plan.doctors + plan.nurses, "referrals": 0, "values": 0}
    for start in range(0, size, BATCH):
        batch = range(start, min(size, start + BATCH))
        counts = _patients(session, plan, batch, staff, origin, rng)
        made = {what: made[what] + counts.get(what, 0) for what in made}
        if progress:
            progress(len(batch))
    return {"organizations": plan.organizations, "doctors": plan.doctors, "nurses": plan.nurses} | {
        "patients": size,
        **made,
    }


def prepare(session: Session) -> None:
    """The schemas with every label, the kinds' field policies and the ``treats`` weight policy (a policy someone
    set already is kept)."""
    for definition in (VITALS, LABS):
        if schemas.repo.latest(session, definition.name) is None:
            schemas.create(session, definition)
            continue
        current = schemas.get_def(session, definition.name)
        have, want = current.axes[0], definition.axes[0]
        missing = [label for label in want.labels if label not in have.labels]
        if missing:  # e.g. vitals from before weight, height and BMI: a new, compatible version appends them
            axis = have.model_dump() | {
                "labels": [*have.labels, *missing],
                "units": want.units | have.units,
                "ranges": want.ranges | have.ranges,
            }
            update = SchemaUpdate.model_validate({"description": definition.description, "axes": [axis]})
            schemas.publish(session, definition.name, update)
    for kind, policy in POLICIES.items():
        kinds.put(session, kind, policy)
    if weights.policy(session, TREATS) is None:
        weights.put_policy(session, TREATS, TREATS_POLICY)


@dataclass
class _Staff:
    doctors: list[uuid.UUID]
    nurses: list[uuid.UUID]


def _staff(session: Session, plan: Plan, rng: np.random.Generator) -> _Staff:
    """The organizations, and the doctors and nurses who work at them by turns."""
    names = ["St. Mary's General", "Riverside Clinic"] + [
        f"{_PLACES[i % len(_PLACES)]} Community Hospital{'' if i < len(_PLACES) else f' {i // len(_PLACES) + 1}'}"
        for i in range(plan.organizations - 2)
    ]
    organizations = entities.create_many(
        session,
        [
            EntityCreate(kind=ORGANIZATION, name=n, external_id=f"demo-organization-{i + 1}")
            for i, n in enumerate(names)
        ],
    )
    doctors = entities.create_many(
        session,
        [
            EntityCreate(
                kind=PRACTITIONER,
                name=f"Dr. {_name(rng, str(rng.choice(['F', 'M'])))}",
                external_id=f"demo-doctor-{d + 1}",
                attributes={"role": "doctor", "speciality": SPECIALITIES[d % len(SPECIALITIES)]},
            )
            for d in range(plan.doctors)
        ],
    )
    nurses = entities.create_many(
        session,
        [
            EntityCreate(
                kind=PRACTITIONER,
                name=_name(rng, str(rng.choice(["F", "M"]))),
                external_id=f"demo-nurse-{n + 1}",
                attributes={"role": "nurse"},
            )
            for n in range(plan.nurses)
        ],
    )
    relations.create_many(
        session,
        [
            RelationCreate(source_id=person.id, target_id=organizations[i % len(organizations)].id, type=WORKS_AT)
            for group in (doctors, nurses)
            for i, person in enumerate(group)
        ],
    )
    return _Staff([d.id for d in doctors], [n.id for n in nurses])


def _patients(
    session: Session, plan: Plan, batch: range, staff: _Staff, origin: datetime, rng: np.random.Generator
) -> dict[str, int]:
    """One batch of patients: entities, care relations, and their vitals and labs tensors written."""
    drawn = [_patient(rng, p, origin) for p in batch]
    made = entities.create_many(session, [entity for entity, _ in drawn])
    links: list[tuple[RelationCreate, list[datetime]]] = []
    for p, patient, (_, conditions) in zip(batch, made, drawn, strict=True):
        links.extend(_care(plan, p, patient.id, conditions, staff, origin, rng))
    referrals = sum(1 for link, _ in links if link.type == REFERRED_TO)
    relations.create_many(session, [link for link, _ in links], [times for _, times in links])
    made_tensors = tensors.create_many(
        session,
        [TensorCreate(entity_id=e.id, schema_name=name, origin=origin) for e in made for name in ("vitals", "labs")],
    )
    arrays: dict[uuid.UUID, np.ndarray] = {}
    for i, (p, (_, conditions)) in enumerate(zip(batch, drawn, strict=True)):
        vitals, labs = _measurements(rng, plan, p, conditions)
        arrays[made_tensors[2 * i].id] = vitals
        arrays[made_tensors[2 * i + 1].id] = labs
    written = tensors.write_arrays(session, arrays)
    return {"relations": len(links), "referrals": referrals, "values": sum(written.values())}


def _patient(rng: np.random.Generator, p: int, origin: datetime) -> tuple[EntityCreate, list[str]]:
    """Patient ``p``: one of the Jane Does, or a first name that fits the gender on record, a birth date and
    conditions (the Jane Does have none); and the conditions' keys."""
    if p < len(JANE_DOES):
        attributes: dict[str, Any] = dict(JANE_DOES[p]) | {"conditions": []}
        return EntityCreate(kind=PATIENT, name="Jane Doe", external_id=_mrn(p), attributes=attributes), []
    gender = str(rng.choice(["F", "M"]))
    born = date(1940, 1, 1) + timedelta(days=int(rng.integers(0, 70 * 365)))
    found = [key for key, (_, _, share, _) in CONDITIONS.items() if rng.random() < share]
    listed = []
    for key in found:
        code, description, _, _ = CONDITIONS[key]
        onset = max(born, (origin - timedelta(days=int(rng.integers(200, 3000)))).date())
        listed.append({"code": code, "description": description, "start": onset.isoformat(), "stop": None})
    attributes = {"gender": gender, "birth_date": born.isoformat(), "conditions": listed}
    return EntityCreate(kind=PATIENT, name=_name(rng, gender), external_id=_mrn(p), attributes=attributes), found


def _mrn(p: int) -> str:
    return f"MRN-{100000 + p}"


def _name(rng: np.random.Generator, gender: str) -> str:
    return f"{rng.choice(_FIRST[gender])} {rng.choice(_LAST)}"


def _care(
    plan: Plan,
    p: int,
    patient: uuid.UUID,
    conditions: list[str],
    staff: _Staff,
    origin: datetime,
    rng: np.random.Generator,
) -> Iterator[tuple[RelationCreate, list[datetime]]]:
    """Patient ``p``'s care relations with their encounters: their GP over the last year, their nurse in the
    last weeks, and for a condition with a speciality, one time in two, a referral to a specialist, who has seen
    them since in two referrals of three."""
    end = origin + timedelta(days=plan.days - 1)
    yield _treats(staff.doctors[plan.gp(p)], patient, _times(rng, end - timedelta(days=365), end, 1 + rng.poisson(3)))
    yield _treats(staff.nurses[plan.nurse(p)], patient, _times(rng, origin, end, 1 + rng.poisson(5)))
    for key in conditions:
        speciality = CONDITIONS[key][3]
        if speciality is None or rng.random() >= 0.5:
            continue
        specialist = staff.doctors[plan.specialist(p, speciality)]
        on = origin + timedelta(days=int(rng.integers(0, max(1, plan.days - 14))))
        attributes = {"referred_by": str(staff.doctors[plan.gp(p)]), "reason": CONDITIONS[key][1]}
        yield (
            RelationCreate(
                source_id=patient, target_id=specialist, type=REFERRED_TO, attributes=attributes, valid_from=on
            ),
            [],
        )
        if rng.random() < 2 / 3:
            yield _treats(specialist, patient, _times(rng, on + timedelta(days=1), end, 1 + rng.poisson(1)))
        break  # one referral a patient: the first condition that calls for one


def _treats(
    practitioner: uuid.UUID, patient: uuid.UUID, times: list[datetime]
) -> tuple[RelationCreate, list[datetime]]:
    """A ``treats`` relation valid from the first encounter, reinforced by the others (as importers make it)."""
    attributes = {"encounters": len(times), "last_encounter": times[-1].isoformat()}
    data = RelationCreate(
        source_id=practitioner,
        target_id=patient,
        type=TREATS,
        weight=TREATS_POLICY.reinforce,
        attributes=attributes,
        valid_from=times[0],
    )
    return data, times[1:]


def _times(rng: np.random.Generator, start: datetime, end: datetime, n: int) -> list[datetime]:
    """``n`` encounter times between ``start`` and ``end``, in order, in working hours."""
    hours = sorted(
        24 * int(d) + int(h)
        for d, h in zip(rng.integers(0, max(1, (end - start).days) + 1, n), rng.integers(8, 18, n), strict=True)
    )
    return [start + timedelta(hours=h) for h in hours]


def _measurements(rng: np.random.Generator, plan: Plan, p: int, conditions: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(metric, day) vitals and (test, day) labs of patient ``p``, with their planted episodes."""
    shifts: dict[str, float] = {}
    for key in conditions:
        for label, shift in _CONDITION_SHIFTS[key].items():
            shifts[label] = shifts.get(label, 0) + shift
    vitals = _vitals(rng, plan.days, shifts)
    labs = _labs(rng, plan.days, shifts)
    _plant(plan, p, vitals, labs)
    return np.round(vitals, 1), np.round(labs, 2)


def _vitals(rng: np.random.Generator, days: int, shifts: dict[str, float]) -> np.ndarray:
    """A baseline, noise kept calm and a few missed days; no weight, height or BMI (the labels VITALS has beyond
    _REFERENCE's stay unrecorded)."""
    labels = list(LOINC)[: len(_REFERENCE)]
    baseline = rng.normal(_REFERENCE[:, 0], _REFERENCE[:, 1]) + np.array([shifts.get(k, 0) for k in labels])
    values = baseline[:, None] + rng.normal(0, 1, (len(labels), days)) * _REFERENCE[:, 2:3]
    values = np.clip(values, _CALM[:, :1], _CALM[:, 1:])
    values[:, rng.random(days) < 0.05] = np.nan
    return np.vstack([values, np.full((len(LOINC) - len(labels), days), np.nan)])


def _labs(rng: np.random.Generator, days: int, shifts: dict[str, float]) -> np.ndarray:
    """A draw of _LAB_REFERENCE's tests about every 30 days from a random first day; the other tests unrecorded."""
    labels = list(_LABS)
    values = np.full((len(labels), days), np.nan)
    draws = np.arange(int(rng.integers(0, min(30, days))), days, 30)
    for label, (mean, between, within) in _LAB_REFERENCE.items():
        level = rng.normal(mean, between) + shifts.get(label, 0)
        values[labels.index(label), draws] = np.maximum(0.1 * mean, level + rng.normal(0, within, len(draws)))
    values[labels.index("potassium"), draws] = np.minimum(values[labels.index("potassium"), draws], 5.4)
    return values


def _plant(plan: Plan, p: int, vitals: np.ndarray, labs: np.ndarray) -> None:
    """Patient ``p``'s planted episodes (Plan.episodes) into their arrays."""
    day, metric = plan.episode_start(p), list(LOINC).index
    for episode in plan.episodes(p):
        if episode == "fever":  # temperature (over the rule's 38.3 °C on two days), heart and breathing rate up
            vitals[metric("temperature"), day : day + 3] = [38.1, 39.4, 38.6]
            heart = vitals[metric("heart_rate"), day : day + 3]
            vitals[metric("heart_rate"), day : day + 3] = np.minimum(heart + 12, 100)  # not a tachycardia too
            vitals[metric("respiratory_rate"), day : day + 3] += 4
        elif episode == "hypotension":
            vitals[metric("systolic_bp"), day : day + 2] = 82
        elif episode == "spo2_drop":
            vitals[metric("spo2"), day : day + 2] = 89
        elif episode == "tachycardia":
            vitals[metric("heart_rate"), day : day + 4] = 112
        else:  # hyperkalemia: a draw that day
            labs[list(_LABS).index("potassium"), day] = 6.4


TOUR = """\
What to look at (sign in at /docs, or use `dust` over REST; the ids are in GET /api/v1/entities?kind=...):
  - Who cares for whom: GET /api/v1/entities?kind=practitioner (attribute role: doctor or nurse; doctors have a
    speciality). Each patient has a general practitioner and a nurse who `treats` them; the relation's weight
    grows with each encounter and halves in a year without one (GET /api/v1/relations/{id} has the history).
  - Referrals: GET /api/v1/relations?type=referred_to: patients with hypertension, diabetes or kidney disease
    referred to a cardiologist, endocrinologist or nephrologist (referred_by: their GP); two in three have been
    seen since (the specialist `treats` them too), the others are waiting.
  - Alerts: GET /api/v1/alerts: the pack's rules alerted the planted patients and everyone who treats them:
    a fever for MRN-100003, MRN-100023, ... (one in twenty), low blood pressure for MRN-100017, low SpO2 for
    MRN-100029, a racing heart for MRN-100041 and high potassium (labs) for MRN-100007 (then every 50th).
  - Anomalies: heart rate, temperature, SpO2 and respiratory rate are scored (GET /api/v1/anomalies/rules;
    detector mad over 30 days) from the demo's end on: values written from now on are scored as they come,
    after ten of each series; POST /api/v1/anomalies/scan {"schema": "vitals", "label": "temperature"} scores
    the generated history (the planted fevers) on demand.
  - Tensors: each patient's `vitals` (metric x day) and `labs` (test x day, a draw about monthly; diabetics'
    glucose and HbA1c, kidney patients' creatinine run high); conditions are the patient's `conditions`.
  - Access: a clinician user linked to a practitioner (dust users create NAME --role clinician --entity ID)
    sees that practitioner's patients and organization, and no one else.
"""

PACK = DomainPack(
    name="healthcare",
    description="Organizations, doctors, nurses and patients with daily vitals and labs; who treats whom, who works "
    "where, referrals to specialists, and planted anomalies the pack's rules alert on.",
    generate=generate,
    marker=MARKER,
    unit="patients",
    rules="healthcare_triggers.json",
    anomalies="healthcare_anomalies.json",
    grants=(TREATS,),
    tour=TOUR,
)
