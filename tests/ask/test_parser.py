"""The parser on a vocabulary made here (no database): times, intents, cohorts, relations, and a schema, kind and
relation type it has never seen, understood without code."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dust.ask.parser import parse
from dust.ask.query import MAX_QUESTION
from dust.ask.vocabulary import Vocabulary
from dust.core.errors import InvalidInput
from dust.engine.schemas import SchemaCreate

VITALS = SchemaCreate.model_validate(
    {
        "name": "vitals",
        "axes": [
            {
                "name": "metric",
                "labels": ["heart_rate", "systolic_bp", "diastolic_bp", "temperature", "spo2"],
                "units": {"heart_rate": "/min", "systolic_bp": "mm[Hg]", "temperature": "Cel", "spo2": "%"},
            }
        ],
    }
)
PEOPLE = [{"gender": "F", "birth_date": "1950-01-01"}, {"gender": "M", "birth_date": "1990-01-01"}]
STAFF = [{"role": "doctor"}, {"role": "nurse"}]


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return Vocabulary.build(
        [VITALS],
        ["patient", "practitioner"],
        {"patient": PEOPLE, "practitioner": STAFF},
        ["treats"],
    )


def asked(question: str, vocab: Vocabulary) -> dict[str, Any]:
    return parse(question, vocab).dumped()


@pytest.mark.parametrize(
    ("question", "when"),
    [
        ("Jane's temperature on day 3", {"at": 3}),
        ("jane temp d3", {"at": 3}),
        ("jane temperature on the third day", {"at": 3}),
        ("jane temperature on 2024-03-01", {"at": "2024-03-01"}),
        ("jane temperature on March 1st, 2024", {"at": "2024-03-01"}),
        ("jane temperature on 1 March 2024", {"at": "2024-03-01"}),
        ("jane temperature yesterday", {"at": "today-1d"}),
        ("jane temperature 4 days ago", {"at": "today-4d"}),
        ("jane's latest temperature", {"at": "latest"}),
        ("jane's temperature at admission", {"at": "first"}),
        ("jane temperature between day 2 and 5", {"from": 2, "to": 5}),
        ("jane temperature over the last 7 days", {"from": "today-7d", "to": "today"}),
        ("jane temperature last week", {"from": "today-1w", "to": "today"}),
        ("jane temperature from 2024-01-01 to 2024-01-05", {"from": "2024-01-01", "to": "2024-01-05"}),
        ("jane temperature since 2024-01-03", {"from": "2024-01-03"}),
    ],
)
def test_times(question: str, when: dict[str, Any], vocab: Vocabulary) -> None:
    found = asked(question, vocab)
    assert found["when"] == when
    assert found["entity"] == {"name": "jane"} and found["labels"] == ["temperature"]


@pytest.mark.parametrize(
    ("question", "labels"),
    [
        ("jane temp", ["temperature"]),
        ("jane pulse", ["heart_rate"]),
        ("jane hr", ["heart_rate"]),
        ("jane heart rates", ["heart_rate"]),
        ("jane bp", ["systolic_bp", "diastolic_bp"]),
        ("jane blood pressure", ["systolic_bp", "diastolic_bp"]),
        ("jane diastolic pressure", ["diastolic_bp"]),
        ("jane sats", ["spo2"]),
        ("jane oxygen saturation", ["spo2"]),
        ("jane temprature", ["temperature"]),  # a typo
    ],
)
def test_labels_by_everyday_names(question: str, labels: list[str], vocab: Vocabulary) -> None:
    assert asked(question, vocab)["labels"] == labels


@pytest.mark.parametrize(
    ("question", "query"),
    [
        ("highest temperature of jane", {"intent": "stat", "agg": "max"}),
        ("is jane's pulse going up?", {"intent": "trend"}),
        ("jane vs john heart rate", {"intent": "compare", "other": {"name": "john"}}),
        ("jane heart rate over time", {"intent": "series"}),
        ("any unusual heart rates for jane", {"intent": "anomalies"}),
    ],
)
def test_intents_of_one_entity(question: str, query: dict[str, Any], vocab: Vocabulary) -> None:
    found = asked(question, vocab)
    assert found["entity"] == {"name": "jane"}
    assert query.items() <= found.items()


def test_cohorts_lists_and_counts(vocab: Vocabulary) -> None:
    assert asked("how many female patients over 65?", vocab) == {
        "intent": "count",
        "cohort": {
            "kind": "patient",
            "attributes": {"gender": "F"},
            "conditions": [{"field": "age", "op": ">", "value": 65}],
        },
    }
    assert asked("list the doctors", vocab) == {
        "intent": "list",
        "cohort": {"kind": "practitioner", "attributes": {"role": "doctor"}},
    }
    average = asked("average heart rate of women patients yesterday", vocab)
    assert average["intent"] == "aggregate" and average["agg"] == "mean"
    assert average["cohort"] == {"kind": "patient", "attributes": {"gender": "F"}}


def test_relations_and_their_direction(vocab: Vocabulary) -> None:
    assert asked("who treats Jane Doe?", vocab)["cohort"] == {
        "related_to": {"name": "jane doe"},
        "relation": ["treats"],
        "direction": "in",
    }
    assert asked("who does Dr House treat", vocab)["cohort"]["direction"] == "out"
    assert asked("patients treated by dr house", vocab)["cohort"] == {
        "kind": "patient",
        "related_to": {"name": "dr house"},
        "relation": ["treats"],
        "direction": "out",
    }
    assert asked("who treats Mr. Jerónimo Ruelas?", vocab)["cohort"]["related_to"] == {"name": "mr jerónimo ruelas"}
    assert asked("who treats Urgent Care Center of South Bay?", vocab)["cohort"]["related_to"] == {
        "name": "urgent care center of south bay"
    }
    assert asked("patients of Dr House", vocab) == {
        "intent": "related",
        "cohort": {"kind": "patient", "related_to": {"name": "dr house"}},
    }


def test_a_new_schema_kind_and_relation_are_understood_without_code() -> None:
    air = SchemaCreate.model_validate(
        {
            "name": "air_quality",
            "axes": [{"name": "pollutant", "labels": ["pm2_5", "carbon_monoxide", "ozone"], "units": {"ozone": "ppb"}}],
            "time": {"unit": "hour"},
        }
    )
    vocab = Vocabulary.build([air], ["sensor", "city"], {"sensor": [{"mount": "rooftop"}]}, ["monitors"])
    assert asked("ozone at sensor north-7 at hour 5", vocab) == {
        "intent": "value",
        "entity": {"name": "north-7", "kind": "sensor"},
        "schema": "air_quality",
        "labels": ["ozone"],
        "axis": "pollutant",
        "when": {"at": 5},
    }
    assert asked("average carbon monoxide of rooftop sensors", vocab)["cohort"] == {
        "kind": "sensor",
        "attributes": {"mount": "rooftop"},
    }
    assert asked("which sensors monitor Lyon?", vocab)["cohort"] == {
        "kind": "sensor",
        "related_to": {"name": "lyon"},
        "relation": ["monitors"],
        "direction": "in",
    }
    assert asked("how many cities are monitored by sensor s1", vocab)["cohort"]["direction"] == "out"


@pytest.mark.parametrize(
    ("question", "said"),
    [
        ("", "empty"),
        ("x" * (MAX_QUESTION + 1), f"at most {MAX_QUESTION}"),
        ("jane\x00 temperature", "control character"),
        ("jane\x1b[31m temperature", "control character"),
        ("tell me something nice", "could not tell what to look up"),
        ("jane doe", "I understood a name ('jane doe')"),
    ],
)
def test_questions_it_cannot_take_are_422s_that_say_why(question: str, said: str, vocab: Vocabulary) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse(question, vocab)
    assert said in refused.value.detail


# words the parser knows and words that trip parsers: every sentence of them is a query or a 422, never a crash
WORDS = """
jane doe dr house who treats patients of female male over 65 how many average highest lowest temp pulse bp sats
day 3 yesterday last week between and 5 vs compare trend unusual alerts list count 2024-03-01 latest at admission
treated by the 's ? , # 1 warehouse w1 sku-001 0 -1 99999999 since until from to
""".split()  # noqa: SIM905
_VOCAB = Vocabulary.build(
    [VITALS],
    ["patient", "practitioner"],
    {"patient": PEOPLE, "practitioner": STAFF},
    ["treats"],
)


@given(st.text(max_size=MAX_QUESTION + 20))
def test_any_text_is_a_query_or_a_422(text: str) -> None:
    with contextlib.suppress(InvalidInput):
        assert parse(text, _VOCAB).intent


@given(st.lists(st.sampled_from(WORDS), min_size=1, max_size=12).map(" ".join))
def test_any_sentence_of_its_own_words_is_a_query_or_a_422(text: str) -> None:
    with contextlib.suppress(InvalidInput):
        assert parse(text, _VOCAB).intent


def test_an_everyday_word_yields_to_a_label_named_next_to_it() -> None:
    labs = SchemaCreate.model_validate(
        {"name": "labs", "axes": [{"name": "test", "labels": ["ldl", "hdl", "cholesterol_total", "glucose"]}]}
    )
    vocab = Vocabulary.build([labs], ["patient"])
    assert asked("omar's ldl cholesterol", vocab)["labels"] == ["ldl"]
    assert asked("omar's cholesterol", vocab)["labels"] == ["cholesterol_total"]
    assert asked("omar's blood sugar", vocab)["labels"] == ["glucose"]


@pytest.mark.parametrize(
    ("question", "conditions"),
    [
        ("average temperature of patients over 65", [{"field": "age", "op": ">", "value": 65.0}]),
        ("mean temp of patients 50 years or older", [{"field": "age", "op": ">=", "value": 50.0}]),
        ("patients over 70 with a pulse above 100.5 bpm", [
            {"field": "age", "op": ">", "value": 70.0},
            {"field": "heart_rate", "op": ">", "value": 100.5, "schema": "vitals", "axis": "metric"},
        ]),
        ("how many patients have a temperature over 38°C", [
            {"field": "temperature", "op": ">", "value": 38.0, "schema": "vitals", "axis": "metric"},
        ]),
        ("patients with spo2 < 92", [
            {"field": "spo2", "op": "<", "value": 92.0, "schema": "vitals", "axis": "metric"},
        ]),
    ],
)  # fmt: skip
def test_a_comparison_next_to_a_measure_is_on_its_value_else_on_age(
    question: str, conditions: list[dict[str, Any]], vocab: Vocabulary
) -> None:
    assert asked(question, vocab)["cohort"]["conditions"] == conditions


def test_a_value_condition_of_a_list_or_count_is_read_at_the_question_s_time(vocab: Vocabulary) -> None:
    found = asked("how many patients had a temperature above 38 in the last 3 days", vocab)
    assert found["intent"] == "count" and "when" not in found
    assert found["cohort"]["conditions"][0]["when"] == {"from": "today-3d", "to": "today"}
    assert "when" not in asked("patients with a temperature above 38", vocab)["cohort"]["conditions"][0]
    aggregate = asked("average pulse of patients with a temperature above 38 yesterday", vocab)
    assert aggregate["intent"] == "aggregate" and aggregate["when"] == {"at": "today-1d"}  # the aggregate's time


@pytest.mark.parametrize(
    ("question", "ranking"),
    [
        ("which patient has the highest temperature", {"agg": "max", "cohort": {"kind": "patient"}}),
        ("Which patients have the lowest sats?", {"agg": "min", "cohort": {"kind": "patient"}}),
        ("top 3 patients by pulse", {"agg": "max", "limit": 3, "cohort": {"kind": "patient"}}),
        ("the 4 female patients with the highest temp", {
            "agg": "max", "limit": 4, "cohort": {"kind": "patient", "attributes": {"gender": "F"}},
        }),
        ("who treats the most patients", {"agg": "max", "per": {"kind": "patient", "relation": ["treats"],
                                                                "direction": "out"}}),
        ("which doctor treats the fewest patients", {
            "agg": "min", "cohort": {"kind": "practitioner", "attributes": {"role": "doctor"}},
            "per": {"kind": "patient", "relation": ["treats"], "direction": "out"},
        }),
        ("which patient is treated by the most practitioners", {
            "agg": "max", "cohort": {"kind": "patient"},
            "per": {"kind": "practitioner", "relation": ["treats"], "direction": "in"},
        }),
    ],
)  # fmt: skip
def test_rankings(question: str, ranking: dict[str, Any], vocab: Vocabulary) -> None:
    found = asked(question, vocab)
    assert found["intent"] == "rank"
    assert {k: v for k, v in found.items() if k in ("agg", "limit", "cohort", "per")} == ranking


def test_a_highest_without_which_or_top_is_still_a_cohort_aggregate(vocab: Vocabulary) -> None:
    assert asked("highest temperature of female patients", vocab)["intent"] == "aggregate"
    assert asked("what is the highest temperature of jane", vocab)["intent"] == "stat"


def test_conditions_and_rankings_on_a_schema_made_today() -> None:
    air = SchemaCreate.model_validate(
        {"name": "air_quality", "axes": [{"name": "pollutant", "labels": ["pm2_5", "carbon_monoxide", "ozone"]}]}
    )
    vocab = Vocabulary.build([air], ["sensor", "city"], {"sensor": [{"mount": "rooftop"}]}, ["monitors"])
    assert asked("sensors with ozone above 40", vocab)["cohort"]["conditions"] == [
        {"field": "ozone", "op": ">", "value": 40.0, "schema": "air_quality", "axis": "pollutant"}
    ]
    assert asked("top 2 rooftop sensors by carbon monoxide", vocab) == {
        "intent": "rank",
        "schema": "air_quality",
        "labels": ["carbon_monoxide"],
        "axis": "pollutant",
        "agg": "max",
        "limit": 2,
        "cohort": {"kind": "sensor", "attributes": {"mount": "rooftop"}},
    }
    assert asked("which sensor monitors the most cities", vocab)["per"] == {
        "kind": "city",
        "relation": ["monitors"],
        "direction": "out",
    }
