"""The table of tasks the models registry trains: a task's name → its functions (``Task``).

A task module registers itself (``register``) and ``dust.models.registry`` imports it, so that ``POST /models``
with ``task: NAME`` finds it. The registry does the rest: versions, storage, the training job, who may see a
model and predict with it. A task:

- ``check(session, request)``: at the request, acting as the caller: a 4xx (``DustError``) for what cannot train
  (an attribute no entity has, one class);
- ``train(training, request)``: in the job: reads in ``training.session()`` (acting as the user who asked),
  reports ``training.epoch(k, n)``, returns ``Trained`` (metrics, the artefact's bytes, the data version);
- ``predict(session, model, artefact, request)``: with the stored artefact, acting as the caller: predictions of
  entities they may see, optionally explained and written back (ordinary audited writes).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from dust.core.errors import InvalidInput, did_you_mean
from dust.models.schemas import ModelCreate, Prediction, PredictRequest
from dust.storage.models import Model


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


@dataclass(frozen=True)
class Task:
    check: Callable[[Session, ModelCreate], None]
    train: Callable[[Training, ModelCreate], Trained]
    predict: Callable[[Session, Model, bytes, PredictRequest], Predicted]


TASKS: dict[str, Task] = {}


def register(name: str, task: Task) -> None:
    TASKS[name] = task


def named(name: str) -> Task:
    if name not in TASKS:
        raise InvalidInput(f"task '{name[:64]}' is none of {', '.join(sorted(TASKS))}{did_you_mean(name, TASKS)}")
    return TASKS[name]
