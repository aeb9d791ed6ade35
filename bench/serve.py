"""The request path under load: one ``dust serve`` process over HTTP, driven by wrk, on SQLite and PostgreSQL.

    .venv/bin/python bench/serve.py                                # both backends, 16 connections, 8 s a route
    .venv/bin/python bench/serve.py --backend sqlite --duration 3  # a quick run

Per backend, on a fresh database (a file in a temporary directory, or a throwaway PostgreSQL database that is
dropped at the end):
(a) load the healthcare demo with ``dust demo healthcare`` and create an admin with ``dust users create``, as
    an operator would; then start ``dust serve --port <free> --workers N`` with the same environment and wait
    for ``/healthz``;
(b) over the API, as admin: make a clinician user linked to a doctor, pick a patient that doctor treats, that
    patient's vitals tensor and a label of its axis, and make two fresh tensors for the ingest clients;
(c) check every URL answers 200 to one plain request (and stop with the body if not), then run
    ``wrk -t2 -c16 -d8s --latency`` on each: ``/healthz`` (the bare route, the anchor of the ratio column), then
    the authenticated reads, as admin and again as the clinician (whose reads go through the access policy);
    then, for the bare route and the three targeted reads (admin), the same wrk paced to ``--paced-load`` (half)
    of that route's req/s — each connection pauses after every answer — for the latency at a load the server
    keeps up with: the p99 target is judged on it (at saturation the latency is wrk's queue, see ``paced``);
(d) HTTP batch ingest: two client processes, each POSTing pre-serialised 1,000-value batches of new cells to
    its own tensor for the same duration; values/s and the batch latency percentiles.
wrk and the clients share the machine's cores with the server, so the figures are a floor for the server alone.
The table, the targets of the issue (met or missed) and the machine are printed; JSON goes to bench/out/.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import platform
import queue
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from host import cpu_model
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for its tests' helpers
from tests.databases import throwaway_postgres

OUT = Path(__file__).parent / "out" / "serve.json"
DUST = Path(sys.executable).parent / "dust"  # the console script of the interpreter running this
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
API = "/api/v1"
BARE = "GET /healthz"
INGEST = "POST /api/v1/tensors/{id}/values"
INGEST_LABELS = ["c0", "c1", "c2", "c3"]
# Bodies are made before the clock starts, enough for this rate (twice the target); a client that runs out
# stops early, and its rate over the time it ran still counts.
INGEST_POOL_VALUES_PER_S = 600_000
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}  # wrk's duration units
# The targets, held against the admin rows: per metric, (verdict, threshold) from the best level down;
# the first level reached is the verdict, none is "missed". Ratios are of req/s to the bare route's.
TARGETS: dict[str, dict[str, Any]] = {
    "ratio_to_bare": {"op": ">=", "levels": [("goal met", 0.7), ("met", 0.5)]},
    "p99_ms": {"op": "<=", "levels": [("met", 20.0)]},
    "values_per_s": {"op": ">=", "levels": [("met", 300_000), ("floor met", 200_000)]},
}
FIGURES = {  # metric: (name, format) in the targets table
    "ratio_to_bare": ("req/s ÷ bare route", lambda x: f"{x:.0%}"),
    "p99_ms": ("p99 ms, paced", lambda x: f"{x:,.1f}"),
    "values_per_s": ("values/s", lambda x: f"{x:,.0f}"),
}
TARGET_ROUTES = ["GET /api/v1/tensor/{id}?time=3&metric=…", "GET /api/v1/entities/{id}", "GET /api/v1/auth/me"]
console = Console(width=None if sys.stdout.isatty() else 160)


def main() -> None:
    args = parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk (Debian's package)")
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    report: dict[str, Any] = {
        "benchmark": "serve",
        "run_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "options": {k: v for k, v in vars(args).items() if k != "postgres_url"}
        | {"postgres_url": make_url(args.postgres_url).render_as_string(hide_password=True)},
        "machine": machine(args.postgres_url if "postgresql" in backends else None),
        "rows": [],
        "targets": [],
        "load_average_before": {},
    }
    for backend in backends:
        rows, report["load_average_before"][backend] = run_backend(backend, args)
        targets = judge(backend, rows)
        report["rows"] += rows
        report["targets"] += targets
        show(backend, rows, targets, report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"written to {out}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--postgres-url", default=POSTGRES_URL, help="a server where CREATE DATABASE is allowed")
    parser.add_argument("--workers", type=int, default=1, help="passed to dust serve")
    parser.add_argument("--duration", type=int, default=8, help="seconds per route, and of the ingest")
    parser.add_argument("--connections", type=int, default=16, help="wrk -c")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t")
    parser.add_argument("--timeout", type=int, default=2, help="wrk --timeout, seconds (wrk's default)")
    parser.add_argument("--patients", type=int, default=50, help="dust demo --size")
    parser.add_argument("--days", type=int, default=90, help="dust demo --days")
    parser.add_argument("--ingest-clients", type=int, default=2, help="processes, one tensor each")
    parser.add_argument("--ingest-batch", type=int, default=1000, help="values per POST (a multiple of 4)")
    parser.add_argument(
        "--ingest-form",
        choices=["values", "columns"],
        default="values",
        help='the batch as {"values": [cells]} or as {"columns": {field: [...]}} (a third of the JSON)',
    )
    parser.add_argument(
        "--paced-load",
        type=float,
        default=0.5,
        help="latency of the bare route and the targeted reads at this share of each one's req/s (0: skip)",
    )
    parser.add_argument(
        "--only", choices=["routes", "ingest"], help="run only the wrk routes, or only the ingest (default: both)"
    )
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    if args.ingest_batch % len(INGEST_LABELS):
        parser.error(f"--ingest-batch must be a multiple of {len(INGEST_LABELS)}")
    return args


def run_backend(backend: str, args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[float]]:
    """The rows of one backend, and the load average just before its measurements."""
    console.print(f"[bold]{backend}[/bold]: loading the healthcare demo ({args.patients} patients × {args.days} days)")
    with tempfile.TemporaryDirectory(prefix="dust-bench-serve-") as tmp, database(backend, tmp, args) as url:
        env = server_env(url)
        admin_password = load_data(env, args)
        with serving(env, args.workers, Path(tmp) / "server.log") as (base, pid):
            with httpx.Client(base_url=base, timeout=60) as client:
                setup = prepare(client, admin_password, args.ingest_clients)
            load = load_average()  # other work on the machine moves every figure: note how much there was
            rows = measure_routes(backend, base, pid, setup, args) if args.only != "ingest" else []
            if args.only != "routes":
                rows.append(with_cpu(pid, lambda: measure_ingest(backend, base, setup, args)))
    return rows, load


# --- (a) the database, the data and the server -------------------------------------------------------------


@contextmanager
def database(backend: str, tmp: str, args: argparse.Namespace) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp}/dust.db"
    else:
        with throwaway_postgres(args.postgres_url, "dust_bench_serve") as url:
            yield url


def server_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUST_")}  # no stray settings from the shell
    env["DUST_DATABASE_URL"] = url
    env["DUST_SECRET_KEY"] = secrets.token_urlsafe(48)
    env["DUST_ACCESS_TOKEN_MINUTES"] = "240"  # the tokens must outlive a whole run
    return env


def load_data(env: dict[str, str], args: argparse.Namespace) -> str:
    """The demo data set and an admin with a known password, through the CLI; returns the password."""
    demo = [str(DUST), "demo", "healthcare", "--size", str(args.patients), "--days", str(args.days)]
    run_cli(demo, env)
    password = secrets.token_urlsafe(16)
    run_cli([str(DUST), "users", "create", "bench-admin", "--role", "admin", "--password-stdin"], env, password)
    return password


def run_cli(command: list[str], env: dict[str, str], stdin: str | None = None) -> None:
    done = subprocess.run(command, env=env, input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[1:])} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


@contextmanager
def serving(env: dict[str, str], workers: int, log: Path) -> Iterator[tuple[str, int]]:
    """``dust serve`` on a free port until the block ends, as (base URL, process id); its request log goes to a
    file, not a pipe that could fill up and stall it."""
    port = free_port()
    command = [str(DUST), "serve", "--port", str(port), "--workers", str(workers)]
    with log.open("w") as sink:
        server = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_healthy(server, base, log)
            yield base, server.pid
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(server: subprocess.Popen[bytes], base: str, log: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"dust serve exited ({server.returncode}):\n{tail(log)}")
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.2)
    sys.exit(f"dust serve did not answer /healthz within {seconds:.0f} s:\n{tail(log)}")


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# --- (b) what to ask for ------------------------------------------------------------------------------------


@dataclass
class Setup:
    admin_token: str
    clinician_token: str
    patient_id: str
    tensor_id: str
    label: str  # of the tensor's first axis
    axis: str
    ingest_tensors: list[str]


def prepare(client: httpx.Client, admin_password: str, ingest_clients: int) -> Setup:
    admin = token(client, "bench-admin", admin_password)
    as_admin = {"Authorization": f"Bearer {admin}"}
    # A practitioner who treats someone (the demo's first practitioner may treat no one), and that patient.
    treats = items(ok(client.get(f"{API}/relations", params={"type": "treats", "limit": 1}, headers=as_admin)))[0]
    doctor_id, patient_id = treats["source_id"], treats["target_id"]
    found = items(ok(client.get(f"{API}/entities/{patient_id}/tensors", headers=as_admin)))
    tensor = next(t for t in found if t["schema"] == "vitals")
    axis = tensor["axes"][0]
    # The clinician sees the patients their doctor treats: the reads below go through the access policy.
    password = secrets.token_urlsafe(16)
    user = {"username": "bench-clinician", "password": password, "role": "clinician", "entity_id": doctor_id}
    ok(client.post(f"{API}/users", json=user, headers=as_admin))
    return Setup(
        admin_token=admin,
        clinician_token=token(client, "bench-clinician", password),
        patient_id=patient_id,
        tensor_id=tensor["id"],
        label=axis["labels"][0],
        axis=axis["name"],
        ingest_tensors=ingest_targets(client, as_admin, ingest_clients),
    )


def ingest_targets(client: httpx.Client, headers: dict[str, str], count: int) -> list[str]:
    """A schema of 4 labels over seconds (so a batch covers 250 new time steps) and one fresh tensor per client."""
    schema = {
        "name": "bench_ingest",
        "axes": [{"name": "channel", "labels": INGEST_LABELS}],
        "time": {"unit": "second"},
    }
    ok(client.post(f"{API}/schemas", json=schema, headers=headers))
    tensors = []
    for i in range(count):
        entity = ok(client.post(f"{API}/entities", json={"kind": "sensor", "name": f"ingest {i}"}, headers=headers))
        body = {"entity_id": entity["id"], "schema": "bench_ingest", "origin": "2026-01-01T00:00:00Z"}
        tensors.append(ok(client.post(f"{API}/tensors", json=body, headers=headers))["id"])
    return tensors


def token(client: httpx.Client, username: str, password: str) -> str:
    return str(ok(client.post(f"{API}/auth/token", data={"username": username, "password": password}))["access_token"])


def ok(response: httpx.Response) -> Any:
    if not response.is_success:
        sys.exit(f"{response.request.method} {response.request.url} → {response.status_code}:\n{response.text}")
    return response.json()


def items(page: Any) -> list[dict[str, Any]]:
    return page["items"] if isinstance(page, dict) else page


# --- (c) the routes under wrk -------------------------------------------------------------------------------


def routes(setup: Setup) -> list[tuple[str, str]]:
    """(name, path): the name is the route as reported, the path what wrk asks for."""
    point = f"{API}/tensor/{setup.tensor_id}?time=3&{setup.axis}={setup.label}"
    neighbourhood = f"{API}/query_master?entity_id={setup.patient_id}&direction=both&depth=2"
    return [
        ("GET /api/v1/auth/me", f"{API}/auth/me"),
        ("GET /api/v1/entities/{id}", f"{API}/entities/{setup.patient_id}"),
        (TARGET_ROUTES[0], point),
        ("GET /api/v1/tensor/{id}", f"{API}/tensor/{setup.tensor_id}"),
        ("GET /api/v1/patients?limit=50", f"{API}/patients?limit=50"),
        ("GET /api/v1/query_master?…&direction=both&depth=2", neighbourhood),
    ]


def measure_routes(backend: str, base: str, pid: int, setup: Setup, args: argparse.Namespace) -> list[dict[str, Any]]:
    plan: list[tuple[str, str, str, str | None]] = [(BARE, "/healthz", "anonymous", None)]
    for role, key in (("admin", setup.admin_token), ("clinician", setup.clinician_token)):
        plan += [(name, path, role, key) for name, path in routes(setup)]
    for _, path, _, bearer in plan:  # all of them first: a failing route stops the run before it starts
        check(base + path, bearer)
    rows = []
    for name, path, user, bearer in plan:
        console.print(f"  wrk {name} as {user}", style="dim")
        result = with_cpu(pid, lambda: wrk(base + path, bearer, args))  # noqa: B023 -- called at once
        rows.append({"backend": backend, "route": name, "user": user, "url": path} | result)
    bare = rows[0]["requests_per_s"]
    for r in rows:
        r["ratio_to_bare"] = r["requests_per_s"] / bare if bare else None
    if args.paced_load > 0:
        for r in rows:
            if r["route"] == BARE or (r["user"] == "admin" and r["route"] in TARGET_ROUTES):
                console.print(f"  wrk {r['route']} paced at {args.paced_load:.0%} of its req/s", style="dim")
                bearer = setup.admin_token if r["user"] == "admin" else None
                r["paced"] = paced(base + r["url"], bearer, r["requests_per_s"] * args.paced_load, args)
    return rows


def paced(url: str, bearer: str | None, rate: float, args: argparse.Namespace) -> dict[str, Any]:
    """Latency under a load the server keeps up with: each of wrk's connections waits after every answer, so
    that together they offer about ``rate`` req/s. At saturation (the plain wrk run) every connection always
    has a request queued, and by Little's law the latency is the queue (connections ÷ req/s), whatever the
    request path costs; here it is the request path plus the waits of requests that arrive together."""
    pause_ms = max(args.connections / rate * 1000 - 1, 0) if rate > 0 else 0
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        # Exponential pauses (arrivals at random, as from independent users): equal ones would keep the
        # connections in step, and every request would arrive in a burst of them all.
        script.write(f"function delay()\n  return -{pause_ms:.1f} * math.log(1 - math.random())\nend\n")
    try:
        result = wrk(url, bearer, args, script=script.name)
    finally:
        os.unlink(script.name)
    return result | {"offered_per_s": round(rate, 1), "pause_ms": round(pause_ms)}


def with_cpu(pid: int, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``measure()``'s row with the server's CPU milliseconds per request: what a request costs the server
    whatever else shares the machine, where req/s and latency move with the load."""
    before = cpu_seconds(pid)
    row = measure()
    row["server_cpu_ms_per_request"] = (cpu_seconds(pid) - before) * 1000 / max(row["requests"], 1)
    return row


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` and its descendants (the workers of ``--workers N``)."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for each in [pid, *descendants(pid)]:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime and stime, fields 14 and 15 of stat(5)
    return total


def descendants(pid: int) -> list[int]:
    found = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in map(int, children.read_text().split()):
            found += [child, *descendants(child)]
    return found


def check(url: str, bearer: str | None) -> None:
    """One plain request must answer 200: wrk counts a 3xx as fine and a 4xx only as a number."""
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    response = httpx.get(url, headers=headers, timeout=60)
    if response.status_code != 200:
        sys.exit(f"GET {url} → {response.status_code}, not 200:\n{response.text[:2000]}")


def wrk(url: str, bearer: str | None, args: argparse.Namespace, script: str | None = None) -> dict[str, Any]:
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s", f"--timeout={args.timeout}s"]
    command += ["-s", script] if script else []
    command += ["--latency"] + (["-H", f"Authorization: Bearer {bearer}"] if bearer else []) + [url]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[:-3])} … {url} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return parse_wrk(done.stdout)


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests/sec, the 50% and 99% lines of --latency, non-2xx/3xx responses and socket errors."""

    def find(pattern: str) -> re.Match[str]:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            sys.exit(f"cannot read {pattern!r} in wrk's output:\n{output}")
        return match

    def latency_ms(percent: int) -> float:
        number, unit = find(rf"^\s+{percent}%\s+([\d.]+)(\w+)").groups()
        return round(float(number) * UNIT_MS[unit], 3)

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    counts = map(int, errors.groups()) if errors else [0] * 4
    return {
        "requests": int(find(r"(\d+) requests in")[1]),
        "requests_per_s": float(find(r"^Requests/sec:\s+([\d.]+)")[1]),
        "p50_ms": latency_ms(50),
        "p99_ms": latency_ms(99),
        "non_2xx": int(non_2xx[1]) if non_2xx else 0,
        "socket_errors": dict(zip(("connect", "read", "write", "timeout"), counts, strict=True)),
    }


# --- (d) HTTP batch ingest -----------------------------------------------------------------------------------


def measure_ingest(backend: str, base: str, setup: Setup, args: argparse.Namespace) -> dict[str, Any]:
    """Client processes (not threads: the GIL would throttle them) start together behind a barrier once their
    bodies are made and their connection is open."""
    console.print(f"  ingest: {len(setup.ingest_tensors)} clients × {args.ingest_batch}-value batches", style="dim")
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(len(setup.ingest_tensors)), ctx.Queue()
    batches = int(args.duration * INGEST_POOL_VALUES_PER_S / len(setup.ingest_tensors) / args.ingest_batch) + 1
    clients = [
        ctx.Process(
            target=ingest_client,
            args=(base, setup.admin_token, tensor, args, batches, seed, start, results),
        )
        for seed, tensor in enumerate(setup.ingest_tensors)
    ]
    for c in clients:
        c.start()
    try:
        outcomes = [results.get(timeout=args.duration + 900) for _ in clients]
    except queue.Empty:
        sys.exit("an ingest client neither finished nor failed; its server may be stuck")
    for c in clients:
        c.join()
    failed = [o["error"] for o in outcomes if "error" in o]
    if failed:
        sys.exit("ingest failed:\n" + "\n".join(failed))
    latencies = sorted(x for o in outcomes for x in o["latencies_ms"])
    values = sum(o["values"] for o in outcomes)
    seconds = max(o["seconds"] for o in outcomes)  # they start together: the slowest one ends the run
    return {
        "backend": backend,
        "route": INGEST,
        "user": "admin",
        "url": f"{API}/tensors/{{id}}/values",
        "clients": len(clients),
        "batch_values": args.ingest_batch,
        "form": args.ingest_form,
        "requests": len(latencies),
        "requests_per_s": len(latencies) / seconds,
        "values": values,
        "values_per_s": values / seconds,
        "p50_ms": round(percentile(latencies, 50), 3),
        "p99_ms": round(percentile(latencies, 99), 3),
        "ratio_to_bare": None,
        "non_2xx": 0,  # a client stops at the first one, and the run with it
        "pool_exhausted": any(o["exhausted"] for o in outcomes),
    }


def ingest_client(
    base: str,
    bearer: str,
    tensor_id: str,
    args: argparse.Namespace,
    batches: int,
    seed: int,
    start: Any,
    results: Any,
) -> None:
    try:
        bodies = make_bodies(args.ingest_batch, batches, seed, columns=args.ingest_form == "columns")
        headers = {"Authorization": f"Bearer {bearer}", "Content-Type": "application/json"}
        # The standard library's client on one kept-alive connection: a third of httpx's CPU a request (0.26-0.32
        # against 1.0 ms for a 1,000-value batch), CPU that the server it shares the cores with gets instead.
        host = httpx.URL(base)
        client = http.client.HTTPConnection(host.host, host.port, timeout=60)
        try:
            client.request("GET", f"{API}/auth/me", headers=headers)  # opens the connection before the clock
            if (answer := client.getresponse()).status != 200:
                raise RuntimeError(f"GET {API}/auth/me → {answer.status}: {answer.read()[:2000]!r}")
            answer.read()
            start.wait(timeout=600)
            path = f"{API}/tensors/{tensor_id}/values"
            results.put(post_batches(client, path, headers, bodies, args.ingest_batch, args.duration))
        finally:
            client.close()
    except Exception as error:  # reported by the parent, which stops the run
        start.abort()  # the other clients must not wait at the barrier for this one
        results.put({"error": f"client {seed}: {error!r}"})


def make_bodies(batch: int, count: int, seed: int, *, columns: bool = False) -> list[bytes]:
    """``count`` JSON bodies; each one's time steps follow the last one's, so every value is a new cell. As
    ``{"values": [cells]}``, or with ``columns`` as ``{"columns": {"time": [...], "channel": [...], "value":
    [...]}}``. Written with f-strings rather than json.dumps of dicts: twice as fast, and there are millions of
    values."""
    steps = batch // len(INGEST_LABELS)
    values = np.random.default_rng(seed).uniform(0, 100, (count, steps, len(INGEST_LABELS))).round(1).tolist()
    bodies = []
    for b, rows in enumerate(values):
        if columns:
            times = ",".join(str(b * steps + i) for i in range(steps) for _ in INGEST_LABELS)
            labels = ",".join(f'"{label}"' for _ in range(steps) for label in INGEST_LABELS)
            numbers = ",".join(str(value) for row in rows for value in row)
            bodies.append(f'{{"columns":{{"time":[{times}],"channel":[{labels}],"value":[{numbers}]}}}}'.encode())
            continue
        cells = (
            f'{{"time":{b * steps + i},"channel":"{label}","value":{value}}}'
            for i, row in enumerate(rows)
            for label, value in zip(INGEST_LABELS, row, strict=True)
        )
        bodies.append(f'{{"values":[{",".join(cells)}]}}'.encode())
    return bodies


def post_batches(
    client: http.client.HTTPConnection,
    path: str,
    headers: dict[str, str],
    bodies: list[bytes],
    batch: int,
    duration: float,
) -> dict[str, Any]:
    latencies, began = [], time.perf_counter()
    deadline = began + duration
    for body in bodies:
        sent = time.perf_counter()
        client.request("POST", path, body=body, headers=headers)
        response = client.getresponse()
        answer = response.read()
        latencies.append((time.perf_counter() - sent) * 1000)
        if response.status != 200 or json.loads(answer).get("written") != batch:
            raise RuntimeError(f"POST {path} → {response.status}: {answer[:2000]!r}")
        if time.perf_counter() >= deadline:
            break
    ended = time.perf_counter()
    return {
        "values": len(latencies) * batch,
        "seconds": ended - began,
        "latencies_ms": latencies,
        "exhausted": ended < deadline,
    }


def percentile(ordered: list[float], p: float) -> float:
    if len(ordered) < 2:
        return ordered[0] if ordered else float("nan")
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(p) - 1]


# --- report ------------------------------------------------------------------------------------------------


def judge(backend: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's targets, on the admin rows: the three cheap reads, and the ingest."""
    judged = []
    for r in rows:
        if r["user"] == "admin" and r["route"] in TARGET_ROUTES:
            judged += [verdict(backend, r, "ratio_to_bare"), verdict(backend, r, "p99_ms")]
        elif r["route"] == INGEST:
            judged.append(verdict(backend, r, "values_per_s"))
    return judged


def verdict(backend: str, row: dict[str, Any], metric: str) -> dict[str, Any]:
    op, levels = TARGETS[metric]["op"], TARGETS[metric]["levels"]
    source = row["paced"] if metric == "p99_ms" and "paced" in row else row  # latency: at a load kept up with
    value = source[metric] if source[metric] is not None else float("nan")
    reached = (name for name, threshold in levels if (value >= threshold if op == ">=" else value <= threshold))
    name = next(reached, "missed")
    return {
        "backend": backend,
        "route": row["route"],
        "user": row["user"],
        "metric": metric,
        "value": value,
        "op": op,
        "levels": dict(levels),
        "verdict": name,
        "met": name != "missed",
    }


def show(backend: str, rows: list[dict[str, Any]], targets: list[dict[str, Any]], report: dict[str, Any]) -> None:
    o = report["options"]
    title = (
        f"dust serve on {backend}: wrk -t{o['threads']} -c{o['connections']} -d{o['duration']}s, "
        f"--workers {o['workers']}"
    )
    table = Table(title=title)
    columns = ("route", "as", "req/s", "values/s", "p50 ms", "p99 ms", "× bare", "CPU ms/req", "non-2xx / errors")
    columns += (f"paced: req/s, p50 / p99 ms at {o['paced_load']:.0%}",)
    for column in columns:
        table.add_column(column, justify="left" if column in ("route", "as") else "right")
    for r in rows:
        table.add_row(
            r["route"],
            r["user"],
            f"{r['requests_per_s']:,.0f}",
            f"{r['values_per_s']:,.0f}" if "values_per_s" in r else "",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            "" if r["ratio_to_bare"] is None else f"{r['ratio_to_bare']:.0%}",
            f"{r['server_cpu_ms_per_request']:.2f}",
            trouble(r),
            paced_text(r.get("paced")),
        )
    console.print(table)
    verdicts = Table(title=f"targets from the issue, {backend} (admin)")
    for column in ("route", "metric", "measured", "target", "verdict"):
        verdicts.add_column(column, justify="right" if column == "measured" else "left")
    for t in targets:
        name, fmt = FIGURES[t["metric"]]
        colour = "green" if t["met"] else "red"
        verdicts.add_row(t["route"], name, fmt(t["value"]), target_text(t), f"[{colour}]{t['verdict']}[/{colour}]")
    console.print(verdicts)
    m = report["machine"]
    console.print(
        f"machine: {m['cpu']}, {m['cores']} cores (shared by dust serve, wrk and the ingest clients), "
        f"Python {m['python']}, SQLite {m['sqlite']}, PostgreSQL {m['postgresql'] or '-'}, {m['wrk']}, "
        f"{m['platform']}; load average before this backend {report['load_average_before'][backend]}"
    )
    if any(r.get("pool_exhausted") for r in rows):
        console.print("[yellow]an ingest client used up its pre-made bodies before the duration ended[/yellow]")


def paced_text(p: dict[str, Any] | None) -> str:
    if p is None:
        return ""
    errors = p["non_2xx"] + sum(p["socket_errors"].values())
    shown = f"{p['requests_per_s']:,.0f}, {p['p50_ms']:.1f} / {p['p99_ms']:.1f}"
    return shown + (f" ({errors} errors!)" if errors else "")


def target_text(t: dict[str, Any]) -> str:
    """E.g. '≥ 50% (goal 70%)', '≤ 20.0', '≥ 300,000 (floor 200,000)'."""
    fmt = FIGURES[t["metric"]][1]
    sign = "≥" if t["op"] == ">=" else "≤"
    others = [f"{name.split()[0]} {fmt(x)}" for name, x in t["levels"].items() if name != "met"]
    return f"{sign} {fmt(t['levels']['met'])}" + (f" ({', '.join(others)})" if others else "")


def trouble(r: dict[str, Any]) -> str:
    """Non-2xx responses and socket errors, in red when there are any: such a row's figures are suspect."""
    errors = sum(r.get("socket_errors", {}).values())
    text_ = f"{r['non_2xx']}" + (f" / {errors} ({describe(r['socket_errors'])})" if errors else "")
    return f"[bold red]{text_} ![/bold red]" if r["non_2xx"] or errors else text_


def describe(errors: dict[str, int]) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in errors.items() if n)


def machine(postgres_url: str | None) -> dict[str, Any]:
    version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,  # the server runs on this interpreter, so on this library
        "postgresql": postgres_version(postgres_url) if postgres_url else None,
        "wrk": (version.stdout + version.stderr).split("[")[0].strip(),
        "platform": platform.platform(),
        "load_average_1_5_15min": load_average(),
    }


def postgres_version(url: str) -> str:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SHOW server_version")).scalar_one())
    finally:
        engine.dispose()


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


if __name__ == "__main__":
    main()
