"""The healthcare demo shows what the docs show: two Jane Does, names that fit the gender on record."""

from __future__ import annotations

from dust.domains import healthcare, load_rules
from dust.embedded import Dust


def test_two_jane_does_told_apart_by_id_record_number_and_birth_date(db: Dust) -> None:
    with db.session() as session:
        healthcare.generate(session, size=12, days=7)
    found = db.entities(kind="patient", q="jnae doe").items
    does = [patient for patient in found if patient.name == "Jane Doe"]
    assert [patient.name for patient in found[:2]] == ["Jane Doe", "Jane Doe"]
    assert len(does) == 2
    assert len({p.id for p in does}) == len({p.external_id for p in does}) == 2
    assert len({p.attributes["birth_date"] for p in does}) == 2


def test_first_names_fit_the_gender_on_record(db: Dust) -> None:
    with db.session() as session:
        healthcare.generate(session, size=60, days=7)
    patients = db.entities(kind="patient", limit=100).items
    assert {p.attributes["gender"] for p in patients} == {"F", "M"}
    for patient in patients:
        first = patient.name.split()[0]
        assert first in healthcare._FIRST[patient.attributes["gender"]], patient


def test_the_default_rules_alert_the_care_team(db: Dust) -> None:
    """The pack loads its rules from data; a fever written for a patient alerts the patient and each doctor who
    treats them, with the message the data gives."""
    with db.session() as session:
        healthcare.generate(session, size=3, days=7)
        assert load_rules(session, healthcare.PACK) == 0  # loaded once: names already there
    names = [t.name for t in db.triggers().items]
    assert names == ["healthcare-fever", "healthcare-hypotension", "healthcare-spo2-drop", "healthcare-tachycardia"]
    patient = db.patients(limit=1).items[0]
    doctors = {n.id for n in db.query_master(patient.id, type="treats", direction="in").nodes} - {patient.id}
    (tensor,) = db.entity_tensors(patient.id)
    before = db.alerts(limit=500).items
    db.write_values(tensor.id, [{"time": 1, "metric": "temperature", "value": 39.4}])
    raised = [a for a in db.alerts(limit=500).items if a.id not in {b.id for b in before}]
    assert {a.entity.id for a in raised} == {patient.id, *doctors} and len(raised) == 1 + len(doctors)
    assert {a.severity for a in raised} == {"high"}
    mine = next(a for a in raised if a.entity.id == patient.id)
    assert mine.message.startswith(f"Fever: {patient.name} at 39.4 °C")
