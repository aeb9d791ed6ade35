"""Fraud scores on the PaySim sample against an amount threshold, split by payer account.

    .venv/bin/python bench/fraud.py                           # the shared sample, 30 % of payers held out
    .venv/bin/python bench/fraud.py --file other.csv --test 0.5 --seed 3
    .venv/bin/python bench/fraud.py --save dust/domains/finance_model.json   # the model `flag` ships with

The payers (PaySim's ``nameOrig``) are split at random into train and test; every transaction goes with its
payer, so no account is both learnt from and evaluated. The model (dust.engine.fraud: a logistic regression on
the pattern features, never the hour) and the baseline (the amount alone) pick their alert threshold on the
train transactions (the best F1 there); precision and recall are at that threshold on the test transactions,
PR-AUC (average precision) over all thresholds. "with pattern rules" is what ``fraud.flag`` scores by: the
model, raised to RULE_SCORE where a fixed rule (ring, mule, burst, spike) holds. Writes the figures to
bench/out/fraud.json too; ``--save`` writes the model fitted on the train payers, with its threshold.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, precision_score, recall_score
from sklearn.model_selection import GroupShuffleSplit

from dust.engine import fraud
from dust.importers import paysim
from dust.importers.report import Report

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "paysim" / "paysim_sample.csv"


def best_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold of the best F1 on ``labels``."""
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def evaluate(
    name: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]
) -> dict[str, str | float]:
    threshold = best_threshold(*train)
    labels, scores = test
    flagged = scores >= threshold
    return {
        "what": name,
        "threshold": round(threshold, 4),
        "precision": round(float(precision_score(labels, flagged, zero_division=0)), 3),
        "recall": round(float(recall_score(labels, flagged)), 3),
        "pr_auc": round(float(average_precision_score(labels, scores)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", type=Path, default=SAMPLE)
    parser.add_argument("--test", type=float, default=0.3, help="share of payer accounts held out")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--save", type=Path, help="write the fitted model and its threshold here (JSON)")
    args = parser.parse_args()

    started = time.perf_counter()
    table = fraud.frame(list(paysim.read(args.file, Report())))
    rows = fraud.features(table)
    labels = table["fraud"].to_numpy().astype(int)
    split = GroupShuffleSplit(n_splits=1, test_size=args.test, random_state=args.seed)
    train, test = next(split.split(rows, labels, groups=table["payer"]))
    assert not set(table["payer"].iloc[train]) & set(table["payer"].iloc[test])
    model = fraud.fit(rows.iloc[train], table["fraud"].iloc[train])
    scores = model.score(rows)
    # fan-in and the payee's velocity count transactions the sample kept: all fraud, a subset of the rest
    own = [f for f in fraud.FEATURES if f not in ("fan_in", "payee_velocity")]
    partial = fraud.fit(rows.iloc[train], table["fraud"].iloc[train], own).score(rows)
    amount = table["amount"].to_numpy()
    scorer = fraud.Scorer.of(model, best_threshold(labels[train], scores[train]), {
        "fitted_on": f"{args.file.name}: the {len(train)} transactions of {args.test:.0%}-held-out split seed "
                     f"{args.seed}'s train payers", "by": "bench/fraud.py"})  # fmt: skip
    combined = scorer.score(rows, fraud.patterns(table))
    results = [
        evaluate("amount threshold", (labels[train], amount[train]), (labels[test], amount[test])),
        evaluate("pattern score", (labels[train], scores[train]), (labels[test], scores[test])),
        evaluate("  without payee", (labels[train], partial[train]), (labels[test], partial[test])),
        evaluate("with pattern rules", (labels[train], combined[train]), (labels[test], combined[test])),
    ]
    print(f"{args.file.name}: {len(table)} transactions, {int(labels.sum())} fraud; test: {len(test)} transactions "
          f"({int(labels[test].sum())} fraud) of {table['payer'].iloc[test].nunique()} payers held out")  # fmt: skip
    print(f"{'':18} {'threshold':>14} {'precision':>10} {'recall':>8} {'PR-AUC':>8}")
    for r in results:
        print(f"{r['what']:18} {r['threshold']:>14} {r['precision']:>10} {r['recall']:>8} {r['pr_auc']:>8}")
    print("weights (per standard deviation):", model.weights())
    print(f"{time.perf_counter() - started:.1f} s")
    if args.save:
        scorer.save(args.save)
        print(f"model written to {args.save} (threshold {scorer.threshold:.4f})")
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "fraud.json").write_text(json.dumps({"results": results, "weights": model.weights()}, indent=2))


if __name__ == "__main__":
    main()
