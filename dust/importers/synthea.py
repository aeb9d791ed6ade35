"""``dust import synthea DIR``: a Synthea CSV export (patients, organizations, providers, encounters, conditions,
observations: vitals and labs) through the healthcare mapping of ``dust.importers.health``.

Files are read row by row (``csv``, which streams and knows each row's line); a row that cannot be read is
reported with its file, line and reason and the import goes on. Everything is written in the caller's
transaction.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from dust.core.errors import InvalidInput
from dust.importers import health
from dust.importers.health import Encounter, Reading, Record
from dust.importers.report import Report

FILES = ("patients", "organizations", "providers", "encounters", "conditions", "observations")
Progress = Callable[[int, int | None], None]
_Row = tuple[dict[str, str], str]  # (row, "file.csv:line")


class BadRow(ValueError):
    """A row this importer cannot use; the message says why."""


def import_directory(session: Session, directory: Path, progress: Progress | None = None) -> Report:
    """Import the Synthea CSV export in ``directory``; what was imported and skipped, with reasons."""
    paths = {name: directory / f"{name}.csv" for name in FILES}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise InvalidInput(f"{directory} is not a Synthea CSV export: it has no {', '.join(missing)} (needs {FILES})")
    rows = _Rows(paths, progress)
    report = Report()
    health.prepare(session)
    conditions = _conditions(rows, report)
    patients = _patients(rows, conditions, report)
    ids, fresh = health.put_entities(session, list(patients.values()), report, "patients")
    for patient in set(conditions) - set(patients):
        for _, where in conditions[patient]:
            report.skip("conditions.csv rows", "the patient was not imported (not in patients.csv, or skipped)", where)
    for patient in set(conditions) & set(patients):
        (report.imported if patient in fresh else report.existing)["conditions"] += len(conditions[patient])
    organizations, _ = health.put_entities(session, _organizations(rows, report), report, "organizations")
    providers, employers = _providers(rows, report)
    practitioners, _ = health.put_entities(session, providers, report, "practitioners")
    works: dict[tuple[Any, Any], list[datetime]] = {
        (practitioners[p], organizations[o]): [] for p, o in employers.items() if o in organizations
    }
    for p, o in employers.items():
        if o not in organizations:
            report.skip("providers' organizations", "the organization is not in organizations.csv", p)
    health.put_relations(session, "works_at", works, {}, report)
    _treats(session, rows, ids, practitioners, patients, report)
    origins = {p: health.birth_origin(r.attributes.get("birth_date")) for p, r in patients.items()}
    health.put_readings(session, ids, origins, list(_readings(rows, ids, report)), report)
    report.notes.append(f"Not read (not mapped yet): {', '.join(_others(directory)) or 'no other files'}.")
    return report


class _Rows:
    """The files' rows with their places, counting rows read for the progress bar."""

    def __init__(self, paths: dict[str, Path], progress: Progress | None) -> None:
        self.paths, self.progress, self.done = paths, progress, 0
        self.total = sum(_lines(p) for p in paths.values())

    def __call__(self, name: str) -> Iterator[_Row]:
        path = self.paths[name]
        with path.open(newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file)
            for row in reader:
                self.done += 1
                if self.progress and self.done % 1000 == 0:
                    self.progress(self.done, self.total)
                yield row, f"{path.name}:{reader.line_num}"
        if self.progress:
            self.progress(self.done, self.total)


def _lines(path: Path) -> int:
    with path.open("rb") as file:
        return max(sum(1 for _ in file) - 1, 0)


def _checked(row: dict[str, Any], *needed: str) -> dict[str, str]:
    """``row`` if it has every field of the header and ``needed`` are not empty; else BadRow."""
    if None in row:
        raise BadRow(f"more fields than the header's {len(row) - 1}")
    if any(v is None for v in row.values()):
        raise BadRow(f"fewer fields than the header's {len(row)}")
    empty = [name for name in needed if not row.get(name)]
    if empty:
        raise BadRow(f"no {', '.join(empty)}")
    return row


def _day(text: str, field: str) -> str:
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise BadRow(f"{field} {text[:40]!r} is not a date (YYYY-MM-DD)") from None


def _moment(text: str, field: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadRow(f"{field} {text[:40]!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        raise BadRow(f"{field} {text[:40]!r} has no time zone (Synthea writes UTC, ending in Z)")
    return moment


def _read(rows: _Rows, name: str, report: Report, parse: Callable[[dict[str, str], str], Any]) -> Iterator[Any]:
    """``parse(row, where)`` of each row of ``name``.csv; a BadRow is reported and skipped."""
    for row, where in rows(name):
        try:
            yield parse(row, where)
        except BadRow as problem:
            report.skip(f"{name}.csv rows", str(problem), where)


def _conditions(rows: _Rows, report: Report) -> dict[str, list[tuple[dict[str, Any], str]]]:
    """Each patient's conditions (by source id), in start order, with where each was read."""

    def parse(row: dict[str, str], where: str) -> tuple[str, dict[str, Any], str]:
        row = _checked(row, "START", "PATIENT", "CODE", "DESCRIPTION")
        stop = _day(row["STOP"], "STOP") if row["STOP"] else None
        condition = {"code": row["CODE"], "description": row["DESCRIPTION"], "start": _day(row["START"], "START")}
        return row["PATIENT"], condition | {"stop": stop}, where

    found: dict[str, list[tuple[dict[str, Any], str]]] = defaultdict(list)
    for patient, condition, where in _read(rows, "conditions", report, parse):
        found[patient].append((condition, where))
    for listed in found.values():
        listed.sort(key=lambda item: (item[0]["start"], item[0]["code"]))
    return found


def _patients(
    rows: _Rows, conditions: dict[str, list[tuple[dict[str, Any], str]]], report: Report
) -> dict[str, Record]:
    def parse(row: dict[str, str], where: str) -> Record:
        row = _checked(row, "Id", "BIRTHDATE", "FIRST", "LAST", "GENDER")
        attributes = {
            "birth_date": _day(row["BIRTHDATE"], "BIRTHDATE"),
            "gender": row["GENDER"],
            **{key.lower(): row[key] for key in ("RACE", "ETHNICITY", "MARITAL", "CITY", "STATE", "ZIP") if row[key]},
            "conditions": [c for c, _ in conditions.get(row["Id"], [])],
        }
        if row["DEATHDATE"]:
            attributes["death_date"] = _day(row["DEATHDATE"], "DEATHDATE")
        name = health.person_name(row["PREFIX"], row["FIRST"], row["LAST"], row["SUFFIX"])
        return Record(health.PATIENT, row["Id"], name, attributes)

    return _unique(_read(rows, "patients", report, parse), "patients.csv rows", report)


def _unique(records: Iterator[Record], what: str, report: Report) -> dict[str, Record]:
    out: dict[str, Record] = {}
    for record in records:
        if record.external_id in out:
            report.skip(what, "an Id given before", record.external_id)
        else:
            out[record.external_id] = record
    return out


def _organizations(rows: _Rows, report: Report) -> list[Record]:
    def parse(row: dict[str, str], where: str) -> Record:
        row = _checked(row, "Id", "NAME")
        attributes = {key.lower(): row[key] for key in ("ADDRESS", "CITY", "STATE", "ZIP", "PHONE") if row[key]}
        return Record(health.ORGANIZATION, row["Id"], row["NAME"], attributes)

    return list(_unique(_read(rows, "organizations", report, parse), "organizations.csv rows", report).values())


def _providers(rows: _Rows, report: Report) -> tuple[list[Record], dict[str, str]]:
    """The practitioners, and the organization (source id) of each."""

    def parse(row: dict[str, str], where: str) -> tuple[Record, str]:
        row = _checked(row, "Id", "NAME", "ORGANIZATION")
        attributes = {key.lower(): row[key] for key in ("GENDER", "SPECIALITY") if row[key]}
        return Record(health.PRACTITIONER, row["Id"], health.person_name(row["NAME"]), attributes), row["ORGANIZATION"]

    parsed = list(_read(rows, "providers", report, parse))
    records = _unique((r for r, _ in parsed), "providers.csv rows", report)
    return list(records.values()), {r.external_id: o for r, o in parsed}


def _treats(
    session: Session,
    rows: _Rows,
    patient_ids: dict[str, Any],
    practitioner_ids: dict[str, Any],
    patients: dict[str, Record],
    report: Report,
) -> None:
    """``treats`` relations from the encounters: one per practitioner and patient, reinforced by each encounter."""

    def parse(row: dict[str, str], where: str) -> Encounter:
        row = _checked(row, "Id", "START", "PATIENT", "PROVIDER")
        if row["PATIENT"] not in patient_ids:
            raise BadRow("the patient was not imported (not in patients.csv, or its row was skipped)")
        if row["PROVIDER"] not in practitioner_ids:
            raise BadRow("the provider was not imported (not in providers.csv, or its row was skipped)")
        return Encounter(row["PATIENT"], row["PROVIDER"], _moment(row["START"], "START"), where)

    links: dict[tuple[Any, Any], list[datetime]] = defaultdict(list)
    for encounter in _read(rows, "encounters", report, parse):
        links[(practitioner_ids[encounter.practitioner], patient_ids[encounter.patient])].append(encounter.start)
    ends = {}
    for patient, record in patients.items():
        died = health.birth_origin(record.attributes.get("death_date"))
        if died is not None:
            ends[patient_ids[patient]] = died
    health.put_relations(session, "treats", dict(links), ends, report)


def _readings(rows: _Rows, patient_ids: dict[str, Any], report: Report) -> Iterator[Reading]:
    def parse(row: dict[str, str], where: str) -> Reading | None:
        row = _checked(row, "DATE", "PATIENT", "CODE")
        if row["CODE"] not in health.BY_LOINC:
            report.skip(
                "observations (not vitals or labs)",
                f"LOINC code not among the vitals' or labs' ({row['CATEGORY'] or 'no category'})",
                where,
            )
            return None
        if row["PATIENT"] not in patient_ids:
            raise BadRow("the patient was not imported (not in patients.csv, or its row was skipped)")
        try:
            value = float(row["VALUE"])
        except ValueError:
            raise BadRow(f"VALUE {row['VALUE'][:40]!r} is not a number") from None
        if not math.isfinite(value):
            raise BadRow(f"VALUE {row['VALUE'][:40]!r} is not a finite number")
        found, why = health.measure(row["CODE"], row["UNITS"], value)
        if found is None:
            raise BadRow(str(why))
        at = _moment(row["DATE"], "DATE")
        places = None if found.converted else health.decimals(row["VALUE"])
        return Reading(row["PATIENT"], found.schema, found.label, at, found.value, where, found.converted, places)

    for reading in _read(rows, "observations", report, parse):
        if reading is not None:
            yield reading


def _others(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.csv") if p.stem not in FILES)
