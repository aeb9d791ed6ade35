"""The plugins of this process and what each adds, from one pluggy ``PluginManager`` made on first use."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

from dust.plugins import GROUP, PROJECT, builtin, hookspecs

if TYPE_CHECKING:
    import typer

    from dust.anomalies.base import Detector
    from dust.domains import DomainPack
    from dust.engine.actions import TriggerAction
    from dust.engine.analysis import SeriesAnalysis
    from dust.importers.base import Importer

BUILTIN = "dust"  # the name DUST's own plugin is registered under
# Names DUST takes apart from the hooks: its own trigger actions, which are part of the rule document's model
# (dust.engine.triggers), and `dust import dust`, which loads a DUST export (dust.engine.transfer).
OWN_ACTIONS = ("alert", "write", "attribute", "weight", "webhook")
OWN_IMPORTERS = ("dust",)
_ACTION_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_TAKEN_SETTINGS = {"action", "follow", "self"}  # keys of an action that DUST reads itself


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
    trigger_actions: list[str] = field(default_factory=list)
    importers: list[str] = field(default_factory=list)
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
    trigger_actions.cache_clear()
    importers.cache_clear()


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


@functools.cache
def trigger_actions() -> dict[str, TriggerAction]:
    """Every plugin's trigger action by name (DUST's own are not here: see ``OWN_ACTIONS``)."""
    found = [(by, a.name, a) for by, made in _each(manager().hook.dust_trigger_actions) for a in made]
    for by, name, action in found:
        _check_action(by, name, action)
    taken = [(BUILTIN, name, None) for name in OWN_ACTIONS]
    return {name: a for name, a in _unique("trigger action", taken + found).items() if a is not None}


def _check_action(by: str, name: str, action: TriggerAction) -> None:
    if not _ACTION_NAME.fullmatch(name):
        raise PluginConflict(f"plugin '{by}': '{name}' is not an action name (a-z, 0-9 and _, at most 64)")
    settings = action.settings.model_fields
    clash = _TAKEN_SETTINGS & ({*settings} | {f.alias for f in settings.values() if f.alias})
    if clash:
        raise PluginConflict(f"plugin '{by}': action '{name}' has a setting named {', '.join(sorted(clash))}, "
                             "which every action takes from DUST")  # fmt: skip


@functools.cache
def importers() -> dict[str, Importer]:
    """Every importer by name (but `dust import dust`, DUST's export loader, which is a command of its own)."""
    found = [(by, i.name, i) for by, made in _each(manager().hook.dust_importers) for i in made]
    taken = [(BUILTIN, name, None) for name in OWN_IMPORTERS]
    return {name: i for name, i in _unique("importer", taken + found).items() if i is not None}


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
    listed[BUILTIN]["trigger_actions"] = list(OWN_ACTIONS)
    for by, actions in _each(registered.hook.dust_trigger_actions):
        listed[by].setdefault("trigger_actions", []).extend(a.name for a in actions)
    for by, made in _each(registered.hook.dust_importers):
        listed[by].setdefault("importers", []).extend(i.name for i in made)
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
            article = "an" if what[0] in "aeiou" else "a"
            raise PluginConflict(f"plugins '{found[name][0]}' and '{by}' both add {article} {what} named '{name}'")
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
