"""The master tensor as an R-GCN graph: node index ↔ entity, inverse edges, literal nodes, and "as of"."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dust.embedded import Dust
from dust.engine import entities, relations
from dust.engine.entities import EntityCreate
from dust.engine.relations import RelationCreate
from dust.models import graph

pytest.importorskip("torch_geometric")
BEFORE, AS_OF, AFTER = (datetime(2025, m, 1, tzinfo=UTC) for m in (1, 6, 12))


def test_edges_inverses_and_literal_nodes(db: Dust) -> None:
    with db.session() as session:
        a, b, c = entities.create_many(
            session,
            [EntityCreate(kind="x", name=n, attributes={"colour": "red", "tags": [1, "1"]}) for n in "abc"],
        )
        relations.create_many(session, [RelationCreate(source_id=a.id, target_id=b.id, type="knows", weight=2.0)])
        built = graph.build(session, include=[c.id])
        assert built.entity_ids[-1] == c.id and built.num_nodes == 3  # c has no relation, but is to be classified
        assert built.relation_types == ["knows", "knows^-1"]
        edge_index, edge_type, edge_weight = built.tensors()
        i = built.index()
        assert edge_index.tolist() == [[i[a.id], i[b.id]], [i[b.id], i[a.id]]]
        assert edge_type.tolist() == [0, 1] and edge_weight.tolist() == [2.0, 2.0]

        with_literals = graph.build(session, literals=True, include=[c.id])
    # "red", 1 and "1" (a number and a text are different literals), each shared by the three entities
    assert with_literals.literals == ['"red"', "1", '"1"']
    assert with_literals.num_nodes == 6 and with_literals.num_edges == 2 + 2 * 9
    assert set(with_literals.relation_types) == {"knows", "knows^-1", "colour", "colour^-1", "tags", "tags^-1"}


def test_as_of_a_date_no_relation_valid_after_it_is_in_the_graph(db: Dust) -> None:
    """The leakage test: a model trained as of AS_OF must not see a relation that starts after it (nor one that
    ended before it)."""
    with db.session() as session:
        a, b, c, d = entities.create_many(session, [EntityCreate(kind="x", name=n) for n in "abcd"])
        relations.create_many(
            session,
            [
                RelationCreate(source_id=a.id, target_id=b.id, type="early", valid_from=BEFORE),
                RelationCreate(source_id=a.id, target_id=c.id, type="late", valid_from=AFTER),
                RelationCreate(
                    source_id=a.id, target_id=d.id, type="ended", valid_from=BEFORE, valid_to=BEFORE.replace(month=2)
                ),
            ],
        )
        then = graph.build(session, at=AS_OF, include=[a.id])
        now = graph.build(session, include=[a.id])
    assert then.relation_types == ["early", "early^-1"] and then.num_edges == 2
    assert c.id not in then.entity_ids and d.id not in then.entity_ids
    assert set(now.relation_types) == {"early", "early^-1", "late", "late^-1"}
