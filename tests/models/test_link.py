"""Link prediction (R-GCN + DistMult): filtered ranks against a brute-force count, a generated graph whose links
follow a rule, "as of" leakage, relation strength, a stored model, and the command.

The generated graph: people in small circles; someone knows, or works with, some people of their own circle
(at random) and nobody outside it. Which circle someone is in shows only in their relations, so a model that
learns it from the training links ranks a held-out (s, knows, ?) among the few people of s's circle; a random
scorer ranks it anywhere among all the people.
"""

from __future__ import annotations

import csv
import json
import random
import statistics
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dust.cli import app
from dust.core.errors import InvalidInput
from dust.embedded import Dust
from dust.engine import entities, relations
from dust.engine.entities import EntityCreate
from dust.engine.relations import RelationCreate
from dust.models import link

torch = pytest.importorskip("torch")
pytest.importorskip("torch_geometric")
CIRCLES, SIZE, TYPES = 12, 8, ["knows", "works_with"]
FAST = link.Settings(hidden=20, layers=2, epochs=100)  # two layers, blocks of 5 × 5: the paper on FB15k-237
BEFORE, AS_OF, AFTER = (datetime(2025, m, 1, tzinfo=UTC) for m in (1, 6, 12))


def generate(db: Dust) -> list[uuid.UUID]:
    """The circles of people in ``db``; their entity ids, circle by circle (external ids p0, p1, …)."""
    rng = random.Random(11)
    with db.session() as session:
        people = entities.create_many(
            session,
            [EntityCreate(kind="person", name=f"p{i}", external_id=f"p{i}") for i in range(CIRCLES * SIZE)],
        )
        edges = [
            RelationCreate(source_id=a.id, target_id=b.id, type=rng.choice(TYPES))
            for c in range(CIRCLES)
            for a in people[c * SIZE : (c + 1) * SIZE]
            for b in people[c * SIZE : (c + 1) * SIZE]
            if a.id != b.id and rng.random() < 0.4
        ]
        relations.create_many(session, edges)
    return [p.id for p in people]


def random_model(problem: link.Problem, seed: int) -> link.Model:
    generator = torch.Generator().manual_seed(seed)
    e = torch.randn(problem.entities, 8, generator=generator)
    d = torch.randn(len(problem.relation_types), 8, generator=generator)
    return link.Model(list(problem.graph.entity_ids), problem.relation_types, e, d)


def test_filtered_ranks_count_what_a_brute_force_count_does() -> None:
    # one row by hand: candidate 1 is another true answer (left out), 4 scores above, 2 ties (half)
    scores = torch.tensor([[0.5, 0.9, 0.5, 0.2, 0.9], [1.0, 2.0, 3.0, 4.0, 5.0]])
    known = torch.tensor([[0, 1], [1, 4]])  # (row, candidate): row 1's own answer, which never counts
    assert link.filtered_ranks(scores, torch.tensor([0, 4]), known).tolist() == [2.5, 1.0]

    # a small model with whole numbers, so that ties happen, against a count over every candidate
    rng = random.Random(3)
    n, kinds = 7, 2
    e = torch.tensor([[rng.randint(-2, 2) for _ in range(3)] for _ in range(n)], dtype=torch.float)
    d = torch.tensor([[rng.randint(-1, 2) for _ in range(3)] for _ in range(kinds)], dtype=torch.float)
    model = link.Model([uuid.uuid4() for _ in range(n)], ["a", "b"], e, d)
    true = sorted({(rng.randrange(n), rng.randrange(kinds), rng.randrange(n)) for _ in range(25)})
    test = true[::3]

    def f(s: int, r: int, o: int) -> float:
        return float((e[s] * d[r] * e[o]).sum())

    def rank(answer: tuple[int, int, int], candidates: list[tuple[int, int, int]]) -> float:
        others = [c for c in candidates if c != answer and c not in true]
        above = sum(f(*c) > f(*answer) for c in others)
        return 1 + above + sum(f(*c) == f(*answer) for c in others) / 2

    objects = [rank((s, r, o), [(s, r, c) for c in range(n)]) for s, r, o in test]
    subjects = [rank((s, r, o), [(c, r, o) for c in range(n)]) for s, r, o in test]
    assert link.ranks(model, test, true).tolist() == objects + subjects
    assert any(r != int(r) for r in objects + subjects)  # the example has ties


def test_rgcn_distmult_learns_the_circles_a_random_scorer_cannot(db: Dust) -> None:
    generate(db)
    with db.session() as session:
        problem = link.prepare(session, test_fraction=0.1, seed=0)
    assert problem.entities == CIRCLES * SIZE and problem.relation_types == TYPES
    chance = statistics.fmean(link.evaluate(random_model(problem, k), problem)["mrr"] for k in range(20))
    model, _ = link.fit(problem, FAST, seed=0)
    metrics = link.evaluate(model, problem)
    assert chance < 0.07 and metrics["mrr"] >= 3 * chance and metrics["hits@10"] >= 0.5


def test_as_of_a_later_relation_is_neither_learnt_nor_tested_and_held_out_ones_pass_no_message(
    db: Dust, tmp_path: Path
) -> None:
    with db.session() as session:
        a, b, c, d, e = entities.create_many(session, [EntityCreate(kind="x", name=n, external_id=n) for n in "abcde"])
        early = [(a, b), (b, c), (c, d), (d, a), (a, c)]
        relations.create_many(
            session,
            [RelationCreate(source_id=s.id, target_id=t.id, type="knows", valid_from=BEFORE) for s, t in early]
            + [
                RelationCreate(source_id=a.id, target_id=e.id, type="knows", valid_from=AFTER),
                RelationCreate(
                    source_id=b.id, target_id=d.id, type="knows", valid_from=BEFORE, valid_to=BEFORE.replace(month=2)
                ),
            ],
        )
        then = link.prepare(session, at=AS_OF, test_fraction=0.4, seed=0)
        later = tmp_path / "later.tsv"
        later.write_text("source\ttype\ttarget\na\tknows\te\n")
        ahead = link.prepare(session, at=AS_OF, test_triples=link.read_triples(later))
        with pytest.raises(InvalidInput, match="no relation as of 2024"):
            link.prepare(session, at=BEFORE.replace(year=2024))

    node = then.graph.index()
    assert e.id not in node  # e's only relation starts after the date; b → d had ended before it
    assert sorted(then.train + then.test) == sorted((node[s.id], 0, node[t.id]) for s, t in early)
    assert len(then.test) == 2
    edges = set(zip(then.graph.sources, then.graph.types, then.graph.targets, strict=True))
    assert all((s, 0, o) in edges for s, _, o in then.train)
    assert not any((s, 0, o) in edges or (o, 1, s) in edges for s, _, o in then.test)

    # the later relation as a test triple: e is a node (without edges), the relation is tested, not learnt
    node = ahead.graph.index()
    assert ahead.test == [(node[a.id], 0, node[e.id])] and len(ahead.train) == len(early)
    assert node[e.id] not in ahead.graph.sources + ahead.graph.targets


def test_literal_nodes_pass_messages_but_are_neither_triples_nor_candidates(db: Dust) -> None:
    with db.session() as session:
        people = entities.create_many(
            session, [EntityCreate(kind="x", name=f"p{i}", attributes={"team": i % 2}) for i in range(6)]
        )
        pairs = [(0, 2), (2, 4), (4, 0), (1, 3), (3, 5), (5, 1)]
        relations.create_many(
            session, [RelationCreate(source_id=people[s].id, target_id=people[t].id, type="knows") for s, t in pairs]
        )
        problem = link.prepare(session, test_fraction=0.5, seed=1, literals=True)
    assert problem.entities == 6 and problem.relation_types == ["knows"]
    assert sorted(problem.graph.literals) == ["0", "1"]  # in node order, which follows the entities' random ids
    assert problem.graph.relation_types == ["knows", "knows^-1", "team", "team^-1"]
    assert problem.graph.num_edges == 2 * (len(problem.train) + 6)  # the training triples and a team each
    model, _ = link.fit(problem, link.Settings(hidden=10, epochs=2), seed=0)
    assert model.entities.shape == (6, 10) and model.relation_types == ["knows"]


def test_a_model_scores_relations_and_comes_back_from_bytes(db: Dust) -> None:
    people = generate(db)
    with db.session() as session:
        problem = link.prepare(session, test_fraction=0.1, seed=0)
    model, _ = link.fit(problem, link.Settings(hidden=10, epochs=5), seed=4)
    again, _ = link.fit(problem, link.Settings(hidden=10, epochs=5), seed=4)
    assert torch.equal(model.entities, again.entities)  # a seed gives the same model

    candidates = [(people[0], "knows", people[1]), (people[0], "works_with", people[-1])]
    strengths = link.score(model, candidates)
    assert len(strengths) == 2 and all(0 < p < 1 for p in strengths)
    stored = link.from_bytes(link.to_bytes(model))
    assert stored.entity_ids == model.entity_ids and link.score(stored, candidates) == strengths

    with pytest.raises(InvalidInput, match="no relation type 'likes'"):
        link.score(model, [(people[0], "likes", people[1])])
    with pytest.raises(InvalidInput, match="not in the graph"):
        link.score(model, [(people[0], "knows", uuid.uuid4())])
    with pytest.raises(InvalidInput, match="not a stored link-prediction model"):
        link.from_bytes(b"not a model")
    bases, _ = link.fit(problem, link.Settings(hidden=8, epochs=2, bases=2), seed=0)  # RGCNConv's path
    assert bases.entities.shape == (CIRCLES * SIZE, 8)


def test_the_command_prints_metrics_as_json_on_its_last_line(
    db: Dust, tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    generate(db)
    monkeypatch.setenv("DUST_DATABASE_URL", database_url)
    train = ["model", "train", "--task", "link-prediction", "--hidden", "10", "--epochs", "20"]
    result = CliRunner().invoke(app, [*train, "--runs", "2", "--seed", "3", "--test-fraction", "0.2"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("test_mrr", "test_hits@1", "test_hits@3", "test_hits@10", "seconds_per_epoch"):
        assert key in metrics and f"{key}_std" in metrics
    assert 0 <= metrics["test_hits@1"] <= metrics["test_hits@3"] <= metrics["test_hits@10"] <= 1
    assert metrics["seeds"] == [3, 4] and metrics["entities"] == CIRCLES * SIZE and metrics["relations"] == 2
    everything = metrics["train_size"] + metrics["test_size"]
    assert metrics["test_size"] == round(0.2 * everything)

    triples = tmp_path / "test.csv"
    with triples.open("w", newline="") as file:
        csv.writer(file).writerows([["source", "type", "target"], ["p0", "knows", "p1"], ["p2", "works_with", "p3"]])
    result = CliRunner().invoke(app, [*train, "--test-triples", str(triples), "--types", "knows,works_with"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert metrics["test_size"] == 2 and metrics["runs"] == 1 and "test_mrr_std" not in metrics


def test_bad_input_exits_2_saying_what_is_wrong(
    db: Dust, tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    generate(db)
    monkeypatch.setenv("DUST_DATABASE_URL", database_url)
    unknown, strange = tmp_path / "unknown.tsv", tmp_path / "strange.tsv"
    unknown.write_text("source\ttype\ttarget\np0\tknows\tnobody\n")
    strange.write_text("source\ttype\ttarget\np0\tlikes\tp1\n")
    train = ["model", "train", "--task", "link-prediction", "--epochs", "1"]
    for options, says in (
        (["--test-triples", str(unknown)], "no entity's external id, e.g. 'nobody'"),
        (["--test-triples", str(strange)], "no relation of type 'likes'"),
        (["--types", "knows,likes"], "no relation of type 'likes'"),
        (["--test-fraction", "0.001"], "holds out 0"),
        (["--test-fraction", "1.5"], "above 0 and below 1"),
        (["--labels", str(unknown)], "--labels do not apply"),
        (["--hidden", "13"], "must divide hidden"),
        (["--as-of", "June"], "is not an ISO date-time"),
    ):
        result = CliRunner().invoke(app, [*train, *options])
        assert result.exit_code == 2 and says in result.output, (options, result.output)
