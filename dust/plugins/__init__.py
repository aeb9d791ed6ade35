"""Plugins: packages that add anomaly detectors, domain packs and ``dust`` commands.

pluggy (the plugin library of pytest, tox and datasette) does the work. A plugin is a module with functions
named after the hooks in ``dust.plugins.hookspecs`` and marked ``@hookimpl``; its package names that module in
the entry-point group ``dust.plugins``. DUST's own detectors, domain packs and commands are a plugin too
(``dust.plugins.builtin``), registered the same way, so nothing built in has a path a plugin lacks.
docs/plugins.md shows how to write one.
"""

from __future__ import annotations

import pluggy

PROJECT = "dust"
GROUP = "dust.plugins"  # the entry-point group a plugin's package names its module in

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)
