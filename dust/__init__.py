"""DUST: entities with GUIDs, their data as tensors over time, and the weighted relations between them.

import dust
db = dust.open("sqlite:///./dust.db")
jane = db.create_entity(kind="patient", name="Jane Doe")
"""

from __future__ import annotations

__version__ = "0.1.0"

from dust.core.config import Settings
from dust.core.errors import Conflict, DustError, Forbidden, InvalidInput, NotFound, OutOfRange, TooLarge, Unauthorized
from dust.embedded import Dust, open
from dust.engine.views import TensorView

from dust.client import AsyncClient, Client, connect, connect_async  # isort: skip (it builds on dust.embedded)

__all__ = [
    "AsyncClient",
    "Client",
    "Conflict",
    "Dust",
    "DustError",
    "Forbidden",
    "InvalidInput",
    "NotFound",
    "OutOfRange",
    "Settings",
    "TensorView",
    "TooLarge",
    "Unauthorized",
    "__version__",
    "connect",
    "connect_async",
    "open",
]
