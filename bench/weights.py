"""Reads of relation weights with and without decaying weight policies, on 35,000 relations.

    .venv/bin/python bench/weights.py                        # SQLite, no policies, then with policies
    .venv/bin/python bench/weights.py --url postgresql+psycopg://postgres@127.0.0.1:5432/bench
    .venv/bin/python bench/weights.py --relations 5000       # a quick run

5,000 entities and ``--relations`` relations of three types, each with one to three recorded weights over the last
60 days, inserted in bulk. Prints the best of ``--repeat`` runs of the master tensor now and as of 30 days ago, a
depth-2 neighbourhood of the best-connected entity with ``min_weight``, and a page of 500 relations: first with no
weight policy, then with a decaying policy (``--half-life``, a floor and a cap) on every type, so that every weight
read is computed. The default half-life is long (a year) so that both runs reach about the same relations and the
difference is the cost of the decay; a short one makes the walks with ``min_weight`` reach fewer.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

import dust
from dust.engine import relations
from dust.storage.models import Entity, Relation, RelationWeight

TYPES = ["knows", "supplies", "treats"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=None, help="database URL (default: a fresh SQLite file)")
    parser.add_argument("--relations", type=int, default=35_000)
    parser.add_argument("--entities", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--half-life", default="P365D", help="ISO 8601 duration (default P365D)")
    args = parser.parse_args()
    url = args.url or f"sqlite:///{Path(tempfile.mkdtemp())}/dust.db"
    with dust.open(url) as db:
        hub = _fill(db, args.entities, args.relations)
        print(
            f"{args.relations:,} relations between {args.entities:,} entities on {db.engine.dialect.name}; "
            f"best of {args.repeat}"
        )
        _measure(db, hub, args.repeat, "no policy")
        try:
            from dust.engine import weights
        except ImportError:
            return
        with db.session() as s:
            for name in TYPES:
                policy = weights.PolicySet(reinforce=0.5, half_life=args.half_life, floor=0.05, cap=5.0)
                weights.put_policy(s, name, policy)
        _measure(db, hub, args.repeat, f"a policy with half-life {args.half_life} on every type")


def _fill(db: dust.Dust, entities: int, count: int) -> uuid.UUID:
    rng = random.Random(8)
    now = datetime.now(UTC)
    ids = [uuid.uuid4() for _ in range(entities)]
    edges: set[tuple[int, int, int]] = set()
    while len(edges) < count:
        # a few entities are hubs, as doctors and warehouses are
        source = rng.randrange(50) if rng.random() < 0.2 else rng.randrange(entities)
        target = rng.randrange(entities)
        if source != target:
            edges.add((source, target, rng.randrange(len(TYPES))))
    relation_rows, weight_rows = [], []
    for source, target, type_ in edges:
        rid = uuid.uuid4()
        changes = sorted(now - timedelta(days=rng.uniform(0, 60)) for _ in range(rng.randint(1, 3)))
        values = [round(rng.uniform(0.1, 3.0), 3) for _ in changes]
        relation_rows.append(
            {
                "id": rid,
                "source_id": ids[source],
                "target_id": ids[target],
                "type": TYPES[type_],
                "weight": values[-1],
                "attributes": {},
                "created_at": changes[0],
                "updated_at": changes[-1],
            }
        )
        weight_rows += [
            {"relation_id": rid, "weight": w, "changed_at": t} for w, t in zip(values, changes, strict=True)
        ]
    with db.session() as s:
        s.execute(
            insert(Entity),
            [
                {"id": i, "kind": "thing", "name": f"e{n}", "attributes": {}, "created_at": now, "updated_at": now}
                for n, i in enumerate(ids)
            ],
        )
        s.execute(insert(Relation), relation_rows)
        s.execute(insert(RelationWeight), weight_rows)
    return ids[0]


def _measure(db: dust.Dust, hub: uuid.UUID, repeat: int, title: str) -> None:
    past = datetime.now(UTC) - timedelta(days=30)
    with db.session() as s:
        runs = {
            "master tensor, now": lambda: relations.master_tensor(s),
            "master tensor, at 30 days ago": lambda: relations.master_tensor(s, at=past),
            "neighbourhood depth 2, min_weight 1": lambda: relations.neighbourhood(s, hub, depth=2, min_weight=1.0),
            "neighbourhood depth 2, at, min_weight 1": lambda: relations.neighbourhood(
                s, hub, depth=2, min_weight=1.0, at=past
            ),
            "list 500": lambda: relations.list_(s, limit=500),
        }
        print(f"-- {title:39}  wall ms    CPU ms")
        for name, run in runs.items():
            wall, cpu = _best(repeat, run)
            print(f"{name:42} {wall * 1000:9.1f} {cpu * 1000:9.1f}")


def _best(repeat: int, run: Callable[[], object]) -> tuple[float, float]:
    """The best wall-clock and CPU seconds of ``repeat`` runs: CPU time moves less when other work shares the
    machine (on PostgreSQL it leaves out the server's share)."""
    wall = cpu = float("inf")
    for _ in range(repeat):
        began, began_cpu = time.perf_counter(), time.process_time()
        run()
        wall, cpu = min(wall, time.perf_counter() - began), min(cpu, time.process_time() - began_cpu)
    return wall, cpu


if __name__ == "__main__":
    main()
