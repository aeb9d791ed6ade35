"""The healthcare demo shows what the docs show: the importers' vocabulary (practitioners with a role,
organizations), two Jane Does, names that fit the gender on record, care relations with encounter weights,
referrals, labs, and planted anomalies that alert exactly the planted patients and their care teams."""

from __future__ import annotations

import uuid
from collections import defaultdict

import pytest

from dust.core.security import Role
from dust.domains import healthcare, load_anomaly_rules, load_rules, missing_grants
from dust.domains.healthcare import Plan
from dust.embedded import Dust
from dust.engine import access, entities, relations


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


@pytest.fixture
def world(db: Dust) -> dict[str, dict[str, uuid.UUID]]:
    """The demo at 200 patients × 40 days; ids by kind and external id."""
    with db.session() as session:
        made = healthcare.generate(session, size=200, days=40)
    plan = Plan(200, 40)
    assert made["patients"] == 200 and made["doctors"] == plan.doctors and made["nurses"] == plan.nurses
    ids: dict[str, dict[str, uuid.UUID]] = defaultdict(dict)
    for kind in ("patient", "practitioner", "organization"):
        for entity in db.entities(kind=kind, limit=500).items:
            assert entity.external_id is not None
            ids[kind][entity.external_id] = entity.id
    return ids


def edges(db: Dust, type_: str) -> list[relations.RelationPublic]:
    found, cursor = [], None
    while True:
        page = db.relations(type=type_, limit=500, cursor=cursor)
        found += page.items
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


def test_the_demo_speaks_the_importers_vocabulary(db: Dust, world: dict[str, dict[str, uuid.UUID]]) -> None:
    plan = Plan(200, 40)
    assert not db.entities(kind="doctor").items and not db.entities(kind="hospital").items
    practitioners = db.entities(kind="practitioner", limit=500).items
    roles = defaultdict(list)
    for practitioner in practitioners:
        roles[practitioner.attributes["role"]].append(practitioner)
    assert (len(roles["doctor"]), len(roles["nurse"])) == (plan.doctors, plan.nurses)
    assert {d.attributes["speciality"] for d in roles["doctor"]} == set(healthcare.SPECIALITIES)
    assert len(world["organization"]) == plan.organizations
    works = edges(db, "works_at")
    assert len(works) == len(practitioners) and {w.target_id for w in works} == set(world["organization"].values())
    treats = edges(db, "treats")
    carers: dict[uuid.UUID, set[str]] = defaultdict(set)
    by_id = {p.id: p for p in practitioners}
    for edge in treats:
        carers[edge.target_id].add(by_id[edge.source_id].attributes["role"])
        assert edge.attributes["encounters"] >= 1 and edge.valid_from is not None
    assert all(carers[p] == {"doctor", "nurse"} for p in world["patient"].values())  # a GP and a nurse each
    (tensor_names,) = {tuple(t.schema_name for t in db.entity_tensors(p)) for p in list(world["patient"].values())[:5]}
    assert tensor_names == ("labs", "vitals")
    diabetic = [
        p
        for p in db.entities(kind="patient", limit=500).items
        if any(c["code"] == "44054006" for c in p.attributes["conditions"])
    ]
    assert diabetic and all(
        c["description"] == "Diabetes mellitus type 2"
        for p in diabetic
        for c in p.attributes["conditions"]
        if c["code"] == "44054006"
    )


def test_treats_weights_follow_the_encounters(db: Dust, world: dict[str, dict[str, uuid.UUID]]) -> None:
    """The first encounter weighs 1 and each later one adds 1 to what is left of the weight (the treats policy,
    as imported records have it): a carer seen more often and more lately weighs more."""
    treats = edges(db, "treats")
    many = max(treats, key=lambda e: e.attributes["encounters"])
    with db.session() as session:
        detail = relations.get(session, many.id)
    assert len(detail.history) == many.attributes["encounters"] > 1
    assert detail.history[0].weight == 1.0 and max(h.weight for h in detail.history) > 1.0
    assert detail.history[-1].changed_at.isoformat() == many.attributes["last_encounter"]


def test_referrals_go_from_patient_to_a_specialist_of_their_condition(
    db: Dust, world: dict[str, dict[str, uuid.UUID]]
) -> None:
    referrals = edges(db, "referred_to")
    assert referrals
    treats = {(e.source_id, e.target_id) for e in edges(db, "treats")}
    wanted = {description: speciality for _, description, _, speciality in healthcare.CONDITIONS.values()}
    seen = 0
    for referral in referrals:
        patient, specialist = db.get_entity(referral.source_id), db.get_entity(referral.target_id)
        assert patient.kind == "patient" and specialist.attributes["role"] == "doctor"
        assert specialist.attributes["speciality"] == wanted[referral.attributes["reason"]]
        assert referral.attributes["reason"] in {c["description"] for c in patient.attributes["conditions"]}
        gp = uuid.UUID(referral.attributes["referred_by"])
        assert (gp, patient.id) in treats and db.get_entity(gp).attributes["speciality"] == "GENERAL PRACTICE"
        seen += (specialist.id, patient.id) in treats
    assert 0 < seen < len(referrals)  # some have been seen by the specialist since, some wait


def test_a_clinician_sees_exactly_their_patients(db: Dust, world: dict[str, dict[str, uuid.UUID]]) -> None:
    """Access follows treats (and works_at), not referred_to: a specialist sees the referred patients they have
    seen, a nurse hers, and no one else's; never another practitioner."""
    treats, referrals = edges(db, "treats"), edges(db, "referred_to")
    waiting = next(
        r for r in referrals if (r.target_id, r.source_id) not in {(e.source_id, e.target_id) for e in treats}
    )

    def seen_by(practitioner: uuid.UUID) -> set[uuid.UUID]:
        with db.session() as session:
            access.act_as(session, _clinician(practitioner))
            return {e.id for e in entities.list_(session, kind="patient", limit=500).items}

    for practitioner in (world["practitioner"]["demo-nurse-1"], world["practitioner"]["demo-doctor-1"]):
        mine = {e.target_id for e in treats if e.source_id == practitioner}
        assert seen_by(practitioner) == mine and mine
    # A specialist may treat no one yet: then they see no one, and never the patient still waiting for them.
    specialist = waiting.target_id
    assert seen_by(specialist) == {e.target_id for e in treats if e.source_id == specialist}
    assert waiting.source_id not in seen_by(specialist)


def _clinician(entity_id: uuid.UUID) -> access.Principal:
    return access.Principal(
        user_id=uuid.uuid4(),
        username="clinician",
        role=Role.clinician,
        entity_id=entity_id,
        secret="k" * 32,
        grant_types=["treats", "works_at", "member_of", "manages"],  # the default DUST_ACCESS_RELATION_TYPES
        depth=2,
        default_sensitive=[],
    )


def test_the_planted_anomalies_alert_exactly_the_planted_patients_and_their_carers(
    db: Dust, world: dict[str, dict[str, uuid.UUID]]
) -> None:
    plan = Plan(200, 40)
    planted = {f"MRN-{100000 + p}": set(plan.episodes(p)) for p in range(200) if plan.episodes(p)}
    assert {name for names in planted.values() for name in names} == {
        "fever",
        "hypotension",
        "spo2_drop",
        "tachycardia",
        "hyperkalemia",
    }
    rule_of = {
        "fever": "Fever",
        "hypotension": "Hypotension",
        "spo2_drop": "Low SpO2",
        "tachycardia": "Tachycardia",
        "hyperkalemia": "High potassium",
    }
    alerts = db.alerts(limit=500).items
    by_patient: dict[str, set[str]] = defaultdict(set)
    external = {v: k for k, v in world["patient"].items()}
    for alert in alerts:
        if alert.entity.id in external:
            by_patient[external[alert.entity.id]].add(alert.message.split(":")[0])
    assert by_patient == {mrn: {rule_of[name] for name in names} for mrn, names in planted.items()}
    carers = defaultdict(set)
    for edge in edges(db, "treats"):
        carers[edge.target_id].add(edge.source_id)
    told = {a.entity.id for a in alerts if a.entity.id not in external}
    assert told == {c for mrn in planted for c in carers[world["patient"][mrn]]}


def test_the_default_rules_alert_the_care_team(db: Dust) -> None:
    """The pack loads its rules from data; a fever written for a patient alerts the patient and each practitioner
    who treats them, with the message the data gives."""
    with db.session() as session:
        healthcare.generate(session, size=3, days=7)
        assert load_rules(session, healthcare.PACK) == 0  # loaded once: names already there
    names = [t.name for t in db.triggers().items]
    assert names == [
        "healthcare-fever",
        "healthcare-hyperkalemia",
        "healthcare-hypotension",
        "healthcare-spo2-drop",
        "healthcare-tachycardia",
    ]
    patient = db.patients(limit=1).items[0]
    carers = {n.id for n in db.query_master(patient.id, type="treats", direction="in").nodes} - {patient.id}
    assert {db.get_entity(c).attributes["role"] for c in carers} >= {"doctor", "nurse"}
    (tensor,) = [t for t in db.entity_tensors(patient.id) if t.schema_name == "vitals"]
    before = db.alerts(limit=500).items
    db.write_values(tensor.id, [{"time": 1, "metric": "temperature", "value": 39.4}])
    raised = [a for a in db.alerts(limit=500).items if a.id not in {b.id for b in before}]
    assert {a.entity.id for a in raised} == {patient.id, *carers} and len(raised) == 1 + len(carers)
    assert {a.severity for a in raised} == {"high"}
    mine = next(a for a in raised if a.entity.id == patient.id)
    assert mine.message.startswith(f"Fever: {patient.name} at 39.4 °C")


def test_the_demo_upgrades_an_older_vitals_schema(db: Dust) -> None:
    """A database whose vitals schema predates weight, height and BMI gets them appended in a new version."""
    old = healthcare.VITALS.model_dump()
    old["axes"][0]["labels"] = old["axes"][0]["labels"][:6]
    old["axes"][0]["units"] = {k: v for k, v in old["axes"][0]["units"].items() if k in old["axes"][0]["labels"]}
    old["axes"][0]["ranges"] = {k: v for k, v in old["axes"][0]["ranges"].items() if k in old["axes"][0]["labels"]}
    db.create_schema(old)
    with db.session() as session:
        healthcare.generate(session, size=3, days=7)
    latest = db.get_schema("vitals")
    assert latest.version == 2 and latest.axes[0].labels == list(healthcare.LOINC)


def test_vitals_are_scored_from_the_demo_on_and_an_admins_rule_is_kept(db: Dust) -> None:
    """As `dust demo` does: the anomaly rules come after the history, which is scored only when scanned; a fever
    written afterwards is flagged as it comes; loading again keeps a rule an admin changed."""
    with db.session() as session:
        healthcare.generate(session, size=3, days=20)
        assert load_anomaly_rules(session, healthcare.PACK) == 4
    rules = {(r.schema_name, r.label): r.detector for r in db.anomaly_rules().items}
    assert rules == {("vitals", label): "mad" for label in ("heart_rate", "temperature", "spo2", "respiratory_rate")}
    assert db.anomalies(schema="vitals").items == []  # the generated history was not scored value by value
    patient = db.patients(limit=1).items[0]
    (tensor,) = [t for t in db.entity_tensors(patient.id) if t.schema_name == "vitals"]
    assert db.scan_anomalies("temperature", tensor_id=tensor.id).scored >= 10  # the history (less missed days)
    db.write_values(tensor.id, [{"time": 20, "metric": "temperature", "value": 39.4}])
    (fever,) = db.anomalies(tensor_id=tensor.id, label="temperature").items
    assert (fever.time_index, fever.value, fever.detector) == (20, 39.4, "mad") and fever.score >= 0.5

    db.put_anomaly_rule("vitals", "temperature", "mad", {"window": 60, "warmup": 5}, threshold=0.8)
    with db.session() as session:
        assert load_anomaly_rules(session, healthcare.PACK) == 0
    kept = next(r for r in db.anomaly_rules().items if r.label == "temperature")
    assert (kept.settings, kept.threshold) == ({"window": 60, "warmup": 5}, 0.8)


def test_the_pack_says_treats_grants_access() -> None:
    assert healthcare.PACK.grants == ("treats",)
    assert missing_grants(healthcare.PACK, ["treats", "works_at"]) == []
    assert missing_grants(healthcare.PACK, ["works_at"]) == ["treats"]
