"""Link prediction in the models registry: trained through POST /models as a job, its metrics against chance;
candidates scored and an entity's likeliest targets; only entities the caller may see; relations written back;
"as of"; the command's path; bad requests refused naming the field; and the cache of loaded models.

The world: people in 12 circles of 8, as in test_link.py; someone knows, or works with, some people of their own
circle and nobody outside it, so a model that learnt the circles from the training relations ranks a held-out
(s, knows, ?) among s's circle. A team T ``manages`` circle 0: a member linked to T sees T and circle 0 only.
Over 16 trainings (node order, so initialisation, follows the random entity ids) the held-out MRR was 0.34-0.44
against chance's 0.054, and 82-92 % of the top 5 targets of each circle's first person were of their circle.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from dust.cli import app as cli
from dust.core.config import Settings
from dust.core.errors import InvalidInput
from dust.embedded import Dust
from dust.engine import entities, relations
from dust.engine.entities import EntityCreate
from dust.engine.relations import RelationCreate
from dust.jobs import Worker
from dust.models import cache
from tests.api.conftest import API
from tests.api.test_models import job_of, predict, trained

pytest.importorskip("torch_geometric")

CIRCLES, SIZE = 12, 8
FAST = {"epochs": 150, "hidden": 20, "test_fraction": 0.2}
KNOWS = {
    "task": "link-prediction",
    "name": "knows",
    "target": {"relations": ["knows"]},
    "types": ["knows", "works_with"],
}
MISSING = "00000000-0000-4000-8000-000000000000"


@dataclass
class World:
    people: list[str]  # entity ids, circle by circle: person i is named p{i}
    team: str
    knows: int  # relations of each type
    works_with: int

    def circle(self, i: int) -> list[str]:
        start = i // SIZE * SIZE
        return self.people[start : start + SIZE]


def populate(session: Session) -> World:
    rng = random.Random(11)
    made = entities.create_many(
        session,
        [EntityCreate(kind="person", name=f"p{i}", external_id=f"p{i}") for i in range(CIRCLES * SIZE)]
        + [EntityCreate(kind="team", name="Team T")],
    )
    people, team = made[:-1], made[-1]
    edges = [
        RelationCreate(source_id=a.id, target_id=b.id, type=rng.choice(["knows", "works_with"]))
        for c in range(CIRCLES)
        for a in people[c * SIZE : (c + 1) * SIZE]
        for b in people[c * SIZE : (c + 1) * SIZE]
        if a.id != b.id and rng.random() < 0.4
    ]
    edges += [RelationCreate(source_id=team.id, target_id=p.id, type="manages") for p in people[:SIZE]]
    relations.create_many(session, edges)
    count = {t: sum(e.type == t for e in edges) for t in ("knows", "works_with")}
    return World([str(p.id) for p in people], str(team.id), count["knows"], count["works_with"])


@pytest.fixture
def world(app: FastAPI) -> World:
    with app.state.sessions() as session, session.begin():
        return populate(session)


@pytest.fixture
def trainer(app: FastAPI, settings: Settings) -> Iterator[Worker]:
    """A job worker in this process, on the app's sessions: it runs the trainings."""
    with Worker(settings, sessions=app.state.sessions) as running:
        yield running


def request(**changes: Any) -> dict[str, Any]:
    return {**KNOWS, "settings": dict(FAST), **changes}


def top(client: TestClient, model_id: str, source: str, k: int = 5, **more: Any) -> list[dict[str, Any]]:
    links: list[dict[str, Any]] = predict(client, model_id, {"source": source, "type": "knows", "top": k, **more})[
        "links"
    ]
    return links


def test_a_link_model_trains_as_a_job_and_ranks_held_out_relations_well_above_chance(
    client: TestClient, world: World, trainer: Worker
) -> None:
    model = trained(client, request())
    assert (model["status"], model["error"], model["progress"], model["version"]) == ("succeeded", None, 1.0, 1)
    assert model["target"] == {"relations": ["knows"]} and model["types"] == ["knows", "works_with"]
    settings = model["settings"]  # the task's defaults for what the request left out
    assert (settings["epochs"], settings["layers"], settings["negatives"], settings["edge_dropout"]) == (150, 1, 1, 0.4)
    assert (settings["l2"], settings["literals"], settings["test_fraction"]) == (0.01, False, 0.2)
    m = model["metrics"]
    assert m["test_mrr"] >= 4 * m["chance_mrr"] and 0.04 < m["chance_mrr"] < 0.07
    assert 0 <= m["test_hits@1"] <= m["test_hits@3"] <= m["test_hits@10"] <= 1
    assert m["test_size"] == round(0.2 * world.knows)  # only the relations to predict are held out
    assert m["train_size"] == world.knows + world.works_with - m["test_size"]  # "manages" is not of the types
    assert (m["entities"], m["relations"], m["target_relations"]) == (CIRCLES * SIZE, 2, ["knows"])
    assert m["split"] == {"test_fraction": 0.2, "seed": 0} and m["seconds_per_epoch"] > 0
    job = job_of(client, model)
    assert (job["kind"], job["state"]) == ("models.train", "succeeded")

    # the likeliest targets are of the source's own circle (chance: 7 of 95)
    found = [top(client, model["id"], world.people[c * SIZE]) for c in range(CIRCLES)]
    inside = sum(link["target_id"] in world.circle(c * SIZE) for c, links in enumerate(found) for link in links)
    assert inside >= 0.6 * 5 * CIRCLES
    first = found[0]
    assert [link["score"] for link in first] == sorted((link["score"] for link in first), reverse=True)
    assert world.people[0] not in [link["target_id"] for link in first]  # never the source itself
    assert first[0]["source_name"] == "p0" and first[0]["type"] == "knows" and 0 < first[0]["score"] < 1

    # candidates: within a circle more likely than across; stored relations say so
    listed = client.get(f"{API}/relations", params={"type": "knows", "limit": 10}).json()["items"]
    known = [(r["source_id"], r["target_id"]) for r in listed]
    pairs = [(world.people[i], world.people[j]) for i in range(0, CIRCLES * SIZE, SIZE) for j in (i + 1, i + 2)]
    across = [(world.people[i], world.people[(i + 3 * SIZE) % (CIRCLES * SIZE)]) for i in range(0, 96, SIZE)]
    body = {"candidates": [{"source": s, "type": "knows", "target": o} for s, o in known + pairs + across]}
    answer = predict(client, model["id"], body)
    assert answer["predictions"] == [] and answer["written"] == 0 and answer["version"] == 1
    links = answer["links"]
    assert [(link["source_id"], link["target_id"]) for link in links] == known + pairs + across
    assert all(link["exists"] for link in links[: len(known)])
    assert not any(link["exists"] for link in links[-len(across) :])
    inner = [link["score"] for link in links[len(known) : -len(across)]]
    outer = [link["score"] for link in links[-len(across) :]]
    assert sum(inner) / len(inner) > 2 * sum(outer) / len(outer)
    audited = client.get(f"{API}/audit", params={"entity_id": world.people[3 * SIZE]}).json()["items"]
    assert ("read", "model") in {(a["action"], a["resource"]) for a in audited}


def test_predictions_name_only_entities_the_caller_may_see(
    client: TestClient, world: World, login_as: Callable[..., TestClient], trainer: Worker
) -> None:
    model = trained(client, request())  # an admin's: shared
    member = login_as("member", entity_id=world.team)  # sees the team and circle 0
    seen = set(world.circle(0))
    theirs = top(member, model["id"], world.people[0], k=20)
    assert theirs and {link["target_id"] for link in theirs} <= seen - {world.people[0]}
    assert len(top(client, model["id"], world.people[0], k=20)) == 20  # an admin's choice is every person
    outsider = world.people[50]
    for body in (
        {"candidates": [{"source": world.people[0], "type": "knows", "target": outsider}]},
        {"source": outsider, "type": "knows"},
    ):
        said = predict(member, model["id"], body, status=404)
        assert said["detail"] == f"entity {outsider} does not exist"  # as for one that does not exist
    assert top(client, model["id"], world.people[0], kind="team") == []  # no team in the model's graph
    assert len(top(client, model["id"], world.people[0], kind="person")) == 5
    assert client.delete(f"{API}/entities/{world.people[1]}").status_code == 204
    everyone = [link["target_id"] for link in top(client, model["id"], world.people[0], k=100)]
    assert len(everyone) == CIRCLES * SIZE - 2 and world.people[1] not in everyone  # deleted since: no answer

    back = {"source": world.people[0], "type": "knows", "top": 3, "write_back": {"relation_type": "maybe_knows"}}
    predict(login_as("viewer", entity_id=world.team), model["id"], back, status=403)
    assert predict(member, model["id"], {**back, "write_back": {**back["write_back"], "min_score": 0}})["written"] == 3


def test_predictions_written_back_are_relations_weighted_by_their_scores(
    client: TestClient, world: World, trainer: Worker
) -> None:
    model = trained(client, request())
    p = world.people
    body = {
        "candidates": [{"source": p[0], "type": "knows", "target": t} for t in (p[1], p[2], p[1])],
        "write_back": {"relation_type": "predicted_knows", "min_score": 0},
    }
    first = predict(client, model["id"], body)
    assert first["written"] == 2  # a candidate named twice is one relation

    def written() -> dict[str, float]:
        params = {"entity_id": p[0], "type": "predicted_knows"}
        return {r["target_id"]: r["weight"] for r in client.get(f"{API}/relations", params=params).json()["items"]}

    assert written() == pytest.approx({link["target_id"]: link["score"] for link in first["links"]})
    again = predict(client, model["id"], body)
    assert again["written"] == 2 and len(written()) == 2  # set again, not made twice
    assert all(link["exists"] is False for link in again["links"])  # of the predicted type, "knows": none of p0's
    high = predict(client, model["id"], {**body, "write_back": {"relation_type": "predicted_knows", "min_score": 1}})
    assert high["written"] == 0
    audited = client.get(f"{API}/audit", params={"entity_id": p[2]}).json()["items"]
    assert {("create", "relation"), ("update", "relation")} <= {(a["action"], a["resource"]) for a in audited}

    refused = client.post(
        f"{API}/models/{model['id']}/predict", json={**body, "write_back": {"relation_type": "knows"}}
    )
    assert refused.status_code == 422 and "learnt from 'knows' relations" in refused.json()["detail"]


def test_bad_requests_are_problems_that_name_the_field(client: TestClient, world: World, trainer: Worker) -> None:
    def refused(body: dict[str, Any], status: int, says: str, path: str = "/models") -> None:
        response = client.post(f"{API}{path}", json=body)
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert says in response.json()["detail"], response.json()["detail"]

    refused(request(target={"attribute": "x"}), 422, "target.attribute is for entity-classification")
    refused(request(kind="person"), 422, "kind is for entity-classification, not a model of link-prediction")
    refused(request(settings={"dropout": 0.5}), 422, "settings.dropout is for entity-classification")
    refused(request(target={"relations": ["likes"]}), 422, "no relation of type 'likes' that you may see")
    refused(request(settings={"test_fraction": 0.001}), 422, "holds out 0")
    refused(request(settings={"hidden": 13}), 422, "must divide hidden")
    refused(request(target={"relations": ["knows"], "attribute": "x"}), 422, "relations (link prediction) go alone")
    refused(request(target={"relations": []}), 422, "at least 1 item")
    classify = {"task": "entity-classification", "name": "c", "target": {"relations": ["knows"]}}
    refused(classify, 422, "target.relations is for link-prediction, not a model of entity-classification")
    refused({**classify, "target": {"attribute": "x"}, "settings": {"layers": 2}}, 422, "settings.layers is for link")

    model = trained(client, request())
    path = f"/models/{model['id']}/predict"
    late = client.post(f"{API}/entities", json={"kind": "person", "name": "Late"}).json()["id"]
    cases = [
        ({"entity_ids": [world.people[0]]}, "entity_ids is for entity-classification, not model knows (version 1)"),
        ({"source": world.people[0], "type": "knows", "explain": True}, "explain is for entity-classification"),
        ({"source": world.people[0], "type": "works_with"}, "predicts 'knows', not 'works_with'"),
        ({"source": world.people[0]}, "source and type go together"),
        ({"top": 3}, "give candidates"),
        ({"source": late, "type": "knows"}, f"entity {late} is not in the graph model knows (version 1)"),
        ({"candidates": [{"source": world.people[0], "type": "knows"}]}, "candidates.0.target"),
        (
            {"candidates": [{"source": world.people[0], "type": "knows", "target": world.people[1]}], "kind": "x"},
            "kind",
        ),
        ({"source": world.people[0], "type": "knows", "write_back": {"attribute": "a"}}, "write_back.attribute is"),
        ({"source": world.people[0], "type": "knows", "write_back": {"min_score": 0.1}}, "give attribute, tensor"),
        (  # named as sent ("class"), not as the model's field ("class_")
            {"source": world.people[0], "type": "knows", "write_back": {"tensor": {"schema": "s", "class": "c"}}},
            "write_back.tensor.schema is for entity-classification",
        ),
    ]
    for body, says in cases:
        refused(body, 422, says, path)
    refused({"source": MISSING, "type": "knows"}, 404, "does not exist", path)

    for name, label in (("X", "a"), ("Y", "b")):  # an entity classifier, to refuse link requests with
        client.post(f"{API}/entities", json={"kind": "person", "name": name, "attributes": {"x": label}})
    other = client.post(f"{API}/models", json={**classify, "kind": "person", "target": {"attribute": "x"}}).json()
    body = {"candidates": [{"source": world.people[0], "type": "knows", "target": world.people[1]}]}
    says = "candidates is for link-prediction, not model c (version 1), of entity-classification"
    refused(body, 422, says, f"/models/{other['id']}/predict")


def test_as_of_a_date_the_model_learns_the_graph_then(db: Dust) -> None:
    with db.session() as session:
        world = populate(session)
        newcomer = entities.create(session, EntityCreate(kind="person", name="New"))
        later = datetime(2026, 6, 1, tzinfo=UTC)
        relations.create(
            session,
            RelationCreate(source_id=newcomer.id, target_id=uuid.UUID(world.people[0]), type="knows", valid_from=later),
        )
    then = db.train_model(request(as_of="2026-01-01T00:00:00Z"))
    assert then.data_version == then.as_of == datetime(2026, 1, 1, tzinfo=UTC)
    assert (then.metrics or {})["test_size"] == round(0.2 * world.knows)  # the later relation is not among them
    with pytest.raises(InvalidInput, match="is not in the graph model knows"):
        db.predict(then.id, source=newcomer.id, type="knows")
    now = db.train_model(request(settings={**FAST, "epochs": 5}))
    assert db.predict(now.id, source=newcomer.id, type="knows", top=2).links


def test_the_command_trains_the_registrys_model_and_predicts_with_it(
    db: Dust, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`dust model train` (nothing stored, the benchmark's path) and POST /models give the same model for the
    same settings, split and seed; `dust model predict` uses a stored one."""
    with db.session() as session:
        world = populate(session)
    settings = {"epochs": 20, "hidden": 10, "test_fraction": 0.2, "seed": 3}
    stored = db.train_model({**request(settings=settings), "target": {"relations": ["knows", "works_with"]}})
    monkeypatch.setenv("DUST_DATABASE_URL", database_url)
    command = ["model", "train", "--task", "link-prediction", "--types", "knows,works_with", "--hidden", "10"]
    command += ["--epochs", "20", "--test-fraction", "0.2", "--seed", "3"]
    result = CliRunner().invoke(cli, command)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("test_mrr", "test_hits@1", "test_hits@10", "train_size", "test_size"):
        assert metrics[key] == (stored.metrics or {})[key], key

    p = world.people
    listed = CliRunner().invoke(cli, ["model", "list"])
    assert json.loads(listed.stdout.splitlines()[0])["test_mrr"] == metrics["test_mrr"]
    found = CliRunner().invoke(
        cli, ["model", "predict", str(stored.id), "--source", p[0], "--type", "knows", "--top", "3"]
    )
    assert found.exit_code == 0, found.output
    assert [link["source_id"] for link in json.loads(found.stdout)["links"]] == [p[0]] * 3
    write = ["--candidate", f"{p[0]},knows,{p[1]}", "--write-back", "predicted_knows", "--min-score", "0"]
    scored = CliRunner().invoke(cli, ["model", "predict", str(stored.id), *write])
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["written"] == 1
    assert [r.type for r in db.relations(entity_id=p[1], type="predicted_knows").items] == ["predicted_knows"]
    bad = CliRunner().invoke(cli, ["model", "predict", str(stored.id), "--candidate", f"{p[0]},knows"])
    assert bad.exit_code == 2 and "--candidate takes SOURCE,TYPE,TARGET" in bad.output


def test_loaded_models_are_kept_within_their_count_and_bytes() -> None:
    loaded = cache.LoadedModels(size=2, max_bytes=100)
    calls: list[str] = []

    def load(name: str) -> Callable[[], str]:
        return lambda: calls.append(name) or name  # type: ignore[func-returns-value]

    assert loaded.get("a", 40, load("a")) == "a" and loaded.get("a", 40, load("a")) == "a"
    assert calls == ["a"]  # loaded once, then kept
    loaded.get("b", 40, load("b"))
    loaded.get("a", 40, load("a"))  # a is now the most recently used
    loaded.get("c", 40, load("c"))  # three: the least recently used (b) goes
    assert calls == ["a", "b", "c"] and loaded.stats().models == 2
    loaded.get("a", 40, load("a"))
    loaded.get("b", 40, load("b"))
    assert calls == ["a", "b", "c", "b"]
    loaded.get("d", 90, load("d"))  # 40 + 90 > 100 bytes: only d stays
    assert loaded.stats().models == 1 and loaded.stats().bytes == 90
    loaded.get("e", 101, load("e"))
    loaded.get("e", 101, load("e"))  # larger than the whole budget: loaded each time, never kept
    assert calls[-2:] == ["e", "e"] and loaded.stats().models == 1
    nothing = cache.LoadedModels(size=0, max_bytes=100)
    nothing.get("a", 1, load("a"))
    assert nothing.stats().models == 0


def test_a_prediction_reads_a_model_once_per_process(db: Dust) -> None:
    with db.session() as session:
        world = populate(session)
    model = db.train_model(request(settings={**FAST, "epochs": 5}))
    before = cache.MODELS.stats()
    first = db.predict(model.id, source=world.people[0], type="knows")
    again = db.predict(model.id, source=world.people[0], type="knows")
    after = cache.MODELS.stats()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 1)
    assert first.links == again.links
