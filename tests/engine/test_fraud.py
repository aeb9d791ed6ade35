"""The fraud pattern rules find rings, mules, drains, bursts and spikes, and leave payroll runs and rents alone;
the shipped model is the one fitted on PaySim."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score
from sklearn.model_selection import GroupShuffleSplit

from dust.domains.finance import Transaction
from dust.engine import fraud
from dust.importers import paysim
from dust.importers.report import Report

PAYSIM = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "paysim" / "paysim_sample.csv"


def paid(step: int, payer: str, payee: str, amount: float, old: float, kind: str = "TRANSFER") -> Transaction:
    new = old + amount if kind == "CASH_IN" else round(old - amount, 2)
    return Transaction(step, kind, amount, payer, old, new, payee, 0.0, 0.0, False, False, "test")


def held(transactions: list[Transaction]) -> dict[str, list[bool]]:
    table = fraud.frame(transactions)
    return {name: column.tolist() for name, column in fraud.patterns(table).items()}


def routine(payer: str, days: int = 10) -> list[Transaction]:
    """A payment a day at a shop: a payer's usual."""
    return [paid(24 * d + 12, payer, "M9", 40.0, 5000.0 - 40 * d, "PAYMENT") for d in range(days)]


def test_a_ring_of_transfers_coming_back_within_hours_is_a_ring_and_a_payback_is_not() -> None:
    ring = [paid(100, "C1", "C2", 40_000, 40_000), paid(104, "C2", "C3", 39_200, 40_000),
            paid(110, "C3", "C1", 38_400, 39_200)]  # fmt: skip
    late = [paid(100, "C4", "C5", 40_000, 40_000), paid(104, "C5", "C6", 39_200, 40_000),
            paid(300, "C6", "C4", 38_400, 39_200)]  # fmt: skip  # the last leg comes back days later
    back = [paid(100, "C7", "C8", 50, 500), paid(102, "C8", "C7", 50, 500)]  # two friends: a cycle of 2
    assert held(ring + late + back)["ring"] == [True] * 3 + [False] * 5


def test_money_in_from_many_payers_and_sent_on_is_a_mule_and_a_payroll_run_is_not() -> None:
    into = [paid(200 + i, f"C{i}", "C100", 3000.0, 4000.0) for i in range(6)]
    out = [paid(230 + j, "C100", f"C20{j}", 6000.0, 18_000.0 - 6000 * j) for j in range(3)]
    payroll = [paid(24 * 30 * m + 9, "C300", f"C40{i}", 2500.0, 1e6 - 2500 * i) for m in range(3) for i in range(12)]
    found = held(into + out + payroll)
    assert found["mule"] == [True] * 9 + [False] * 36
    assert not any(found["burst"][9:])  # twelve salaries in an hour, as every month: the payer's usual


def test_an_emptied_account_cashed_out_within_a_day_is_a_drain() -> None:
    drained = [paid(50, "C1", "C2", 7000.0, 7000.0), paid(52, "C2", "C3", 7000.0, 7000.0, "CASH_OUT")]
    kept = [paid(50, "C4", "C5", 700.0, 7000.0), paid(52, "C5", "C3", 700.0, 700.0, "CASH_OUT")]
    assert held(drained + kept)["drain"] == [True, True, False, False]


def test_a_burst_against_the_payers_usual_rate_and_a_spike_over_its_history() -> None:
    spree = [paid(24 * 20 + j // 5, "C1", f"M{j}", 60.0, 4000.0 - 60 * j, "PAYMENT") for j in range(15)]
    spike = paid(24 * 20, "C2", "C99", 4500.0, 4600.0)
    rent = [paid(24 * 10 + 8, "C3", "M1", 900.0, 4600.0, "PAYMENT"), paid(24 * 40 + 8, "C3", "M1", 900.0, 4600.0,
                                                                           "PAYMENT")]  # fmt: skip
    found = held(routine("C1") + spree + routine("C2") + [spike] + routine("C3", 5) + rent + routine("C3")[5:])
    assert found["burst"] == [False] * 10 + [True] * 15 + [False] * 23
    spikes = [i for i, hit in enumerate(found["spike"]) if hit]
    assert spikes == [35]  # the transfer of most of C2's balance; C3's rent leaves most of it, month after month


def test_the_reason_names_the_patterns_and_not_the_other_accounts() -> None:
    drained = [paid(50, "C1", "C2", 7000.0, 7000.0), paid(52, "C2", "C3", 7000.0, 7000.0, "CASH_OUT")]
    table = fraud.frame(drained)
    rows, found = fraud.features(table), fraud.patterns(table)
    text = fraud.reason(table.loc[0], rows.loc[0], found.loc[0], 0.95)
    assert text.startswith("transfer of 7,000.00 drained {entity} (7,000.00 -> 0)")
    assert "cashed out within a day" in text and "C2" not in text and "0.95" in text


@pytest.mark.skipif(not PAYSIM.is_file(), reason="the shared PaySim sample is not here")
def test_the_shipped_model_scores_the_held_out_paysim_payers_as_bench_fraud_says() -> None:
    scorer = fraud.Scorer.load()
    assert scorer.uses == fraud.FEATURES and 0 < scorer.threshold < fraud.RULE_SCORE
    table = fraud.frame(list(paysim.read(PAYSIM, Report())))
    rows = fraud.features(table)
    labels = table["fraud"].to_numpy().astype(int)
    _, test = next(GroupShuffleSplit(test_size=0.3, random_state=7).split(rows, labels, groups=table["payer"]))
    scores = scorer.score(rows, fraud.patterns(table))
    assert average_precision_score(labels[test], scores[test]) > 0.95  # bench/fraud.py: 0.98 on these payers
    flagged = scores[test] >= scorer.threshold
    assert labels[test][flagged].mean() > 0.9 and flagged[labels[test] == 1].mean() > 0.9
    assert np.isfinite(scores).all()
