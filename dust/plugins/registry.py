"""The plugins of this process and what each adds, from one pluggy ``PluginManager`` made on first use."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

from dust.plugins import GROUP, PROJECT, builtin, hookspecs

if TYPE_CHECKING:
    import typer

    from dust.anomalies.base import Detector
    from dust.domains import DomainPack
    from dust.engine.analysis import SeriesAnalysis

BUILTIN = "dust"  # the name DUST's own plugin is registered under


class PluginConflict(RuntimeError):
    """Two plugins add something under the same name; which one was meant cannot be guessed."""


@dataclass(frozen=True)
class Plugin:
    """One registered plugin: ``name`` is its distribution's (``dust`` for the built-in one)."""

    name: str
    version: str | None
    builtin: bool
    detectors: list[str] = field(default_factory=list)
    analyses: list[str] = field(default_factory=list)
    domain_packs: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)


@functools.cache
def manager() -> pluggy.PluginManager:
    plugins = pluggy.PluginManager(PROJECT)
    plugins.add_hookspecs(hookspecs)
    plugins.register(builtin, name=BUILTIN)
    plugins.load_setuptools_entrypoints(GROUP)
    return plugins


def reload() -> None:
    """Look for plugins again, e.g. after one was installed into the running process."""
    manager.cache_clear()
    detectors.cache_clear()
    analyses.cache_clear()
    domain_packs.cache_clear()


@functools.cache
def detectors() -> dict[str, type[Detector]]:
    """Every detector class by name."""
    return _unique("detector", ((by, c.name, c) for by, made in _each(manager().hook.dust_detectors) for c in made))


@functools.cache
def analyses() -> dict[str, SeriesAnalysis]:
    """Every series analysis by name, DUST's own first (registration order: later ones may use their results)."""
    found = _each(manager().hook.dust_analyses)
    found.sort(key=lambda entry: entry[0] != BUILTIN)
    return _unique("analysis", ((by, a.name, a) for by, made in found for a in made))


@functools.cache
def domain_packs() -> dict[str, DomainPack]:
    """Every domain pack by name."""
    return _unique(
        "domain pack", ((by, p.name, p) for by, made in _each(manager().hook.dust_domain_packs) for p in made)
    )


def add_commands(app: typer.Typer) -> None:
    """Let every plugin add its commands to the ``dust`` command."""
    manager().hook.dust_commands(app=app)


def plugins() -> list[Plugin]:
    """The registered plugins, DUST's own first, each with the names of what it adds."""
    import typer

    registered = manager()
    distributions = {registered.get_name(module): dist for module, dist in registered.list_plugin_distinfo()}
    listed: dict[str, dict[str, list[str]]] = {name: {} for name, _ in registered.list_name_plugin()}
    for by, made in _each(registered.hook.dust_detectors):
        listed[by].setdefault("detectors", []).extend(c.name for c in made)
    for by, made in _each(registered.hook.dust_analyses):
        listed[by].setdefault("analyses", []).extend(a.name for a in made)
    for by, packs in _each(registered.hook.dust_domain_packs):
        listed[by].setdefault("domain_packs", []).extend(p.name for p in packs)
    for impl in registered.hook.dust_commands.get_hookimpls():
        scratch = typer.Typer()
        impl.function(app=scratch)
        listed[impl.plugin_name]["commands"] = _command_names(scratch)
    return sorted(
        (
            Plugin(
                name=distributions[name].project_name if name in distributions else name,
                version=distributions[name].version if name in distributions else _own_version(name),
                builtin=name == BUILTIN,
                **adds,
            )
            for name, adds in listed.items()
        ),
        key=lambda plugin: (not plugin.builtin, plugin.name),
    )


def _each(hook: Any, **arguments: Any) -> list[tuple[str, list[Any]]]:
    """``(plugin name, what it returned)`` for each plugin implementing ``hook``."""
    return [(impl.plugin_name, impl.function(**arguments) or []) for impl in hook.get_hookimpls()]


def _unique(what: str, entries: Iterable[tuple[str, str, Any]]) -> dict[str, Any]:
    found: dict[str, tuple[str, Any]] = {}
    for by, name, thing in entries:
        if name in found and found[name][0] != by:
            raise PluginConflict(f"plugins '{found[name][0]}' and '{by}' both add a {what} named '{name}'")
        found[name] = (by, thing)
    return {name: thing for name, (_, thing) in found.items()}


def _command_names(app: typer.Typer) -> list[str]:
    commands = [
        c.name or (c.callback.__name__.replace("_", "-") if c.callback else "?") for c in app.registered_commands
    ]
    return commands + [g.name or "?" for g in app.registered_groups]


def _own_version(name: str) -> str | None:
    if name != BUILTIN:
        return None
    from dust import __version__

    return __version__
