"""What the job layer runs, by name.

- tasks: plain functions of JSON-able arguments, run by a worker after ``defer`` (``@task("webhooks.deliver")``);
  each gets the worker's ``Context`` first and opens its own transactions from it;
- job kinds: user-visible jobs with state, progress and a result in the ``jobs`` table (``@kind("anomalies.scan")``;
  ``dust.jobs.records.submit`` starts one);
- sweep hooks: called when a worker starts, to re-enqueue a module's own durable work whose messages may have been
  lost (``@on_sweep("webhooks")``: the outbox's pending deliveries).

Names are what a message carries, so a worker finds the function whichever process enqueued it. A worker imports
``MODULES`` before it consumes: a module that registers tasks must be named there (or be imported by one that is).
"""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from dust.jobs.queue import Context
    from dust.jobs.records import JobRun

# Where the tasks, kinds and hooks that come with DUST register; imported by ``load()``.
MODULES = [
    "dust.jobs.records",
    "dust.jobs.scans",
    "dust.engine.webhooks",
    "dust.engine.actions",
    "dust.models.registry",
]
NAME = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")  # "webhooks.deliver"

Task = Callable[..., None]  # (context, *args)
Kind = Callable[["JobRun", dict[str, Any]], Any]  # (run, payload) -> result: a dict, a pydantic model or None
SweepHook = Callable[["Context"], None]
F = TypeVar("F", bound=Callable[..., Any])

_tasks: dict[str, Task] = {}
_kinds: dict[str, Kind] = {}
_sweeps: dict[str, SweepHook] = {}
_loaded = False
_loading = threading.Lock()


def task(name: str) -> Callable[[F], F]:
    """Register a task function under ``name``: ``fn(context, *args)``, run by a worker after ``defer``."""
    return _registrar(_tasks, name)


def kind(name: str) -> Callable[[F], F]:
    """Register a job kind under ``name``: ``fn(run, payload)``, run by a worker after ``submit``; what it
    returns is the job's result."""
    return _registrar(_kinds, name)


def on_sweep(name: str) -> Callable[[F], F]:
    """Register ``fn(context)``, called when a worker starts: re-enqueue this module's own durable work."""
    return _registrar(_sweeps, name)


def _registrar(table: dict[str, Any], name: str) -> Callable[[F], F]:
    if not NAME.match(name) or len(name) > 64:
        raise ValueError(f"'{name}' is not a job name: dotted lower-case words, at most 64 characters")

    def register(fn: F) -> F:
        known = table.get(name)
        # The same function again is a module imported twice (as __main__ and by name): keep it.
        if known is not None and known.__qualname__ != fn.__qualname__:
            raise ValueError(f"'{name}' is registered already, by {known.__module__}.{known.__qualname__}")
        table[name] = fn
        return fn

    return register


def load() -> None:
    """Import the modules that register DUST's tasks, kinds and hooks (once per process)."""
    global _loaded
    if _loaded:
        return
    with _loading:
        if not _loaded:
            for module in MODULES:
                importlib.import_module(module)
            _loaded = True


def task_named(name: str) -> Task:
    load()
    if name not in _tasks:
        raise LookupError(f"no task '{name}'; registered: {', '.join(sorted(_tasks)) or 'none'}")
    return _tasks[name]


def kind_named(name: str) -> Kind:
    load()
    if name not in _kinds:
        raise LookupError(f"no job kind '{name}'; registered: {', '.join(sorted(_kinds)) or 'none'}")
    return _kinds[name]


def sweep_hooks() -> dict[str, SweepHook]:
    load()
    return dict(_sweeps)
