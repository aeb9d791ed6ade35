"""AIFB through the models registry: a training job, the stored model, predictions and explanations, timed.

    .venv/bin/python bench/model_registry.py             # 3 seeds
    .venv/bin/python bench/model_registry.py --runs 1    # quicker
    .venv/bin/python bench/model_registry.py --runs 1 --link-epochs 100   # the link model quicker too

``dust import rdf``'s code fills a fresh SQLite file; then, seed by seed, the registry's path (``db.train_model``:
the request checked, the ``models.train`` job run in this process, the graph read as that job reads it, progress
written, the artefact stored) beside the command's path on the same database (``dust.models.classification``:
the same graph and settings, nothing stored), interleaved so that other work on the machine weighs on both
alike. Then, with the last model: predictions for the 36 test people and for every entity, and explanations of
one and of twenty. Then a link-prediction model of every relation type through the registry (``--link-epochs``).

Predict latency with and without the process's cache of loaded models (``dust.models.cache``): "cold" turns the
cache off (``DUST_MODEL_CACHE_SIZE=0``), so each prediction reads the artefact from the database and deserialises
it, as every prediction did before the cache; "warm" keeps the model loaded. Each is the median of ``--repeat``
calls: the classifier's 36 test people, and the link model's top 10 targets of one person and 100 candidates.
Prints a table; JSON in bench/out/model_registry.json.
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


def median_s(call: Any, repeat: int) -> float:
    return statistics.median(timed(call)[1] for _ in range(repeat))


def cold_and_warm(call: Any, repeat: int) -> tuple[float, float]:
    """The median seconds of ``call`` with the cache of loaded models off, then on (loaded once first)."""
    from dust.models import cache

    cache.MODELS.configure(0, 0)
    cold = median_s(call, repeat)
    cache.MODELS.configure(8, 1024 * cache.MB)
    call()
    return cold, median_s(call, repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--data", type=Path, default=AIFB)
    parser.add_argument("--link-epochs", type=int, default=500, help="the link-prediction model's epochs")
    parser.add_argument("--repeat", type=int, default=5, help="calls each predict latency is the median of")
    args = parser.parse_args()

    import dust
    from dust.engine import relations
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
        classify = cold_and_warm(lambda: db.predict(model.id, entity_ids=people), args.repeat)

        with db.session() as session:
            types = relations.master_tensor(session).types
        request = {"task": "link-prediction", "name": "aifb-links", "target": {"relations": types}}
        links, link_job_s = timed(lambda: db.train_model({**request, "settings": {"epochs": args.link_epochs}}))
        assert links.status == "succeeded", links.error
        pairs = [(people[i % len(people)], types[i % len(types)], people[(i + 1) % len(people)]) for i in range(100)]
        kind = "author" if "author" in types else types[0]
        top_10 = cold_and_warm(lambda: db.predict(links.id, source=people[0], type=kind, top=10), args.repeat)
        candidates = cold_and_warm(lambda: db.predict(links.id, candidates=pairs), args.repeat)
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
        "predict_36_cold_warm_s": classify,
        "classifier_artefact_bytes": model.artefact_bytes,
        "link_metrics": links.metrics,
        "link_job_s": link_job_s,
        "link_artefact_bytes": links.artefact_bytes,
        "link_top_10_cold_warm_s": top_10,
        "link_100_candidates_cold_warm_s": candidates,
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
    lm = links.metrics or {}
    print(
        f"link model ({args.link_epochs} epochs, {len(types)} types): MRR {lm['test_mrr']:.3f} (chance "
        f"{lm['chance_mrr']:.4f}), Hits@10 {lm['test_hits@10']:.3f}, {link_job_s:.1f} s a job, artefact "
        f"{(links.artefact_bytes or 0) / 1e6:.1f} MB"
    )
    for what, (cold, warm) in (
        ("classifier, 36 people", classify),
        ("links, top 10", top_10),
        ("links, 100 candidates", candidates),
    ):
        print(f"predict {what}: cold {cold * 1000:.0f} ms, warm {warm * 1000:.0f} ms ({cold / warm:.1f}x)")
    OUT.mkdir(exist_ok=True)
    (OUT / "model_registry.json").write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    main()
