"""Finance: customers, accounts and merchants; payments as ``pays`` relations and an hourly ``balance`` per account.

The mapping (used by ``dust import paysim``, see docs/finance.md):

- an ``account`` entity per customer account (PaySim's ``C…`` names, the external id), a ``merchant`` entity per
  merchant (``M…``). PaySim gives one account per customer and no customer of its own, so its import makes no
  ``customer`` entities; the kind is here for sources that tell customers from their accounts (``holds``).
- each transaction is a ``pays`` relation from the paying account to the payee: weight = amount, valid from the
  transaction's hour; the relation's attributes keep the transaction (type, amount, step, balances, label).
- each account's ``balance`` tensor holds, per hour, its balance before the hour's first transaction (``old``)
  and after its last (``new``), as the source reports them; merchants' balances are not reported by PaySim.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from dust.engine import kinds, schemas
from dust.engine.kinds import KindPolicy
from dust.engine.schemas import SchemaCreate

CUSTOMER, ACCOUNT, MERCHANT = "customer", "account", "merchant"
PAYS, HOLDS = "pays", "holds"
# Hour 0 of the simulated month: PaySim's step n is the hour starting at ORIGIN + n hours (step counts from 1).
ORIGIN = datetime(2024, 1, 1, tzinfo=UTC)
BALANCE = SchemaCreate.model_validate(
    {
        "name": "balance",
        "description": "An account's balance in the hour: before its first transaction (old), after its last (new).",
        "axes": [{"name": "measure", "labels": ["old", "new"]}],
        "time": {"unit": "hour", "step": 1, "origin": ORIGIN.isoformat()},
    }
)
POLICIES = {
    CUSTOMER: KindPolicy(description="A person or firm; holds accounts."),
    ACCOUNT: KindPolicy(
        description="A customer's account; pays other accounts and merchants. External id: the source's account name."
    ),
    MERCHANT: KindPolicy(description="Is paid by accounts; its balance is not known.", public=["name"]),
}


def prepare(session: Session) -> None:
    """The balance schema and the kinds' field policies (a schema already there is kept)."""
    if schemas.repo.latest(session, BALANCE.name) is None:
        schemas.create(session, BALANCE)
    for kind, policy in POLICIES.items():
        kinds.put(session, kind, policy)


@dataclass(frozen=True)
class Transaction:
    """One PaySim row: who paid whom how much at which hour, the balances around it, and its labels."""

    step: int
    type: str
    amount: float
    payer: str
    payer_old: float
    payer_new: float
    payee: str
    payee_old: float
    payee_new: float
    fraud: bool
    flagged: bool
    where: str

    def attributes(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "type": self.type,
            "amount": self.amount,
            "old_balance_payer": self.payer_old,
            "new_balance_payer": self.payer_new,
            "old_balance_payee": self.payee_old,
            "new_balance_payee": self.payee_new,
            "is_fraud": self.fraud,
            "flagged_fraud": self.flagged,
        }
