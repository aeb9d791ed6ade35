"""What a rule's webhook costs a write, and that a dead receiver costs it nothing more: the same writes (one value
each, every one firing the rule) with no rule, with a rule whose webhook goes to a receiver that answers 200, and
with one whose receiver takes the connection and never answers. A job worker delivers in this process, as
``dust serve`` does on the embedded default (embedded, SQLite, a fresh file each).

    .venv/bin/python bench/webhooks.py                      # 300 writes per case
    .venv/bin/python bench/webhooks.py --writes 1000 --timeout 2

The write puts the delivery in the outbox in its own transaction and returns; the worker sends it after commit.
So the dead receiver ties up the worker's threads (each attempt waits ``--timeout`` seconds), never the writes:
their latency with the dead receiver should match the live one's. The table gives per-write latency (median,
p95, p99, max, in ms) and what the outbox held at the end (the live case waits until everything is delivered;
the dead case stops the worker after the writes, with its first attempts still hanging).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

import dust
from dust.core.logging import configure_logging
from dust.jobs import Worker
from dust.storage.models import WebhookDelivery
from dust.storage.repositories import webhooks as repo

VITALS = {"name": "vitals", "axes": [{"name": "metric", "labels": ["temperature"]}], "time": {"unit": "day", "step": 1}}


@contextmanager
def live_receiver() -> Iterator[str]:
    class Ok(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def dead_receiver() -> Iterator[str]:
    """Takes every connection and never reads or answers: a receiver that is up but hung."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


@contextmanager
def no_receiver() -> Iterator[str | None]:
    yield None


def run(case: str, args: argparse.Namespace) -> dict[str, Any]:
    receivers = {"no rule": no_receiver, "live receiver": live_receiver, "dead receiver": dead_receiver}
    with tempfile.TemporaryDirectory() as tmp, receivers[case]() as url:
        db = dust.open(f"sqlite:///{Path(tmp) / 'dust.db'}")
        db.create_schema(VITALS)
        patient = db.create_patient("Jane Doe")
        tensor = db.create_tensor(patient.id, "vitals", origin="2026-01-01T00:00:00Z").id
        if url is not None:
            when = {"schema": "vitals", "label": "temperature", "op": ">", "value": 39.0}
            db.create_trigger({"name": "fever", "when": when, "then": [{"action": "webhook", "url": url}]})
        latencies = []
        with Worker(db.settings, threads=args.threads):
            first = time.perf_counter()
            for t in range(args.writes):
                started = time.perf_counter()
                db.write_values(tensor, [{"time": t, "metric": "temperature", "value": 39.5}])
                latencies.append((time.perf_counter() - started) * 1000)
            drained = drain(db, first) if case == "live receiver" else None
            with db.session() as s:
                states = {state: repo.count(s, state) for state in ("pending", "delivered", "dead")}
                attempts = s.scalar(select(func.coalesce(func.sum(WebhookDelivery.attempts), 0)))
        db.close()
    latencies.sort()
    return {
        "case": case,
        "median": statistics.median(latencies),
        "p95": latencies[int(0.95 * (len(latencies) - 1))],
        "p99": latencies[int(0.99 * (len(latencies) - 1))],
        "max": latencies[-1],
        "states": states,
        "attempts": attempts,
        "drained": drained,
    }


def drain(db: dust.Dust, first: float, most: float = 300.0) -> float | None:
    """Seconds from the first write until the outbox has nothing pending (None: not within ``most``)."""
    while time.perf_counter() - first < most:
        with db.session() as s:
            if repo.count(s, "pending") == 0:
                return time.perf_counter() - first
        time.sleep(0.1)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writes", type=int, default=300, help="writes per case (one value each)")
    parser.add_argument("--threads", type=int, default=2, help="the worker's threads")
    parser.add_argument("--timeout", type=float, default=10.0, help="DUST_WEBHOOK_TIMEOUT_SECONDS")
    args = parser.parse_args()
    configure_logging("ERROR")  # a line per delivery otherwise
    os.environ["DUST_WEBHOOK_ALLOW_PRIVATE"] = "true"  # the receivers are on 127.0.0.1
    os.environ["DUST_WEBHOOK_TIMEOUT_SECONDS"] = str(args.timeout)
    print(f"{args.writes} writes per case, each firing; worker threads {args.threads}, timeout {args.timeout:g} s")
    print(f"{'case':<15}{'median ms':>10}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}   outbox at the end")
    for case in ("no rule", "live receiver", "dead receiver"):
        row = run(case, args)
        outbox = ", ".join(f"{n} {state}" for state, n in row["states"].items()) + f"; {row['attempts']} attempts"
        if row["drained"] is not None:
            outbox += f"; all delivered {row['drained']:.1f} s after the first write"
        print(
            f"{row['case']:<15}{row['median']:>10.2f}{row['p95']:>9.2f}{row['p99']:>9.2f}{row['max']:>9.2f}"
            f"   {outbox if case != 'no rule' else '-'}"
        )


if __name__ == "__main__":
    main()
