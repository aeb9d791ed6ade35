"""Healthcare: patients, doctors and hospitals; daily vitals; who treats whom and who works where.

The generator draws vitals around adult reference values (heart rate ~72 bpm, BP ~120/80 mmHg,
temperature ~36.8 °C, SpO2 ~97 %, respiratory rate ~15/min) with a per-patient baseline, day-to-day noise
and occasional fever episodes, so that the demo shows trends and anomalies worth looking at.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import numpy as np
from sqlalchemy.orm import Session

from dust.domains import DomainPack, load_rules
from dust.engine import entities, kinds, relations, schemas, tensors
from dust.engine.entities import EntityCreate
from dust.engine.kinds import KindPolicy
from dust.engine.relations import RelationCreate
from dust.engine.schemas import SchemaCreate
from dust.engine.tensors import TensorCreate

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
# mean, between-patient sd, day-to-day sd per metric (order of VITALS' labels)
_REFERENCE = np.array([[72, 8, 4], [120, 12, 6], [78, 7, 4], [36.8, 0.2, 0.15], [97.5, 1.0, 0.6], [15, 2, 1.2]])
# First names by the gender a patient's record carries; doctors draw from both.
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
# The case a name alone cannot settle: the first two patients are both Jane Doe, told apart by id, record number
# and birth date.
JANE_DOES = [{"gender": "F", "birth_date": "1984-03-12"}, {"gender": "F", "birth_date": "1961-08-30"}]
MARKER = ("hospital", "demo-hospital-1")
# What de-identified readers (analysts) may not see. A patient's name, record number and birth date identify
# them (HIPAA Safe Harbor lists names, record numbers and dates) and are among DUST_SENSITIVE_FIELDS (name,
# external id, ssn, address, birth date, phone, email); a doctor's or hospital's name identifies no patient.
POLICIES = {
    "patient": KindPolicy(description="A person receiving care."),
    "doctor": KindPolicy(description="A clinician; linked users see the patients they treat.", public=["name"]),
    "hospital": KindPolicy(description="A place of care.", public=["name", "external_id"]),
    # The kinds of imported records (Synthea, FHIR): the FHIR resource names; the demo's doctor and hospital.
    "practitioner": KindPolicy(description="A clinician from imported records.", public=["name"]),
    "organization": KindPolicy(description="A place of care from imported records.", public=["name", "external_id"]),
}


def generate(
    session: Session, size: int = 50, days: int = 90, seed: int = 7, progress: Callable[[int], None] | None = None
) -> dict[str, int]:
    """Hospitals, doctors and ``size`` patients with ``days`` of daily vitals; returns what was made."""
    rng = np.random.default_rng(seed)
    if schemas.repo.latest(session, VITALS.name) is None:
        schemas.create(session, VITALS)
    for kind, policy in POLICIES.items():
        kinds.put(session, kind, policy)
    load_rules(session, PACK)  # before the vitals: the demo's fever episodes raise alerts
    origin = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days)
    hospitals = [
        entities.create(session, EntityCreate(kind="hospital", name=name, external_id=f"demo-hospital-{i + 1}"))
        for i, name in enumerate(["St. Mary's General", "Riverside Clinic"])
    ]
    doctors = []
    for i in range(max(2, size // 10)):
        doctor = entities.create(
            session,
            EntityCreate(
                kind="doctor",
                name=f"Dr. {_name(rng, str(rng.choice(['F', 'M'])))}",
                external_id=f"demo-doctor-{i + 1}",
                attributes={"specialty": str(rng.choice(["cardiology", "general practice", "internal medicine"]))},
            ),
        )
        relations.create(session, RelationCreate(source_id=doctor.id, target_id=hospitals[i % 2].id, type="works_at"))
        doctors.append(doctor)
    for i in range(size):
        patient = entities.create(session, _patient(rng, i))
        for doctor in rng.choice(len(doctors), size=int(rng.integers(1, 3)), replace=False):
            relations.create(
                session,
                RelationCreate(
                    source_id=doctors[int(doctor)].id,
                    target_id=patient.id,
                    type="treats",
                    weight=round(float(rng.uniform(0.3, 1.0)), 2),
                ),
            )
        tensor = tensors.create(session, TensorCreate(entity_id=patient.id, schema_name="vitals", origin=origin))
        tensors.write_array(session, tensor.id, _vitals(rng, days))
        if progress:
            progress(1)
    return {"hospitals": len(hospitals), "doctors": len(doctors), "patients": size, "values": size * days * 6}


def _patient(rng: np.random.Generator, i: int) -> EntityCreate:
    """Patient ``i``: one of the Jane Does, or a first name that fits the gender on record and a birth date."""
    if i < len(JANE_DOES):
        name, attributes = "Jane Doe", dict(JANE_DOES[i])
    else:
        gender = str(rng.choice(["F", "M"]))
        born = date(1940, 1, 1) + timedelta(days=int(rng.integers(0, 70 * 365)))
        name, attributes = _name(rng, gender), {"gender": gender, "birth_date": born.isoformat()}
    return EntityCreate(kind="patient", name=name, external_id=f"MRN-{100000 + i}", attributes=attributes)


def _name(rng: np.random.Generator, gender: str) -> str:
    return f"{rng.choice(_FIRST[gender])} {rng.choice(_LAST)}"


def _vitals(rng: np.random.Generator, days: int) -> np.ndarray:
    """(metric, day) for one patient: a baseline, noise, a few missed days and maybe a fever episode."""
    baseline = rng.normal(_REFERENCE[:, 0], _REFERENCE[:, 1])
    values = baseline[:, None] + rng.normal(0, 1, (6, days)) * _REFERENCE[:, 2:3]
    if rng.random() < 0.3:  # a fever: temperature, heart and breathing rate up for a few days
        start, length = int(rng.integers(0, days - 5)), int(rng.integers(2, 6))
        values[[0, 3, 5], start : start + length] += np.array([[18], [1.8], [5]])
    values[4] = np.minimum(values[4], 100)
    values[:, rng.random(days) < 0.05] = np.nan
    # The demo draws no weight, height or BMI (the labels VITALS has beyond _REFERENCE's): those stay unrecorded.
    unrecorded = np.full((len(LOINC) - len(_REFERENCE), days), np.nan)
    return np.round(np.vstack([values, unrecorded]), 1)


PACK = DomainPack(
    name="healthcare",
    description="Hospitals, doctors and patients with daily vitals; who treats whom and who works where.",
    generate=generate,
    marker=MARKER,
    unit="patients",
    rules="healthcare_triggers.json",
)
