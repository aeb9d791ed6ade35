"""A relational detector: an entity far from the entities it is related to, at the same time.

At one time step, each entity's value is compared with its neighbours' values at that step: the robust z-score
``(value - median) / scale`` over the neighbours (``robust``: MAD in standard-deviation units), scored as the
univariate detectors score theirs (``flag_at`` MADs score 0.5). Fewer than ``min_neighbours`` neighbours with
a value: the entity is not judged, since a median of one or two says nothing about what is usual.

Who the neighbours are is the caller's: the entities related to it by a relation type, or those sharing a
related entity over it (the other patients of a patient's doctor).
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Mapping
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import numpy as np

from dust.anomalies.detectors import THRESHOLD, direction, number, robust, squash

K = TypeVar("K", bound=Hashable)
MAX_SHOWN = 1e6  # MADs a reason shows at most: a change among neighbours that all share one value is "huge"


@dataclass(frozen=True)
class Judged:
    """One entity's value against its ``neighbours`` (how many had a value): ``score`` in [0, 1], the signed
    robust ``z``, and, when flagged, why (naming ``{label}``, ``{entity}`` and ``{neighbours}``, which the caller
    fills in with what the neighbours are: "the 6 patients {entity} is related to by treats")."""

    score: float
    z: float
    neighbours: int
    reason: str | None = None


class Relational:
    """Values far from the median of the related entities' values at the same time, in their MADs."""

    name: ClassVar[str] = "relational"
    description: ClassVar[str] = "An entity far from the entities it is related to, at the same time (robust z)."

    def __init__(self, min_neighbours: int = 3, flag_at: float = 6.0) -> None:
        if min_neighbours < 3 or flag_at <= 0:
            raise ValueError("needs min_neighbours ≥ 3 and flag_at > 0")
        self.min_neighbours, self.flag_at = min_neighbours, flag_at

    def judge(self, value: float, neighbours: np.ndarray) -> Judged | None:
        """``value`` against the neighbours' values (NaN: none); None when too few have one."""
        known = neighbours[~np.isnan(neighbours)]
        if np.isnan(value) or known.size < self.min_neighbours:
            return None
        median, scale = robust(known)
        z = max(-MAX_SHOWN, min(MAX_SHOWN, (value - median) / scale))
        score = squash(abs(z), self.flag_at)
        reason = None
        if score >= THRESHOLD:
            reason = f"{{label}} {number(value)} is {abs(z):.1f} MADs {direction(z)} {{neighbours}}"
        return Judged(score, z, int(known.size), reason)

    def judge_all(self, values: Mapping[K, float], neighbours: Mapping[K, Collection[K]]) -> dict[K, Judged]:
        """Each entity of ``values`` with enough neighbours (``neighbours[entity]``, itself never counted) that
        have a value in ``values``."""
        judged: dict[K, Judged] = {}
        for entity, value in values.items():
            around = [values[other] for other in neighbours.get(entity, ()) if other != entity and other in values]
            found = self.judge(value, np.array(around, dtype=np.float64))
            if found is not None:
                judged[entity] = found
        return judged
