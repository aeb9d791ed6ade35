"""The healthcare demo shows what the docs show: two Jane Does, names that fit the gender on record."""

from __future__ import annotations

from dust.domains import healthcare
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
