"""The relational detector (dust.anomalies.relational): an entity against its neighbours at the same time."""

from __future__ import annotations

import numpy as np
import pytest

from dust.anomalies.relational import Relational

TEMPERATURES = {"a": 37.0, "b": 37.2, "c": 36.9, "d": 37.1, "e": 39.8}


def everyone_else(values: dict[str, float]) -> dict[str, set[str]]:
    return {entity: set(values) - {entity} for entity in values}


def test_the_entity_far_from_its_neighbours_is_flagged_and_the_others_not() -> None:
    judged = Relational().judge_all(TEMPERATURES, everyone_else(TEMPERATURES))
    assert sorted(e for e, j in judged.items() if j.score >= 0.5) == ["e"]
    assert judged["e"].reason is not None
    assert judged["e"].reason.startswith("{label} 39.8 is ")
    assert judged["e"].reason.endswith(" MADs above {neighbours}")
    assert judged["e"].neighbours == 4


@pytest.mark.parametrize(
    ("neighbours", "judged"),
    [([], False), ([37.0], False), ([37.0, 37.1], False), ([37.0, 37.1, np.nan], False), ([37.0, 37.1, 36.9], True)],
)
def test_fewer_than_three_neighbours_with_a_value_is_not_judged(neighbours: list[float], judged: bool) -> None:
    assert (Relational().judge(39.8, np.array(neighbours)) is not None) is judged


def test_an_entity_with_too_few_neighbours_is_left_out_of_the_judged() -> None:
    around = {"a": {"b", "c"}, "b": {"a", "c", "d"}}
    assert set(Relational().judge_all(TEMPERATURES, around)) == {"b"}


def test_neighbours_that_all_share_one_value_make_any_difference_huge_not_a_crash() -> None:
    judged = Relational().judge(38.0, np.array([37.0, 37.0, 37.0]))
    assert judged is not None and judged.score == 1.0 and np.isfinite(judged.z)


@pytest.mark.parametrize("settings", [{"min_neighbours": 2}, {"flag_at": 0.0}])
def test_bad_settings_are_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="needs min_neighbours ≥ 3 and flag_at > 0"):
        Relational(**settings)  # type: ignore[arg-type]
