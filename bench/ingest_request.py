"""What one HTTP batch write costs the server's CPU, without HTTP or clients: the ASGI app called in-process.

    .venv/bin/python bench/ingest_request.py                          # a fresh SQLite file, 5 × 200 batches
    .venv/bin/python bench/ingest_request.py --backend postgresql     # a throwaway PostgreSQL database
    PYTHONPATH=<old tree> .venv/bin/python bench/ingest_request.py    # the same for another version of dust

``bench/serve.py --only ingest`` measures the same route over HTTP, with its clients on the same cores, so its
figures move with whatever else the machine runs. Here one coroutine sends ``POST /api/v1/tensors/{id}/values``
with the bodies bench/serve.py's clients send (1,000 new cells each) straight to the app, one after another, as
an admin with a bearer token: every middleware, the sign-in, the checks, the write, its audit record and the
commit run as under ``dust serve``; only uvicorn's HTTP parsing is left out. It prints the process's CPU time
(all threads) and the wall time per batch, after ``--warmup`` batches: the minimum over ``--rounds`` rounds, the
figure to compare, and the median, which says how much the machine moved.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

import dust
from dust.api.app import create_app
from dust.core.config import Settings
from dust.core.security import hash_password, issue_access_token
from dust.storage.models import User

sys.path.insert(1, str(Path(__file__).parent))  # bench/, after the dust being measured
sys.path.append(str(Path(__file__).resolve().parents[1]))  # the repository, for its tests' helpers
from host import database, database_options
from serve import INGEST_LABELS, make_bodies  # the bodies bench/serve.py sends

API = "/api/v1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    database_options(parser)
    parser.add_argument("--batches", type=int, default=200, help="batches a round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--batch", type=int, default=1000, help="values per POST (a multiple of 4)")
    parser.add_argument("--columns", action="store_true", help='send {"columns": …} rather than {"values": [...]}')
    args = parser.parse_args()
    folder = tempfile.TemporaryDirectory(prefix="dust-bench-ingest-")
    with folder as tmp, database(args.backend, tmp, postgres_url=args.postgres_url, name="dust_bench_ingest") as url:
        rounds = asyncio.run(measure(url, args))
    form = "columns" if args.columns else "values"
    where = f"{args.rounds} rounds of {args.batches} batches as {form}, {args.backend}, {Path(dust.__file__).parent}"
    for what, figures in zip(("CPU", "wall"), zip(*rounds, strict=True), strict=True):
        low, middle = min(figures) * 1000, statistics.median(figures) * 1000
        print(f"{what:<4} min {low:.2f} ms, median {middle:.2f} ms per {args.batch}-value batch ({where})")


async def measure(url: str, args: argparse.Namespace) -> list[tuple[float, float]]:
    """(CPU, wall) seconds per batch, a pair a round: the minimum is the one to compare, the median says how much
    the machine moved. Wall time holds the waits on the database too (on PostgreSQL, a round trip a statement)."""
    settings = Settings(database_url=url, log_level="WARNING", secret_key="bench-" + "x" * 42)
    app = create_app(settings, migrate=True)
    headers = [(b"authorization", f"Bearer {admin_token(app, settings)}".encode())]
    await call(app, "POST", f"{API}/schemas", headers, orjson.dumps(SCHEMA))
    entity = await call(app, "POST", f"{API}/entities", headers, orjson.dumps({"kind": "sensor", "name": "bench"}))
    tensor = {"entity_id": entity["id"], "schema": "bench_ingest", "origin": "2026-01-01T00:00:00Z"}
    tensor_id = (await call(app, "POST", f"{API}/tensors", headers, orjson.dumps(tensor)))["id"]
    path = f"{API}/tensors/{tensor_id}/values"
    bodies = make_bodies(args.batch, args.warmup + args.rounds * args.batches, seed=0, columns=args.columns)
    for body in bodies[: args.warmup]:
        await write(app, path, headers, body, args.batch)
    rounds = []
    for r in range(args.rounds):
        started, clock = time.process_time(), time.perf_counter()
        for body in bodies[args.warmup + r * args.batches :][: args.batches]:
            await write(app, path, headers, body, args.batch)
        rounds.append(((time.process_time() - started) / args.batches, (time.perf_counter() - clock) / args.batches))
    return rounds


SCHEMA = {"name": "bench_ingest", "axes": [{"name": "channel", "labels": INGEST_LABELS}], "time": {"unit": "second"}}


def admin_token(app: Any, settings: Settings) -> str:
    with app.state.sessions() as session, session.begin():
        user = User(username=f"bench-{uuid.uuid4().hex[:8]}", password_hash=hash_password("x" * 16), role="admin")
        session.add(user)
        session.flush()
        assert settings.secret_key is not None
        key = settings.secret_key.get_secret_value()
        return issue_access_token(key, user.id, "admin", 0, timedelta(hours=1))[0]


async def write(app: Any, path: str, headers: list[tuple[bytes, bytes]], body: bytes, batch: int) -> None:
    answer = await call(app, "POST", path, headers, body)
    if answer.get("written") != batch:
        sys.exit(f"POST {path}: {answer}")


async def call(app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> Any:
    """One request to the ASGI app; the JSON answer (exits on anything but 200/201)."""
    sent: list[dict[str, Any]] = []
    done = asyncio.Event()
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()  # the client stays connected until the answer is out
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    head = [(b"host", b"bench"), (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": head + headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    await app(scope, receive, send)
    done.set()
    status = sent[0]["status"]
    text = b"".join(m.get("body", b"") for m in sent[1:])
    if status not in (200, 201):
        sys.exit(f"{method} {path} → {status}: {text[:2000]!r}")
    return orjson.loads(text)


if __name__ == "__main__":
    main()
