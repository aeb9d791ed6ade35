"""The ``dust`` command: serve, load demo data, migrate."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dust.core.config import Settings
from dust.core.logging import configure_logging

app = typer.Typer(help="DUST: entities, their tensors over time, and the relations between them.", no_args_is_help=True)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(db_app, name="db")
console = Console(stderr=True)


class Domain(StrEnum):
    healthcare = "healthcare"


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Run the API (and UI) with uvicorn; pending migrations are applied first."""
    _serve(host, port, workers)


def _serve(host: str, port: int, workers: int) -> None:
    import uvicorn

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    _migrate(settings)
    console.print(f"DUST is serving at [bold]http://{host}:{port}/[/bold]  (API docs: http://{host}:{port}/docs)")
    uvicorn.run(
        "dust.api.app:serving_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        access_log=False,
    )


@app.command()
def demo(
    domain: Annotated[Domain, typer.Argument(help="Which domain's data set.")] = Domain.healthcare,
    size: Annotated[int, typer.Option(min=1, max=100_000, help="Number of patients.")] = 50,
    days: Annotated[int, typer.Option(min=7, max=3650, help="Days of vitals per patient.")] = 90,
    serve_after: Annotated[bool, typer.Option("--serve", help="Serve the data set afterwards.")] = False,
    host: Annotated[str, typer.Option(help="Interface to listen on with --serve.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port with --serve.")] = 8000,
) -> None:
    """Load a generated domain data set into the configured database (once; a second run keeps it)."""
    from dust.domains import healthcare
    from dust.embedded import Dust
    from dust.storage.repositories import entities as entity_repo

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    db = Dust(settings.database_url)
    with db.session() as session:
        loaded = entity_repo.by_external_id(session, *healthcare.MARKER) is not None
    if loaded:
        console.print("The demo data set is already loaded; keeping it.")
    else:
        with _progress() as bar, db.session() as session:
            task = bar.add_task(f"Generating {domain.value} data", total=size)
            made = healthcare.generate(session, size=size, days=days, progress=lambda n: bar.advance(task, n))
        console.print("Loaded: " + ", ".join(f"{n} {what}" for what, n in made.items()))
    db.close()
    if serve_after:
        _serve(host, port, 1)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations to DUST_DATABASE_URL."""
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    _migrate(settings)


def _migrate(settings: Settings) -> None:
    from dust.storage.db import make_engine, upgrade

    engine = make_engine(settings.database_url)
    upgrade(engine)
    engine.dispose()


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
