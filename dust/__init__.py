"""DUST: entities with GUIDs, their data as tensors over time, and the weighted relations between them.

import dust
db = dust.open("sqlite:///./dust.db")
jane = db.create_entity(kind="patient", name="Jane Doe")
"""

from __future__ import annotations

__version__ = "0.1.0"

from dust.core.config import Settings
from dust.core.errors import Conflict, DustError, InvalidInput, NotFound, OutOfRange, TooLarge
from dust.embedded import Dust, open
from dust.engine.views import TensorView

__all__ = [
    "Conflict",
    "Dust",
    "DustError",
    "InvalidInput",
    "NotFound",
    "OutOfRange",
    "Settings",
    "TensorView",
    "TooLarge",
    "__version__",
    "open",
]
