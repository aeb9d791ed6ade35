"""How the shipped fraud score does on `dust demo finance`'s planted fraud, and how long the demo takes to load.

    .venv/bin/python bench/fraud_demo.py                      # --size 1000 --days 90 --seed 7, no database
    .venv/bin/python bench/fraud_demo.py --size 10000 --load   # and time generate() into a new SQLite file

The score (dust/domains/finance_model.json) was fitted on the PaySim sample only (bench/fraud.py --save); the
generated data never tuned it. A transaction is flagged at the shipped threshold; precision and recall are
against the planted labels (``is_fraud``), PR-AUC (average precision) over all thresholds. Rows: the PaySim
model alone, the pattern rules alone, and both as ``fraud.flag`` scores (the higher of the two), then recall
per planted pattern.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, precision_score, recall_score

from dust.domains import finance_demo
from dust.engine import fraud


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--load", action="store_true", help="also time generate() into a new SQLite database")
    args = parser.parse_args()

    started = time.perf_counter()
    made = finance_demo.transactions(finance_demo.Plan.of(args.size, args.days), args.seed)
    generated = time.perf_counter() - started
    table = fraud.frame(made)
    scorer = fraud.Scorer.load()
    started = time.perf_counter()
    rows, held = fraud.features(table), fraud.patterns(table)
    model = scorer.probability(rows)
    rules = np.where(held.any(axis=1), fraud.RULE_SCORE, 0.0)
    both = scorer.score(rows, held)
    scored = time.perf_counter() - started
    labels = table["fraud"].to_numpy().astype(int)
    print(
        f"size {args.size}, {args.days} days, seed {args.seed}: {len(made)} transactions, {labels.sum()} planted "
        f"fraud; generated in {generated:.1f} s, scored in {scored:.1f} s; threshold {scorer.threshold:.3f}"
    )
    print(f"{'':22} {'flagged':>8} {'precision':>10} {'recall':>8} {'PR-AUC':>8}")
    for name, scores in (("PaySim model alone", model), ("pattern rules alone", rules), ("both (fraud.flag)", both)):
        flagged = scores >= scorer.threshold
        print(f"{name:22} {int(flagged.sum()):>8} {precision_score(labels, flagged, zero_division=0):>10.3f} "
              f"{recall_score(labels, flagged):>8.3f} {average_precision_score(labels, scores):>8.3f}")  # fmt: skip
    planted = np.array([t.planted.rsplit("-", 1)[0] for t in made])
    for pattern in ("ring", "mule", "drain", "burst", "spike"):
        mine = planted == pattern
        model_finds, both_find = (
            int((model[mine] >= scorer.threshold).sum()),
            int((both[mine] >= scorer.threshold).sum()),
        )
        print(f"  {pattern:6} {int(mine.sum()):>5} planted: model finds {model_finds}, both find {both_find}")
    normal = labels == 0
    kinds = table["type"][normal & (model >= scorer.threshold)].value_counts().to_dict()
    print(f"normal transactions the model flags, by type: {kinds}")
    if args.load:
        load(args.size, args.days, args.seed)


def load(size: int, days: int, seed: int) -> None:
    from dust.domains import finance
    from dust.embedded import Dust

    with tempfile.TemporaryDirectory() as folder:
        db = Dust(f"sqlite:///{Path(folder) / 'demo.db'}")
        started, cpu = time.perf_counter(), time.process_time()
        with db.session() as session:
            made = finance.generate(session, size=size, days=days, seed=seed)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        load = os.getloadavg()[0]
        print(f"generate(size={size}) into SQLite: {wall:.1f} s ({cpu:.1f} s of CPU; load average {load:.1f} on "
              f"{os.cpu_count()} cores): {made}")  # fmt: skip
        db.close()


if __name__ == "__main__":
    main()
