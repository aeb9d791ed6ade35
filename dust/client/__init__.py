"""A served DUST from Python, with the face of the embedded API: ``dust.connect(url, …)`` (docs/python.md)."""

from __future__ import annotations

from dust.client.client import AsyncClient, Client, connect, connect_async

__all__ = ["AsyncClient", "Client", "connect", "connect_async"]
