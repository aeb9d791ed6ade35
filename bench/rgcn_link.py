"""R-GCN link prediction on AIFB: R-GCN + DistMult beside DistMult alone (the paper's baseline), in one run.

    .venv/bin/python bench/rgcn_link.py                          # one seed, 500 epochs: some 3 minutes
    .venv/bin/python bench/rgcn_link.py --runs 3 --layers 2,1    # the figures of docs/models.md

``dust import rdf`` of aifb_stripped.nt.gz into a fresh SQLite file; 10 % of its relations (entity to entity:
literals stay attributes) held out with seed 0, as ``dust model train --task link-prediction`` does; then, for
each seed, R-GCN + DistMult (``dust.models.link`` with its defaults; ``--layers``: R-GCN layers, several to
compare) and DistMult alone (no R-GCN layer: an embedding per entity), trained the same way: the same negatives,
L2, epochs and learning rate. Filtered MRR and Hits@1, 3, 10 over both ends of every test triple, against all
entities. Seconds per epoch are the training loop's, wall clock. Prints a table; JSON in bench/out/.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

AIFB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rgcn" / "aifb"
OUT = Path(__file__).resolve().parent / "out"
KEYS = ("mrr", "hits@1", "hits@3", "hits@10", "seconds_per_epoch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=None, help="default: dust.models.link's")
    parser.add_argument("--negatives", type=int, default=None, help="default: dust.models.link's")
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--layers", default=None, help="R-GCN layers (default: dust.models.link's), or several: 2,1")
    parser.add_argument("--literals", action="store_true", help="attribute values as nodes in the encoder's graph")
    parser.add_argument("--data", type=Path, default=AIFB)
    args = parser.parse_args()
    import torch

    import dust
    from dust.importers import rdf
    from dust.models import link

    with tempfile.TemporaryDirectory() as tmp, dust.open(f"sqlite:///{tmp}/aifb.db") as db:
        started = time.perf_counter()
        with db.session() as session:
            rdf.import_file(session, args.data / "aifb_stripped.nt.gz")
        imported = time.perf_counter() - started
        with db.session() as session:
            problem = link.prepare(session, test_fraction=args.test_fraction, seed=0, literals=args.literals)

    changes = {k: v for k, v in (("epochs", args.epochs), ("negatives", args.negatives)) if v is not None}
    rgcn = dataclasses.replace(link.Settings(), **changes)
    layers = args.layers.split(",") if args.layers else [rgcn.layers]
    models = {f"R-GCN ({n}) + DistMult": dataclasses.replace(rgcn, layers=int(n)) for n in layers}
    models["DistMult"] = dataclasses.replace(rgcn, layers=0)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in models}
    for seed in range(args.runs):
        for name, settings in models.items():
            model, seconds = link.fit(problem, settings, seed)
            results[name].append({**link.evaluate(model, problem), "seconds_per_epoch": seconds})
            shown = "  ".join(f"{k} {v:.4f}" for k, v in results[name][-1].items())
            print(f"seed {seed} {name:21} {shown}", flush=True)

    def stats(name: str, key: str) -> tuple[float, float]:
        values = [r[key] for r in results[name]]
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    table = {name: {key: stats(name, key) for key in KEYS} for name in models}
    print()
    print(
        f"AIFB: {problem.entities} entities, {problem.graph.num_nodes} nodes, {len(problem.relation_types)} types; "
        f"{len(problem.train)} training triples, {len(problem.test)} test; import {imported:.1f} s"
    )
    print(f"{'':22}" + "".join(f"{key:>20}" for key in KEYS))
    for name, row in table.items():
        print(f"{name:22}" + "".join(f"{m:>11.4f} ± {s:.4f}" for m, s in row.values()))
    result: dict[str, Any] = {
        "runs": args.runs,
        "settings": dataclasses.asdict(rgcn),
        "literals": args.literals,
        "sizes": link.sizes(problem),
        "results": {name: {key: list(v) for key, v in row.items()} for name, row in table.items()},
        "per_seed": results,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
    }
    print(f"load average {result['load_average'][0]:.1f}")
    OUT.mkdir(exist_ok=True)
    (OUT / "rgcn_link.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
