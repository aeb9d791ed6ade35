"""The ``dust`` command: serve, load demo data, migrate, manage users."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from typer.core import TyperGroup

from dust.core.config import Settings
from dust.core.logging import configure_logging
from dust.core.security import Role

if TYPE_CHECKING:
    from dust.embedded import Dust
    from dust.engine.transfer import Outcome
    from dust.importers.base import Importer


class _Commands(TyperGroup):
    """Engine errors and invalid input end a command with a message and exit code 1, not a traceback."""

    def invoke(self, ctx: Any) -> Any:  # typer vendors click; its Context type is private
        from pydantic import ValidationError

        from dust.core.errors import DustError

        try:
            return super().invoke(ctx)
        except DustError as problem:
            console.print(f"[red]{problem.title}:[/red] {problem.detail}")
            raise typer.Exit(1) from None
        except ValidationError as problem:
            for error in problem.errors():
                where = ".".join(str(p) for p in error["loc"])
                console.print(f"[red]Invalid {where}:[/red] {error['msg']}")
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_Commands, help="DUST: entities, their tensors over time, and the relations between them.", no_args_is_help=True
)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")
users_app = typer.Typer(help="Users and their roles.", no_args_is_help=True)
app.add_typer(users_app, name="users")
import_app = typer.Typer(help="Load data from files (a DUST export, Synthea CSV, FHIR bundles).", no_args_is_help=True)
app.add_typer(import_app, name="import")
plugins_app = typer.Typer(
    help="Installed plugins: detectors, analyses, trigger actions, importers, domain packs and commands.",
    no_args_is_help=True,
)
app.add_typer(plugins_app, name="plugins")
# soft_wrap: a line longer than the console is left for the terminal to wrap, never broken by Rich (which takes
# 80 columns when output is not a terminal), so a URL, path, id or password stays whole on one line to copy.
console = Console(stderr=True, soft_wrap=True)


WORKER_HEALTHCHECK_SECONDS = 60  # see _serve


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Run the API (and UI) with uvicorn; pending migrations are applied first."""
    _serve(host, port, workers)


def _serve(host: str, port: int, workers: int) -> None:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    if not settings.secret_key:
        console.print(
            "[red]DUST_SECRET_KEY is not set.[/red] It signs every access token; set it to a long random value\n"
            "(python -c 'import secrets; print(secrets.token_urlsafe(48))'), or try DUST with `dust demo --serve`."
        )
        raise typer.Exit(2)
    _migrate(settings)
    with _metrics_shared(workers):
        _run_uvicorn(settings, host, port, workers)


def _metrics_shared(workers: int) -> Any:
    """With several workers, a folder where each counts its metrics, for whichever answers /metrics to add up
    (dust.api.metrics); removed when the server stops. One set by the environment is used as it is."""
    multiprocess = "PROMETHEUS_MULTIPROC_DIR"  # dust.api.metrics.MULTIPROCESS, unimported: it loads the whole API
    import contextlib
    import os
    import tempfile

    if workers == 1 or os.environ.get(multiprocess):
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def folder() -> Any:
        with tempfile.TemporaryDirectory(prefix="dust-metrics-") as path:
            os.environ[multiprocess] = path  # the workers, spawned after this, inherit it
            try:
                yield
            finally:
                del os.environ[multiprocess]

    return folder()


def _run_uvicorn(settings: Settings, host: str, port: int, workers: int) -> None:
    import uvicorn

    from dust.api.protocol import BoundedHttpToolsProtocol

    console.print(
        f"DUST is serving at [bold]http://{host}:{port}/[/bold]  (web UI: http://{host}:{port}/ui, API docs: "
        f"http://{host}:{port}/docs)"
    )
    uvicorn.run(
        "dust.api.app:serving_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        access_log=False,
        # uvicorn believes X-Forwarded-For from loopback by default: anyone on the machine could then pose as
        # any address to the sign-in throttle and the audit trail. Only the named proxies are believed.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=",".join(settings.trusted_proxies) or None,
        # uvicorn bounds neither how long a request may take to arrive nor how big its head may be; this protocol
        # does, and answers 503 past DUST_MAX_CONNECTIONS (dust.api.protocol).
        http=BoundedHttpToolsProtocol,
        ws="none",  # no route speaks WebSocket, and an upgraded connection would leave the protocol's deadline
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
        # A worker of --workers N must answer the supervisor's ping within this long, starting up included:
        # uvicorn's 5 s killed every worker, again and again, while a busy 2-core machine was still importing.
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
    )


@app.command()
def worker(
    threads: Annotated[int, typer.Option(min=1, max=64, help="Jobs run at once.")] = 2,
) -> None:
    """Run background jobs (webhook deliveries, background scans) until SIGTERM or Ctrl-C: with DUST_REDIS_URL,
    from the queue all servers share; without, from the SQLite queue beside the database."""
    _work(threads)


def _work(threads: int) -> None:
    import signal
    import threading

    from dust.jobs import Worker, queue_for

    settings = _configured()
    where = queue_for(settings).where
    if where.backend == "memory":
        console.print(
            "[red]No queue to consume:[/red] this database's queue would live in memory, out of reach of other "
            "processes. Set DUST_REDIS_URL (a team's shared queue) or DUST_JOBS_PATH (a SQLite queue file)."
        )
        raise typer.Exit(2)
    stop = threading.Event()

    def stopping(signum: int, _frame: object) -> None:
        console.print("Stopping: jobs running may finish (a second signal stops at once).")
        for each in (signal.SIGTERM, signal.SIGINT):
            signal.signal(each, signal.SIG_DFL if each == signal.SIGTERM else signal.default_int_handler)
        stop.set()

    for each in (signal.SIGTERM, signal.SIGINT):
        signal.signal(each, stopping)
    job_worker = Worker(settings, threads=threads).start()
    queue = "Redis" if where.backend == "redis" else where.target
    console.print(f"DUST worker: running jobs from {queue} ({where.name}) with {threads} threads.", markup=False)
    try:
        stop.wait()
    finally:
        job_worker.stop(settings.shutdown_grace_seconds)
    console.print("DUST worker stopped.")


@app.command()
def demo(
    domain: Annotated[str, typer.Argument(help="Which domain pack's data set (`dust plugins list` names them).")] = (
        "healthcare"
    ),
    size: Annotated[int, typer.Option(min=1, max=100_000, help="Number of main entities (healthcare: patients).")] = 50,
    days: Annotated[int, typer.Option(min=7, max=3650, help="Days of data (healthcare: vitals per patient).")] = 90,
    seed: Annotated[int, typer.Option(help="Seed of the generator: the same seed gives the same data set.")] = 7,
    serve_after: Annotated[bool, typer.Option("--serve", help="Serve the data set afterwards.")] = False,
    host: Annotated[str, typer.Option(help="Interface to listen on with --serve.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port with --serve.")] = 8000,
) -> None:
    """Load a generated domain data set into the configured database (once; a second run keeps it)."""
    import json

    from dust.core.errors import did_you_mean
    from dust.domains import load_anomaly_rules, missing_grants
    from dust.embedded import Dust
    from dust.plugins import registry

    packs = registry.domain_packs()
    if domain not in packs:
        console.print(
            f"[red]No domain pack '{domain}'{did_you_mean(domain, packs)}[/red]; installed: {', '.join(packs)}"
        )
        raise typer.Exit(2)
    pack = packs[domain]
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    db = Dust(settings.database_url)
    with db.session() as session:
        loaded = pack.loaded(session)
    if loaded:
        console.print("The demo data set is already loaded; keeping it.")
    else:
        with _progress() as bar, db.session() as session:
            task = bar.add_task(f"Generating {pack.name} data ({pack.unit})", total=size)
            made = pack.generate(session, size=size, days=days, seed=seed, progress=lambda n: bar.advance(task, n))
            load_anomaly_rules(session, pack)  # after the history: it is scored on demand (a scan), not here
        console.print("Loaded: " + ", ".join(f"{n} {what}" for what, n in made.items()))
    if pack.tour:
        console.print(pack.tour, markup=False, highlight=False)
    if missing := missing_grants(pack, settings.access_relation_types):
        wanted = json.dumps([*settings.access_relation_types, *missing])  # the setting is a JSON list
        console.print(f"Set DUST_ACCESS_RELATION_TYPES='{wanted}' so that {', '.join(missing)} grants access.")
    _ensure_secret(settings)
    password = _reset_demo_admin(db)
    db.close()
    console.print(f"Sign in as [bold]admin[/bold] with password [bold]{password}[/bold] (new at every demo start).")
    if serve_after:
        _serve(host, port, 1)


def _ensure_secret(settings: Settings) -> None:
    """The demo's signing key: DUST_SECRET_KEY if set, else one generated once and kept beside the database."""
    import os
    import secrets
    from pathlib import Path

    from sqlalchemy.engine import make_url

    if settings.secret_key:
        return
    database = make_url(settings.database_url).database if settings.database_url.startswith("sqlite") else None
    path = Path(f"{database}.secret" if database and database != ":memory:" else ".dust-secret")
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    os.environ["DUST_SECRET_KEY"] = path.read_text().strip()


def _reset_demo_admin(db: Dust) -> str:
    import secrets

    from dust.engine import users
    from dust.storage.repositories import users as user_repo

    password = secrets.token_urlsafe(12)
    with db.session() as session:
        existing = user_repo.by_username(session, "admin")
        if existing is None:
            users.create(session, users.UserCreate(username="admin", password=password, role=Role.admin))
        else:
            users.update(session, existing.id, users.UserUpdate(password=password, role=Role.admin, disabled=False))
    return password


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations to DUST_DATABASE_URL."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    applied = _migrate(settings)
    console.print(f"Applied migrations {', '.join(applied)}." if applied else "Up to date: no migration to apply.")


def _migrate(settings: Settings) -> list[str]:
    """Pending migrations applied (the revisions, oldest first; the log names them too)."""
    from dust.storage.db import make_engine, upgrade

    engine = make_engine(settings.database_url)
    try:
        return upgrade(engine)
    finally:
        engine.dispose()


@db_app.command("backup")
def db_backup(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="Where to write the snapshot.")],
    logical: Annotated[
        bool, typer.Option("--logical", help="Write the export format (tar.gz), restorable into SQLite or PostgreSQL.")
    ] = False,
) -> None:
    """Write a consistent snapshot of the database to FILE, also while the server is serving it."""
    from dust.engine import backups

    with _progress() as bar:
        done = backups.backup(_configured().database_url, file, logical=logical, progress=_tracker(bar, "Backing up"))
    _report("Wrote", done)


@db_app.command("restore")
def db_restore(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="A file written by `dust db backup`.")],
    force: Annotated[bool, typer.Option("--force", help="Replace a database that holds data.")] = False,
) -> None:
    """Put a backup back into the configured database (stop the server first); refuses a non-empty one."""
    from dust.engine import backups

    with _progress() as bar:
        done = backups.restore(_configured().database_url, file, force=force, progress=_tracker(bar, "Restoring"))
    _report("Restored", done)


@app.command("export")
def export(directory: Annotated[Path, typer.Argument(metavar="DIR", help="A new or empty directory.")]) -> None:
    """Write everything in the database (but secrets) as JSON Lines and binary blocks into DIR."""
    from dust.engine import transfer

    with _progress() as bar:
        done = transfer.export_database(_configured().database_url, directory, progress=_tracker(bar, "Exporting"))
    _report("Exported into", done)


@import_app.command("dust")
def import_dust(
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="A directory written by `dust export`.")],
) -> None:
    """Load a DUST export into the configured database, which must be empty; users then need new passwords."""
    from dust.engine import transfer

    with _progress() as bar:
        done = transfer.import_database(_configured().database_url, directory, progress=_tracker(bar, "Importing"))
    _report("Imported", done)


def _add_importers() -> None:
    """`dust import <name>` for every importer (DUST's own and plugins', ``dust_importers``)."""
    from dust.plugins import registry

    for importer in registry.importers().values():
        import_app.command(importer.name)(_import_command(importer))


def _import_command(importer: Importer) -> Callable[..., None]:
    """A command that takes the importer's PATH argument(s) and runs it with ``_run_import``."""
    import inspect

    many = importer.reads == "files"
    argument = typer.Argument(metavar=importer.argument, help=importer.path_help)
    kind: Any = Annotated[list[Path] if many else Path, argument]

    def command(paths: Any) -> None:
        _run_import(importer, list(paths) if many else [paths])

    # Typer reads the parameter from the signature: set it here, as `def` cannot take a computed annotation.
    command.__annotations__ = {"paths": kind, "return": None}
    parameter = inspect.Parameter("paths", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=kind)
    command.__signature__ = inspect.Signature([parameter], return_annotation=None)  # type: ignore[attr-defined]
    command.__doc__ = importer.help
    command.__name__ = f"import_{importer.name}"
    return command


def _run_import(importer: Importer, paths: list[Path]) -> None:
    """``importer`` on ``paths`` with a progress bar, in one transaction (or in its own: ``transactions="own"``);
    then its report and the time taken."""
    import time

    started = time.perf_counter()
    with _open() as db, _progress() as bar:
        tracker = _tracker(bar, importer.progress)
        if importer.transactions == "own":
            report = importer.load(db.session, paths, tracker)
        else:
            with db.session() as session:
                report = importer.load(session, paths, tracker)
    for line in report.lines():
        console.print(line, markup=False)
    console.print(f"Done in {time.perf_counter() - started:.2f} s.")


anomalies_app = typer.Typer(help="Anomaly detection on series.", no_args_is_help=True)
app.add_typer(anomalies_app, name="anomalies")


@anomalies_app.command("score")
def anomalies_score(
    file: Annotated[Path, typer.Argument(metavar="FILE.csv", help="A CSV with a 'timestamp,value' header.")],
    detector: Annotated[str, typer.Option(help="Which detector (mad, cusum, seasonal, default).")] = "default",
) -> None:
    """Write FILE's rows to stdout with an anomaly_score column in [0, 1], each scored from the rows before it."""
    import sys

    from dust.anomalies.detectors import score_csv
    from dust.core.errors import DustError

    try:
        scored = score_csv(file, detector)
    except DustError as problem:  # bad input, not a failed command: exit 2, as for a bad option
        console.print(f"Error: {problem.detail}", markup=False)
        raise typer.Exit(2) from None
    scored.drop(columns=["time", "number"]).to_csv(sys.stdout, index=False, float_format="%.6f")


model_app = typer.Typer(help="Relational models (R-GCN) trained on the master tensor.", no_args_is_help=True)
app.add_typer(model_app, name="model")


@model_app.command("train")
def model_train(
    labels: Annotated[
        Path | None, typer.Option(metavar="TRAIN.tsv", help="Training labels: a TSV (.tsv) or CSV.")
    ] = None,
    id_column: Annotated[str | None, typer.Option(help="The labels' column of external ids (e.g. IRIs).")] = None,
    label_column: Annotated[str | None, typer.Option(help="The labels' column of classes.")] = None,
    task: Annotated[
        str, typer.Option(help="What to train: entity-classification or link-prediction.")
    ] = "entity-classification",
    test_labels: Annotated[Path | None, typer.Option(metavar="TEST.tsv", help="Test labels, as --labels.")] = None,
    test_triples: Annotated[
        Path | None, typer.Option(metavar="TRIPLES.tsv", help="Link prediction: test triples (source, type, target).")
    ] = None,
    test_fraction: Annotated[
        float | None, typer.Option(help="Link prediction: hold out this fraction of the relations (0.1).")
    ] = None,
    types: Annotated[str | None, typer.Option(help="Link prediction: only relations of these types (a,b).")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, help="Full-batch training epochs (50; links: 500).")] = None,
    seed: Annotated[int, typer.Option(help="The first run's seed; run k uses seed + k.")] = 0,
    runs: Annotated[int, typer.Option(min=1, help="Runs (seeds); metrics are then mean and std.")] = 1,
    hidden: Annotated[int | None, typer.Option(min=1, help="Hidden units (16; links: 100).")] = None,
    layers: Annotated[int | None, typer.Option(min=0, help="Link prediction: R-GCN layers (1; 0: DistMult).")] = None,
    negatives: Annotated[int | None, typer.Option(min=1, help="Link prediction: corruptions per triple (1).")] = None,
    bases: Annotated[int | None, typer.Option(min=1, help="Basis decomposition: this many bases.")] = None,
    blocks: Annotated[int | None, typer.Option(min=1, help="Block-diagonal decomposition: this many blocks.")] = None,
    l2: Annotated[
        float | None, typer.Option(min=0, help="L2 on the first layer (0; the paper: 5e-4 but on AIFB); links: 0.01.")
    ] = None,
    lr: Annotated[float, typer.Option(min=0, help="Adam's learning rate.")] = 0.01,
    literals: Annotated[
        bool | None, typer.Option(help="Attribute values as nodes, as RDF literals are (on; links: off).")
    ] = None,
    as_of: Annotated[str | None, typer.Option(help="Train on the graph as of this ISO date-time.")] = None,
) -> None:
    """Train an R-GCN (Schlichtkrull et al. 2018) on the master tensor; metrics as JSON on the last line."""
    import json
    from datetime import datetime

    from dust.core.errors import DustError

    if task not in ("entity-classification", "link-prediction"):
        console.print(f"Error: --task {task!r}: entity-classification or link-prediction", markup=False)
        raise typer.Exit(2)
    try:
        at = datetime.fromisoformat(as_of) if as_of else None
    except ValueError as problem:
        console.print(f"Error: --as-of {as_of!r} is not an ISO date-time ({problem})", markup=False)
        raise typer.Exit(2) from None
    for_links = {"test_triples": test_triples, "test_fraction": test_fraction, "types": types}
    for_links |= {"layers": layers, "negatives": negatives}
    for_classes = {"labels": labels, "id_column": id_column, "label_column": label_column, "test_labels": test_labels}
    wrong = for_links if task == "entity-classification" else for_classes
    if misplaced := [f"--{name.replace('_', '-')}" for name, value in wrong.items() if value is not None]:
        console.print(f"Error: {', '.join(misplaced)} do not apply to --task {task}", markup=False)
        raise typer.Exit(2)
    if task == "link-prediction":
        shared = {"hidden": hidden, "epochs": epochs, "lr": lr, "l2": l2, "bases": bases, "blocks": blocks}
        given = {k: v for k, v in {**for_links, **shared, "literals": literals}.items() if v is not None}
        _train_links(given, at, list(range(seed, seed + runs)))
        return
    if labels is None or id_column is None or label_column is None:
        console.print("Error: entity-classification needs --labels, --id-column and --label-column", markup=False)
        raise typer.Exit(2)
    try:
        from dust.models import classification, rgcn

        settings = rgcn.Settings(
            hidden=hidden or 16, epochs=epochs or 50, lr=lr, l2=l2 or 0.0, bases=bases, blocks=blocks
        )
        train = classification.read_labels(labels, id_column, label_column)
        test = classification.read_labels(test_labels, id_column, label_column) if test_labels else None
        settings.check()
        with _open() as db, db.session() as session:
            prepared = classification.prepare(session, train, test, at=at, literals=literals is not False)
        metrics = classification.train(prepared, settings=settings, seeds=list(range(seed, seed + runs)))
    except DustError as problem:
        console.print(f"Error: {problem.detail}", markup=False)
        raise typer.Exit(2) from None
    print(json.dumps(metrics))


def _train_links(given: dict[str, Any], at: Any, seeds: list[int]) -> None:
    """``dust model train --task link-prediction``: R-GCN + DistMult; the options ``given`` (None: left out)."""
    import json

    from dust.core.errors import DustError

    try:
        from dust.models import link

        options = ("hidden", "epochs", "lr", "l2", "bases", "blocks", "layers", "negatives")
        settings = link.Settings(**{k: given[k] for k in options if k in given})
        settings.check()
        test = link.read_triples(given["test_triples"]) if "test_triples" in given else None
        types = [t.strip() for t in given["types"].split(",") if t.strip()] if "types" in given else None
        with _open() as db, db.session() as session:
            problem = link.prepare(
                session,
                at=at,
                types=types,
                test_triples=test,
                test_fraction=given.get("test_fraction", 0.1),
                seed=seeds[0],
                literals=given.get("literals", False),
            )
        metrics = link.train(problem, settings=settings, seeds=seeds)
    except DustError as problem:
        console.print(f"Error: {problem.detail}", markup=False)
        raise typer.Exit(2) from None
    print(json.dumps(metrics))


@model_app.command("predict")
def model_predict(
    model_id: Annotated[
        uuid.UUID, typer.Argument(metavar="MODEL_ID", help="A trained model's id (`dust model list`).")
    ],
    entity: Annotated[
        list[str] | None, typer.Option("--entity", metavar="ID", help="An entity to predict (repeat); default: all.")
    ] = None,
    kind: Annotated[
        str | None, typer.Option(help="Every entity of this kind in the model's graph (links: --source's targets').")
    ] = None,
    write_back: Annotated[
        str | None,
        typer.Option(
            metavar="NAME", help="Set each predicted class as this attribute (links: make relations of this type)."
        ),
    ] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Say which relations and neighbours mattered.")] = False,
    candidate: Annotated[
        list[str] | None,
        typer.Option(metavar="SOURCE,TYPE,TARGET", help="Link prediction: a relation to score (repeat); entity ids."),
    ] = None,
    source: Annotated[
        str | None, typer.Option(metavar="ID", help="Link prediction: the entity whose likeliest targets to list.")
    ] = None,
    type_: Annotated[
        str | None, typer.Option("--type", help="Link prediction: the relation type of --source's targets.")
    ] = None,
    top: Annotated[int, typer.Option(min=1, max=100, help="Link prediction: how many targets --source lists.")] = 10,
    min_score: Annotated[
        float, typer.Option(min=0, max=1, help="Link prediction: --write-back only relations scoring this or more.")
    ] = 0.5,
) -> None:
    """Predict with a trained model; the predictions as JSON."""
    triples = [tuple(part.strip() for part in text.split(",")) for text in candidate or []]
    if any(len(triple) != 3 for triple in triples):
        console.print("Error: --candidate takes SOURCE,TYPE,TARGET (two entity ids and a relation type)", markup=False)
        raise typer.Exit(2)
    links = bool(triples) or source is not None or type_ is not None
    back: str | dict[str, Any] | None = write_back
    if links and write_back is not None:
        back = {"relation_type": write_back, "min_score": min_score}
    with _open() as db:
        result = db.predict(
            model_id,
            entity_ids=entity or None,
            kind=kind,
            write_back=back,
            explain=explain,
            top=top,
            candidates=triples or None,
            source=source,
            type=type_,
        )
    print(result.model_dump_json(by_alias=True))


@model_app.command("list")
def model_list(name: Annotated[str | None, typer.Option(help="Only the versions of this name.")] = None) -> None:
    """Models newest first, as JSON lines: id, name, version, task, status and test accuracy (links: MRR)."""
    import json

    with _open() as db:
        page = db.models(name=name, limit=500)
        while True:
            for m in page.items:
                metric = "test_mrr" if m.task == "link-prediction" else "test_accuracy"
                line = {"id": str(m.id), "name": m.name, "version": m.version, "task": m.task, "status": m.status}
                print(json.dumps({**line, metric: (m.metrics or {}).get(metric)}))
            if page.next_cursor is None:
                break
            page = db.models(name=name, limit=500, cursor=page.next_cursor)


@model_app.command("show")
def model_show(
    model_id: Annotated[uuid.UUID, typer.Argument(metavar="MODEL_ID", help="A model's id (`dust model list`).")],
) -> None:
    """A model's status, progress, metrics and data version, as JSON."""
    with _open() as db:
        print(db.get_model(model_id).model_dump_json())


def _configured() -> Settings:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    return settings


def _tracker(bar: Progress, description: str) -> Callable[[int, int | None], None]:
    task = bar.add_task(description, total=None)
    return lambda done, total: bar.update(task, completed=done, total=total)


def _report(verb: str, done: Outcome) -> None:
    from rich.filesize import decimal

    counts = ", ".join(f"{n} {table}" for table, n in done.counts.items())
    said = f"{verb} {done.path} ({decimal(done.bytes)}, {done.method}) in {done.seconds:.2f} s: {counts}."
    console.print(said, markup=False)  # a path may hold brackets


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _open() -> Dust:
    from dust.embedded import Dust

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    return Dust(settings.database_url)


@app.command("ask")
def ask_(
    question: Annotated[str, typer.Argument(help="In plain English, e.g. 'What was Jane Doe's temperature on day 2?'")],
    as_user: Annotated[
        str | None, typer.Option("--as", help="Answer under this user's access policy (default: all data).")
    ] = None,
) -> None:
    """Answer a natural-language question: prints the answer, then the structured query it ran."""
    import json

    from dust.ask import ask
    from dust.core.errors import Forbidden, NotFound
    from dust.engine import access
    from dust.storage.repositories import users as user_repo

    with _open() as db, db.session() as session:
        if as_user is not None:
            user = user_repo.by_username(session, as_user)
            if user is None:
                raise NotFound(f"user '{as_user}' does not exist")
            if user.disabled:
                raise Forbidden(f"user '{as_user}' is disabled; enable them or ask as someone else")
            _ensure_secret(Settings())
            access.act_as(session, access.principal_for(user, Settings()))
        answered = ask(session, question)
    typer.echo(answered.answer)
    for candidate in answered.candidates or []:
        typer.echo(f"  {candidate.id}  {candidate.name}  {candidate.external_id or ''}  {candidate.attributes}")
    typer.echo("query: " + json.dumps(answered.query.dumped()))


@users_app.command("create")
def users_create(
    username: Annotated[str, typer.Argument(help="Sign-in name.")],
    role: Annotated[Role, typer.Option(help="admin, clinician, member, analyst or viewer.")],
    entity: Annotated[str | None, typer.Option(help="UUID of the entity this user is (a clinician's doctor).")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
) -> None:
    """Create a user; prompts for the password unless --password-stdin."""
    import uuid

    from dust.engine import users

    password = _read_password(password_stdin)
    with _open() as db, db.session() as session:
        created = users.create(
            session,
            users.UserCreate(
                username=username, password=password, role=role, entity_id=uuid.UUID(entity) if entity else None
            ),
        )
    console.print(f"Created {created.role} [bold]{created.username}[/bold] ({created.id}).")


@users_app.command("list")
def users_list() -> None:
    """List users with their roles and status (a table on a terminal wide enough, else tab-separated lines)."""
    from dust.engine import users

    rows = []
    with _open() as db, db.session() as session:
        for user in users.list_(session):
            status = "disabled" if user.disabled else "active"
            rows.append([user.username, user.role, str(user.entity_id or ""), status, str(user.id)])
    _rows(["username", "role", "entity", "status", "id"], rows)


def _rows(header: list[str], rows: list[list[str]]) -> None:
    """A table on a terminal wide enough for it. Otherwise tab-separated lines, so nothing is cut (a Rich table
    squeezes columns to the width and cuts ids short) and each value can be copied or passed to `cut -f`."""
    from rich.measure import Measurement
    from rich.table import Table
    from rich.text import Text

    out = Console()
    table = Table(*header)
    for row in rows:
        table.add_row(*map(Text, row))  # Text: a name holding brackets is not markup
    unbounded = out.options.update_width(1 << 20)  # the table's natural width, not squeezed into the terminal's
    if out.is_terminal and Measurement.get(out, unbounded, table).maximum <= out.width:
        out.print(table)
        return
    for line in [header, *rows]:
        typer.echo("\t".join(line))


@users_app.command("disable")
def users_disable(username: Annotated[str, typer.Argument(help="Sign-in name.")]) -> None:
    """Disable a user; their tokens and keys stop working at once."""
    _update_user(username, disabled=True)
    console.print(f"Disabled {username}.")


@users_app.command("set-role")
def users_set_role(
    username: Annotated[str, typer.Argument(help="Sign-in name.")],
    role: Annotated[Role, typer.Argument(help="admin, clinician, member, analyst or viewer.")],
) -> None:
    """Change a user's role; their current tokens are revoked."""
    _update_user(username, role=role)
    console.print(f"{username} is now {role.value}.")


@users_app.command("set-password")
def users_set_password(
    username: Annotated[str, typer.Argument(help="Sign-in name.")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin.")] = False,
) -> None:
    """Set a user's password (e.g. after `dust import dust`); their tokens and keys are revoked."""
    _update_user(username, password=_read_password(password_stdin))
    console.print(f"Set the password of {username}.")


def _read_password(from_stdin: bool) -> str:
    import sys

    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


def _update_user(username: str, **changes: object) -> None:
    from dust.engine import users

    with _open() as db, db.session() as session:
        user = users.by_username(session, username)
        users.update(session, user.id, users.UserUpdate.model_validate(changes))


@plugins_app.command("list")
def plugins_list() -> None:
    """Each installed plugin (DUST's own first) and what it adds."""
    from dust.plugins import registry

    rows = [
        [
            plugin.name + (" (built in)" if plugin.builtin else ""),
            plugin.version or "",
            ", ".join(plugin.detectors),
            ", ".join(plugin.analyses),
            ", ".join(plugin.trigger_actions),
            ", ".join(plugin.importers),
            ", ".join(plugin.domain_packs),
            ", ".join(plugin.commands),
        ]
        for plugin in registry.plugins()
    ]
    header = ["plugin", "version", "detectors", "analyses", "trigger actions", "importers", "domain packs", "commands"]
    _rows(header, rows)


def _add_plugin_commands() -> None:
    from dust.plugins import registry

    registry.add_commands(app)


_add_importers()
_add_plugin_commands()
