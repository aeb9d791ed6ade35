"""The CPU of whole requests in process: the app called as uvicorn calls it, one request after another, no HTTP.

    .venv/bin/python bench/request_cpu.py                            # SQLite file, the healthcare demo
    .venv/bin/python bench/request_cpu.py --backend postgresql        # a throwaway PostgreSQL database
    .venv/bin/python bench/request_cpu.py --no-audit-commit           # leave out the batch writer's commit
    PYTHONPATH=<old tree> .venv/bin/python bench/request_cpu.py       # the same for another version of dust
    .venv/bin/python bench/request_cpu.py --without-lanes             # dust.api.hot's lanes on and off, in turn
    .venv/bin/python bench/request_cpu.py --clients 16 --varied       # 16 clients at once; entity gets of many ids
    .venv/bin/python bench/request_cpu.py --instructions              # instructions a request, counted by callgrind

``bench/serve.py`` drives a server over HTTP with wrk, where the machine's every hiccup moves the figures (on a
machine whose speed drifted by 2×, the same tree's req/s moved by ±30%). This measures a change instead: the ASGI
app built by ``create_app`` (middleware, routing, dependencies, the loop's sessions, the engine, the answer's
JSON) is called directly for ``/healthz`` (the anchor), ``/auth/me``, an entity get and a point read as an admin,
and the process's CPU per request is taken over ``--rounds`` rounds: the minimum is the figure to compare, the
median says how much the machine moved. Alternate runs of the old and the new tree and compare minimums.

Sequential requests commit each read's audit record alone; under load the batch writer puts many in one commit.
``--no-audit-commit`` leaves it out (the records are not written), so that only the request path is measured.
``--clients N`` sends each round's requests from N concurrent clients, as under load: what the requests on the
loop share (PostgreSQL's shared runs, the batch writer's commits) then counts. ``--varied`` adds an entity get
whose clients each go round up to 50 patients, so that shared runs fetch several rows, not one.

``--instructions`` counts the instructions a request takes instead, with valgrind's callgrind (Debian's
``valgrind``): the same tree gives the same count within ~2% however busy or slow the machine is, where CPU time
moved by a third on one that drifted. The process then runs ~100 times slower: a few minutes for the four routes
at the default ``--requests``; the count includes the moments the process waits for ``callgrind_control``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

# The repository, for its tests' helpers: last, after the dust being measured (PYTHONPATH=<old tree> comes first).
sys.path.append(str(Path(__file__).resolve().parents[1]))
from host import database, database_options

DUST = Path(sys.executable).parent / "dust"
PASSWORD = "bench-request-cpu-password"
UNDER_CALLGRIND = "DUST_BENCH_UNDER_CALLGRIND"  # set for the run of this script that callgrind counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    database_options(parser)
    parser.add_argument("--requests", type=int, default=200, help="requests a round")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--no-audit-commit", action="store_true", help="leave out the batch writer's commit")
    parser.add_argument("--clients", type=int, default=1, help="concurrent clients sending each round's requests")
    parser.add_argument("--varied", action="store_true", help="also an entity get of up to 50 patients in turn")
    parser.add_argument(
        "--without-lanes",
        action="store_true",
        help="also measure each route with dust.api.hot's lanes off, alternating rounds with them on in this process",
    )
    parser.add_argument("--instructions", action="store_true", help="count instructions a request with callgrind")
    parser.add_argument("--out", help="write the figures as JSON here too")
    args = parser.parse_args()
    if os.environ.get(UNDER_CALLGRIND):  # the run callgrind counts, on the database its parent made
        asyncio.run(counted(args))
        return
    folder = tempfile.TemporaryDirectory(prefix="dust-bench-cpu-")
    with folder as tmp, database(args.backend, tmp, postgres_url=args.postgres_url, name="dust_bench_cpu") as url:
        os.environ.update(DUST_DATABASE_URL=url, DUST_SECRET_KEY=secrets.token_urlsafe(48), DUST_LOG_LEVEL="ERROR")
        os.environ.pop("DUST_REDIS_URL", None)
        for command in (["demo", "healthcare", "--size", "20", "--days", "30"], ["users", "create", "bench"]):
            extra = ["--role", "admin", "--password-stdin"] if command[0] == "users" else []
            subprocess.run([str(DUST), *command, *extra], input=PASSWORD, text=True, capture_output=True, check=True)
        figures: dict[str, Any] = under_callgrind(args, Path(tmp)) if args.instructions else asyncio.run(measure(args))
    import dust  # the one measured: PYTHONPATH's, if it names another tree

    print(f"{args.backend}, the dust in {Path(dust.__file__).parent}:")
    for route, figure in figures.items():
        if args.instructions:
            print(f"{route:<23} {figure:11,.0f} instructions a request")
        else:
            print(f"{route:<23} min {figure[0]:7.0f} µs   median {figure[1]:7.0f} µs CPU a request")
    if args.out:
        unit = "instructions_per_request" if args.instructions else "us_per_request"
        report = {"benchmark": "request_cpu", "options": vars(args), unit: figures}
        Path(args.out).write_text(json.dumps(report, indent=1))


def app_for(args: argparse.Namespace) -> Any:
    """The app (its lifespan not yet entered), the batch writer's commit left out with ``--no-audit-commit``."""
    from dust.api.app import create_app  # after the environment names the database

    if args.no_audit_commit:
        from dust.storage.writer import BatchWriter

        async def written(self: BatchWriter, writes: list[Any]) -> None:
            return None

        BatchWriter.written = written  # type: ignore[method-assign]
    return create_app()


async def measure(args: argparse.Namespace) -> dict[str, tuple[float, float]]:
    app = app_for(args)
    async with app.router.lifespan_context(app):
        urls, bearer = await targets(app, varied=args.varied)
        lanes = app.router.middleware_stack  # dust.api.hot.HotReads
        if args.without_lanes and not hasattr(lanes, "inner"):
            sys.exit("--without-lanes: this dust has no lanes to switch off (dust/api/hot.py)")
        stacks = {"": lanes} | ({" (no lanes)": lanes.inner} if args.without_lanes else {})
        figures = {}
        for name, each in urls.items():
            rounds: dict[str, list[float]] = {label: [] for label in stacks}
            await clients(app, each, bearer, 50, args.clients)  # warm: caches, compiled and prepared statements
            for _ in range(args.rounds):
                for label, stack in stacks.items():  # alternating, so that the machine's drift moves both alike
                    app.router.middleware_stack = stack
                    started = time.process_time()
                    sent = await clients(app, each, bearer, args.requests, args.clients)
                    rounds[label].append((time.process_time() - started) / sent * 1e6)
            app.router.middleware_stack = lanes
            for label, taken in rounds.items():
                taken.sort()
                figures[name + label] = (taken[0], taken[len(taken) // 2])
        return figures


def under_callgrind(args: argparse.Namespace, folder: Path) -> dict[str, float]:
    """Instructions a request of each route: this script run again under callgrind (``counted``), one dump of
    its counts per route."""
    if shutil.which("valgrind") is None:
        sys.exit("--instructions needs valgrind: apt-get install -y valgrind")
    out = folder / "callgrind.out"
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, *sys.argv]
    environment = {**os.environ, UNDER_CALLGRIND: "1", "PYTHONHASHSEED": "0"}
    ran = subprocess.run(command, env=environment, capture_output=True, text=True)
    if ran.returncode != 0:
        sys.exit(f"the run under callgrind failed:\n{ran.stderr[-3000:]}")
    routes = json.loads(ran.stdout.splitlines()[-1])  # what counted() printed: each route and its requests
    counts = [instructions(Path(f"{out}.{part}").read_text()) for part in range(1, len(routes) + 1)]
    return {route: count / sent for (route, sent), count in zip(routes, counts, strict=True)}


def instructions(dump: str) -> int:
    """The instructions a callgrind dump counted (its ``summary:`` line)."""
    return int(next(line.split()[1] for line in dump.splitlines() if line.startswith("summary:")))


async def counted(args: argparse.Namespace) -> None:
    """Each route's requests between callgrind's counters set to zero and their dump (one dump a route, in
    order); prints the routes and requests sent, as JSON, last."""
    app = app_for(args)
    sent = []
    async with app.router.lifespan_context(app):
        urls, bearer = await targets(app, varied=args.varied)
        for name, each in urls.items():
            await clients(app, each, bearer, 50, args.clients)  # warm: caches, compiled and prepared statements
            callgrind("--zero")
            sent.append((name, await clients(app, each, bearer, args.requests, args.clients)))
            callgrind("--dump")
    print(json.dumps(sent))


def callgrind(command: str) -> None:
    """``callgrind_control`` of this process, which callgrind reads only while the process runs code of its own:
    this thread looks every 5 ms whether it is done."""
    control = subprocess.Popen(["callgrind_control", command, str(os.getpid())], stdout=subprocess.DEVNULL)
    while control.poll() is None:
        time.sleep(0.005)


async def clients(app: Any, urls: list[str], bearer: str, requests: int, many: int) -> int:
    """``requests`` GETs (rounded down to a multiple of ``many``) from ``many`` concurrent clients, each going round
    ``urls`` from its own place; how many were sent."""
    each = max(1, requests // many)

    async def client(start: int) -> None:
        for n in range(each):
            await call(app, urls[(start + n) % len(urls)], bearer)

    await asyncio.gather(*(client(start * 7) for start in range(many)))
    return each * many


async def targets(app: Any, *, varied: bool = False) -> tuple[dict[str, list[str]], str]:
    """The routes to call (each a list of URLs its clients go round), and the admin's bearer token, found through
    the API as a client would."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
        signed = await client.post("/api/v1/auth/token", data={"username": "bench", "password": PASSWORD})
        bearer = f"Bearer {signed.json()['access_token']}"
        headers = {"Authorization": bearer}
        treats = (await client.get("/api/v1/relations?type=treats&limit=1", headers=headers)).json()["items"][0]
        patient = treats["target_id"]
        found = (await client.get(f"/api/v1/entities/{patient}/tensors", headers=headers)).json()
        tensor = next(t for t in found if t["schema"] == "vitals")
        axis = tensor["axes"][0]
        patients = (await client.get("/api/v1/patients?limit=50", headers=headers)).json()["items"]
    point = f"/api/v1/tensor/{tensor['id']}?time=3&{axis['name']}={axis['labels'][0]}"
    routes = {"/healthz": "/healthz", "/auth/me": "/api/v1/auth/me", "entity get": f"/api/v1/entities/{patient}"}
    urls = {name: [url] for name, url in (routes | {"point read": point}).items()}
    if varied:
        urls["entity get, varied ids"] = [f"/api/v1/entities/{row['id']}" for row in patients]
    return urls, bearer


async def call(app: Any, url: str, bearer: str) -> None:
    """One GET as uvicorn hands it to the app; anything but a 200 stops the run."""
    path, _, query = url.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"bench"), (b"authorization", bearer.encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    if sent[0]["status"] != 200:
        sys.exit(f"GET {url} answered {sent[0]['status']}: {sent[1:]}")


if __name__ == "__main__":
    main()
