"""Background jobs: one layer for webhook delivery, anomaly scans, and later imports and model training.

Built on huey: a SQLite file (or memory) for the embedded default, which ``dust serve`` consumes itself, and Redis
with ``DUST_REDIS_URL``, which ``dust worker`` processes consume (``dust.jobs.queue``). docs/jobs.md tells more.

- ``@task("webhooks.deliver")`` registers a task ``fn(context, *args)``; ``defer(session, name, *args, delay=)``
  runs it after the session's transaction commits (never if it rolls back);
- ``@kind("anomalies.scan")`` registers a user-visible job kind ``fn(run, payload) -> result``; ``submit(session,
  kind, payload, created_by=)`` records a job (``GET /jobs/{id}`` shows its state, progress and result) and runs it
  once the transaction commits;
- ``@on_sweep("webhooks")`` registers ``fn(context)``, called when a worker starts, to re-enqueue durable work;
- ``Worker(settings)`` consumes a database's queue in threads of this process.
"""

from dust.jobs.queue import Context, JobQueue, attach, defer, queue_for
from dust.jobs.records import JobAccepted, JobList, JobPublic, JobRun, get, list_, submit
from dust.jobs.registry import MODULES, kind, on_sweep, task
from dust.jobs.worker import Worker

__all__ = [
    "MODULES",
    "Context",
    "JobAccepted",
    "JobList",
    "JobPublic",
    "JobQueue",
    "JobRun",
    "Worker",
    "attach",
    "defer",
    "get",
    "kind",
    "list_",
    "on_sweep",
    "queue_for",
    "submit",
    "task",
]
