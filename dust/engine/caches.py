"""Copies shared by the requests of one app — signed-in credentials, schema definitions — that are never stale.

Each kind of copy has an epoch in the database (``cache_epochs``). A request reads all epochs in one query, the
first time it needs one, and uses a copy only if it was made under the current epoch of its kind. Every change
that would make a copy wrong — a logout, a role change, a disabled user, a revoked key, a schema deleted —
raises that epoch in its own transaction. So a token revoked through one worker is refused by the very next
request on every worker, and between such changes a request checks its credential with that one query instead
of reading the user and the revocation list.

Sessions without caches (embedded use, the CLI) read everything from the database, as before.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any

from cachetools import LRUCache
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from dust.storage.repositories import epochs as repo

CREDENTIALS = "credentials"
SCHEMAS = "schemas"
TRIGGERS = "triggers"  # the trigger rules, indexed for the write path (dust.engine.triggers)
_CACHES = "dust.caches"  # session.info: the app's Caches
_EPOCHS = "dust.epochs"  # session.info: the epochs as this transaction read them
_CHANGED = "dust.changed."  # session.info, + kind: this transaction raised that epoch


class Caches:
    """One app's copies: ``get(kind, key, session)`` and ``put(kind, key, value, session)``. ``lookups(kind,
    hit)`` is told of every ``get`` (the app's metrics count them)."""

    def __init__(self, size: int = 10_000, lookups: Callable[[str, bool], None] | None = None) -> None:
        self._copies: dict[str, LRUCache[Hashable, tuple[int, Any]]] = {
            CREDENTIALS: LRUCache(maxsize=size),
            SCHEMAS: LRUCache(maxsize=size),
            TRIGGERS: LRUCache(maxsize=1),
        }
        self._lock = threading.Lock()  # LRUCache reorders itself on every read: not safe across threads
        self._lookups = lookups

    def get(self, session: Session, kind: str, key: Hashable) -> Any | None:
        """The copy of ``key``, if made under the current epoch. Call it before reading what a ``put`` would
        keep: it reads the epoch first, so a change committed meanwhile leaves that copy already stale."""
        current = epoch(session, kind)
        if session.info.get(_CHANGED + kind):  # this transaction changed what the copy was made of
            return None
        with self._lock:
            found = self._copies[kind].get(key)
        hit = found is not None and found[0] == current
        if self._lookups is not None:
            self._lookups(kind, hit)
        return found[1] if hit and found is not None else None

    def put(self, session: Session, kind: str, key: Hashable, value: Any) -> None:
        """Keep ``value``, made from what this transaction read, under the epoch it read first. Not from a
        transaction that changed ``kind``: it may yet roll back, and its copy would look current."""
        if session.info.get(_CHANGED + kind):
            return
        made_under = epoch(session, kind)
        with self._lock:
            self._copies[kind][key] = (made_under, value)


def attach(session: Session, caches: Caches) -> None:
    session.info[_CACHES] = caches


def of(session: Session) -> Caches | None:
    return session.info.get(_CACHES)


def epoch(session: Session, kind: str) -> int:
    """The epoch of ``kind`` as this transaction first read it (all kinds in one query, once per transaction)."""
    epochs: dict[str, int] | None = session.info.get(_EPOCHS)
    if epochs is None:
        epochs = session.info[_EPOCHS] = repo.read(session)
    return epochs.get(kind, 0)


def changed(session: Session, kind: str) -> None:
    """Copies of ``kind`` made before this transaction commits are no longer to be used, in any process. Once
    per transaction: one raise covers every change it makes."""
    if not session.info.get(_CHANGED + kind):
        repo.bump(session, kind)
        session.info[_CHANGED + kind] = True


@event.listens_for(Session, "after_transaction_end")
def _forget_epochs(session: Session, transaction: SessionTransaction) -> None:
    """The next transaction of the session reads the epochs afresh."""
    if transaction.parent is None:
        for key in [k for k in session.info if k == _EPOCHS or k.startswith(_CHANGED)]:
            del session.info[key]
