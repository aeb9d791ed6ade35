"""The table of tasks the models registry trains: a task's name → its functions (``Task``).

A task module registers itself (``register``) and ``dust.models.registry`` imports it, so that ``POST /models``
with ``task: NAME`` finds it. The registry does the rest: versions, storage, the training job, who may see a
model and predict with it. A task:

- ``check(session, request)``: at the request, acting as the caller: a 4xx (``DustError``) for what cannot train
  (an attribute no entity has, one class);
- ``train(training, request)``: in the job: reads in ``training.session()`` (acting as the user who asked),
  reports ``training.epoch(k, n)``, returns ``Trained`` (metrics, the artefact's bytes, the data version);
- ``load(artefact)``: the stored artefact's bytes as ``predict`` uses them (a torch model, vectors); the registry
  keeps what it gives in a small in-process cache (``dust.models.cache``): a trained model never changes;
- ``predict(session, model, loaded, request)``: with what ``load`` gave, acting as the caller: predictions of
  entities they may see, optionally explained and written back (ordinary audited writes).

A task names the fields of a request that are its alone (``owns``: of the training request, as ``target.labels``
or ``settings.layers``; ``owns_predict``: of a prediction request, as ``candidates``), and ``defaults`` for
its settings where they differ from ``TrainSettings``'s. A field another task owns, given to this one, is a 422
that names it (``foreign``), before the task sees the request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from pydantic import BaseModel
from sqlalchemy.orm import Session

from dust.core.errors import InvalidInput, did_you_mean
from dust.models.schemas import LinkPrediction, ModelCreate, Prediction, PredictRequest
from dust.storage.models import Model

# torch's random generator is the process's: two trainings at once in a worker's threads would draw from it in
# turns, and a seed would no longer give its model. One at a time per process, whatever the task.
FITTING = threading.Lock()


class Training(Protocol):
    """What a task's ``train`` is given by the job that runs it."""

    def session(self) -> AbstractContextManager[Session]:
        """One transaction, acting as the user who asked for the model."""
        ...

    def epoch(self, done: int, total: int) -> None:
        """Say that ``done`` of ``total`` epochs are done (call it between transactions)."""
        ...


@dataclass(frozen=True)
class Trained:
    metrics: dict[str, Any]
    artefact: bytes
    data_version: datetime  # the instant of the graph it learnt from


@dataclass(frozen=True)
class Predicted:
    predictions: list[Prediction]
    written: int
    links: list[LinkPrediction] = field(default_factory=list)


@dataclass(frozen=True)
class Task:
    check: Callable[[Session, ModelCreate], None]
    train: Callable[[Training, ModelCreate], Trained]
    predict: Callable[[Session, Model, Any, PredictRequest], Predicted]
    load: Callable[[bytes], Any]
    owns: frozenset[str] = frozenset()
    owns_predict: frozenset[str] = frozenset()
    defaults: Mapping[str, Any] = field(default_factory=dict)


TASKS: dict[str, Task] = {}


def register(name: str, task: Task) -> None:
    TASKS[name] = task


def named(name: str) -> Task:
    if name not in TASKS:
        raise InvalidInput(f"task '{name[:64]}' is none of {', '.join(sorted(TASKS))}{did_you_mean(name, TASKS)}")
    return TASKS[name]


def given(body: BaseModel, prefix: str = "", sent: str = "") -> list[tuple[str, str]]:
    """The fields of ``body`` (and of the models in it, as ``settings.layers``) that hold other than their default,
    each as (its path by the fields' names, its path as sent: ``write_back.tensor.class_`` was sent as ``class``)."""
    found = []
    for name, info in type(body).model_fields.items():
        value = getattr(body, name)
        shown = sent + (info.alias or name)
        if isinstance(value, BaseModel):
            found += given(value, f"{prefix}{name}.", f"{shown}.")
        elif value != info.get_default(call_default_factory=True):
            found.append((prefix + name, shown))
    return found


def foreign(name: str, fields: Iterable[tuple[str, str]], owned: Callable[[Task], frozenset[str]], what: str) -> None:
    """422 for the first of ``fields`` (``given``'s) that another task than ``name`` owns (``owned``: its training
    or its prediction fields), named as it was sent; ``what`` says whose request it is."""
    for path, sent in fields:
        owner = next((other for other, task in sorted(TASKS.items()) if _within(path, owned(task))), name)
        if owner != name:
            raise InvalidInput(f"{sent} is for {owner}, not {what}")


def _within(path: str, owned: frozenset[str]) -> bool:
    """Whether ``path`` is an owned field or in one (``settings.features.window`` is in ``settings.features``)."""
    return any(path == name or path.startswith(name + ".") for name in owned)


def with_defaults(name: str, request: ModelCreate) -> ModelCreate:
    """``request`` with the task's defaults for the settings it did not give."""
    left = {k: v for k, v in named(name).defaults.items() if k not in request.settings.model_fields_set}
    settings = request.settings.model_copy(update=left)
    return request.model_copy(update={"settings": settings})
