"""Healthcare: does the care network help predict hypertension beyond what the vitals say? (issue 12)

    .venv/bin/python bench/rgcn_health.py                  # 10 seeds × 5 folds, about two minutes
    .venv/bin/python bench/rgcn_health.py --seeds 3        # quicker

``dust import synthea`` of ../shared/data/synthea (59 patients) into a fresh SQLite file. Label: whether the
patient's ``conditions`` hold hypertension (SNOMED 59621000). Features (``dust.models.features``, the same for
every model): the ``vitals`` tensors — per vital sign its latest value, mean, min, max and std over every day
to the date, and a missing mask — and the attributes ``birth_date`` (as age) and ``gender``. Graph: the care
network as imported — practitioner ``treats`` patient (from the encounters), practitioner ``works_at``
organization — with inverse relations; no literal nodes (the ``conditions`` attribute as nodes would hand the
model its label). Leakage: the condition itself is never a feature or a node; but Synthea dates most diagnoses
before the patient's first recorded vital sign, so the vitals are post-diagnosis (see the printed count): this
is "is this patient hypertensive", not a forecast.

Models, each on the same features, standardised with the training fold's statistics:
- majority: always the most common class of the training fold (the base rate);
- logistic regression (scikit-learn, default L2, C=1) on the patients' feature rows: the features-only baseline;
- R-GCN, features + relations: DUST's model (``settings.features``), learnt node vectors beside the features;
- R-GCN, features + relations, no node vectors (``embeddings: false``);
- R-GCN, features, no relations: the same network on a graph with no edges (its self-loops only), which
  separates what the relations add from what the network adds;
- R-GCN, features + rewired relations: the patient end of every ``treats`` relation shuffled among them (each
  patient and practitioner keeps its number of relations): if who treats whom is what helps, this loses it;
- R-GCN, relations only: featureless, as in the paper.

Evaluation: stratified 5-fold cross-validation, repeated with ``--seeds`` shuffles (seed k: the folds and every
model's initialisation); per seed, the out-of-fold predictions of all 59 patients give accuracy, balanced
accuracy and ROC AUC; the table has their mean ± std over seeds. Prints a table; JSON in bench/out/.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SYNTHEA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "synthea"
OUT = Path(__file__).resolve().parent / "out"
HYPERTENSION = "59621000"
FEATURES = {"tensors": [{"schema": "vitals"}], "attributes": ["birth_date", "gender"]}
MODELS = [
    "majority",
    "logistic regression (features)",
    "R-GCN features + relations",
    "R-GCN features + relations, no node vectors",
    "R-GCN features, no relations",
    "R-GCN features + rewired relations",
    "R-GCN relations only (featureless)",
]
# differences of ROC AUC seed by seed (the same folds): what the relations add, and what who-treats-whom adds
PAIRS = [
    ("R-GCN features + relations", "logistic regression (features)"),
    ("R-GCN features + relations, no node vectors", "R-GCN features, no relations"),
    ("R-GCN features + relations, no node vectors", "R-GCN features + rewired relations"),
]


def load(directory: Path, as_of: datetime | None) -> dict[str, Any]:
    """Import the export; the labelled patients, the graph and the raw features as of ``as_of`` (default now)."""
    from sqlalchemy import select

    import dust
    from dust.importers import synthea
    from dust.models import classification, features
    from dust.models.schemas import Features
    from dust.storage.models import Entity

    with tempfile.TemporaryDirectory() as tmp, dust.open(f"sqlite:///{tmp}/health.db") as db:
        started = time.perf_counter()
        with db.session() as session:
            synthea.import_directory(session, directory)
        imported = time.perf_counter() - started
        with db.session() as session:
            # by Synthea id, so that the folds are the same on every import (entity ids are drawn anew)
            query = select(Entity).where(Entity.kind == "patient").order_by(Entity.external_id)
            patients = list(session.scalars(query))
            labelled = [(p.id, "yes" if _has(p.attributes, HYPERTENSION) else "no") for p in patients]
            problem = classification.problem(session, labelled, [], at=as_of, literals=False)
            moment = as_of or datetime.now(UTC)
            spec = Features.model_validate(FEATURES)
            graph = problem.graph
            raw = features.read(session, spec, graph.entity_ids, graph.num_nodes, moment, as_of is not None)
            before = _diagnosed_before_vitals(session, patients)
    columns = features.fit(spec, raw, problem.train_nodes, moment).columns  # the count; each fold fits its own
    return {
        "problem": problem,
        "raw": raw,
        "spec": spec,
        "moment": moment,
        "import_s": imported,
        "diagnosed_before_first_vital": before,
        "columns": columns,
    }


def _has(attributes: dict[str, Any], code: str) -> bool:
    return any(isinstance(c, dict) and c.get("code") == code for c in attributes.get("conditions") or [])


def _diagnosed_before_vitals(session: Any, patients: list[Any]) -> list[int]:
    """[hypertensive patients, of whom diagnosed before their first vital sign recorded]."""
    from datetime import date, timedelta

    from dust.storage.repositories import tensors as tensor_repo

    count = before = 0
    for p in patients:
        diagnosed = [c["start"] for c in p.attributes.get("conditions") or [] if c.get("code") == HYPERTENSION]
        if not diagnosed:
            continue
        count += 1
        rows = tensor_repo.of_entity(session, p.id, "vitals")
        if not rows or rows[0].time_min is None:
            before += 1
            continue
        first_day = (rows[0].origin + timedelta(days=rows[0].time_min)).date()  # daily, from the birth date
        before += date.fromisoformat(min(diagnosed)) < first_day
    return [count, before]


def rewired(graph: Any, seed: int) -> Any:
    """``graph`` with the patient ends of its ``treats`` relations shuffled among them (degrees kept)."""
    import random

    k = graph.relation_types.index("treats")
    pairs = range(0, graph.num_edges, 2)  # an edge and its inverse, in turn (graph.build)
    ends = [graph.targets[i] for i in pairs if graph.types[i] == k]
    random.Random(seed).shuffle(ends)
    sources, targets = list(graph.sources), list(graph.targets)
    for i, end in zip((i for i in pairs if graph.types[i] == k), ends, strict=True):
        targets[i], sources[i + 1] = end, end
    return replace(graph, sources=sources, targets=targets)


def folds(labels: list[int], k: int, seed: int) -> list[list[int]]:
    """Stratified k folds of the positions of ``labels``, shuffled by ``seed``."""
    import random

    rng = random.Random(seed)
    out: list[list[int]] = [[] for _ in range(k)]
    for cls in sorted(set(labels)):
        members = [i for i, label in enumerate(labels) if label == cls]
        rng.shuffle(members)
        for j, i in enumerate(members):
            out[j % k].append(i)
    return out


def scores(y: list[int], p: list[float]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

    predicted = [int(v >= 0.5) for v in p]
    return {
        "accuracy": float(accuracy_score(y, predicted)),
        "balanced_accuracy": float(balanced_accuracy_score(y, predicted)),
        "roc_auc": float(roc_auc_score(y, p)),
    }


def run_seed(data: dict[str, Any], seed: int, k: int, settings: Any) -> dict[str, dict[str, float]]:
    """Out-of-fold P(hypertension) of every patient for each model; their scores."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from dust.models import features, rgcn

    problem = data["problem"]
    nodes, labels = problem.train_nodes, problem.train_classes  # every patient; "yes" is class 1
    yes = problem.classes.index("yes")
    y = [int(c == yes) for c in labels]
    predicted: dict[str, list[float]] = {name: [0.0] * len(nodes) for name in MODELS}
    no_vectors = replace(settings, embeddings=False)
    for held in folds(y, k, seed):
        held_set = set(held)
        train = [i for i in range(len(nodes)) if i not in held_set]
        train_nodes, train_classes = [nodes[i] for i in train], [labels[i] for i in train]
        encoder = features.fit(data["spec"], data["raw"], train_nodes, data["moment"])
        x = encoder.encode(data["raw"], data["moment"])
        graph = replace(problem.graph, features=x)
        isolated = replace(graph, relation_types=[], sources=[], targets=[], types=[], weights=[])
        featureless = replace(graph, features=None)
        share = float(np.mean([y[i] for i in train]))
        logistic = LogisticRegression(max_iter=2000).fit(x[train_nodes], [y[i] for i in train])
        out = {
            "majority": [float(share >= 0.5)] * len(held),
            "logistic regression (features)": logistic.predict_proba(x[[nodes[i] for i in held]])[:, 1].tolist(),
        }
        for name, g, s in (
            ("R-GCN features + relations", graph, settings),
            ("R-GCN features + relations, no node vectors", graph, no_vectors),
            ("R-GCN features, no relations", isolated, no_vectors),
            ("R-GCN features + rewired relations", rewired(graph, seed), no_vectors),
            ("R-GCN relations only (featureless)", featureless, settings),
        ):
            net, _ = rgcn.fit(g, train_nodes, train_classes, 2, s, seed)
            out[name] = rgcn.probabilities(net, g)[[nodes[i] for i in held], yes].tolist()
        for name, values in out.items():
            for i, v in zip(held, values, strict=True):
                predicted[name][i] = v
    return {name: scores(y, p) for name, p in predicted.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--l2", type=float, default=5e-4, help="on the first layer (R-GCN)")
    parser.add_argument("--as-of", type=datetime.fromisoformat, default=None, help="the model's date (default now)")
    parser.add_argument("--data", type=Path, default=SYNTHEA)
    args = parser.parse_args()
    import torch

    from dust.models import rgcn

    started = time.perf_counter()
    data = load(args.data, args.as_of)
    problem = data["problem"]
    settings = rgcn.Settings(epochs=args.epochs, l2=args.l2)
    per_seed = []
    for seed in range(args.seeds):
        per_seed.append(run_seed(data, seed, args.folds, settings))
        line = ", ".join(f"{name.split(' (')[0]} {s['roc_auc']:.3f}" for name, s in per_seed[-1].items())
        print(f"seed {seed}: ROC AUC {line}", flush=True)
    table: dict[str, dict[str, list[float]]] = {}
    for name in MODELS:
        table[name] = {}
        for metric in ("accuracy", "balanced_accuracy", "roc_auc"):
            values = [s[name][metric] for s in per_seed]
            table[name][metric] = [statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0]
    positives = problem.train_classes.count(problem.classes.index("yes"))
    paired = {}
    for name, other in PAIRS:
        deltas = [s[name]["roc_auc"] - s[other]["roc_auc"] for s in per_seed]
        paired[f"{name} - {other}"] = [statistics.fmean(deltas), statistics.stdev(deltas) if len(deltas) > 1 else 0.0]
    result = {
        "patients": len(problem.train_nodes),
        "hypertensive": positives,
        "diagnosed_before_first_vital": data["diagnosed_before_first_vital"],
        "graph": {
            "nodes": problem.graph.num_nodes,
            "edges": problem.graph.num_edges,
            "relations": problem.graph.relation_types,
        },
        "feature_columns": len(data["columns"]),
        "as_of": args.as_of.isoformat() if args.as_of else None,
        "seeds": args.seeds,
        "folds": args.folds,
        "settings": {"epochs": args.epochs, "l2": args.l2, "hidden": settings.hidden, "lr": settings.lr},
        "table": table,
        "paired_roc_auc": paired,
        "per_seed": per_seed,
        "import_s": data["import_s"],
        "seconds": time.perf_counter() - started,
        "torch": torch.__version__,
        "load_average": os.getloadavg(),
    }
    print()
    print(
        f"{result['patients']} patients, {positives} hypertensive (base rate {positives / result['patients']:.2f}); "
        f"{data['diagnosed_before_first_vital'][1]} of them diagnosed before their first recorded vital sign; "
        f"graph {problem.graph.num_nodes} nodes, {problem.graph.num_edges} edges, "
        f"relations {', '.join(problem.graph.relation_types)}"
    )
    print(f"{'mean ± std over ' + str(args.seeds) + ' seeds':48}{'accuracy':>16}{'balanced acc.':>16}{'ROC AUC':>16}")
    for name in MODELS:
        cells = "".join(f"{m[0]:>10.3f} ± {m[1]:.3f}" for m in table[name].values())
        print(f"{name:48}{cells}")
    for name, other in PAIRS:
        delta = result["paired_roc_auc"][f"{name} - {other}"]
        print(f"ROC AUC, {name} - {other}: {delta[0]:+.3f} ± {delta[1]:.3f} (paired over seeds)")
    busy = result["load_average"][0]
    print(f"{result['seconds']:.0f} s in all (import {data['import_s']:.1f} s); load average {busy:.1f}")
    OUT.mkdir(exist_ok=True)
    (OUT / "rgcn_health.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
