"""Throughput through the balancer of ``deploy/local-cluster`` with one and with two replicas.

    .venv/bin/python bench/cluster.py                      # 8 s a route and a cluster size: under a minute of load
    .venv/bin/python bench/cluster.py --replicas 1,2,3 --duration 5

For each cluster size: ``deploy/local-cluster up --replicas N`` (nginx → N ``dust serve`` on the running PostgreSQL
and Redis, a worker), an entity made through the balancer, then ``wrk -t2 -c16`` through the balancer on
``/healthz``, ``GET /auth/me`` and ``GET /entities/{id}`` with the admin key it printed; then ``down --drop``. It
prints req/s, p50 and p99 per route and size, with errors, and the scaling from the first size (wrk, nginx and
every replica share this machine's cores, so two replicas on two cores show what a second core buys, not what a
second machine would).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from serve import wrk  # the same wrk run and reading as bench/serve.py

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "deploy" / "local-cluster"
OUT = Path(__file__).parent / "out" / "cluster.json"
console = Console()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", default="1,2", help="cluster sizes to measure, in order (default 1,2)")
    parser.add_argument("--duration", type=int, default=8, help="seconds of wrk per route and size")
    parser.add_argument("--connections", type=int, default=16, help="wrk -c")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t")
    parser.add_argument("--timeout", type=int, default=2, help="wrk --timeout, seconds")
    args = parser.parse_args()
    sizes = [int(n) for n in args.replicas.split(",")]
    if args.duration * 3 * len(sizes) > 120:
        sys.exit("at most two minutes of load: lower --duration or fewer --replicas")
    rows = [row for size in sizes for row in measure(size, args)]
    show(rows, sizes)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps({"load_average": os.getloadavg(), "rows": rows}, indent=2) + "\n")
    console.print(f"written to {OUT}")


def measure(replicas: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    said = subprocess.run([str(CLUSTER), "up", "--replicas", str(replicas)], capture_output=True, text=True)
    if said.returncode != 0:
        sys.exit(f"deploy/local-cluster up failed:\n{said.stdout}\n{said.stderr}")
    lines = dict(line.split("=", 1) for line in said.stdout.splitlines() if "=" in line)
    try:
        balancer, key = lines["balancer"], lines["token"]
        api = balancer.rstrip("/") + "/api/v1"
        made = httpx.post(
            f"{api}/entities", json={"kind": "bench", "name": "cluster"}, headers={"Authorization": f"Bearer {key}"}
        )
        made.raise_for_status()
        console.print(f"{replicas} replica(s) behind {balancer}; load average {os.getloadavg()[0]:.1f}", style="dim")
        entity = made.json()["id"]
        routes = [("/healthz", None), ("/api/v1/auth/me", key), (f"/api/v1/entities/{entity}", key)]
        return [
            {"replicas": replicas, "route": path.replace(entity, "{id}")} | wrk(balancer + path, bearer, args)
            for path, bearer in routes
        ]
    finally:
        subprocess.run([str(CLUSTER), "down", "--drop"], capture_output=True, text=True, check=False)


def show(rows: list[dict[str, Any]], sizes: list[int]) -> None:
    table = Table(title="through the balancer (nginx): wrk -t2 -c16")
    for column in ("route", "replicas", "req/s", "× first size", "p50 ms", "p99 ms", "non-2xx", "socket errors"):
        table.add_column(column, justify="left" if column == "route" else "right", no_wrap=column == "route")
    first = {r["route"]: r["requests_per_s"] for r in rows if r["replicas"] == sizes[0]}
    for r in sorted(rows, key=lambda r: (r["route"], r["replicas"])):
        errors = sum(r["socket_errors"].values())
        scaling = r["requests_per_s"] / first[r["route"]] if first.get(r["route"]) else float("nan")
        table.add_row(
            r["route"],
            str(r["replicas"]),
            f"{r['requests_per_s']:,.0f}",
            f"{scaling:.2f}×",
            f"{r['p50_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            str(r["non_2xx"]),
            str(errors),
        )
    console.print(table)


if __name__ == "__main__":
    main()
