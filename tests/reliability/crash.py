"""Crash consistency: write through a real ``dust serve``, SIGKILL it mid-write, restart it, check every write.

    python -m tests.reliability.crash --rounds 20 --backend sqlite
    python -m tests.reliability.crash --rounds 20 --backend postgresql --postgres-url postgresql+psycopg://…

Per round: a fresh database (a SQLite file, or a PostgreSQL database made and dropped here) is seeded with a
schema, entities, their tensors and admin API keys; ``CLIENTS`` threads send batches of values (some
deliberately bad, to be refused with 422) and relation creates and weight changes, logging each outcome
(tests/reliability/ledger.py), while ``READERS`` threads read the tensors, entities and relations; after a
random 0.2–1.5 s the server is SIGKILLed, restarted, read back through the API and from its tables, and checked.
Exits 1 if any acknowledged write is lost, any write is partly there, any refused write left a trace, any
request answered 2xx (read or write) has no audit record, or the database is unsound.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from dust.core.logging import configure_logging
from dust.embedded import Dust
from tests.reliability import ledger, snapshot
from tests.reliability.ledger import Answered, RelationWrite, ValuesWrite, Verdict, Write
from tests.reliability.server import Server, admin_keys, bearer, database

CLIENTS = 4
READERS = 2  # threads that only read, alongside the writing clients, to the kill
ENTITIES = 8  # 56 ordered pairs: the relations one client can make in a round
PATIENTS = 2  # entities of kind patient, for the readers' GET /patients/{id}
LABELS = ["a", "b", "c", "d"]
LOW, HIGH = 0.0, 1000.0  # every label's valid range
KILL_AFTER = (0.2, 1.5)  # seconds of traffic before the SIGKILL
MAX_OPS = 5_000  # per client and round: a bound even if the kill never came
REQUEST_SECONDS = 30.0
ROUND_SECONDS = 60.0  # the clients' own deadline, far beyond the kill
SCHEMA = {
    "name": "crash",
    "axes": [{"name": "metric", "labels": LABELS, "ranges": {label: [LOW, HIGH] for label in LABELS}}],
    "time": {"unit": "second"},
}
ORIGIN = "2026-01-01T00:00:00Z"
# Operation mix: weights of each kind of write a client picks next.
MIX = {
    "fresh": 35,
    "overwrite": 15,
    "bad_values": 15,
    "relate": 15,
    "relate_again": 5,
    "relate_bad": 5,
    "reweigh": 7,
    "reweigh_bad": 3,
}
# Read mix: weights of each kind of thing a reader asks for next (each read records a 'read' audit record).
READ_MIX = {"tensor": 3, "entity": 2, "patient": 1, "relation": 2}


@dataclass
class World:
    """What the seed made, the fresh time steps left per tensor and the relations made (shared by all threads)."""

    keys: list[str]  # one per client, then one per reader: a key's requests may wait for each other (test_locks.py)
    entities: list[str]
    tensors: list[str]
    patients: list[str]
    relations: list[str] = field(default_factory=list)  # acked relation creates, for the readers
    next_time: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_steps(self, tensor: str, steps: int) -> int:
        """The first of ``steps`` time steps of ``tensor`` no one has written: each cell has one writer."""
        with self.lock:
            start = self.next_time.get(tensor, 0)
            self.next_time[tensor] = start + steps
            return start

    def add_relation(self, relation_id: str) -> None:
        with self.lock:
            self.relations.append(relation_id)

    def readable(self) -> dict[str, tuple[str, list[str]]]:
        """Per kind of read: its path, and the ids there are to read."""
        with self.lock:
            relations = list(self.relations)
        return {
            "tensor": ("/tensors/{}", self.tensors),
            "entity": ("/entities/{}", self.entities),
            "patient": ("/patients/{}", self.patients),
            "relation": ("/relations/{}", relations),
        }


def seed(database_url: str) -> World:
    """Schema, entities, one tensor each, a few patients, and a key per client and reader; through the engine,
    before the server starts."""
    keys = admin_keys(database_url, CLIENTS + READERS)
    with Dust(database_url, migrate=False) as db:
        db.create_schema(SCHEMA)
        made = db.create_entities({"kind": "thing", "name": f"thing {i}"} for i in range(ENTITIES))
        tensors = db.create_tensors({"entity_id": e.id, "schema": "crash", "origin": ORIGIN} for e in made)
        patients = db.create_entities({"kind": "patient", "name": f"patient {i}"} for i in range(PATIENTS))
    return World(keys, [str(e.id) for e in made], [str(t.id) for t in tensors], [str(p.id) for p in patients])


def connect(api: str, key: str) -> httpx.Client:
    """A thread's HTTP client, made before the clock of the round starts: making one (its TLS context, unused on
    loopback HTTP) takes 0.05–0.5 s of a busy machine, which the shortest rounds would otherwise spend on it."""
    return httpx.Client(base_url=api, headers=bearer(key), timeout=REQUEST_SECONDS)


def answered(response: httpx.Response, action: str) -> Answered:
    """A 2xx answer, by the request id the server gave it: its audit record is found by that id."""
    request = response.request
    return Answered(
        response.headers.get("X-Request-ID"), request.method, request.url.path, action, response.status_code
    )


# --- a client -----------------------------------------------------------------------------------------------


Request = tuple[str, str, dict[str, Any]]  # method, path, JSON body


class Client(threading.Thread):
    """Writes until its first unanswered request (the server is gone) or 5xx, the op bound or its deadline."""

    def __init__(self, number: int, world: World, api: str, rng: random.Random) -> None:
        super().__init__(name=f"crash-client-{number}", daemon=True)
        self.number, self.world, self.rng = number, world, rng
        self.http = connect(api, world.keys[number])
        self.log: list[Write] = []
        self.answered: list[Answered] = []  # the acked writes' requests, for their audit records
        self.statuses: Counter[str] = Counter()
        self.current: dict[tuple[str, int, str], float] = {}  # the values this client's acked writes left
        self.batches: list[ValuesWrite] = []  # acked batches: cells this client owns, to overwrite
        self.edges: dict[tuple[str, str, str], tuple[str, float]] = {}  # acked relations: id, current weight
        self.used: set[tuple[str, str]] = set()  # (source, target) pairs tried, whatever came of it
        self.type = f"crash_{number}"  # relations of this type are this client's alone

    def run(self) -> None:
        deadline = time.monotonic() + ROUND_SECONDS
        with self.http as http:
            for seq in range(MAX_OPS):
                if time.monotonic() > deadline:
                    break
                write, request = self._next(seq)
                self._send(http, write, request)
                self.log.append(write)
                if write.outcome in ("unknown", "unsent"):
                    break

    def _next(self, seq: int) -> tuple[Write, Request]:
        kinds = list(MIX)
        while True:
            kind = self.rng.choices(kinds, weights=[MIX[k] for k in kinds])[0]
            made = getattr(self, f"_{kind}")(seq)
            if made is not None:  # None: nothing to do it to yet (no acked batch or relation), pick again
                return made

    def _send(self, http: httpx.Client, write: Write, request: Request) -> None:
        method, path, body = request
        kind = "values" if isinstance(write, ValuesWrite) else f"relation {write.op}"
        try:
            response = http.request(method, path, json=body)
        except httpx.ConnectError:
            write.outcome = "unsent"
            self.statuses[f"{kind} refused connection"] += 1
            return
        except httpx.TransportError:
            write.outcome = "unknown"
            self.statuses[f"{kind} no answer"] += 1
            return
        write.status = response.status_code
        self.statuses[f"{kind} {response.status_code}"] += 1
        if response.is_success:
            write.outcome = "acked"
            self.answered.append(answered(response, _action(write)))
            self._remember(write, response)
        else:  # a 5xx may come after the commit (while the answer is built): whether it took effect is unknown
            write.outcome = "unknown" if response.is_server_error else "rejected"

    def _remember(self, write: Write, response: httpx.Response) -> None:
        if isinstance(write, ValuesWrite):
            self.batches.append(write)
            self.current.update(write.cell_values())
            return
        relation_id = response.json()["id"] if write.op == "create" else self.edges[write.edge][0]
        write.relation_id = relation_id
        self.edges[write.edge] = (relation_id, write.weight)
        if write.op == "create":
            self.world.add_relation(relation_id)

    # values -------------------------------------------------------------------------------------------------

    def _value(self, unlike: float | None = None) -> float:
        while True:
            value = self.rng.uniform(LOW, HIGH)
            if value != unlike:
                return value

    def _fresh_cells(self) -> tuple[str, list[tuple[int, str]]]:
        tensor = self.rng.choice(self.world.tensors)
        size = self.rng.randint(10, 500)
        start = self.world.take_steps(tensor, math.ceil(size / len(LABELS)))
        cells = [(start + i // len(LABELS), LABELS[i % len(LABELS)]) for i in range(size)]
        return tensor, cells

    def _owned_cells(self) -> tuple[str, list[tuple[int, str]]] | None:
        """Some cells of one of this client's acked batches: no other client writes them."""
        if not self.batches:
            return None
        batch = self.rng.choice(self.batches)
        cells = list(batch.cells)
        first = self.rng.randrange(len(cells))
        return batch.tensor, cells[first : first + self.rng.randint(10, 500)]

    def _values_write(self, seq: int, tensor: str, cells: list[tuple[int, str]]) -> ValuesWrite:
        chosen = {cell: self._value(self.current.get((tensor, *cell))) for cell in cells}
        return ValuesWrite(self.number, seq, tensor, chosen)

    def _request(self, write: ValuesWrite, bad: dict[str, Any] | None = None) -> Request:
        items: list[dict[str, Any]] = [
            {"time": t, "metric": label, "value": v} for (t, label), v in write.cells.items()
        ]
        if bad is not None:
            items.insert(self.rng.randrange(len(items) + 1), bad)
        return "POST", f"/tensors/{write.tensor}/values", {"values": items}

    def _fresh(self, seq: int) -> tuple[Write, Request]:
        write = self._values_write(seq, *self._fresh_cells())
        return write, self._request(write)

    def _overwrite(self, seq: int) -> tuple[Write, Request] | None:
        owned = self._owned_cells()
        if owned is None:
            return None
        write = self._values_write(seq, *owned)
        return write, self._request(write)

    def _bad_values(self, seq: int) -> tuple[Write, Request]:
        """A batch with one bad item among valid ones, over fresh or owned cells: all of it must be refused."""
        owned = self._owned_cells() if self.rng.random() < 0.5 else None
        tensor, cells = owned or self._fresh_cells()
        write = self._values_write(seq, tensor, cells)
        write.invalid = True
        t = cells[0][0]
        bad = self.rng.choice(
            [
                {"time": t, "metric": "a", "value": HIGH + 1 + self.rng.random()},  # out of range
                {"time": t, "metric": "a", "value": LOW - 1},
                {"time": t, "metric": "zz", "value": 1.0},  # no such label
                {"time": -100_000_001, "metric": "a", "value": 1.0},  # below the least time index
                {"time": t, "metric": "a", "value": "high"},  # not a number
                {"time": t, "value": 1.0},  # an axis missing
            ]
        )
        return write, self._request(write, bad)

    # relations ----------------------------------------------------------------------------------------------

    def _free_pair(self) -> tuple[str, str] | None:
        free = [(s, t) for s in self.world.entities for t in self.world.entities if s != t and (s, t) not in self.used]
        if not free:
            return None
        pair = self.rng.choice(free)
        self.used.add(pair)
        return pair

    def _relation_write(self, seq: int, op: str, edge: tuple[str, str, str], weight: float) -> RelationWrite:
        return RelationWrite(self.number, seq, op, edge, weight)  # type: ignore[arg-type]

    def _relate(self, seq: int, bad: bool = False) -> tuple[Write, Request] | None:
        pair = self._free_pair()
        if pair is None:
            return None
        write = self._relation_write(seq, "create", (*pair, self.type), self.rng.uniform(0.01, 10))
        body: dict[str, Any] = {"source_id": pair[0], "target_id": pair[1], "type": self.type, "weight": write.weight}
        if bad:
            write.invalid = True
            body.update(
                self.rng.choice(
                    [
                        {"weight": "heavy"},
                        {"valid_from": "2026-02-01T00:00:00Z", "valid_to": "2026-01-01T00:00:00Z"},
                        {"attributes": [1, 2]},
                    ]
                )
            )
        return write, ("POST", "/relations", body)

    def _relate_bad(self, seq: int) -> tuple[Write, Request] | None:
        return self._relate(seq, bad=True)

    def _relate_again(self, seq: int) -> tuple[Write, Request] | None:
        """A create of a relation that exists, with another weight: 409, and the weight stays."""
        if not self.edges:
            return None
        edge = self.rng.choice(list(self.edges))
        write = self._relation_write(seq, "create", edge, self._value(self.edges[edge][1]) / 100)
        write.invalid = True
        body = {"source_id": edge[0], "target_id": edge[1], "type": edge[2], "weight": write.weight}
        return write, ("POST", "/relations", body)

    def _reweigh(self, seq: int, bad: bool = False) -> tuple[Write, Request] | None:
        if not self.edges:
            return None
        edge = self.rng.choice(list(self.edges))
        relation_id, weight = self.edges[edge]
        write = self._relation_write(seq, "patch", edge, self._value(weight) / 100)
        body: dict[str, Any] = {"weight": write.weight}
        if bad:
            write.invalid = True
            body.update({"valid_from": "2026-02-01T00:00:00Z", "valid_to": "2026-01-01T00:00:00Z"})
        return write, ("PATCH", f"/relations/{relation_id}", body)

    def _reweigh_bad(self, seq: int) -> tuple[Write, Request] | None:
        return self._reweigh(seq, bad=True)


def _action(write: Write) -> str:
    """The audit action of an acked write: a batch of values and a weight change update, a relation is created."""
    return "create" if isinstance(write, RelationWrite) and write.op == "create" else "update"


# --- a reader -----------------------------------------------------------------------------------------------


class Reader(threading.Thread):
    """Reads the seeded tensors, entities and patients and the clients' relations, until its first unanswered
    request or its deadline: reads run alongside the writes right up to the kill, and each answered one must
    leave its audit record."""

    def __init__(self, number: int, world: World, api: str, rng: random.Random) -> None:
        super().__init__(name=f"crash-reader-{number}", daemon=True)
        self.number, self.world, self.rng = number, world, rng
        self.http = connect(api, world.keys[CLIENTS + number])
        self.answered: list[Answered] = []
        self.statuses: Counter[str] = Counter()

    def run(self) -> None:
        deadline = time.monotonic() + ROUND_SECONDS
        with self.http as http:
            for _ in range(MAX_OPS):
                if time.monotonic() > deadline or not self._read(http, *self._next()):
                    break

    def _next(self) -> tuple[str, str]:
        readable = self.world.readable()
        kinds = list(READ_MIX)
        while True:
            kind = self.rng.choices(kinds, weights=[READ_MIX[k] for k in kinds])[0]
            path, ids = readable[kind]
            if ids:  # no relation acked yet: pick again
                return kind, path.format(self.rng.choice(ids))

    def _read(self, http: httpx.Client, kind: str, path: str) -> bool:
        """One GET; whether it was answered (if not, the server is gone)."""
        try:
            response = http.get(path)
        except httpx.ConnectError:
            self.statuses[f"read {kind} refused connection"] += 1
            return False
        except httpx.TransportError:
            self.statuses[f"read {kind} no answer"] += 1
            return False
        self.statuses[f"read {kind} {response.status_code}"] += 1
        if response.is_success:
            self.answered.append(answered(response, "read"))
        return True


# --- a round ------------------------------------------------------------------------------------------------


@dataclass
class RoundResult:
    verdict: Verdict
    statuses: Counter[str]
    killed_after: float
    seconds: float


def run_round(database_url: str, rng: random.Random) -> RoundResult:
    """Seed, write and read, SIGKILL, restart, read back, check."""
    began = time.monotonic()
    world = seed(database_url)
    with Server(database_url, DUST_LOG_LEVEL="WARNING") as server:
        api = server.start()
        _warm_up(api, world)
        clients = [Client(n, world, api, random.Random(rng.random())) for n in range(CLIENTS)]
        readers = [Reader(n, world, api, random.Random(rng.random())) for n in range(READERS)]
        threads: list[Client | Reader] = [*clients, *readers]
        killed_after = _run_until_killed(server, threads, rng)
        api = server.start()  # the restart recovers the database (SQLite replays its WAL)
        # The audit records too are read after the restart: the restarted server records nothing before
        # _compare_served's reads, and those records carry request ids of their own.
        stored = snapshot.take(database_url)
        stored.problems += _compare_served(api, world, stored)
    log = [write for client in clients for write in client.log]
    acknowledged = [request for thread in threads for request in thread.answered]
    verdict = ledger.check(log, stored, acknowledged)
    statuses = sum((thread.statuses for thread in threads), Counter())
    server_errors = {status: n for status, n in statuses.items() if status.split()[-1].startswith("5")}
    if server_errors:
        verdict.problems.append(f"5xx answers (a 5xx is a bug): {server_errors}")
    refused_reads = {s: n for s, n in statuses.items() if s.startswith("read ") and s.split()[-1].startswith("4")}
    if refused_reads:  # the readers ask only for what exists, as an admin
        verdict.problems.append(f"reads refused: {refused_reads}")
    return RoundResult(verdict, statuses, killed_after, time.monotonic() - began)


def _warm_up(api: str, world: World) -> None:
    """A first read of each tensor: the server's first requests are slow (imports, caches), and the round
    is short."""
    with httpx.Client(base_url=api, headers=bearer(world.keys[0]), timeout=REQUEST_SECONDS) as http:
        for tensor in world.tensors:
            http.get(f"/tensors/{tensor}").raise_for_status()


def _run_until_killed(server: Server, threads: list[Client | Reader], rng: random.Random) -> float:
    """Start the clients and readers, SIGKILL the server after a random while, wait for them to notice."""
    for thread in threads:
        thread.start()
    killed_after = rng.uniform(*KILL_AFTER)
    time.sleep(killed_after)
    server.kill()
    for thread in threads:
        thread.join(timeout=REQUEST_SECONDS + 10)
    if any(thread.is_alive() for thread in threads):
        raise RuntimeError("a client or reader did not stop after the server was killed")
    return killed_after


def _compare_served(api: str, world: World, stored: ledger.Snapshot) -> list[str]:
    """What the restarted server serves must be what its tables hold."""
    problems = []
    with httpx.Client(base_url=api, headers=bearer(world.keys[0]), timeout=REQUEST_SECONDS) as http:
        ready = http.get("/readyz")
        if ready.status_code != 200:
            problems.append(f"/readyz after the restart: {ready.status_code}")
        for tensor in world.tensors:
            body = http.get(f"/tensors/{tensor}").json()
            served = {
                (tensor, t, label): value
                for label, row in zip(body["coords"]["metric"], body["values"], strict=True)
                for t, value in zip(body["coords"].get("time", []), row, strict=True)
                if value is not None
            }
            held = {cell: v for cell, v in stored.cells.items() if cell[0] == tensor}
            if served != held:
                problems.append(f"tensor {tensor}: the API serves {len(served)} values, the tables hold {len(held)}")
    return problems


# --- rounds -------------------------------------------------------------------------------------------------


@dataclass
class Totals:
    backend: str
    rounds: int = 0
    acked: int = 0
    values: int = 0
    rejected: int = 0
    unknown: int = 0
    applied: int = 0
    unsent: int = 0
    lost: int = 0
    partial: int = 0
    leaked: int = 0
    problems: int = 0
    reads: int = 0
    missing: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    details: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.rounds > 0 and not (self.lost or self.partial or self.leaked or self.problems or self.missing)

    def add(self, result: RoundResult) -> None:
        v = result.verdict
        self.rounds += 1
        self.acked += v.acked
        self.values += v.values
        self.rejected += v.rejected
        self.unknown += v.unknown
        self.applied += v.applied
        self.unsent += v.unsent
        self.lost += len(v.lost)
        self.partial += len(v.partial)
        self.leaked += len(v.leaked)
        self.problems += len(v.problems)
        self.reads += v.reads
        self.missing += len(v.missing)
        self.statuses.update(result.statuses)
        self.details += [f"round {self.rounds}: {d}" for d in details(v)]

    def line(self) -> str:
        return (
            f"TOTAL {self.backend}: rounds {self.rounds}, acknowledged writes {self.acked}, values {self.values}, "
            f"rejected {self.rejected}, unknown {self.unknown} (applied {self.applied}), unsent {self.unsent}, "
            f"acknowledged reads {self.reads}; lost {self.lost}, partial {self.partial}, leaked {self.leaked}, "
            f"audit records missing {self.missing}, problems {self.problems}"
        )


def details(verdict: Verdict, missing_shown: int = 10) -> list[str]:
    """What went wrong; a few of the missing audit records (when reads lose theirs, most of them do)."""
    missing = verdict.missing[:missing_shown]
    if len(verdict.missing) > missing_shown:
        missing.append(f"... and {len(verdict.missing) - missing_shown} more answered requests without their record")
    return verdict.lost + verdict.partial + verdict.leaked + missing + verdict.problems


def round_line(number: int, of: int, backend: str, result: RoundResult) -> str:
    v = result.verdict
    return (
        f"round {number}/{of} {backend}: killed after {result.killed_after:.2f} s; writes {v.acked} "
        f"acked ({v.values} values), {v.rejected} rejected, {v.unknown} unknown ({v.applied} applied), "
        f"{v.unsent} unsent; reads {v.reads} acked; lost {len(v.lost)}, partial {len(v.partial)}, "
        f"leaked {len(v.leaked)}, audit records missing {len(v.missing)}, problems {len(v.problems)} "
        f"[{result.seconds:.1f} s]"
    )


def run_rounds(
    backend: str,
    rounds: int,
    *,
    postgres_url: str | None = None,
    seed_value: int | None = None,
    out: Callable[[str], None] = print,
) -> Totals:
    seed_value = random.randrange(1 << 32) if seed_value is None else seed_value
    out(f"crash consistency on {backend}: {rounds} rounds, {CLIENTS} clients, {READERS} readers, seed {seed_value}")
    rng = random.Random(seed_value)
    totals = Totals(backend)
    for number in range(1, rounds + 1):
        with database(backend, postgres_url) as url:
            result = run_round(url, rng)
        totals.add(result)
        out(round_line(number, rounds, backend, result))
        for detail in details(result.verdict):
            out(f"  {detail}")
    out(totals.line())
    out(f"statuses {backend}: {dict(sorted(totals.statuses.items()))}")
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.crash", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("DUST_TEST_POSTGRES_URL"),
        help="a PostgreSQL URL allowed to CREATE DATABASE (default: $DUST_TEST_POSTGRES_URL)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="repeat an earlier run's random choices (not its thread timing)"
    )
    args = parser.parse_args(argv)
    configure_logging("WARNING", "console")  # the seed's "migrations applied" each round is noise here
    if args.backend == "postgresql" and not args.postgres_url:
        parser.error("--backend postgresql needs --postgres-url or DUST_TEST_POSTGRES_URL")
    totals = run_rounds(args.backend, args.rounds, postgres_url=args.postgres_url, seed_value=args.seed)
    return 0 if totals.ok else 1


if __name__ == "__main__":
    sys.exit(main())
