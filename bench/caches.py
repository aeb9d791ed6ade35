"""The shared caches (dust.engine.caches): the master tensor and an aggregate, cold and warm, on SQLite and
PostgreSQL, in one process's memory and through Redis.

    .venv/bin/python bench/caches.py                                   # 50,000 relations; 2,000 tensors × 365 days
    .venv/bin/python bench/caches.py --postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres
    .venv/bin/python bench/caches.py --relations 5000 --tensors 200    # a quick run

One database per backend (a fresh SQLite file; a throwaway database on the PostgreSQL server of
``--postgres-url``, dropped after), filled in bulk: ``--entities`` entities, ``--relations`` relations of three
types between them, and a ``vitals`` tensor of ``--days`` daily heart rates for ``--tensors`` of them. Then, best of
``--repeat`` runs each, wall and CPU milliseconds, in a read-only transaction as a GET request has:

- uncached: the read with no cache at all (what every replica did before);
- cold: a miss: computed and kept (with Redis: packed and sent too) — each run after the database's identity is
  renewed (``caches.forget_all``), so no entry is found;
- warm, local: found in this process's memory (a replica's second read);
- warm, from Redis: found in Redis by another replica, which never made it (its memory empty): fetched, unpacked.

The master tensor is ``relations.master_tensor`` (weights now, every type); the aggregate is the mean heart rate per
day over every tensor (``insights.aggregate_by_step``). Prints a table; nothing is written to bench/out.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from dust.engine import caches, insights, relations, schemas, tensors
from dust.engine.schemas import SchemaCreate
from dust.engine.tensors import TensorCreate
from dust.storage.cache_store import Store
from dust.storage.db import AFTER_COMMIT, make_engine, make_sessionmaker, unit_of_work, upgrade
from dust.storage.models import Entity, Relation, RelationWeight

TYPES = ["knows", "supplies", "treats"]
REDIS_URL = "redis://127.0.0.1:6379/7"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres-url", default=None, help="a PostgreSQL server to make a throwaway database on")
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--entities", type=int, default=5_000)
    parser.add_argument("--relations", type=int, default=50_000)
    parser.add_argument("--tensors", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(
        f"{args.relations:,} relations between {args.entities:,} entities; {args.tensors:,} tensors × {args.days} days"
    )
    print(f"best of {args.repeat}, ms (wall / CPU)")
    with tempfile.TemporaryDirectory() as folder:
        _run(f"sqlite:///{Path(folder) / 'dust.db'}", args)
    if args.postgres_url:
        with _throwaway(args.postgres_url) as url:
            _run(url, args)


def _run(url: str, args: argparse.Namespace) -> None:
    engine = make_engine(url)
    upgrade(engine)
    writes = make_sessionmaker(engine)
    _fill(writes, args.entities, args.relations, args.tensors, args.days)
    reads = make_sessionmaker(engine, read_only=True)

    def master(session: Session) -> object:
        return relations.master_tensor(session)

    def aggregate(session: Session) -> object:
        return insights.aggregate_by_step(session, "vitals", "heart_rate")

    print(f"\n-- {engine.dialect.name}")
    print(f"{'':38}{'uncached':>17}{'cold':>17}{'warm, local':>17}{'warm, from Redis':>17}")
    for name, read in (("master tensor", master), ("aggregate (mean per day)", aggregate)):
        for where in ("in-process", "redis"):
            redis_url = args.redis_url if where == "redis" else None
            figures = _measure(writes, reads, read, redis_url, args.repeat)
            cells = "".join(f"{_ms(f):>17}" for f in figures)
            print(f"{name + ', ' + where:38}{cells}")
    engine.dispose()


def _measure(
    writes: Callable[[], Session],
    reads: Callable[[], Session],
    read: Callable[[Session], object],
    redis_url: str | None,
    repeat: int,
) -> list[tuple[float, float] | None]:
    def replica() -> caches.Caches:
        return caches.Caches(store=Store(redis_url=redis_url, local_bytes=1024 * 1024 * 1024))

    @contextmanager
    def transaction(shared: caches.Caches | None) -> Iterator[Session]:
        with reads() as session, session.begin():
            session.info[AFTER_COMMIT] = []  # the read's audit records: a server's batch writer would write them
            if shared is not None:
                caches.attach(session, shared)
            yield session

    def renew() -> None:
        with unit_of_work(writes) as session:  # type: ignore[arg-type]
            caches.forget_all(session)

    def timed(run: Callable[[], object], before: Callable[[], object] = lambda: None) -> tuple[float, float]:
        best = (float("inf"), float("inf"))
        for _ in range(repeat):
            before()
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            best = (min(best[0], time.perf_counter() - wall), min(best[1], time.process_time() - cpu))
        return best

    def once(shared: caches.Caches | None) -> object:
        with transaction(shared) as session:
            return read(session)

    uncached = timed(lambda: once(None))
    one = replica()
    cold = timed(lambda: once(one), renew)
    once(one)  # the entry under the identity now in force
    local = timed(lambda: once(one))
    from_redis = timed(lambda: once(replica())) if redis_url else None
    assert once(replica()) == once(None), "a cached read differs from the database's"
    return [uncached, cold, local, from_redis]


def _ms(figure: tuple[float, float] | None) -> str:
    return "—" if figure is None else f"{figure[0] * 1000:,.1f} / {figure[1] * 1000:,.1f}"


def _fill(writes: Callable[[], Session], entities: int, count: int, tensor_count: int, days: int) -> None:
    """Entities and relations in bulk (a few hubs, as doctors and warehouses are); daily heart rates."""
    rng = random.Random(8)
    now = datetime.now(UTC)
    ids = [uuid.uuid4() for _ in range(entities)]
    edges: set[tuple[int, int, int]] = set()
    while len(edges) < count:
        source = rng.randrange(50) if rng.random() < 0.2 else rng.randrange(entities)
        target = rng.randrange(entities)
        if source != target:
            edges.add((source, target, rng.randrange(len(TYPES))))
    relation_rows, weight_rows = [], []
    for source, target, type_ in edges:
        rid, when, weight = uuid.uuid4(), now - timedelta(days=rng.uniform(0, 60)), round(rng.uniform(0.1, 3.0), 3)
        relation_rows.append(
            {"id": rid, "source_id": ids[source], "target_id": ids[target], "type": TYPES[type_], "weight": weight}
            | {"attributes": {}, "created_at": when, "updated_at": when}
        )
        weight_rows.append({"relation_id": rid, "weight": weight, "changed_at": when})
    people = [{"id": i, "kind": "person", "name": f"e{n}", "attributes": {}} for n, i in enumerate(ids)]
    with unit_of_work(writes) as session:  # type: ignore[arg-type]
        session.execute(insert(Entity), [p | {"created_at": now, "updated_at": now} for p in people])
        session.execute(insert(Relation), relation_rows)
        session.execute(insert(RelationWeight), weight_rows)
        caches.changed(session, caches.RELATIONS)  # as every writer of relations does
        vitals = {"name": "vitals", "axes": [{"name": "metric", "labels": ["heart_rate"]}]}
        schemas.create(session, SchemaCreate.model_validate(vitals))
        made = tensors.create_many(
            session, [TensorCreate(entity_id=i, schema_name="vitals") for i in ids[:tensor_count]]
        )
        values = np.random.default_rng(8).normal(75.0, 12.0, (tensor_count, 1, days)).clip(20, 250)
        tensors.write_arrays(session, {t.id: values[k] for k, t in enumerate(made)})


@contextmanager
def _throwaway(server_url: str) -> Iterator[str]:
    name = f"dust_bench_caches_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
