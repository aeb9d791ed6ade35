"""The detector interface. Every detector — DUST's own and a plugin's — is a class with this shape.

A detector scores one series (one label of one tensor) value by value, from state it keeps and updates, never
from the series' whole history: ``update`` is called once per new value, in time order, and must not look ahead.
The state round-trips through JSON (``state()`` / ``restore()``), so scoring resumes after a restart exactly
where it stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self


@dataclass(frozen=True)
class Score:
    """How anomalous one value is: ``score`` in [0, 1] (0 normal, 1 certainly anomalous) and, when it is worth
    saying, why. ``reason`` may name ``{label}`` and ``{entity}``, which the caller fills in: e.g.
    ``"{label} 148 is 6.2 MADs above {entity}'s last 14 values"``."""

    score: float
    reason: str | None = None


class Detector(Protocol):
    """A streaming detector of one univariate series."""

    name: ClassVar[str]  # how settings and the API name it: "mad", "cusum", ...
    description: ClassVar[str]  # one line, shown by `dust plugins list` and GET /plugins

    def __init__(self, **settings: Any) -> None: ...

    def update(self, time: float, value: float) -> Score:
        """Score ``value`` (at ``time``, seconds since the epoch; NaN values are gaps: score 0, state kept)
        from the values before it, then take it into the state."""
        ...

    def state(self) -> dict[str, Any]:
        """What ``restore`` needs to carry on, as plain JSON types."""
        ...

    @classmethod
    def restore(cls, state: dict[str, Any], **settings: Any) -> Self:
        """A detector that carries on from ``state`` (made by ``state()`` of one with the same settings)."""
        ...
