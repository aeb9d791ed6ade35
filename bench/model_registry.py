"""AIFB through the models registry: a training job, the stored model, predictions and explanations, timed.

    .venv/bin/python bench/model_registry.py             # 3 seeds
    .venv/bin/python bench/model_registry.py --runs 1    # quicker

``dust import rdf``'s code fills a fresh SQLite file; then, seed by seed, the registry's path (``db.train_model``:
the request checked, the ``models.train`` job run in this process, the graph read as that job reads it, progress
written, the artefact stored) beside the command's path on the same database (``dust.models.classification``:
the same graph and settings, nothing stored), interleaved so that other work on the machine weighs on both
alike. Then, with the last model: predictions for the 36 test people and for every entity, and explanations of
one and of twenty. Prints a table; JSON in bench/out/model_registry.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

AIFB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rgcn" / "aifb"
OUT = Path(__file__).resolve().parent / "out"


def labels(path: Path) -> dict[str, str]:
    with path.open(newline="") as file:
        return {row["person"]: row["label_affiliation"] for row in csv.DictReader(file, delimiter="\t")}


def timed(call: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    value = call()
    return value, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--data", type=Path, default=AIFB)
    args = parser.parse_args()

    import dust
    from dust.importers import rdf
    from dust.models import classification, rgcn
    from dust.storage.repositories import entities as entity_repo

    train, test = labels(args.data / "trainingSet.tsv"), labels(args.data / "testSet.tsv")
    request = {"task": "entity-classification", "name": "aifb", "target": {"labels": train, "test_labels": test}}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, dust.open(f"sqlite:///{tmp}/aifb.db") as db:
        with db.session() as session:
            rdf.import_file(session, args.data / "aifb_stripped.nt.gz")
        for seed in range(args.runs):
            model, job_s = timed(lambda seed=seed: db.train_model({**request, "settings": {"seed": seed}}))
            assert model.status == "succeeded", model.error
            with db.session() as session:
                files = [classification.Labels(list(part.items()), args.data / "x.tsv") for part in (train, test)]
                problem = classification.prepare(session, files[0], files[1])
            plain = classification.train(problem, settings=rgcn.Settings(), seeds=[seed])
            metrics = model.metrics or {}
            rows.append(
                {
                    "seed": seed,
                    "registry_test_accuracy": metrics["test_accuracy"],
                    "registry_s_per_epoch": metrics["seconds_per_epoch"],
                    "registry_job_s": job_s,
                    "command_test_accuracy": plain["test_accuracy"],
                    "command_s_per_epoch": plain["seconds_per_epoch"],
                    "artefact_bytes": model.artefact_bytes,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
        with db.session() as session:
            found = entity_repo.ids_by_external_id_any_kind(session, list(test))
        people = [found[name] for name in test]
        answer, predict_s = timed(lambda: db.predict(model.id, entity_ids=people))
        everyone, predict_all_s = timed(lambda: db.predict(model.id))
        _, explain_one_s = timed(lambda: db.predict(model.id, entity_ids=people[:1], explain=True))
        _, explain_twenty_s = timed(lambda: db.predict(model.id, entity_ids=people[:20], explain=True))
    right = sum(p.predicted == test[name] for p, name in zip(answer.predictions, test, strict=True))

    def mean(key: str) -> float:
        return statistics.fmean(row[key] for row in rows)

    result = {
        "runs": rows,
        "registry_s_per_epoch": mean("registry_s_per_epoch"),
        "command_s_per_epoch": mean("command_s_per_epoch"),
        "registry_job_s": mean("registry_job_s"),
        "predict_36_s": predict_s,
        "predict_all_s": predict_all_s,
        "predicted_all": len(everyone.predictions),
        "right_of_36": right,
        "explain_1_s": explain_one_s,
        "explain_20_s": explain_twenty_s,
        "load_average": os.getloadavg(),
    }
    print()
    print(
        f"registry {mean('registry_test_accuracy'):.4f} test accuracy, {result['registry_s_per_epoch']:.3f} s/epoch, "
        f"{result['registry_job_s']:.1f} s a job; command {mean('command_test_accuracy'):.4f}, "
        f"{result['command_s_per_epoch']:.3f} s/epoch; artefact {rows[-1]['artefact_bytes'] / 1e6:.1f} MB"
    )
    print(
        f"predict 36: {predict_s:.2f} s ({right} right); all {len(everyone.predictions)}: {predict_all_s:.2f} s; "
        f"explain 1: {explain_one_s:.2f} s, 20: {explain_twenty_s:.2f} s; load average {result['load_average'][0]:.1f}"
    )
    OUT.mkdir(exist_ok=True)
    (OUT / "model_registry.json").write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
