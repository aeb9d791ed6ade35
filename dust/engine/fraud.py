"""Fraud patterns of payments as features per transaction, and a score learnt from labelled accounts.

The features are what the transactions show about each other, never the hour itself (``step``): in the PaySim
sample late hours hold almost only fraud, because the sample keeps every fraud row and a subset of the others.
Windows use differences of hours only (what else the payer or payee did within a day of this payment).

- velocity: the payer's and the payee's other transactions within 24 hours;
- amount spike: the amount against the payer's other payments (log ratio to their median; 0 without history),
  and the share of the payer's balance it moves;
- drained: the payer's balance was above 0 and is 0 after;
- fan-out / fan-in: how many distinct payees the payer pays, distinct payers the payee is paid by;
- cycle: the payee pays the payer too (directly, anywhere in the data).

``score`` is a logistic regression on these (standardised), fitted on the accounts given; its coefficients say
what weighs. No labels enter the features, so features of the evaluated accounts may use all transactions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from dust.domains.finance import Transaction

DAY = 24  # hours
FEATURES = (
    "transfer",
    "cash_out",
    "log_amount",
    "share_of_balance",
    "drained",
    "amount_vs_history",
    "payer_velocity",
    "payee_velocity",
    "fan_out",
    "fan_in",
    "cycle",
)


def frame(transactions: Sequence[Transaction]) -> pd.DataFrame:
    """The transactions as a table: payer, payee, step, type, amount, balances, fraud."""
    return pd.DataFrame(
        {
            "payer": [t.payer for t in transactions],
            "payee": [t.payee for t in transactions],
            "step": [t.step for t in transactions],
            "type": [t.type for t in transactions],
            "amount": [t.amount for t in transactions],
            "payer_old": [t.payer_old for t in transactions],
            "payer_new": [t.payer_new for t in transactions],
            "fraud": [t.fraud for t in transactions],
        }
    )


def features(table: pd.DataFrame) -> pd.DataFrame:
    """One row of FEATURES per transaction of ``table`` (as ``frame`` makes it), in its order."""
    out = pd.DataFrame(index=table.index)
    out["transfer"] = (table["type"] == "TRANSFER").astype(float)
    out["cash_out"] = (table["type"] == "CASH_OUT").astype(float)
    out["log_amount"] = np.log1p(table["amount"])
    old = table["payer_old"]
    out["share_of_balance"] = np.where(old > 0, np.minimum(table["amount"] / old.where(old > 0, 1.0), 10.0), 10.0)
    out["drained"] = ((old > 0) & (table["payer_new"] == 0)).astype(float)
    median = table.groupby("payer")["amount"].transform("median")
    count = table.groupby("payer")["amount"].transform("size")
    out["amount_vs_history"] = np.where(count > 1, np.log1p(table["amount"]) - np.log1p(median), 0.0)
    out["payer_velocity"] = _within(table, "payer")
    out["payee_velocity"] = _within(table, "payee")
    out["fan_out"] = table.groupby("payer")["payee"].transform("nunique").astype(float)
    out["fan_in"] = table.groupby("payee")["payer"].transform("nunique").astype(float)
    pairs = set(zip(table["payer"], table["payee"], strict=True))
    out["cycle"] = [float((b, a) in pairs) for a, b in zip(table["payer"], table["payee"], strict=True)]
    return out[list(FEATURES)]


def _within(table: pd.DataFrame, who: str) -> np.ndarray:
    """How many other transactions of the same ``who`` lie within DAY hours of each one."""
    counts = np.zeros(len(table))
    for _, group in table.groupby(who):
        if len(group) < 2:
            continue
        steps = group["step"].to_numpy()
        near = np.abs(steps[:, None] - steps[None, :]) <= DAY
        counts[table.index.get_indexer(group.index)] = near.sum(axis=1) - 1
    return counts


@dataclass(frozen=True)
class Model:
    pipeline: Pipeline
    uses: tuple[str, ...]

    def score(self, rows: pd.DataFrame) -> np.ndarray:
        """The probability of fraud of each row of ``features``."""
        return np.asarray(self.pipeline.predict_proba(rows[list(self.uses)])[:, 1])

    def weights(self) -> dict[str, float]:
        """Each feature's coefficient (per standard deviation): what the score leans on."""
        coefficients = self.pipeline[-1].coef_[0]
        return {name: round(float(c), 3) for name, c in zip(self.uses, coefficients, strict=True)}


def fit(rows: pd.DataFrame, labels: pd.Series, uses: Sequence[str] = FEATURES) -> Model:
    """A logistic regression on the ``uses`` columns of ``rows`` of ``features``, classes weighted (fraud is
    rare)."""
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000))
    pipeline.fit(rows[list(uses)], labels.astype(int))
    return Model(pipeline, tuple(uses))
