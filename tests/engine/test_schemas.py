"""Schema definitions are cached per session: what changes a schema must not leave a stale entry behind."""

from __future__ import annotations

import pytest

from dust.embedded import Dust
from dust.engine import schemas
from dust.engine.schemas import SchemaCreate, SchemaUpdate

VITALS = {"name": "vitals", "axes": [{"name": "metric", "labels": ["hr"]}]}
GROWN = SchemaUpdate.model_validate({"axes": [{"name": "metric", "labels": ["hr", "temp"]}]})


def test_publishing_in_a_session_shows_the_new_version_in_that_session(db: Dust) -> None:
    db.create_schema(VITALS)
    with db.session() as s:
        assert schemas.get_def(s, "vitals").version == 1
        schemas.publish(s, "vitals", GROWN)
        assert schemas.get_def(s, "vitals").shape == (2,)
        assert schemas.get_def(s, "vitals", 1).shape == (1,)


def test_a_rolled_back_publish_leaves_nothing_cached(db: Dust) -> None:
    db.create_schema(VITALS)
    with db.session() as s:
        with pytest.raises(RuntimeError), s.begin_nested():
            schemas.publish(s, "vitals", GROWN)
            assert schemas.get_def(s, "vitals").version == 2
            raise RuntimeError("undo")
        assert schemas.get_def(s, "vitals").version == 1


def test_a_schema_deleted_and_made_anew_in_one_session_reads_anew(db: Dust) -> None:
    db.create_schema(VITALS)
    with db.session() as s:
        assert schemas.get_def(s, "vitals").shape == (1,)
        schemas.delete(s, "vitals")
        schemas.create(s, SchemaCreate.model_validate({**VITALS, "axes": GROWN.model_dump()["axes"]}))
        assert schemas.get_def(s, "vitals").shape == (2,)
