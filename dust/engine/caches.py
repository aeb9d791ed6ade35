"""Copies shared by the requests of one app, and by every process of a deployment, that are never stale.

Each kind of copy has an epoch in the database (``cache_epochs``). A request reads all epochs in one query, the
first time it needs one, and uses a copy only if it was made under the current epoch of its kind. Every change
that would make a copy wrong — a logout, a role change, a disabled user, a revoked key, a schema deleted, a
relation added — raises that epoch in its own transaction. So a token revoked through one worker is refused by the
very next request on every worker, and between such changes a request checks its credential with that one query
instead of reading the user and the revocation list.

Two families:
- In this process only (``get``/``put``): signed-in credentials, schema definitions, the trigger index. They are
  tiny and read by nearly every request: a Redis round trip would cost more than reading them again.
- Shared (``find``/``keep``): the master tensor's relation rows (``RELATIONS``), cross-entity aggregates
  (``AGGREGATES``) and the stored blocks of short tensor reads (``BLOCKS``), costly to make and the same for every
  replica. They live in ``dust.storage.cache_store``: this process's memory and, with ``DUST_REDIS_URL``, Redis.
  Their keys are versioned: the database's identity, the kind's epoch (or a version the caller read from the
  data) and what was asked. An entry made before a change is never looked up after it, on any replica, with no
  message to deliver and no race to lose; it ages out.

Why no replica serves a copy older than an acknowledged write: the write's transaction raises the epoch and
commits with it, before it is acknowledged; a request that starts after reads the new epoch, so it looks only for
keys made under it, and such a key is only ever written by a transaction that read that epoch first and its data
after (so saw the write). A transaction that changed a kind neither uses nor keeps copies of it: it may roll back.

The database's identity (``epochs.IDENTITY``) guards against epochs going back: a restored or re-imported
database counts them from lower values again, and its identity is renewed (``forget_all``), so no key of its
earlier life can match. Two databases on one Redis have different identities.

Sessions without caches (the CLI, plain scripts) read everything from the database.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Callable, Hashable, Mapping
from typing import Any, TypeVar

from cachetools import LRUCache
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from dust.core.config import Settings
from dust.storage.cache_store import Store
from dust.storage.repositories import Copies
from dust.storage.repositories import epochs as repo

T = TypeVar("T")
CREDENTIALS = "credentials"
SCHEMAS = "schemas"
TRIGGERS = "triggers"  # the trigger rules, indexed for the write path (dust.engine.triggers)
RELATIONS = "relations"  # shared: the relation rows the master tensor is made of (dust.engine.relations)
AGGREGATES = "aggregates"  # shared: cross-entity aggregates, versioned by their data (dust.engine.insights)
BLOCKS = "blocks"  # shared: the stored blocks of short tensor reads, versioned by the tensor's row (engine.tensors)
SHARED = (RELATIONS, AGGREGATES, BLOCKS)
FORMAT = "v1"  # in every shared key: a DUST that packs entries otherwise names another
MIB = 1024 * 1024
_CACHES = "dust.caches"  # session.info: the app's Caches
_EPOCHS = "dust.epochs"  # session.info: the epochs as this transaction read them
_CHANGED = "dust.changed."  # session.info, + kind: this transaction changed that kind
_TO_RAISE = "dust.to_raise"  # session.info: the kinds whose epochs the transaction raises as it commits


class Caches:
    """One app's copies: ``get``/``put`` in this process, ``find``/``keep`` shared (see the module's docstring).
    ``lookups(kind, hit)`` is told of every ``get`` and ``find`` (the app's metrics count them)."""

    def __init__(
        self,
        size: int = 10_000,
        lookups: Callable[[str, bool], None] | None = None,
        store: Store | None = None,
    ) -> None:
        self._copies: dict[str, LRUCache[Hashable, tuple[tuple[int, int], Any]]] = {
            CREDENTIALS: LRUCache(maxsize=size),
            SCHEMAS: LRUCache(maxsize=size),
            TRIGGERS: LRUCache(maxsize=1),
        }
        self._lock = threading.Lock()  # LRUCache reorders itself on every read: not safe across threads
        self._lookups = lookups
        self.store = store if store is not None else Store()

    def get(self, session: Session, kind: str, key: Hashable) -> Any | None:
        """The copy of ``key``, if made under the current epoch. Call it before reading what a ``put`` would
        keep: it reads the epoch first, so a change committed meanwhile leaves that copy already stale."""
        current = under(session, kind)
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
        made_under = under(session, kind)
        with self._lock:
            self._copies[kind][key] = (made_under, value)

    def find(self, session: Session, kind: str, key: Hashable, decode: Callable[[bytes], T]) -> T | None:
        """The shared entry of ``key`` (made of str, int, float, None and tuples of them) under the current epoch
        of ``kind``, or None. Call it before reading what ``keep`` would keep, as ``get``. ``decode``: an entry
        from Redis, as bytes, back to the value."""
        name = self._name(session, kind, key)
        if name is None:
            return None
        found = self.store.get(kind, name, decode)
        if self._lookups is not None:
            self._lookups(kind, found is not None)
        return found

    def keep(
        self, session: Session, kind: str, key: Hashable, value: T, encode: Callable[[T], bytes], size: int
    ) -> None:
        """Share ``value``, made from what this transaction read after ``find``; ``size``: about its bytes in
        memory; ``encode``: the bytes Redis keeps."""
        name = self._name(session, kind, key)
        if name is not None:
            self.store.put(kind, name, value, encode, size)

    def _name(self, session: Session, kind: str, key: Hashable) -> str | None:
        """The store's key: the database's identity, the kind, its epoch, and a digest of ``key``. None if this
        transaction changed ``kind``, or the database has no identity yet (nothing to tell its entries apart)."""
        identity, current = under(session, kind)
        if session.info.get(_CHANGED + kind) or not identity:
            return None
        digest = hashlib.blake2b(repr(key).encode(), digest_size=16).hexdigest()
        return f"dust:cache:{FORMAT}:{identity:x}:{kind}:{current}:{digest}"


def for_settings(
    settings: Settings,
    lookups: Callable[[str, bool], None] | None = None,
    errors: Callable[[str], None] | None = None,
) -> Caches:
    """An app's caches as ``settings`` say: shared through Redis with ``DUST_REDIS_URL`` (unless
    ``DUST_CACHE_TTL_SECONDS`` is 0), else in this process. ``errors(kind)`` counts failed Redis calls."""
    store = Store(
        local_bytes=settings.cache_mb * MIB,
        redis_url=settings.redis_url if settings.cache_ttl_seconds else None,
        ttl_seconds=settings.cache_ttl_seconds,
        entry_bytes=settings.cache_entry_mb * MIB,
        errors=errors,
    )
    return Caches(lookups=lookups, store=store)


def attach(session: Session, caches: Caches) -> None:
    session.info[_CACHES] = caches


def of(session: Session) -> Caches | None:
    return session.info.get(_CACHES)


def epoch(session: Session, kind: str) -> int:
    """The epoch of ``kind`` as this transaction first read it (all kinds in one query, once per transaction)."""
    epochs: Mapping[str, int] | None = session.info.get(_EPOCHS)
    if epochs is None:
        epochs = session.info[_EPOCHS] = repo.read(session)
    return epochs.get(kind, 0)


def read_along(session: Session, copies: Copies[Any], key: uuid.UUID) -> None:
    """Read the epochs and, in the same statement, the row ``copies`` gives for ``key`` (``Copies.with_epochs``): as
    the transaction's first read, it spares the query that ``epoch`` would run."""
    if _EPOCHS not in session.info:
        session.info[_EPOCHS] = copies.with_epochs(session, key)


def under(session: Session, kind: str) -> tuple[int, int]:
    """(the database's identity, the epoch of ``kind``): what a copy is made under."""
    return epoch(session, repo.IDENTITY), epoch(session, kind)


def changed(session: Session, kind: str) -> None:
    """Copies of ``kind`` made before this transaction commits are no longer to be used, in any process. The
    epoch is raised once, as the transaction's last statement (``_raise_epochs``), to cover every change it makes."""
    if not session.info.get(_CHANGED + kind):
        session.info[_CHANGED + kind] = True
        session.info.setdefault(_TO_RAISE, set()).add(kind)


@event.listens_for(Session, "before_commit")
def _raise_epochs(session: Session) -> None:
    """Raise the epochs of what the committing transaction changed, last and in name order. On PostgreSQL raising
    one locks its row until commit: raised at the change, a long transaction (an import) would hold every other
    writer of that kind for its whole length, and two that each waited on the other's row would deadlock. Raised
    in the same transaction as the change, so no process can read the new epoch and still see the old data."""
    kinds = None if session.in_nested_transaction() else session.info.pop(_TO_RAISE, None)
    if not kinds:
        return
    for kind in sorted(kinds):
        repo.bump(session, kind)
    read: dict[str, int] | None = session.info.get(_EPOCHS)
    if read is None or not read.get(repo.IDENTITY):  # a new or emptied database: its first change names it
        repo.ensure_identity(session)


def forget_all(session: Session) -> None:
    """Every copy of every kind made before this transaction commits is no longer to be used, in any process: the
    database's contents were replaced (a restore, an import), and its epochs may go back."""
    repo.renew_identity(session)
    for kind in (CREDENTIALS, SCHEMAS, TRIGGERS, *SHARED):
        session.info[_CHANGED + kind] = True


@event.listens_for(Session, "after_transaction_end")
def _forget_epochs(session: Session, transaction: SessionTransaction) -> None:
    """The next transaction of the session reads the epochs afresh."""
    if transaction.parent is None:
        for key in [k for k in session.info if k in (_EPOCHS, _TO_RAISE) or k.startswith(_CHANGED)]:
            del session.info[key]
