"""Helpers of the storage tests."""

from __future__ import annotations

import asyncio
import threading


async def ticks_until(done: threading.Event) -> int:
    """How often a coroutine on this loop got to run (every 10 ms) until ``done``: that the loop stayed free."""
    ticks = 0
    while not done.is_set():
        ticks += 1
        await asyncio.sleep(0.01)
    return ticks
