"""The models registry in process: versions, what a stored model predicts, "as of", the split, a training job
that outlives its message, and the `dust model` commands that read it."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from dust.cli import app
from dust.core.errors import InvalidInput
from dust.embedded import Dust
from dust.engine import relations
from dust.engine.relations import RelationCreate
from dust.jobs import Worker, queue_for
from dust.models import artefacts, classification
from dust.storage.repositories import models as repo
from tests.jobs.conftest import until
from tests.models.clinics import LABELLED, Clinics, populate, request

pytest.importorskip("torch_geometric")


@pytest.fixture
def clinics(db: Dust) -> Clinics:
    with db.session() as session:
        return populate(session)


def graph_of(db: Dust, model_id: object) -> artefacts.Loaded:
    with db.session() as session:
        data = repo.artefact(session, model_id)  # type: ignore[arg-type]
    assert data is not None
    return artefacts.load(data)


def test_a_trained_model_is_stored_with_its_metrics_and_predicts(db: Dust, clinics: Clinics) -> None:
    before = datetime.now(UTC)
    model = db.train_model(request())
    assert (model.status, model.version, model.error, model.progress) == ("succeeded", 1, None, 1.0)
    metrics = model.metrics or {}
    assert metrics["classes"] == ["high", "low"] and metrics["class_counts"] == {"high": 15, "low": 15}
    assert (metrics["train_size"], metrics["test_size"]) == (24, 6)  # 20% of each class held out
    assert metrics["split"] == {"test_fraction": 0.2, "seed": 0, "stratified": True}
    assert metrics["test_accuracy"] >= 0.6 and metrics["train_accuracy"] >= 0.9  # 4 of 6 held out, at worst
    assert model.data_version is not None and before <= model.data_version <= datetime.now(UTC)
    assert model.target == {"attribute": "risk"} and (model.artefact_bytes or 0) > 0

    predicted = db.predict(model.id, entity_ids=clinics.unlabelled)
    right = [p.predicted == clinics.risk(LABELLED + i) for i, p in enumerate(predicted.predictions)]
    assert sum(right) >= 8 and predicted.written == 0
    assert [p.entity_id for p in predicted.predictions] == clinics.unlabelled
    assert all(abs(sum(p.probabilities.values()) - 1) < 1e-5 for p in predicted.predictions)
    again = db.predict(model.id, entity_ids=clinics.unlabelled)
    assert again.predictions == predicted.predictions  # the stored model, the same answers


def test_training_a_name_again_makes_the_next_version_and_keeps_the_old(db: Dust, clinics: Clinics) -> None:
    first = db.train_model(request())
    second = db.train_model(request(settings={"epochs": 20, "hidden": 8, "literals": False, "seed": 1}))
    assert (first.version, second.version) == (1, 2) and first.id != second.id
    listed = db.models(name="risk").items
    assert [(m.version, m.settings["seed"]) for m in listed] == [(2, 1), (1, 0)]  # newest first
    assert db.get_model(first.id).status == "succeeded"
    assert db.predict(first.id, kind="patient").predictions  # the old version still predicts
    assert [m.name for m in db.models().items] == ["risk", "risk"]


def test_as_of_a_date_a_model_learns_from_the_graph_then(db: Dust, clinics: Clinics) -> None:
    """A relation that starts after the date is not in the model's graph (nor its type), and the data version
    is the date."""
    with db.session() as session:
        relations.create_many(
            session,
            [
                RelationCreate(
                    source_id=clinics.patients[0],
                    target_id=clinics.heart,
                    type="referred",
                    valid_from=datetime(2025, 6, 1, tzinfo=UTC),
                )
            ],
        )
    then = db.train_model(request(as_of="2025-01-01T00:00:00Z"))
    now = db.train_model(request())
    assert then.data_version == then.as_of == datetime(2025, 1, 1, tzinfo=UTC)
    assert "referred" not in graph_of(db, then.id).graph.relation_types
    assert "referred" in graph_of(db, now.id).graph.relation_types


def test_the_target_attribute_is_never_a_literal_node(db: Dust, clinics: Clinics) -> None:
    """With literal nodes on, every other attribute becomes nodes, but the labels' own values would hand the
    model its answer."""
    db.update_entity(clinics.heart, attributes={"floor": 2})
    model = db.train_model(request(settings={"epochs": 5, "literals": True}))
    types = graph_of(db, model.id).graph.relation_types
    assert "floor" in types and "risk" not in types


def test_labels_from_a_map_and_a_test_map(db: Dust, clinics: Clinics) -> None:
    labels = {f"MRN-{i}": clinics.risk(i) for i in range(0, 20)}
    test = {f"MRN-{i}": clinics.risk(i) for i in range(20, 30)}
    model = db.train_model(request(target={"labels": labels, "test_labels": test}))
    metrics = model.metrics or {}
    assert model.target == {"labels": 20, "test_labels": 10}  # the map's size, not its ids
    assert (metrics["train_size"], metrics["test_size"], metrics["split"]) == (20, 10, {"test_labels": True})
    with pytest.raises(InvalidInput, match=r"no patient entity's that you may see, e\.g\. 'MRN-99'"):
        db.train_model(request(target={"labels": {"MRN-1": "low", "MRN-99": "high"}}))


def test_the_split_holds_out_a_share_of_each_class_by_seed() -> None:
    labelled = [(uuid, "a" if n < 10 else "b") for n, uuid in enumerate(sorted(_ids(13)))]
    train, test = classification.split(labelled, 0.3, seed=4)
    assert sorted(train + test) == sorted(labelled)
    assert sum(label == "a" for _, label in test) == 3 and sum(label == "b" for _, label in test) == 1
    assert classification.split(labelled, 0.3, seed=4) == (train, test)
    assert classification.split(labelled, 0.3, seed=5) != (train, test)
    _, none = classification.split([(labelled[0][0], "a")], 0.5, seed=0)
    assert none == []  # a class's last entity always trains


def _ids(n: int) -> list[object]:
    import uuid

    return [uuid.uuid4() for _ in range(n)]


def test_a_queued_training_outlives_its_lost_message(db: Dust, clinics: Clinics) -> None:
    """The jobs table is the record of truth: with the queue's message gone (a crash, an in-memory queue), a
    worker's start-up sweep still runs the training."""
    queued = db.train_model(request(), wait=False)
    assert queued.status == "queued" and queued.metrics is None
    queue_for(db.settings).huey.flush()
    with Worker(db.settings):
        done = until(lambda: (m := db.get_model(queued.id)).status in ("succeeded", "failed") and m)
    assert done.status == "succeeded" and done.metrics


def test_the_commands_list_show_and_predict(
    db: Dust, clinics: Clinics, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = db.train_model(request())
    monkeypatch.setenv("DUST_DATABASE_URL", database_url)
    listed = CliRunner().invoke(app, ["model", "list"])
    assert listed.exit_code == 0, listed.output
    (line,) = [json.loads(text) for text in listed.stdout.splitlines()]
    assert (line["id"], line["version"], line["status"]) == (str(model.id), 1, "succeeded")
    shown = CliRunner().invoke(app, ["model", "show", str(model.id)])
    assert json.loads(shown.stdout)["metrics"]["classes"] == ["high", "low"]

    target = str(clinics.unlabelled[0])
    args = ["model", "predict", str(model.id), "--entity", target, "--write-back", "predicted_risk", "--explain"]
    predicted = CliRunner().invoke(app, args)
    assert predicted.exit_code == 0, predicted.output
    answer = json.loads(predicted.stdout)
    (prediction,) = answer["predictions"]
    assert answer["written"] == 1 and prediction["entity_id"] == target and prediction["explanation"]["edges"]
    assert db.get_entity(target).attributes == {"predicted_risk": prediction["class"]}
    unknown = CliRunner().invoke(app, ["model", "predict", "00000000-0000-4000-8000-000000000000"])
    assert unknown.exit_code == 1 and "does not exist" in unknown.output
