"""An importer as ``dust import <name> PATH…`` runs it: DUST's own (synthea, fhir, paysim, rdf) and plugins' alike
(the ``dust_importers`` hook)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.orm import Session

from dust.importers.report import Report

Progress = Callable[[int, int | None], None]  # (done, total or None): drives the command's progress bar
Sessions = Callable[[], AbstractContextManager[Session]]  # each call opens one transaction (``Dust.session``)
_METAVARS = {"directory": "DIR", "file": "FILE", "files": "FILE..."}


@dataclass(frozen=True)
class Importer:
    """``load(session, paths, progress) -> Report``, run in one transaction that commits when it returns; or, with
    ``transactions="own"``, ``load(sessions, paths, progress)``, which opens (and commits) its own with
    ``sessions()`` — for imports too big for one."""

    name: str  # the command: `dust import <name>`
    help: str  # the command's help; its first sentence is the one `dust import --help` lists
    reads: Literal["directory", "file", "files"]  # one directory, one file, or one or more files
    load: Callable[[Any, list[Path], Progress], Report]
    path_help: str = ""  # the help of the PATH argument
    metavar: str = ""  # how the help names the PATH argument; default DIR, FILE or FILE...
    progress: str = "Reading"  # the progress bar's label
    transactions: Literal["one", "own"] = "one"

    @property
    def argument(self) -> str:
        return self.metavar or _METAVARS[self.reads]
