"""DUST: entities with GUIDs, their data as tensors over time, and the weighted relations between them.

import dust
db = dust.open("sqlite:///./dust.db")
jane = db.create_entity(kind="patient", name="Jane Doe")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Where each public name lives. They are imported on first use (PEP 562), not with the package: the embedded API
# and the client bring in nearly all of DUST (1.3 s), which a CLI command that needs none of it paid at each start.
_PUBLIC = {
    "Settings": "dust.core.config",
    **dict.fromkeys(
        ["Conflict", "DustError", "Forbidden", "InvalidInput", "NotFound", "OutOfRange", "TooLarge", "Unauthorized"],
        "dust.core.errors",
    ),
    "Dust": "dust.embedded",
    "open": "dust.embedded",
    "TensorView": "dust.engine.views",
    **dict.fromkeys(["AsyncClient", "Client", "connect", "connect_async"], "dust.client"),
}
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

if TYPE_CHECKING:
    from dust.client import AsyncClient, Client, connect, connect_async
    from dust.core.config import Settings
    from dust.core.errors import (
        Conflict,
        DustError,
        Forbidden,
        InvalidInput,
        NotFound,
        OutOfRange,
        TooLarge,
        Unauthorized,
    )
    from dust.embedded import Dust, open
    from dust.engine.views import TensorView


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'dust' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
