"""DUST's own detectors, analyses, domain packs and importers, registered as a plugin like any other."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dust.plugins import hookimpl

if TYPE_CHECKING:
    from pathlib import Path

    from sqlalchemy.orm import Session

    from dust.anomalies.base import Detector
    from dust.domains import DomainPack
    from dust.engine.analysis import SeriesAnalysis
    from dust.importers.base import Importer, Progress, Sessions
    from dust.importers.report import Report


@hookimpl
def dust_detectors() -> list[type[Detector]]:
    from dust.anomalies.detectors import DETECTORS

    return list(DETECTORS.values())


@hookimpl
def dust_analyses() -> list[SeriesAnalysis]:
    from dust.engine.analysis import builtin_analyses

    return builtin_analyses()


@hookimpl
def dust_domain_packs() -> list[DomainPack]:
    from dust.domains import finance, healthcare, supply_chain

    return [healthcare.PACK, supply_chain.PACK, finance.PACK]


@hookimpl
def dust_importers() -> list[Importer]:
    # The importers themselves are imported when one runs: `dust --help` stays quick.
    from dust.importers.base import Importer

    def synthea(session: Session, paths: list[Path], progress: Progress) -> Report:
        from dust.importers import synthea

        return synthea.import_directory(session, paths[0], progress)

    def fhir(session: Session, paths: list[Path], progress: Progress) -> Report:
        from dust.importers import fhir

        return fhir.import_files(session, paths, progress)

    def paysim(sessions: Sessions, paths: list[Path], progress: Progress) -> Report:
        from dust.importers import paysim

        return paysim.import_file(sessions, paths[0], progress)

    def rdf(session: Session, paths: list[Path], progress: Progress) -> Report:
        from dust.importers import rdf

        return rdf.import_file(session, paths[0], progress)

    return [
        Importer(
            "synthea",
            "Load a Synthea CSV export (patients, providers, organizations, encounters, conditions, vitals); again "
            "adds nothing. Ends with what was imported and what was skipped, and why.",
            "directory",
            synthea,
            path_help="A Synthea CSV export (patients.csv, …).",
            progress="Reading rows",
        ),
        Importer(
            "fhir",
            "Load FHIR R4 bundles (Patient, Practitioner, PractitionerRole, Organization, Encounter, Observation, "
            "Condition) as `import synthea` does; again adds nothing. Ends with what was imported and skipped, and "
            "why.",
            "files",
            fhir,
            path_help="FHIR R4 bundles (JSON), e.g. Synthea's.",
            progress="Reading bundles",
        ),
        Importer(
            "paysim",
            "Load PaySim transactions: accounts and merchants, a `pays` relation per payer and payee, hourly "
            "balances; again adds nothing. Ends with what was imported and skipped, and why.",
            "file",
            paysim,
            path_help="A PaySim transactions CSV (step, type, amount, …).",
            progress="Importing rows",
            transactions="own",  # commits as it goes (dust.importers.paysim says why)
        ),
        Importer(
            "rdf",
            "Load an N-Triples graph: IRIs as entities, triples between them as relations (predicates as types), "
            "literals as attributes; again adds nothing. Ends with what was imported and skipped, and why.",
            "file",
            rdf,
            path_help="An N-Triples file (.nt, or gzipped .nt.gz).",
            metavar="FILE.nt[.gz]",
            progress="Reading triples",
        ),
    ]
