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
from dust.domains.healthcare import LOINC
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


def vitals(db: Dust, patient: str) -> tensors.TensorPublic:
    (tensor,) = db.entity_tensors(entity_id(db, "patient", patient))  # type: ignore[arg-type]
    return tensor


def test_every_patient_provider_and_vital_reading_is_accounted_for(db: Dust) -> None:
    report = load(db)
    observations = rows("observations")
    is_vital = Counter(row["CODE"] in set(LOINC.values()) for row in observations)
    assert report.imported["patients"] == len(rows("patients")) == 59
    assert report.imported["practitioners"] == len(rows("providers")) == 173
    assert report.imported["organizations"] == len(rows("organizations")) == 173
    assert report.imported["works_at relations"] == 173
    assert report.imported["encounters (as treats weights)"] == len(rows("encounters")) == 2590
    pairs = {(row["PROVIDER"], row["PATIENT"]) for row in rows("encounters")}
    assert report.imported["treats relations"] == len(pairs)
    assert report.imported["conditions"] == len(rows("conditions"))
    assert report.imported["vital readings"] == is_vital[True] == 4444
    not_vitals = sum(n for (what, _), n in report.skipped.items() if what == "observations (not vitals)")
    assert not_vitals == is_vital[False] and sum(report.skipped.values()) == not_vitals
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
        "heart_rate 900.0 is outside its valid range [0, 300]": 1,
        "DATE 'yesterday' is not an ISO 8601 time": 1,
        "the patient was not imported (not in patients.csv, or its row was skipped)": 1,
        "fewer fields than the header's 9": 1,
        "BIRTHDATE 'not-a-date' is not a date (YYYY-MM-DD)": 1,
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
    assert "Skipped 5852 observations (not vitals)" in result.output
    missing = CliRunner().invoke(app, ["import", "synthea", str(SYNTHEA / "fhir")])
    assert missing.exit_code == 1 and "is not a Synthea CSV export" in missing.output
