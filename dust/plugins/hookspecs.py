"""The hooks a plugin may implement. Each is optional; each returns what the plugin adds."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dust.plugins import hookspec

if TYPE_CHECKING:
    import typer

    from dust.anomalies.base import Detector
    from dust.domains import DomainPack
    from dust.engine.actions import TriggerAction
    from dust.engine.analysis import SeriesAnalysis
    from dust.importers.base import Importer


@hookspec
def dust_detectors() -> list[type[Detector]]:
    """Anomaly detector classes (``dust.anomalies.base.Detector``), each with a ``name`` unique across plugins."""
    raise NotImplementedError


@hookspec
def dust_analyses() -> list[SeriesAnalysis]:
    """Analyses of one series (``dust.engine.analysis.SeriesAnalysis``) for GET /tensors/{id}/analysis."""
    raise NotImplementedError


@hookspec
def dust_domain_packs() -> list[DomainPack]:
    """Domain packs (``dust.domains.DomainPack``): what ``dust demo <name>`` loads."""
    raise NotImplementedError


@hookspec
def dust_trigger_actions() -> list[TriggerAction]:
    """Trigger actions (``dust.engine.actions.TriggerAction``) that rules may name in ``then``."""
    raise NotImplementedError


@hookspec
def dust_importers() -> list[Importer]:
    """Importers (``dust.importers.base.Importer``), each run by ``dust import <name> PATH…``."""
    raise NotImplementedError


@hookspec
def dust_commands(app: typer.Typer) -> None:
    """Add commands or command groups to ``app``, the ``dust`` command."""
    raise NotImplementedError
