"""Fraud patterns of payments as features per transaction, and a score learnt from labelled accounts.

The features are what the transactions show about each other, never the hour itself (``step``): in the PaySim
sample late hours hold almost only fraud, because the sample keeps every fraud row and a subset of the others.
Windows use differences of hours only (what else the payer or payee did within a day of this payment).

- velocity: the payer's and the payee's other transactions within 24 hours;
- amount spike: the amount against the payer's other payments (log ratio to their median; 0 without history),
  and the share of the payer's balance it moves (at most 1; 0 from an empty account: ``empty_before`` and
  ``overdrawn`` say those);
- drained: the payer's balance was above 0 and is 0 after;
- fan-out / fan-in: how many distinct payees the payer pays, distinct payers the payee is paid by;
- cycle: the payee pays the payer too (directly, anywhere in the data).

``fit`` gives a logistic regression on these (standardised), fitted on the accounts given; its coefficients say
what weighs. No labels enter the features, so features of the evaluated accounts may use all transactions.

PaySim's payers pay once each, so a model learnt from it can only weigh type, amount and balance: it has never
seen a ring or a mule. ``patterns`` are fixed rules for those (a cycle of transfers, money passing through an
account from many payers, a burst against the payer's own usual rate, an amount far over the payer's earlier
ones); ``Scorer`` takes the higher of the shipped model's probability and ``RULE_SCORE`` where a rule holds.
``flag`` turns the transactions scoring at least the model's threshold into anomalies on the payer's balance
tensor (detector ``fraud``), and the pack's anomaly rules turn those into alerts (dust.engine.firing).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sqlalchemy.orm import Session

from dust.domains import finance
from dust.domains.finance import Transaction
from dust.engine import anomalies, firing, schemas
from dust.storage.models import Tensor, utcnow
from dust.storage.repositories import alerts as alert_repo
from dust.storage.repositories import anomalies as anomaly_repo
from dust.storage.repositories import entities as entity_repo
from dust.storage.repositories import tensors as tensor_repo

DAY = 24  # hours
FEATURES = (
    "transfer",
    "cash_out",
    "log_amount",
    "share_of_balance",
    "empty_before",
    "overdrawn",
    "drained",
    "amount_vs_history",
    "payer_velocity",
    "payee_velocity",
    "fan_out",
    "fan_in",
    "cycle",
)


MODEL = Path(__file__).resolve().parents[1] / "domains" / "finance_model.json"
DETECTOR = "fraud"  # the detector name the anomalies carry
RULE_SCORE = 0.95  # the score of a transaction a pattern rule holds for (the shipped threshold is about 0.9)
RING_HOURS = 72  # a ring's legs follow each other within this many hours
RING_SPREAD = 0.3  # and their amounts differ from the first leg's by at most this share
MULE_PAYERS = 5  # distinct payers into an account within a day, ...
MULE_PASSED = 0.8  # ... of which it sends on at least this share within two days
BURST = 10  # payments in a day, ...
BURST_RATE = 5  # ... at least this many times the payer's usual count on the other days it pays
SPIKE = 10  # an amount this many times the payer's median payment, ...
SPIKE_OVER_MAX = 2  # ... this many times its largest earlier payment, ...
SPIKE_HISTORY = 3  # ... after at least this many earlier payments
SPIKE_SHARE = 0.5  # ... moving at least this share of the balance
PATTERNS = ("ring", "mule", "drain", "burst", "spike")


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
    # An empty payer and a payment over the balance are features of their own: folded into the share (as a share
    # of 10) they made a small share look like fraud, which is wrong wherever accounts are not as PaySim's
    out["share_of_balance"] = np.where(old > 0, np.minimum(table["amount"] / old.where(old > 0, 1.0), 1.0), 0.0)
    out["empty_before"] = (old == 0).astype(float)
    out["overdrawn"] = ((old > 0) & (table["amount"] > old + 0.01)).astype(float)
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
    return _near(table[who], table["step"], DAY)


def _near(who: pd.Series, step: pd.Series, hours: int) -> np.ndarray:
    """For each row, how many other rows of the same ``who`` have a step within ``hours`` of its own: one sort
    and two binary searches over (who, step) keys, whatever the group sizes."""
    codes = pd.factorize(who)[0].astype(np.int64)
    span = int(step.max()) - int(step.min()) + 2 * hours + 1 if len(step) else 1
    keys = codes * span + (step.to_numpy(dtype=np.int64) - (int(step.min()) if len(step) else 0))
    ordered = np.sort(keys)
    return (
        np.searchsorted(ordered, keys + hours, "right") - np.searchsorted(ordered, keys - hours, "left") - 1
    ).astype(float)


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


# --- pattern rules -----------------------------------------------------------------------------------------


def patterns(table: pd.DataFrame) -> pd.DataFrame:
    """Per transaction of ``table`` (as ``frame`` makes it), which of PATTERNS hold: fixed rules, not learnt."""
    out = pd.DataFrame(index=table.index)
    out["ring"] = _rings(table)
    out["mule"] = _mules(table)
    out["drain"] = _drains(table)
    out["burst"] = _bursts(table)
    out["spike"] = _spikes(table)
    return out[list(PATTERNS)]


def _bursts(table: pd.DataFrame) -> np.ndarray:
    """BURST or more payments by the payer within 12 hours either side, BURST_RATE times its mean count on the
    other days it pays: a payroll run every month is the payer's usual, a spree is not. A payer with no other
    day has no usual to burst out of (its first payroll run)."""
    day = table["step"] // DAY
    per_day = table.groupby([table["payer"], day])["amount"].transform("size").to_numpy(dtype=float)
    total = table.groupby("payer")["amount"].transform("size").to_numpy(dtype=float)
    active = pd.DataFrame({"payer": table["payer"], "day": day}).groupby("payer")["day"].transform("nunique")
    others = active.to_numpy(dtype=float) - 1
    usual = (total - per_day) / np.maximum(others, 1)
    near = _near(table["payer"], table["step"], DAY // 2) + 1  # a spree over midnight is one spree
    return (others > 0) & (near >= BURST) & (near >= BURST_RATE * usual)


def _rings(table: pd.DataFrame) -> np.ndarray:
    """Transfers on a cycle of 3 or 4 accounts whose legs follow each other within RING_HOURS, amounts within
    RING_SPREAD of the first leg's: money sent round to look like trade. Followed leg by leg in time (joins on
    payee = next payer), so the cost grows with the transfers that could continue a leg, not with the cycles
    of the whole graph."""
    legs = pd.DataFrame({"row": np.arange(len(table)), "payer": table["payer"].to_numpy(),
                         "payee": table["payee"].to_numpy(), "step": table["step"].to_numpy(),
                         "amount": table["amount"].to_numpy()})[(table["type"] == "TRANSFER").to_numpy()]  # fmt: skip
    path = legs.rename(columns={"row": "r0", "payer": "start", "payee": "at", "step": "s0", "amount": "a0"})
    path["s"] = path["s0"]
    hit = np.zeros(len(table), dtype=bool)
    for hop in range(1, 4):
        nxt = legs.rename(columns={"row": f"r{hop}", "payer": "at", "payee": f"to{hop}", "step": "s_next"})
        path = path.merge(nxt, on="at")
        near = (path["s_next"] >= path["s"]) & (path["s_next"] <= path["s"] + RING_HOURS)
        path = path[near & ((path["amount"] - path["a0"]).abs() <= RING_SPREAD * path["a0"])]
        path = path.drop(columns=["amount"]).assign(s=path["s_next"]).drop(columns=["s_next"])
        closed = path[path[f"to{hop}"] == path["start"]]
        if hop >= 2:  # a ring of hop + 1 accounts is closed
            for k in range(hop + 1):
                hit[closed[f"r{k}"].to_numpy()] = True
        seen = [path["start"]] + [path[f"to{k}"] for k in range(1, hop)]
        fresh = ~pd.concat([path[f"to{hop}"] == other for other in seen], axis=1).any(axis=1)
        path = (
            path[fresh].rename(columns={f"to{hop}": "at_next"}).drop(columns=["at"]).rename(columns={"at_next": "at"})
        )
        path[f"to{hop}"] = path["at"]
    return hit


def _mules(table: pd.DataFrame) -> np.ndarray:
    """Payments into and out of an account that, within a day, is paid by MULE_PAYERS or more distinct payers
    (transfers) and within two days sends on at least MULE_PASSED of what came in."""
    hit = np.zeros(len(table), dtype=bool)
    incoming = table[(table["type"] == "TRANSFER") & table["payee"].isin(set(table["payer"]))]
    payers = incoming.groupby("payee")["payer"].nunique()
    candidates = set(payers[payers >= MULE_PAYERS].index)
    if not candidates:
        return hit
    position = {label: n for n, label in enumerate(table.index)}
    sending = dict(iter(table[table["payer"].isin(candidates)].groupby("payer")))
    for account, paid in incoming[incoming["payee"].isin(candidates)].groupby("payee"):
        paid = paid.sort_values("step")
        out, steps = sending[account], paid["step"].to_numpy()
        ends = np.searchsorted(steps, steps + DAY, "right")
        for k, first in enumerate(steps.tolist()):
            window = paid.iloc[k : ends[k]]
            if window["payer"].nunique() < MULE_PAYERS:
                continue
            sent = out[(out["step"] >= first) & (out["step"] <= first + 2 * DAY)]
            if sent["amount"].sum() >= MULE_PASSED * window["amount"].sum():
                for label in [*window.index, *sent.index]:
                    hit[position[label]] = True
                break
    return hit


def _drains(table: pd.DataFrame) -> np.ndarray:
    """A transfer that empties the payer's account (not more than the balance), and the payee's cash-outs within
    a day that take out at least MULE_PASSED of it: PaySim's fraud, with the two legs linked."""
    legs = pd.DataFrame({"row": np.arange(len(table)), "payer": table["payer"].to_numpy(),
                         "payee": table["payee"].to_numpy(), "step": table["step"].to_numpy(),
                         "amount": table["amount"].to_numpy(), "type": table["type"].to_numpy()})  # fmt: skip
    old, new = table["payer_old"].to_numpy(), table["payer_new"].to_numpy()
    emptied = legs[(legs["type"] == "TRANSFER").to_numpy() & (old > 0) & (new == 0) & (legs["amount"] <= old + 0.01)]
    cash = legs[legs["type"] == "CASH_OUT"]
    pairs = emptied.merge(cash, left_on="payee", right_on="payer", suffixes=("", "_out"))
    pairs = pairs[(pairs["step_out"] >= pairs["step"]) & (pairs["step_out"] <= pairs["step"] + DAY)]
    taken = pairs.groupby("row")["amount_out"].transform("sum")
    pairs = pairs[taken >= MULE_PASSED * pairs["amount"]]
    hit = np.zeros(len(table), dtype=bool)
    hit[pairs["row"].to_numpy()] = True
    hit[pairs["row_out"].to_numpy()] = True
    return hit


def _spikes(table: pd.DataFrame) -> np.ndarray:
    """An amount SPIKE times the payer's median payment and SPIKE_OVER_MAX times its largest earlier one, moving
    SPIKE_SHARE of the balance or more, after at least SPIKE_HISTORY earlier payments (a monthly rent is as large
    as the last, and leaves most of the balance: no spike)."""
    ordered = table.sort_values(["payer", "step"], kind="stable")
    group = ordered.groupby("payer", sort=False)["amount"]
    before = group.cumcount()
    largest = ordered.assign(top=group.cummax()).groupby("payer", sort=False)["top"].shift(1)
    amount = ordered["amount"]
    spike = (
        (before >= SPIKE_HISTORY)
        & (amount >= SPIKE * group.transform("median"))
        & (amount >= SPIKE_OVER_MAX * largest)
        & (amount >= SPIKE_SHARE * ordered["payer_old"])
    )
    return spike.reindex(table.index).fillna(False).to_numpy(dtype=bool)


# --- the shipped model -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scorer:
    """A fitted model as numbers (standardise, weigh, logistic), read from JSON, and the rules beside it."""

    uses: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    threshold: float  # the alert threshold, chosen on the data the model was fitted on
    source: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, model: Model, threshold: float, source: dict[str, Any]) -> Scorer:
        scaler, regression = model.pipeline[0], model.pipeline[-1]
        return cls(model.uses, scaler.mean_, scaler.scale_, regression.coef_[0], float(regression.intercept_[0]),
                   threshold, source)  # fmt: skip

    @classmethod
    def load(cls, path: Path = MODEL) -> Scorer:
        data = json.loads(path.read_text(encoding="utf-8"))
        arrays = {name: np.array(data[name], dtype=float) for name in ("mean", "scale", "coef")}
        return cls(tuple(data["uses"]), **arrays, intercept=data["intercept"], threshold=data["threshold"],
                   source=data.get("source", {}))  # fmt: skip

    def save(self, path: Path) -> None:
        data = {"uses": list(self.uses), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "coef": self.coef.tolist(), "intercept": self.intercept, "threshold": self.threshold,
                "source": self.source}  # fmt: skip
        path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")

    def probability(self, rows: pd.DataFrame) -> np.ndarray:
        """The model's probability of fraud of each row of ``features``."""
        z = ((rows[list(self.uses)].to_numpy() - self.mean) / self.scale) @ self.coef + self.intercept
        return np.asarray(1.0 / (1.0 + np.exp(-z)))

    def score(self, rows: pd.DataFrame, held: pd.DataFrame) -> np.ndarray:
        """The model's probability, raised to RULE_SCORE where one of ``held`` (``patterns``) holds."""
        return np.maximum(self.probability(rows), np.where(held.any(axis=1), RULE_SCORE, 0.0))


# --- flagging: anomalies and alerts ------------------------------------------------------------------------


@dataclass(frozen=True)
class Flagged:
    anomalies: int  # new anomaly records
    alerts: int  # alerts the pack's rules raised on them
    existing: int  # high-scoring (payer, hour)s flagged by an earlier run


@dataclass
class _Scored:
    """A balance tensor's flagged values, in the shape the trigger rules take (``firing.Written``): no values
    written, only anomalies raised."""

    row: Tensor
    sdef: schemas.SchemaDef
    times: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    cells: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    numbers: np.ndarray = field(default_factory=lambda: np.empty(0))
    merged: dict[int, np.ndarray] = field(default_factory=dict)


def flag(session: Session, transactions: Sequence[Transaction], scorer: Scorer | None = None) -> Flagged:
    """Score ``transactions`` (together: velocity, fan-out and rings are read across them) and flag those at or
    over the threshold: one anomaly per payer and hour (its highest), on the payer's balance ``new`` at that
    hour, with a reason naming the patterns; the anomaly rules on ``balance``/``new`` fire on them (the finance
    pack's raise alerts). Idempotent: a (payer, hour) flagged before is not flagged again."""
    if not transactions:
        return Flagged(0, 0, 0)
    scorer = scorer or Scorer.load()
    table = frame(transactions)
    rows, held = features(table), patterns(table)
    scores = scorer.score(rows, held)
    top: dict[tuple[str, int], int] = {}
    for i in np.flatnonzero(scores >= scorer.threshold).tolist():
        key = (table.at[i, "payer"], int(table.at[i, "step"]))
        if key not in top or scores[i] > scores[top[key]]:
            top[key] = i
    tensor_of = _balance_tensors(session, sorted({payer for payer, _ in top}))
    top = {key: i for key, i in top.items() if key[0] in tensor_of}
    done = anomaly_repo.flagged_times(session, DETECTOR, sorted(set(tensor_of.values())))
    new = {key: i for key, i in top.items() if (tensor_of[key[0]], key[1]) not in done}
    sdef = schemas.get_def(session, finance.BALANCE.name)
    cell = sdef.axes[0].labels.index("new")
    before = alert_repo.count(session)
    writes: dict[uuid.UUID, _Scored] = {}
    flagged = []
    now = utcnow()
    for (payer, step), i in sorted(new.items(), key=lambda item: item[1]):
        tensor_id = tensor_of[payer]
        if tensor_id not in writes:
            row = session.get(Tensor, tensor_id)
            assert row is not None
            writes[tensor_id] = _Scored(row, schemas.get_def(session, row.schema_name, row.schema_version))
        write = writes[tensor_id]
        flagged.append({
            "tensor_id": tensor_id, "entity_id": write.row.entity_id, "schema_name": sdef.name, "label": "new",
            "cell": cell, "time_index": step, "at": anomalies.tensor_grid(write.row, write.sdef).timestamp(step),
            "value": float(table.at[i, "payer_new"]), "score": float(scores[i]), "detector": DETECTOR,
            "reason": reason(table.loc[i], rows.loc[i], held.loc[i], float(scores[i])), "created_at": now,
        })  # fmt: skip
    anomaly_repo.add(session, flagged)
    firing.on_values(session, list(writes.values()), flagged)
    return Flagged(len(flagged), alert_repo.count(session) - before, len(top) - len(new))


def _balance_tensors(session: Session, payers: list[str]) -> dict[str, uuid.UUID]:
    """The balance tensor of each payer account that has one."""
    out: dict[str, uuid.UUID] = {}
    for start in range(0, len(payers), finance.CHUNK):
        ids = entity_repo.ids_by_external_id(session, finance.ACCOUNT, payers[start : start + finance.CHUNK])
        tensors = tensor_repo.ids_of_entities(session, finance.BALANCE.name, list(ids.values()))
        out.update({name: tensors[entity] for name, entity in ids.items() if entity in tensors})
    return out


def reason(transaction: pd.Series, row: pd.Series, held: pd.Series, score: float) -> str:
    """Why a transaction scored high, in words: what it did to the payer ({entity}) and the patterns it is in.
    Other accounts are not named: a reader may see this payer and not them."""
    kind, amount = str(transaction["type"]).replace("_", "-").lower(), float(transaction["amount"])
    old, new = float(transaction["payer_old"]), float(transaction["payer_new"])
    said = [f"{kind} of {amount:,.2f}"]
    said.append(
        f"drained {{entity}} ({old:,.2f} -> 0)" if row["drained"] else f"by {{entity}} ({old:,.2f} -> {new:,.2f})"
    )
    notes = []
    if held["ring"]:
        notes.append("on a ring of transfers that comes back to its start within 3 days")
    if held["mule"]:
        notes.append(f"through a pass-through account ({MULE_PAYERS} or more payers in a day, sent on within 2 days)")
    if held["drain"]:
        notes.append("the money was cashed out within a day")
    if held["burst"]:
        notes.append(f"one of {int(row['payer_velocity']) + 1} payments within a day, far over the payer's usual")
    if held["spike"]:
        notes.append(f"{np.exp(row['amount_vs_history']):.0f}x the payer's median payment, over any before")
    text = " ".join(said) + (": " + "; ".join(notes) if notes else "")
    return f"{text} (fraud score {score:.2f})"[: anomalies.MAX_REASON]
