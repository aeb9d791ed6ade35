"""Questions run on both backends: answers agree with the engine's own reads, a name two entities share is
asked back, re-running the query answers the same, and a clinician is told a patient they may not see is not
found, in the words used for a patient that does not exist."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

import numpy as np
import pytest

from dust.ask import Query, ask
from dust.ask.answers import possessive
from dust.core.errors import NotFound
from dust.core.security import Role
from dust.domains import healthcare
from dust.embedded import Dust
from dust.engine import access, insights, relations


@pytest.fixture
def clinic(db: Dust) -> Dust:
    with db.session() as session:
        healthcare.generate(session, size=12, days=10, seed=7)
    return db


def asked(db: Dust, question: str, who: access.Principal | None = None) -> dict:
    with db.session() as session:
        access.act_as(session, who)
        return ask(session, question).model_dump(mode="json", by_alias=True)


def someone(db: Dust) -> tuple[uuid.UUID, str]:
    """A patient whose name no other entity shares."""
    patients = db.entities(kind="patient", limit=100).items
    names = [p.name for p in patients]
    patient = next(p for p in patients if names.count(p.name) == 1 and p.name.split()[0] not in {"Jane"})
    return patient.id, patient.name


def test_a_value_is_the_engine_s_with_its_unit(clinic: Dust) -> None:
    patient, name = someone(clinic)
    answered = asked(clinic, f"What was {name}'s temperature on day 2?")
    vitals = next(t for t in clinic.entity_tensors(patient) if t.schema_name == "vitals")
    stored = float(clinic.read_tensor(vitals.id, time=2, labels={"metric": "temperature"}).values)
    assert answered["result"]["values"] == {"temperature": pytest.approx(stored)}
    assert answered["answer"].startswith(f"{possessive(name)} temperature on day 2")
    assert "°C" in answered["answer"]
    assert answered["query"]["when"]["at"] == 2


def test_a_series_and_a_statistic_agree_with_the_tensor(clinic: Dust) -> None:
    patient, name = someone(clinic)
    vitals = next(t for t in clinic.entity_tensors(patient) if t.schema_name == "vitals")
    stored = clinic.read_tensor(vitals.id, start=2, end=5, labels={"metric": "heart_rate"}).values
    series = asked(clinic, f"{name.lower()} pulse between day 2 and 5")["result"]
    assert series["times"] == [2, 3, 4, 5]
    assert series["series"]["heart_rate"] == [None if np.isnan(v) else pytest.approx(v) for v in stored.tolist()]
    top = asked(clinic, f"highest heart rate of {name} between day 2 and day 5")["result"]
    assert top["stats"]["heart_rate"]["value"] == pytest.approx(float(np.nanmax(stored)))


def test_a_shared_name_is_asked_back_with_candidates_and_the_chosen_one_answers(clinic: Dust) -> None:
    answered = asked(clinic, "jane doe temp on day 2")
    assert answered["result"] is None
    candidates = answered["candidates"]
    assert [c["name"] for c in candidates] == ["Jane Doe", "Jane Doe"]
    assert len({c["attributes"]["birth_date"] for c in candidates}) == 2  # what tells them apart
    assert "which one" in answered["answer"]
    query = Query.model_validate(answered["query"])
    query.entity.id = uuid.UUID(candidates[0]["id"])  # type: ignore[union-attr]
    with clinic.session() as session:
        chosen = ask(session, query=query)
    assert chosen.candidates is None and chosen.answer.startswith("Jane Doe's temperature on day 2")


def test_the_query_runs_again_to_the_same_answer(clinic: Dust) -> None:
    _, name = someone(clinic)
    first = asked(clinic, f"average spo2 of female patients on day 3 and {name}")
    with clinic.session() as session:
        again = ask(session, query=Query.model_validate(first["query"]))
    assert again.model_dump(mode="json", by_alias=True)["result"] == first["result"]


def test_cohort_counts_lists_and_relations_agree_with_the_engine(clinic: Dust) -> None:
    women = clinic.entities(kind="patient", limit=100, gender="F").items
    assert asked(clinic, "how many female patients are there?")["result"]["count"] == len(women)
    listed = asked(clinic, "list women patients")["result"]["entities"]
    assert {e["id"] for e in listed} == {str(w.id) for w in women}
    patient, name = someone(clinic)
    carers = {str(r.source_id) for r in clinic.relations(entity_id=patient, type="treats", limit=100).items}
    found = asked(clinic, f"who treats {name}?")["result"]["entities"]
    assert {e["id"] for e in found} == carers


def test_an_aggregate_is_the_insights_aggregate(clinic: Dust) -> None:
    expected = clinic.aggregate("vitals", "heart_rate", "mean", kind="patient", gender="F")
    series = asked(clinic, "average heart rate of female patients")["result"]["series"]["heart_rate"]
    assert [p["value"] for p in series] == pytest.approx([p["value"] for p in expected])


def test_a_clinician_is_told_an_unseen_patient_is_not_found_like_a_missing_one(clinic: Dust) -> None:
    patients = clinic.entities(kind="patient", limit=100).items
    names = [p.name for p in patients]
    unique = [p for p in patients if names.count(p.name) == 1]
    doctors = clinic.entities(kind="practitioner", limit=100, role="doctor").items
    with clinic.session() as session:
        cares = {
            d.id: {r.target_id for r in relations.list_(session, entity_id=d.id, types=["treats"], limit=500).items}
            for d in doctors
        }
    doctor = max(doctors, key=lambda d: len(cares[d.id]))  # a GP: some of the patients, not all
    seen = next(p for p in unique if p.id in cares[doctor.id])
    unseen = next(p for p in unique if p.id not in cares[doctor.id])
    clinician = clinician_of(doctor.id)
    assert asked(clinic, f"{seen.name} temperature on day 1", clinician)["result"]["values"]
    problems = []
    for name in (unseen.name, "Nobody Atall"):
        with pytest.raises(NotFound) as refused:
            asked(clinic, f"{name} temperature on day 1", clinician)
        problems.append(refused.value.detail.replace(name.lower(), "<name>"))
    assert problems[0] == problems[1] == "found no entity matching '<name>'"


def test_a_schema_made_now_is_understood_end_to_end(db: Dust) -> None:
    db.create_schema(
        {
            "name": "air_quality",
            "axes": [{"name": "pollutant", "labels": ["pm2_5", "ozone"], "units": {"ozone": "ppb", "pm2_5": "ug/m3"}}],
            "time": {"unit": "hour", "origin": "2026-03-01T00:00:00Z"},
        }
    )
    sensor = db.create_entity(kind="sensor", name="North Gate", attributes={"mount": "rooftop"})
    city = db.create_entity(kind="city", name="Lyon")
    db.relate(sensor.id, city.id, "monitors")
    tensor = db.create_tensor(sensor.id, "air_quality")
    db.write_values(tensor.id, [{"time": 5, "pollutant": "ozone", "value": 41.5}])
    assert db.ask("ozone at sensor north gate at hour 5").answer == (
        "North Gate's ozone at hour 5 (2026-03-01) was 41.5 ppb."
    )
    assert [e["name"] for e in db.ask("which sensors monitor Lyon?").result["entities"]] == ["North Gate"]
    assert db.ask("how many rooftop sensors are there").result["count"] == 1


def test_a_name_in_letters_beyond_ascii_is_found_as_it_is_written(db: Dust) -> None:
    doctor = db.create_entity(kind="practitioner", name="Dra. Zoë Müller")
    for name in ("Mr. Jerónimo Ruelas", "Łucja Żak", "Ōta Ren"):
        db.relate(doctor.id, db.create_entity(kind="patient", name=name).id, "treats")
        assert [e["name"] for e in db.ask(f"who treats {name}?").result["entities"]] == ["Dra. Zoë Müller"]


def latest(db: Dust, entity: uuid.UUID, label: str) -> float | None:
    """The entity's latest recorded value of a vitals label, read as the engine reads it."""
    vitals = next((t for t in db.entity_tensors(entity) if t.schema_name == "vitals"), None)
    if vitals is None:
        return None
    value = float(np.ma.filled(db.read_tensor(vitals.id, labels={"metric": label}, latest=True).values, np.nan))
    return None if np.isnan(value) else value


def test_an_aggregate_over_patients_picked_by_age_is_the_engine_aggregate_of_those_patients(clinic: Dust) -> None:
    answered = asked(clinic, "average temperature of patients over 65")
    today = datetime.now(UTC).date()
    with clinic.session() as session:
        old = [
            p.id
            for p in clinic.entities(kind="patient", limit=100).items
            if (born := date.fromisoformat(p.attributes["birth_date"][:10]))
            and today.year - born.year - ((today.month, today.day) < (born.month, born.day)) > 65  # whole years
        ]
        assert old  # the data set has some
        expected = insights.aggregate_by_step(session, "vitals", "temperature", "mean", "patient", members=old)
    series = answered["result"]["series"]["temperature"]
    assert [p["value"] for p in series] == pytest.approx([p["value"] for p in expected])
    assert answered["result"]["members"] == len(old)


def test_the_engine_aggregate_of_members_keeps_the_other_filters_and_an_empty_cohort_is_empty(clinic: Dust) -> None:
    patients = clinic.entities(kind="patient", limit=100).items
    women = {p.id for p in patients if p.attributes.get("gender") == "F"}
    with clinic.session() as session:
        all_women = insights.aggregate_by_step(session, "vitals", "heart_rate", attributes={"gender": "F"})
        narrowed = insights.aggregate_by_step(
            session, "vitals", "heart_rate", attributes={"gender": "F"}, members=[p.id for p in patients]
        )
        # the same buckets and counts; the sums may add up in another order (PostgreSQL returns rows unordered)
        assert [(b["time"], b["count"]) for b in narrowed] == [(b["time"], b["count"]) for b in all_women]
        assert [b["value"] for b in narrowed] == pytest.approx([b["value"] for b in all_women], rel=1e-12)
        assert insights.aggregate_by_step(session, "vitals", "heart_rate", members=[]) == []
        assert len(women) < len(patients)


def test_a_condition_on_the_latest_value_picks_the_patients_whose_latest_value_meets_it(clinic: Dust) -> None:
    patients = clinic.entities(kind="patient", limit=100).items
    values = {p.id: latest(clinic, p.id, "heart_rate") for p in patients}
    middle = float(np.median([v for v in values.values() if v is not None]))
    answered = asked(clinic, f"patients with a heart rate above {middle}")
    expected = {str(i) for i, v in values.items() if v is not None and v > middle}
    assert {e["id"] for e in answered["result"]["entities"]} == expected
    assert asked(clinic, f"how many patients have a pulse over {middle}")["result"]["count"] == len(expected)
    assert "(latest value)" in answered["answer"]


def test_a_condition_over_a_range_holds_when_any_value_in_it_meets_it(clinic: Dust) -> None:
    _, name = someone(clinic)
    highest = asked(clinic, f"highest temperature of {name} between day 2 and day 4")["result"]["stats"]
    peak = highest["temperature"]["value"]
    found = asked(clinic, f"patients with a temperature of at least {peak} between day 2 and day 4")["result"]
    assert name in [e["name"] for e in found["entities"]]
    assert asked(clinic, f"patients with a temperature above {peak + 50}")["result"]["count"] == 0


def test_rankings_by_value_and_by_relations_agree_with_the_engine(clinic: Dust) -> None:
    patients = clinic.entities(kind="patient", limit=100).items
    values = {str(p.id): latest(clinic, p.id, "heart_rate") for p in patients}
    ranked = asked(clinic, "top 3 patients by heart rate")["result"]["ranked"]
    best = sorted((v for v in values.values() if v is not None), reverse=True)[:3]
    assert [r["value"] for r in ranked] == pytest.approx(best)
    assert all(values[r["entity"]["id"]] == pytest.approx(r["value"]) for r in ranked)
    with clinic.session() as session:
        treats = relations.list_(session, types=["treats"], limit=500).items
    counts: dict[str, int] = {}
    for r in treats:
        counts[str(r.source_id)] = counts.get(str(r.source_id), 0) + 1
    answered = asked(clinic, "who treats the most patients")
    top = answered["result"]["ranked"][0]
    assert top["value"] == max(counts.values()) and counts[top["entity"]["id"]] == top["value"]
    assert answered["answer"].startswith(top["entity"]["name"])


def test_a_clinician_s_ranking_and_conditions_cover_only_the_patients_they_may_see(clinic: Dust) -> None:
    doctors = clinic.entities(kind="practitioner", limit=100, role="doctor").items
    with clinic.session() as session:
        cares = {
            d.id: {r.target_id for r in relations.list_(session, entity_id=d.id, types=["treats"], limit=500).items}
            for d in doctors
        }
    doctor = min((d for d in doctors if cares[d.id]), key=lambda d: len(cares[d.id]))
    clinician = clinician_of(doctor.id)
    ranked = asked(clinic, "which patients have the highest temperature", clinician)["result"]["ranked"]
    assert {uuid.UUID(r["entity"]["id"]) for r in ranked} <= cares[doctor.id]
    listed = asked(clinic, "patients with a temperature above 0", clinician)["result"]["entities"]
    assert {uuid.UUID(e["id"]) for e in listed} <= cares[doctor.id]


def clinician_of(doctor_id: uuid.UUID) -> access.Principal:
    """A clinician signed in as the doctor: sees the patients the doctor treats."""
    return access.Principal(
        user_id=uuid.uuid4(),
        username="clinician",
        role=Role.clinician,
        entity_id=doctor_id,
        secret="k" * 32,
        grant_types=["treats"],
        depth=1,
        default_sensitive=[],
    )
