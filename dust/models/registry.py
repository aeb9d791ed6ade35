"""The models registry: relational models as versioned, stored artefacts, trained by background jobs.

``submit`` checks a training request at once, acting as the caller (the task's ``check``: a 422 for labels that
cannot train), records version n + 1 of its name (queued) and a ``models.train`` job, which runs once the
transaction commits. The job trains as the user who asked — reading only what they may see — reports progress
per epoch, and stores the metrics, the data version and the artefact; ``predict`` applies a stored model, loaded
once per process (``dust.models.cache``). Tasks plug in by name (``dust.models.tasks``): entity classification
and link prediction; a request's fields that belong to another task than its own are refused, naming them.

Who may do what (docs/models.md, "Access"):
- training needs write permission (admins, clinicians, members): a model is data made from what its trainer may
  see, and analysts and viewers only read;
- a model is seen by the user who trained it and by admins; one trained by an admin is ``shared``: every
  signed-in user may see it and predict with it;
- a prediction names only entities the caller may see (another answers 404, as everywhere), and its explanation
  only relations whose ends they may see, de-identified for analysts; writing predictions back needs write
  permission and is an ordinary entity (or, for links, relation) write, audited and bound by the caller's access.

A model's status and progress are its job's while it trains; once trained, its own.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from dust.core.config import Settings
from dust.core.errors import Conflict, DustError, NotFound
from dust.core.security import Permission
from dust.engine import access, audit
from dust.engine.paging import keyset_after, keyset_cursor
from dust.jobs import records, registry
from dust.jobs.queue import Context, queue_for
from dust.jobs.records import JobRun
from dust.jobs.scans import principal
from dust.models import cache, entity_classification, link_prediction, tasks  # noqa: F401 (tasks register)
from dust.models.schemas import ModelCreate, ModelList, ModelPublic, PredictRequest, PredictResult
from dust.storage.models import Model, utcnow
from dust.storage.repositories import jobs as job_repo
from dust.storage.repositories import models as repo

KIND = "models.train"
PROGRESS_SECONDS = 0.5  # at most this often an epoch's progress is written (a transaction each)
GONE = "its training job is gone (a database restored from an export keeps models, not jobs): train it again"


def submit(session: Session, request: ModelCreate) -> ModelPublic:
    """Version n + 1 of the request's name, queued, and its training job; 422 for what cannot train."""
    access.require(session, Permission.write)
    task = tasks.named(request.task)
    tasks.foreign(request.task, tasks.given(request), lambda t: t.owns, f"a model of {request.task}")
    request = tasks.with_defaults(request.task, request)
    task.check(session, request)
    who = access.principal(session)
    version = repo.next_version(session, request.name)
    settings = {
        **request.settings.model_dump(mode="json"),
        "types": request.types,
        "as_of": request.as_of.isoformat() if request.as_of else None,
    }
    fields: dict[str, Any] = {
        "task": request.task,
        "name": request.name,
        "version": version,
        "kind": request.kind,
        "target": request.target.model_dump(mode="json", exclude_none=True),
        "settings": settings,
        "shared": who is None or who.may(Permission.admin),
        "created_by": str(who.user_id) if who is not None else None,
    }
    row = repo.add(session, fields)
    if row is None:
        raise Conflict(f"another training of '{request.name}' took version {version} just now; send it again")
    payload = {"model_id": str(row.id), "request_id": who.request_id if who is not None else None}
    row.job_id = records.submit(session, KIND, payload, created_by=fields["created_by"])
    session.flush()
    return public(session, row)


def get(session: Session, model_id: uuid.UUID) -> ModelPublic:
    return public(session, _row(session, model_id))


def list_(session: Session, *, name: str | None = None, limit: int = 50, cursor: str | None = None) -> ModelList:
    """The models the principal may see, newest first (every version of ``name``, with it)."""
    who = access.principal(session)
    seen_by = None if who is None or who.may(Permission.admin) else repo.visible_to(str(who.user_id))
    rows = repo.page(session, name=name, seen_by=seen_by, before=keyset_after(cursor), limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = keyset_cursor(rows[-1].created_at, rows[-1].id) if more else None
    return ModelList(items=[public(session, row) for row in rows], next_cursor=next_cursor)


def predict(session: Session, model_id: uuid.UUID, request: PredictRequest) -> PredictResult:
    """The trained model's predictions (see ``dust.models.tasks``); 409 before it has trained."""
    row = _row(session, model_id)
    task = tasks.named(row.task)
    whose = f"model {row.name} (version {row.version}), of {row.task}"
    tasks.foreign(row.task, tasks.given(request), lambda t: t.owns_predict, whose)
    if request.write_back is not None:
        access.require(session, Permission.write)
    view = public(session, row)
    if view.status != repo.SUCCEEDED:
        why = f": {view.error}" if view.error else ""
        raise Conflict(f"model {row.name} (version {row.version}) has {view.status}{why}; predict once it succeeded")
    predicted = task.predict(session, row, _loaded(session, row, task), request)
    ends = [p.entity_id for p in predicted.predictions]
    ends += [end for link in predicted.links for end in (link.source_id, link.target_id)]
    audit.record(session, "read", "model", row.id, list(dict.fromkeys(ends)) or [None])
    return PredictResult(
        model_id=row.id,
        name=row.name,
        version=row.version,
        data_version=row.data_version,
        predictions=predicted.predictions,
        links=predicted.links,
        written=predicted.written,
    )


def _loaded(session: Session, row: Model, task: tasks.Task) -> Any:
    """The trained model as its task predicts with it: from the process's cache, or its artefact read and loaded
    (then kept). A model never changes once it has succeeded; its finish time and size in the key tell apart
    another model of the same id (a database restored from another export)."""

    def read() -> Any:
        artefact = repo.artefact(session, row.id)
        assert artefact is not None  # stored with its success
        return task.load(artefact)

    return cache.MODELS.get((row.id, row.finished_at, row.artefact_bytes), row.artefact_bytes or 0, read)


def _row(session: Session, model_id: uuid.UUID) -> Model:
    """The model if the principal may see it; 404 otherwise, as for one that does not exist."""
    row = repo.get(session, model_id)
    who = access.principal(session)
    mine = who is None or who.may(Permission.admin) or (row is not None and row.created_by == str(who.user_id))
    if row is None or not (mine or row.shared):
        raise NotFound(f"model {model_id} does not exist")
    return row


def public(session: Session, row: Model) -> ModelPublic:
    """The model as its readers see it: its job's state while it trains; a target's maps as their sizes."""
    status, progress, message, error = row.status, 1.0 if row.status == repo.SUCCEEDED else 0.0, None, row.error
    if status in (repo.QUEUED, repo.RUNNING):
        job = job_repo.get(session, row.job_id) if row.job_id else None
        if job is None:
            status, error = repo.FAILED, GONE
        elif job.state in (repo.QUEUED, repo.RUNNING, repo.FAILED):
            status, progress, message, error = job.state, job.progress, job.message, job.error
    settings = dict(row.settings)
    types, as_of = settings.pop("types", None), settings.pop("as_of", None)
    return ModelPublic(
        id=row.id,
        task=row.task,
        name=row.name,
        version=row.version,
        kind=row.kind,
        target={key: len(value) if isinstance(value, dict) else value for key, value in row.target.items()},
        types=types,
        as_of=as_of,
        settings=settings,
        status=status,
        progress=progress,
        message=message,
        error=error,
        job_id=row.job_id,
        metrics=row.metrics,
        data_version=row.data_version,
        artefact_bytes=row.artefact_bytes,
        shared=row.shared,
        created_by=row.created_by,
        created_at=row.created_at,
        finished_at=row.finished_at,
    )


def request_of(row: Model) -> ModelCreate:
    """The training request a model was made from."""
    settings = dict(row.settings)
    types, as_of = settings.pop("types", None), settings.pop("as_of", None)
    return ModelCreate.model_validate(
        {
            "task": row.task,
            "name": row.name,
            "kind": row.kind,
            "target": row.target,
            "types": types,
            "as_of": as_of,
            "settings": settings,
        }
    )


# --- training, as a job -----------------------------------------------------------------------------------------


class _Training:
    """A task's view of its job: sessions acting as the user who asked, and throttled progress."""

    def __init__(self, job: JobRun, payload: dict[str, Any]) -> None:
        self.job, self.payload = job, payload
        self._said = 0.0

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.job.session() as session:
            if self.job.created_by is not None:
                user = uuid.UUID(self.job.created_by)
                access.act_as(session, principal(session, self.job.settings, user, self.job.id, self.payload))
            access.require(session, Permission.write)
            yield session

    def epoch(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - self._said >= PROGRESS_SECONDS:
            self._said = now
            self.job.progress(0.05 + 0.9 * done / total, f"epoch {done} of {total}")


@registry.kind(KIND)
def train(job: JobRun, payload: dict[str, Any]) -> dict[str, Any]:
    """Train the model of ``payload["model_id"]`` and store it; its failure is the model's too."""
    model_id = uuid.UUID(payload["model_id"])
    with job.session() as session:
        row = repo.get(session, model_id)
        if row is None:
            raise NotFound(f"model {model_id} no longer exists")
        if row.status == repo.SUCCEEDED:  # this job's earlier run stored it, and stopped before saying so
            return {"model_id": str(row.id), "name": row.name, "version": row.version, "metrics": row.metrics}
        request = request_of(row)
        repo.start(session, model_id)
    job.progress(0.0, "reading the graph")
    try:
        trained = tasks.named(request.task).train(_Training(job, payload), request)
    except DustError as problem:
        with job.session() as session:
            repo.fail(session, model_id, problem.detail[: records.MAX_ERROR], utcnow())
        raise
    job.progress(0.95, "storing the model")
    with job.session() as session:
        repo.succeed(
            session,
            model_id,
            metrics=trained.metrics,
            data_version=trained.data_version,
            artefact=trained.artefact,
            now=utcnow(),
        )
    return {"model_id": str(model_id), "name": request.name, "version": row.version, "metrics": trained.metrics}


def train_here(sessions: sessionmaker[Session], settings: Settings, job_id: uuid.UUID) -> None:
    """Run a submitted training job now, in this process (the embedded API has no worker of its own); nothing if
    a worker has taken it already."""
    records.run(Context(settings, sessions, queue_for(settings)), str(job_id))
