"""`dust import synthea DIR` on the shared Synthea export: every row accounted for, values as in the files."""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dust.cli import app
from dust.domains.healthcare import LAB_LOINC, LOINC
from dust.embedded import Dust
from dust.engine import relations, tensors
from dust.importers import synthea
from dust.importers.report import Report
from dust.storage.repositories import entities as entity_repo

SYNTHEA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "synthea"
pytestmark = pytest.mark.skipif(not SYNTHEA.is_dir(), reason="the shared Synthea export is not here")
# 2021-04-27: two temperatures for this patient, 40.8 °C at 03:10 and 40.4 °C at 04:31 (a fever going down).
FEVERISH = "147204fd-51eb-7e98-56bd-609556919b9d"


def rows(name: str) -> list[dict[str, str]]:
    with (SYNTHEA / f"{name}.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def load(db: Dust, directory: Path = SYNTHEA) -> Report:
    with db.session() as session:
        return synthea.import_directory(session, directory)


def entity_id(db: Dust, kind: str, external_id: str) -> object:
    with db.session() as session:
        row = entity_repo.by_external_id(session, kind, external_id)
        assert row is not None, (kind, external_id)
        return row.id


def vitals(db: Dust, patient: str, schema: str = "vitals") -> tensors.TensorPublic:
    found = db.entity_tensors(entity_id(db, "patient", patient))  # type: ignore[arg-type]
    (tensor,) = [t for t in found if t.schema_name == schema]
    return tensor


LAB_CODES = {code for codes in LAB_LOINC.values() for code in codes}


def test_every_patient_provider_and_vital_reading_is_accounted_for(db: Dust) -> None:
    report = load(db)
    observations = rows("observations")
    is_vital = Counter(row["CODE"] in set(LOINC.values()) for row in observations)
    is_lab = Counter(row["CODE"] in LAB_CODES for row in observations)
    assert report.imported["patients"] == len(rows("patients")) == 59
    assert report.imported["practitioners"] == len(rows("providers")) == 173
    assert report.imported["organizations"] == len(rows("organizations")) == 173
    assert report.imported["works_at relations"] == 173
    assert report.imported["encounters (as treats weights)"] == len(rows("encounters")) == 2590
    pairs = {(row["PROVIDER"], row["PATIENT"]) for row in rows("encounters")}
    assert report.imported["treats relations"] == len(pairs)
    assert report.imported["conditions"] == len(rows("conditions"))
    assert report.imported["vital readings"] == is_vital[True] == 4444
    # every lab reading of a mapped code is imported but 44 total proteins of 55-80 g/dL (Synthea's g/L values
    # labelled g/dL: no body holds that), which are skipped with the reason
    impossible = ("observations.csv rows", "protein_total outside its valid range [0, 20] g/dL")
    assert report.imported["lab readings"] + report.skipped[impossible] == is_lab[True] == 4083 + 342
    assert report.skipped[impossible] == 44
    neither = sum(n for (what, _), n in report.skipped.items() if what == "observations (not vitals or labs)")
    assert neither == len(observations) - is_vital[True] - is_lab[True]
    assert sum(report.skipped.values()) == neither + 44
    frequent = Counter(r["CODE"] for r in observations if (r["CATEGORY"], r["TYPE"]) == ("laboratory", "numeric"))
    assert {code for code, n in frequent.items() if n >= 100} <= LAB_CODES  # the common labs are all read
    assert len(db.entities(kind="practitioner", limit=500).items) == 173


def test_a_patients_vitals_and_relations_match_the_source(db: Dust) -> None:
    load(db)
    patient = rows("patients")[0]
    first = next(r for r in rows("observations") if r["PATIENT"] == patient["Id"] and r["CODE"] == LOINC["height"])
    tensor = vitals(db, patient["Id"])
    assert tensor.time.origin.date().isoformat() == patient["BIRTHDATE"]  # index = age in days
    day = db.read_tensor(tensor.id, time=first["DATE"], labels={"metric": "height"})
    assert float(day.values) == float(first["VALUE"])
    seen = {r["PROVIDER"] for r in rows("encounters") if r["PATIENT"] == patient["Id"]}
    me = entity_id(db, "patient", patient["Id"])
    carers = db.query_master(me, type="treats", direction="in").nodes  # type: ignore[arg-type]
    assert {n.external_id for n in carers if n.kind == "practitioner"} == seen
    record = db.get_entity(me)  # type: ignore[arg-type]
    assert record.name == "Jorge Luis Vela" and record.attributes["birth_date"] == patient["BIRTHDATE"]
    mine = [r for r in rows("conditions") if r["PATIENT"] == patient["Id"]]
    assert sorted(c["code"] for c in record.attributes["conditions"]) == sorted(r["CODE"] for r in mine)


def test_treats_weight_grows_per_encounter_and_starts_at_the_first(db: Dust) -> None:
    load(db)
    encounters = rows("encounters")
    counts = Counter((r["PROVIDER"], r["PATIENT"]) for r in encounters)
    (provider, patient), n = counts.most_common(1)[0]
    with db.session() as session:
        source, target = (
            entity_repo.by_external_id(session, "practitioner", provider),
            entity_repo.by_external_id(session, "patient", patient),
        )
        assert source is not None and target is not None
        edge = relations.repo.find_edge(session, source.id, target.id, "treats")
        assert edge is not None
        detail = relations.get(session, edge.id)
    starts = sorted(r["START"] for r in encounters if (r["PROVIDER"], r["PATIENT"]) == (provider, patient))
    assert len(detail.history) == n == detail.attributes["encounters"]
    assert detail.valid_from == datetime.fromisoformat(starts[0])
    assert detail.history[0].weight == 1.0 and max(h.weight for h in detail.history) > 1.0


def test_several_readings_in_a_day_keep_the_last_and_the_others_in_history(db: Dust) -> None:
    load(db)
    tensor = vitals(db, FEVERISH)
    day = db.read_tensor(tensor.id, time="2021-04-27T12:00:00Z", labels={"metric": "temperature"})
    assert float(day.values) == 40.4
    index = int(day.selection["time"]) if "time" in day.selection else None
    history = db.tensor_history(tensor.id).items
    replaced = [h for h in history if h.labels == {"metric": "temperature"} and h.value == 40.8]
    assert len(replaced) == 1 and replaced[0].new_value == 40.4
    assert index is None or replaced[0].time == index


def test_a_second_run_adds_nothing_and_says_so(db: Dust) -> None:
    load(db)
    tensor = vitals(db, FEVERISH)
    before = len(db.tensor_history(tensor.id).items)
    again = load(db)
    assert again.nothing_new and not +again.imported
    assert again.existing["patients"] == 59 and again.existing["vital readings"] == 4444
    assert again.lines()[0].startswith("Nothing new")
    assert len(db.tensor_history(tensor.id).items) == before
    assert len(db.entities(kind="patient", limit=500).items) == 59


def test_bad_rows_are_reported_and_the_rest_imported(db: Dust, tmp_path: Path) -> None:
    for name in synthea.FILES:
        shutil.copy(SYNTHEA / f"{name}.csv", tmp_path / f"{name}.csv")
    heart = next(r for r in rows("observations") if r["CODE"] == LOINC["heart_rate"])
    with (tmp_path / "observations.csv").open("a", newline="") as file:
        out = csv.DictWriter(file, fieldnames=list(heart))
        for changes in ({"VALUE": "fast"}, {"VALUE": "900"}, {"DATE": "yesterday"}, {"PATIENT": "nobody"}):
            out.writerow(heart | changes)
        file.write("too,few\n")
    patient = rows("patients")[0]
    with (tmp_path / "patients.csv").open("a", newline="") as file:
        csv.DictWriter(file, fieldnames=list(patient)).writerow(patient | {"Id": "broken", "BIRTHDATE": "not-a-date"})
    report = load(db, tmp_path)
    reasons = {reason: n for (what, reason), n in report.skipped.items() if what.endswith(".csv rows")}
    assert reasons == {
        "VALUE 'fast' is not a number": 1,
        "heart_rate outside its valid range [0, 300] /min": 1,
        "DATE 'yesterday' is not an ISO 8601 time": 1,
        "the patient was not imported (not in patients.csv, or its row was skipped)": 1,
        "fewer fields than the header's 9": 1,
        "BIRTHDATE 'not-a-date' is not a date (YYYY-MM-DD)": 1,
        "protein_total outside its valid range [0, 20] g/dL": 44,  # in the export itself
    }, reasons
    assert report.imported["patients"] == 59 and report.imported["vital readings"] == 4444
    lines = "\n".join(report.lines())
    assert "observations.csv:21702" in lines and "patients.csv:61" in lines


def test_the_command_prints_the_report(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUST_DATABASE_URL", database_url)
    monkeypatch.setenv("DUST_LOG_LEVEL", "WARNING")
    result = CliRunner().invoke(app, ["import", "synthea", str(SYNTHEA)])
    assert result.exit_code == 0, result.output
    assert "Imported: 59 patients" in result.output and "4444 vital readings" in result.output
    assert "lab readings" in result.output and "LOINC code not among the vitals' or labs'" in result.output
    missing = CliRunner().invoke(app, ["import", "synthea", str(SYNTHEA / "fhir")])
    assert missing.exit_code == 1 and "is not a Synthea CSV export" in missing.output


def copy_export(tmp_path: Path) -> Path:
    for name in synthea.FILES:
        shutil.copy(SYNTHEA / f"{name}.csv", tmp_path / f"{name}.csv")
    return tmp_path


def append(path: Path, new: list[dict[str, str]]) -> None:
    with path.open("a", newline="") as file:
        out = csv.DictWriter(file, fieldnames=list(new[0]))
        out.writerows(new)


def test_lab_readings_go_to_the_patients_labs_tensor(db: Dust) -> None:
    load(db)
    glucose = next(r for r in rows("observations") if r["CODE"] == LAB_LOINC["glucose"][0])
    labs = vitals(db, glucose["PATIENT"], "labs")
    assert labs.time.origin == vitals(db, glucose["PATIENT"]).time.origin  # both from the birth date
    day = db.read_tensor(labs.id, time=glucose["DATE"], labels={"test": "glucose"})
    assert float(day.values) == float(glucose["VALUE"])
    serum = next(r for r in rows("observations") if r["CODE"] == LAB_LOINC["creatinine"][1])  # 2160-0, serum
    day = db.read_tensor(vitals(db, serum["PATIENT"], "labs").id, time=serum["DATE"], labels={"test": "creatinine"})
    assert float(day.values) == float(serum["VALUE"])


def test_readings_in_other_units_are_converted_and_the_others_skipped(db: Dust, tmp_path: Path) -> None:
    directory = copy_export(tmp_path)
    patient = rows("patients")[0]["Id"]
    template = next(r for r in rows("observations") if r["PATIENT"] == patient and r["CODE"] == LOINC["height"])
    day = "2023-06-01T10:00:00Z"
    readings = [
        (LOINC["temperature"], "101.3", "[degF]"),  # 38.5 °C
        (LOINC["weight"], "22", "[lb_av]"),  # 9.979 kg
        (LOINC["height"], "30", "[in_i]"),  # 76.2 cm
        (LAB_LOINC["glucose"][0], "5.5", "mmol/L"),  # 99.09 mg/dL
        (LAB_LOINC["egfr"][0], "90", "mL/min"),  # the annotation {1.73_m2} is 1 in UCUM: the same unit
        (LOINC["heart_rate"], "80", "kg"),  # no rate is a mass: skipped
        (LAB_LOINC["hemoglobin"][0], "8", "mmol/L"),  # no molar mass listed for haemoglobin: skipped
    ]
    append(
        directory / "observations.csv",
        [template | {"DATE": day, "CODE": code, "VALUE": value, "UNITS": unit} for code, value, unit in readings],
    )
    report = load(db, directory)
    reasons = {reason: n for (what, reason), n in report.skipped.items() if what == "observations.csv rows"}
    assert reasons["heart_rate in 'kg', which does not convert to the schema's UCUM unit '/min'"] == 1
    assert reasons["hemoglobin in 'mmol/L', which does not convert to the schema's UCUM unit 'g/dL'"] == 1
    assert "1 temperature readings in '[degF]' were converted to the schema's 'Cel'." in report.notes

    def value(schema: str, label: str) -> float:
        axis = "metric" if schema == "vitals" else "test"
        return float(db.read_tensor(vitals(db, patient, schema).id, time=day, labels={axis: label}).values)

    assert value("vitals", "temperature") == pytest.approx(38.5)
    assert value("vitals", "weight") == pytest.approx(9.979, abs=1e-3)
    assert value("vitals", "height") == pytest.approx(76.2)
    assert value("labs", "glucose") == pytest.approx(99.09, abs=0.01)
    assert value("labs", "egfr") == 90


def test_a_later_export_adds_its_new_encounters_and_readings_and_nothing_twice(db: Dust, tmp_path: Path) -> None:
    """A later export holds what the first one had and more: its new encounters reinforce the existing treats
    relation (count and weight grow), its new readings go into the existing tensors; run again, it adds nothing."""
    load(db)
    encounters = rows("encounters")
    counts = Counter((r["PROVIDER"], r["PATIENT"]) for r in encounters)
    (provider, patient), n = counts.most_common(1)[0]
    with db.session() as session:
        source = entity_repo.by_external_id(session, "practitioner", provider)
        target = entity_repo.by_external_id(session, "patient", patient)
        assert source is not None and target is not None
        edge = relations.repo.find_edge(session, source.id, target.id, "treats")
        assert edge is not None
        before = relations.get(session, edge.id)
    last = next(r for r in encounters if (r["PROVIDER"], r["PATIENT"]) == (provider, patient))
    directory = copy_export(tmp_path)
    visits = ["2025-03-01T09:00:00Z", "2025-03-08T09:00:00Z"]
    append(directory / "encounters.csv", [last | {"Id": f"later-{i}", "START": t} for i, t in enumerate(visits)])
    heart = next(r for r in rows("observations") if r["PATIENT"] == patient and r["CODE"] == LOINC["heart_rate"])
    glucose = next(r for r in rows("observations") if r["CODE"] == LAB_LOINC["glucose"][0])
    append(
        directory / "observations.csv",
        [heart | {"DATE": visits[1], "VALUE": "77"}, glucose | {"PATIENT": patient, "DATE": visits[1], "VALUE": "93"}],
    )
    later = load(db, directory)
    assert +later.imported == {"encounters (as treats weights)": 2, "vital readings": 1, "lab readings": 1}
    assert later.existing["encounters (as treats weights)"] == len(encounters)
    with db.session() as session:
        after = relations.get(session, edge.id)
    assert after.attributes["encounters"] == n + 2 and after.attributes["last_encounter"] == "2025-03-08T09:00:00+00:00"
    assert len(after.history) == len(before.history) + 2
    # three years on, each adds 1 to what is left of the weight: the second visit a week after the first
    assert after.history[-1].weight > after.history[-2].weight > 1.0
    assert float(db.read_tensor(vitals(db, patient).id, time=visits[1], labels={"metric": "heart_rate"}).values) == 77
    again = load(db, directory)
    assert again.nothing_new and again.existing["encounters (as treats weights)"] == len(encounters) + 2
    with db.session() as session:
        assert len(relations.get(session, edge.id).history) == len(after.history)
