"""DUST's own detectors, domain packs and commands, registered as a plugin like any other."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dust.plugins import hookimpl

if TYPE_CHECKING:
    from dust.anomalies.base import Detector
    from dust.domains import DomainPack
    from dust.engine.analysis import SeriesAnalysis


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
    from dust.domains import healthcare, supply_chain

    return [healthcare.PACK, supply_chain.PACK]
