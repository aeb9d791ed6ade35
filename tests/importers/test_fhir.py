"""`dust import fhir FILE…` on the shared Synthea FHIR bundles, and its agreement with the CSV export of that run."""

from __future__ import annotations

import copy
import json
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from dust.cli import app
from dust.embedded import Dust
from dust.engine import relations
from dust.importers import fhir, synthea
from dust.importers.report import Report
from dust.storage.repositories import entities as entity_repo

SYNTHEA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "synthea"
FHIR = SYNTHEA / "fhir"
pytestmark = pytest.mark.skipif(not FHIR.is_dir(), reason="the shared Synthea FHIR bundles are not here")
PATIENT = "593aaa05-d864-1df7-5b96-155fbdb19f28"  # Jorge Luis Vela, in patients.csv and in his own bundle
BUNDLE = FHIR / f"Jorge_Luis88_Vela532_{PATIENT}.json"
# Gerardo Rentería (NPI 9999998997) works at Paradise Valley Hospital; Sanford Klein (NPI 9999136291) treats Jorge.
GERARDO, PARADISE, SANFORD = (
    "dc831f98-80cb-393c-9a7d-3f6b191191aa",
    "8da4b26f-9f34-3540-bb61-345286bc82f3",
    "f663e896-5910-3b27-a135-ebad4c58cb79",
)


def bundles() -> list[Path]:
    return sorted(FHIR.glob("*.json"))


def load(db: Dust, paths: list[Path] | None = None) -> Report:
    with db.session() as session:
        return fhir.import_files(session, bundles() if paths is None else paths)


def row(db: Dust, kind: str, external_id: str) -> Any:
    with db.session() as session:
        found = entity_repo.by_external_id(session, kind, external_id)
        assert found is not None, (kind, external_id)
        return found


def vitals(db: Dust, schema: str = "vitals") -> tuple[Any, dict[str, dict[int, float]]]:
    """The shared patient's vitals (or labs) tensor and its values by label and day."""
    (tensor,) = [t for t in db.entity_tensors(row(db, "patient", PATIENT).id) if t.schema_name == schema]
    view = db.read_tensor(tensor.id)
    labels, days = list(view.coords[view.dims[0]]), np.asarray(view.coords["time"])
    values: dict[str, dict[int, float]] = {}
    for k, t in zip(*np.nonzero(~np.isnan(view.values)), strict=True):
        values.setdefault(str(labels[k]), {})[int(days[t])] = float(view.values[k, t])
    return tensor, values


def treats(db: Dust) -> Any:
    with db.session() as session:
        edge = relations.repo.find_edge(
            session, row(db, "practitioner", SANFORD).id, row(db, "patient", PATIENT).id, "treats"
        )
        assert edge is not None
        return relations.get(session, edge.id)


def test_the_shared_bundles_import_with_every_resource_accounted_for(db: Dust) -> None:
    report = load(db)
    assert report.imported == {
        "organizations": 173,
        "practitioners": 173,
        "patients": 1,
        "conditions": 0,  # Jorge's bundle has none, as conditions.csv
        "works_at relations": 173,
        "treats relations": 1,
        "encounters (as treats weights)": 4,
        "vital readings": 24,  # 4 visits × height, weight, heart and respiratory rate, and the BP panel's two
        "lab readings": 11,  # a blood count at birth
    }
    assert {what for what, _ in report.skipped} == {"observations (not vitals or labs)"}
    assert sum(report.skipped.values()) == 47 - 4 * 5 - 11  # observations less the vital and lab ones
    assert "173 Location" in report.notes[-1] and "12 Immunization" in report.notes[-1]
    gerardo = row(db, "practitioner", GERARDO)
    assert gerardo.name == "Gerardo Rentería"
    assert gerardo.attributes == {"gender": "M", "npi": "9999998997", "speciality": "GENERAL PRACTICE"}
    carer = db.query_master(gerardo.id, type="works_at", direction="out").nodes
    assert {n.external_id for n in carer if n.kind == "organization"} == {PARADISE}
    patient = row(db, "patient", PATIENT)
    assert patient.name == "Jorge Luis Vela"
    assert patient.attributes["birth_date"] == "2021-08-22" and patient.attributes["gender"] == "M"
    tensor, _ = vitals(db)
    # 20:26 on 2021-08-22 at -07:00 is 03:26 UTC on the 23rd, a day after his birth: index 1
    assert float(db.read_tensor(tensor.id, time="2021-08-23T12:00:00Z", labels={"metric": "height"}).values) == 49.2
    assert float(db.read_tensor(tensor.id, time="2021-08-23T12:00:00Z", labels={"metric": "systolic_bp"}).values) == 131


@pytest.mark.parametrize("csv_first", [True, False], ids=["csv-then-fhir", "fhir-then-csv"])
def test_csv_and_fhir_agree_on_the_shared_patient(db: Dust, csv_first: bool) -> None:
    def csv() -> Report:
        with db.session() as session:
            return synthea.import_directory(session, SYNTHEA)

    first = csv() if csv_first else load(db)
    tensor, before = vitals(db)
    labs = vitals(db, "labs")
    relation = treats(db)
    history = len(db.tensor_history(tensor.id).items)
    second = load(db) if csv_first else csv()
    again, after = vitals(db)
    assert again.id == tensor.id and after == before  # one entity, one tensor, equal day by day
    # Synthea's CSV rounds labs to one decimal, its bundles do not: the fuller value stands either way
    full = vitals(db, "labs")
    assert full[0].id == labs[0].id and sum(len(days) for days in full[1].values()) == 11
    assert full[1]["hemoglobin"] == {1: 17.188} and (csv_first or full == labs)
    assert not (csv() if csv_first else load(db)).imported["lab readings"]  # and the other adds nothing
    assert len(db.tensor_history(tensor.id).items) == history
    assert sum(len(days) for days in after.values()) == 24
    assert len(db.entities(kind="patient", limit=500).items) == 59
    assert len(db.entities(kind="practitioner", limit=500).items) == 173
    assert len(db.entities(kind="organization", limit=500).items) == 173
    fhir_run = second if csv_first else first
    csv_run = first if csv_first else second
    assert (fhir_run.existing if csv_first else fhir_run.imported)["vital readings"] == 24
    assert (csv_run.imported if csv_first else csv_run.existing)["vital readings"] >= 24
    same = treats(db)
    assert same.id == relation.id and same.valid_from == relation.valid_from
    assert same.attributes["encounters"] == 4 and len(same.history) == 4


def test_a_second_run_adds_nothing(db: Dust) -> None:
    load(db)
    tensor, values = vitals(db)
    history = len(db.tensor_history(tensor.id).items)
    again = load(db)
    assert again.nothing_new and again.lines()[0].startswith("Nothing new")
    assert again.existing["vital readings"] == 24 and again.existing["practitioners"] == 173
    assert not any("changed" in note for note in again.notes)
    assert vitals(db)[1] == values and len(db.tensor_history(tensor.id).items) == history


def test_a_patient_bundle_alone_resolves_practitioners_imported_before(db: Dust) -> None:
    alone = load(db, [BUNDLE])
    assert alone.imported["vital readings"] == 24 and alone.imported["treats relations"] == 0
    reason = "the practitioner (9999136291) is not in these bundles or the database"
    assert alone.skipped[("Encounter resources", reason)] == 4
    load(db, [p for p in bundles() if p != BUNDLE])
    later = load(db, [BUNDLE])  # the NPI is now found on the practitioner imported with it
    assert later.imported["treats relations"] == 1 and later.imported["encounters (as treats weights)"] == 4
    assert later.existing["vital readings"] == 24


def test_bad_resources_are_reported_and_the_rest_imported(db: Dust, tmp_path: Path) -> None:
    bundle = json.loads(BUNDLE.read_text())
    heart = next(e for e in bundle["entry"] if e["resource"].get("code", {}).get("text") == "Heart rate")

    def broken(change: dict[str, Any], drop: str | None = None) -> dict[str, Any]:
        entry = copy.deepcopy(heart)
        entry["resource"] |= change
        entry["resource"].pop(drop, None)
        return entry

    quantity = heart["resource"]["valueQuantity"]
    bundle["entry"] += [
        broken({"valueQuantity": quantity | {"value": "fast"}}),
        broken({"valueQuantity": quantity | {"value": 900}}),
        broken({"valueQuantity": quantity | {"code": "kg"}}),
        broken({}, drop="status"),
        broken({"subject": {"reference": "urn:uuid:nobody"}}),
        {"fullUrl": "urn:uuid:empty"},
    ]
    copied = tmp_path / BUNDLE.name
    copied.write_text(json.dumps(bundle))
    (tmp_path / "notes.json").write_text("{not json")
    (tmp_path / "patient.json").write_text(json.dumps(bundle["entry"][0]["resource"]))
    report = load(db, [copied, tmp_path / "notes.json", tmp_path / "patient.json"])
    not_json = next(r for w, r in report.skipped if w == "files" and r.startswith("not JSON ("))[10:-1]
    assert not_json  # the parser's reason, first line
    reasons = {(what, reason): n for (what, reason), n in report.skipped.items() if "not vitals" not in what}
    value_error = "Value error, Decimal value string does not match spec regex."
    assert reasons == {
        ("Observation resources", f"not valid FHIR R4: valueQuantity.value: {value_error}"): 1,
        ("Observation resources", "heart_rate outside its valid range [0, 300] /min"): 1,
        ("Observation resources", "heart_rate in 'kg', which does not convert to the schema's UCUM unit '/min'"): 1,
        ("Observation resources", "not valid FHIR R4: status: Value for the field 'status' is required."): 1,
        ("Observation resources", "the patient is not in these bundles or the database"): 1,
        ("bundle entries", "no resource with a resourceType"): 1,
        ("files", f"not JSON ({not_json})"): 1,
        ("files", "not a FHIR Bundle (no resourceType 'Bundle' at the top)"): 1,
        ("Encounter resources", "the practitioner (9999136291) is not in these bundles or the database"): 4,
    }, reasons
    assert report.imported["patients"] == 1 and report.imported["vital readings"] == 24
    lines = "\n".join(report.lines())
    assert f"{BUNDLE.name} entry[{len(bundle['entry']) - 6}]" in lines and "notes.json" in lines


def test_conditions_become_the_patients_conditions_attribute(db: Dust, tmp_path: Path) -> None:
    bundle = json.loads(BUNDLE.read_text())

    def condition(subject: str, onset: str, **more: Any) -> dict[str, Any]:
        code = {"coding": [{"system": "http://snomed.info/sct", "code": "444814009", "display": "Viral sinusitis"}]}
        resource = {
            "resourceType": "Condition",
            "id": f"c-{onset[:10]}",
            "subject": {"reference": subject},
            "code": code,
        }
        return {"resource": resource | {"onsetDateTime": onset} | more}

    bundle["entry"] += [
        condition(f"urn:uuid:{PATIENT}", "2022-01-30T19:26:50-08:00", abatementDateTime="2022-02-13T19:26:50-08:00"),
        condition(f"urn:uuid:{PATIENT}", "2021-09-26T20:26:50-07:00"),
        condition("urn:uuid:someone-else", "2021-09-26T20:26:50-07:00"),
    ]
    copied = tmp_path / BUNDLE.name
    copied.write_text(json.dumps(bundle))
    report = load(db, [copied])
    assert report.imported["conditions"] == 2
    assert report.skipped[("Condition resources", "the patient is not in these bundles")] == 1
    sinusitis = {"code": "444814009", "description": "Viral sinusitis"}
    assert row(db, "patient", PATIENT).attributes["conditions"] == [  # dates as written, as conditions.csv has them
        sinusitis | {"start": "2021-09-26", "stop": None},
        sinusitis | {"start": "2022-01-30", "stop": "2022-02-13"},
    ]


def test_the_command_prints_the_report(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUST_DATABASE_URL", database_url)
    monkeypatch.setenv("DUST_LOG_LEVEL", "WARNING")
    result = CliRunner().invoke(app, ["import", "fhir", *map(str, bundles())])
    assert result.exit_code == 0, result.output
    assert "Imported: 173 organizations, 173 practitioners, 1 patients" in result.output
    assert "24 vital readings" in result.output and "Done in" in result.output
    missing = CliRunner().invoke(app, ["import", "fhir", str(FHIR / "nothing.json")])
    assert missing.exit_code == 1 and "No such file" in missing.output


def test_a_reading_in_another_unit_is_converted(db: Dust, tmp_path: Path) -> None:
    bundle = json.loads(BUNDLE.read_text())
    entry = next(e for e in bundle["entry"] if e["resource"].get("code", {}).get("text") == "Heart rate")
    fever = copy.deepcopy(entry)
    fever["resource"] |= {
        "id": "fahrenheit",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]},
        "valueQuantity": {"value": 102.2, "unit": "°F", "system": "http://unitsofmeasure.org", "code": "[degF]"},
        "effectiveDateTime": "2022-01-10T10:00:00Z",
    }
    bundle["entry"].append(fever)
    copied = tmp_path / BUNDLE.name
    copied.write_text(json.dumps(bundle))
    report = load(db, [copied])
    assert "1 temperature readings in '[degF]' were converted to the schema's 'Cel'." in report.notes
    tensor, _ = vitals(db)
    day = db.read_tensor(tensor.id, time="2022-01-10T12:00:00Z", labels={"metric": "temperature"})
    assert float(day.values) == pytest.approx(39.0)


def test_a_large_bundle_is_read_entry_by_entry(db: Dust, tmp_path: Path) -> None:
    """A bundle is streamed: the import holds what it maps from each entry, never the parsed file. Here each of
    3,000 extra readings carries 4 KB of narrative; the import's peak memory stays under the file's size (the
    file parsed whole would take several times it)."""
    bundle = json.loads(BUNDLE.read_text())
    heart = next(e for e in bundle["entry"] if e["resource"].get("code", {}).get("text") == "Heart rate")
    narrative = {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{"x" * 4000}</div>'}
    for i in range(3000):
        entry = copy.deepcopy(heart)
        day = f"2022-{1 + i // 28 % 12:02d}-{1 + i % 28:02d}T0{i % 10}:00:00Z"
        entry["resource"] |= {"id": f"hr-{i}", "text": narrative, "effectiveDateTime": day}
        bundle["entry"].append(entry)
    big = tmp_path / BUNDLE.name
    big.write_text(json.dumps(bundle))
    size = big.stat().st_size
    assert size > 12_000_000
    tracemalloc.start()
    try:
        report = load(db, [big])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.imported["vital readings"] + report.existing["vital readings"] >= 24 + 336  # one a day stays
    assert peak < size, (peak, size)
