"""The shared caches' store: entries in this process (an LRU bounded in bytes) and in a real Redis, shared by
stores that stand for replicas; a Redis that fails is done without. Keys here carry a prefix of the test's own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import numpy as np
import pytest
import redis

from dust.storage.cache_store import Store, pack, unpack

REDIS_URL = "redis://127.0.0.1:6379/7"  # a database of its own; every key also under the test's prefix
NOWHERE = "redis://127.0.0.1:9/0"  # the discard port: nothing answers Redis there


def text(raw: bytes) -> str:
    return raw.decode()


def encode(value: str) -> bytes:
    return value.encode()


@pytest.fixture
def prefix() -> Iterator[str]:
    name = f"test:cache_store:{uuid.uuid4().hex}:"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{name}*"):
        client.delete(key)
    client.close()


def test_an_entry_is_kept_in_memory_and_the_least_recent_go_beyond_the_bytes_allowed() -> None:
    store = Store(local_bytes=1000)
    assert store.get("k", "a", text) is None
    store.put("k", "a", "A", encode, size=400)
    store.put("k", "b", "B", encode, size=400)
    assert store.get("k", "a", text) == "A"  # now the most recent
    store.put("k", "c", "C", encode, size=400)  # 1,200 bytes: the least recent (b) goes
    assert [store.get("k", key, text) for key in "abc"] == ["A", None, "C"]
    store.put("k", "huge", "H", encode, size=5000)  # more than all allowed: not kept
    assert store.get("k", "huge", text) is None and store.get("k", "c", text) == "C"


def test_replicas_share_entries_through_redis_each_with_a_ttl(prefix: str) -> None:
    a, b = (Store(redis_url=REDIS_URL, ttl_seconds=120) for _ in range(2))
    a.put("k", prefix + "x", "made on A", encode, size=100)
    assert b.get("k", prefix + "x", text) == "made on A"  # B never made it
    client = redis.Redis.from_url(REDIS_URL)
    assert 0 < client.ttl(prefix + "x") <= 120  # Redis forgets it by itself
    client.close()


def test_on_an_event_loop_the_store_never_calls_redis_and_keeps_what_it_makes_here(prefix: str) -> None:
    """A round trip to Redis on the loop would stall every request it serves (a small read runs there)."""
    a, b = Store(redis_url=REDIS_URL), Store(redis_url=REDIS_URL)
    a.put("k", prefix + "shared", "made off the loop", encode, size=100)

    async def on_the_loop() -> str | None:
        b.put("k", prefix + "local", "made on the loop", encode, size=100)
        return b.get("k", prefix + "shared", text)

    assert asyncio.run(on_the_loop()) is None, "not looked up in Redis"
    assert b.get("k", prefix + "shared", text) == "made off the loop"  # off the loop, it is
    assert b.get("k", prefix + "local", text) == "made on the loop"  # kept here
    assert Store(redis_url=REDIS_URL).get("k", prefix + "local", text) is None, "not sent to Redis"


def test_an_entry_over_the_largest_size_is_neither_kept_nor_sent(prefix: str) -> None:
    store = Store(redis_url=REDIS_URL, entry_bytes=1000)
    store.put("k", prefix + "big", "x" * 2000, encode, size=2000)
    store.put("k", prefix + "wide", "x" * 2000, encode, size=10)  # small in memory, too big as bytes
    other = Store(redis_url=REDIS_URL)
    assert other.get("k", prefix + "big", text) is None and other.get("k", prefix + "wide", text) is None
    assert store.get("k", prefix + "wide", text) == "x" * 2000  # the local copy is within bounds


def test_an_unreachable_redis_is_done_without_and_counted_then_left_alone_a_while() -> None:
    errors: list[str] = []
    store = Store(redis_url=NOWHERE, errors=errors.append)
    assert store.get("relations", "x", text) is None
    store.put("relations", "x", "kept here", encode, size=10)
    assert errors == ["relations"]  # the put came while it rests: not tried again
    assert store.get("relations", "x", text) == "kept here"


def test_a_damaged_entry_in_redis_reads_as_absent_and_is_counted(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    client.set(prefix + "bad", b"\x01\x00")
    client.close()
    errors: list[str] = []
    assert Store(redis_url=REDIS_URL, errors=errors.append).get("k", prefix + "bad", unpack) is None
    assert errors == ["k"]


def test_packed_arrays_come_back_equal_and_only_numbers_are_packed() -> None:
    arrays = {"ids": np.arange(12, dtype=np.uint8).reshape(3, 4), "w": np.array([0.5, np.nan]), "e": np.zeros(0)}
    header, back = unpack(pack({"types": ["knows"]}, arrays))
    assert header == {"types": ["knows"]}
    for name, array in arrays.items():
        np.testing.assert_array_equal(back[name], array)
        assert back[name].dtype == array.dtype
    with pytest.raises(TypeError):
        pack({}, {"o": np.array([object()])})
    raw = pack({}, {"w": np.ones(4)})
    with pytest.raises(ValueError):
        unpack(raw[:-8])  # cut short
    with pytest.raises(ValueError):
        unpack(raw.replace(b"<f8", b"|O8"))  # an object array would be unpickled: refused
