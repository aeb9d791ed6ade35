"""The question set (questions.yaml): each question parsed and run on the generated data set, against its gold
query. Prints exact-query accuracy (the parsed query is the gold one) and execution accuracy (the parsed query's
answer has the gold query's result), per domain, and holds each to a floor."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml

from dust.ask import Query, Vocabulary, execute, parse
from dust.core.errors import DustError
from dust.embedded import Dust
from tests.ask.conftest import day

QUESTIONS = Path(__file__).with_name("questions.yaml")
EXACT_FLOOR = 0.85
EXECUTION_FLOOR = 0.90
_PLACE = re.compile(r"\{(date|long|slash):(\d+)\}")


def filled(text: str) -> str:
    """``{date:N}`` and friends: day N of the generated data, as people write dates."""
    formats = {"date": "%Y-%m-%d", "long": "%B %-d, %Y", "slash": "%m/%d/%Y"}
    return _PLACE.sub(lambda m: day(int(m.group(2))).strftime(formats[m.group(1)]), text)


def cases(batch: str | None = None) -> list[tuple[str, str, dict[str, Any]]]:
    """(domain, question, gold query) of every question in the set, or of one batch written at a time."""
    found = []
    for group in yaml.safe_load(QUESTIONS.read_text(encoding="utf-8")):
        if batch is not None and group.get("batch") != batch:
            continue
        gold = json.loads(filled(json.dumps(group["query"])))
        found += [(group["domain"], filled(str(q)), gold) for q in group["ask"]]
    return found


BATCHES = ("followup", "followup2")  # written after the first 420, each before the parser was changed for it


def outcome(world: Dust, vocab: Vocabulary, query: Query) -> str:
    """What running ``query`` gives, as comparable text: the result and candidates, or the error."""
    try:
        with world.session() as session:
            answered = execute(session, query, vocab)
    except DustError as problem:
        return f"{problem.status} {problem.detail}"
    candidates = [c.model_dump(mode="json") for c in answered.candidates or []]
    return json.dumps([answered.result, candidates], sort_keys=True, default=str)


def test_the_question_set_has_200_questions_across_the_three_domains() -> None:
    found = cases()
    assert len(found) >= 200
    assert {domain for domain, _, _ in found} == {"healthcare", "supply-chain", "finance"}


def test_questions_parse_to_their_gold_queries_and_answers(world: Dust) -> None:
    with world.session() as session:
        vocab = Vocabulary.of(session)
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # asked, exact, executed alike
    misses: list[str] = []
    golden: dict[str, str] = {}
    batch_of = {(q, json.dumps(g, sort_keys=True)): f"batch {b}" for b in BATCHES for _, q, g in cases(b)}
    for domain, question, gold_json in cases():
        gold = Query.model_validate(gold_json)
        batch = batch_of.get((question, json.dumps(gold_json, sort_keys=True)))
        counts = tally[domain]
        counts[0] += 1
        if batch:
            tally[batch][0] += 1
        try:
            parsed = parse(question, vocab)
        except DustError as problem:
            misses.append(f"{question!r}: not parsed ({problem.detail})")
            continue
        exact = parsed.dumped() == gold.dumped()
        key = json.dumps(gold.dumped(), sort_keys=True)
        if key not in golden:
            golden[key] = outcome(world, vocab, gold)
        alike = exact or outcome(world, vocab, parsed) == golden[key]
        for counted in [counts] + ([tally[batch]] if batch else []):
            counted[1] += exact
            counted[2] += alike
        if not exact:
            misses.append(f"{question!r}: {json.dumps(parsed.dumped())} {'(same answer)' if alike else ''}")
    total = [sum(c[i] for d, c in tally.items() if not d.startswith("batch")) for i in range(3)]
    for domain, (asked, exact, alike) in [*sorted(tally.items()), ("all", tuple(total))]:  # type: ignore[list-item]
        print(f"{domain:>13}: {asked} questions, exact query {exact / asked:.1%}, execution {alike / asked:.1%}")
    print("\n".join(misses))
    assert total[1] / total[0] >= EXACT_FLOOR, misses
    assert total[2] / total[0] >= EXECUTION_FLOOR, misses
