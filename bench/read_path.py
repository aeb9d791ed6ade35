"""What a point read and an entity get cost in the engine, as an admin and as a clinician, without HTTP.

    .venv/bin/python bench/read_path.py                    # a fresh SQLite file with the healthcare demo (50 patients)
    .venv/bin/python bench/read_path.py --reads 5000
    PYTHONPATH=<old tree> .venv/bin/python bench/read_path.py   # the same for another version of dust

``bench/serve.py`` measures whole requests over HTTP; this measures the part of them the engine does, as a
serving process does it: one read-only transaction per read with the app's caches attached (credentials, schemas,
reach sets, blocks), the credential checked from the cache, the read, the answer's JSON. It prints the process's
CPU milliseconds per read, best of ``--rounds`` rounds after a warm-up, for an admin (who sees every entity) and for
a clinician (who sees the patients their doctor treats, through the access policy). The anchor is the admin's.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dust.core.config import Settings
from dust.core.security import Role
from dust.embedded import Dust
from dust.engine import access, caches, entities, tensors
from dust.plugins import registry
from dust.storage.db import AFTER_COMMIT, make_engine, make_sessionmaker
from dust.storage.models import Relation, Tensor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reads", type=int, default=2000, help="reads a round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dust-bench-read-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'dust.db'}"
        doctor, patient, tensor = load(url)
        settings = Settings(database_url=url, secret_key="k" * 48)
        engine = make_engine(url)
        reads = make_sessionmaker(engine, read_only=True)
        shared = caches.Caches()
        as_admin = principal(settings, Role.admin, None)
        as_clinician = principal(settings, Role.clinician, doctor)
        print(f"engine CPU ms a read, best of {args.rounds} rounds of {args.reads} (SQLite, caches attached)")
        for name, read in (
            ("point read", lambda s: tensors.read(s, tensor, time=3, labels={"metric": "heart_rate"}).to_json_bytes()),
            ("entity get", lambda s: entities.get(s, patient).model_dump_json()),
        ):
            admin = measure(reads, shared, as_admin, read, args)
            clinician = measure(reads, shared, as_clinician, read, args)
            print(
                f"  {name:<10}  admin {admin:.3f}   clinician {clinician:.3f}  ({clinician / admin:.2f}× the admin's)"
            )
        engine.dispose()


def load(url: str) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """The healthcare demo; a doctor who treats someone, that patient, and the patient's vitals tensor."""
    db = Dust(url)
    with db.session() as session:
        registry.domain_packs()["healthcare"].generate(session, size=50, days=90, seed=7, progress=lambda n: None)
        doctor, patient = session.execute(
            select(Relation.source_id, Relation.target_id).where(Relation.type == "treats").limit(1)
        ).one()
        tensor = session.scalar(select(Tensor.id).where(Tensor.entity_id == patient, Tensor.schema_name == "vitals"))
    db.close()
    assert tensor is not None
    return doctor, patient, tensor


def principal(settings: Settings, role: Role, entity_id: uuid.UUID | None) -> access.Principal:
    """As ``access.principal_for`` makes one for a user of ``role`` linked to ``entity_id``."""
    return access.Principal(
        user_id=uuid.uuid4(),
        username=role.value,
        role=role,
        entity_id=entity_id,
        secret="k" * 48,
        grant_types=settings.access_relation_types,
        depth=settings.access_depth,
        default_sensitive=settings.sensitive_fields,
    )


def measure(
    reads: sessionmaker[Session],
    shared: caches.Caches,
    who: access.Principal,
    read: Callable[[Session], object],
    args: argparse.Namespace,
) -> float:
    def one() -> None:
        with reads() as session, session.begin():
            session.info[AFTER_COMMIT] = []  # the read's audit record: a server's batch writer would commit it
            caches.attach(session, shared)
            access.act_as(session, who)
            read(session)

    for _ in range(200):
        one()
    best = float("inf")
    for _ in range(args.rounds):
        start = time.process_time()
        for _ in range(args.reads):
            one()
        best = min(best, (time.process_time() - start) / args.reads * 1000)
    return best


if __name__ == "__main__":
    main()
