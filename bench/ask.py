"""How long a question takes to parse, and to answer: every question of tests/ask/questions.yaml parsed with the
vocabulary of the generated data set (the three packs, small, seed 7) on a fresh SQLite file; then a sample of
them answered end to end (vocabulary built from the database, parsed, run).

    .venv/bin/python bench/ask.py              # parse every question 20 times; answer 60 of them
    .venv/bin/python bench/ask.py --rounds 100 --answers 0
    .venv/bin/python bench/ask.py --cohort 2000  # also: conditions on values and rankings over 2,000 patients

The target is under 10 ms a question to parse (issue 11). Building the vocabulary is paid once per request;
answering is dominated by the engine reads the query makes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dust.ask import Vocabulary, ask, parse  # noqa: E402
from dust.core.errors import DustError  # noqa: E402
from dust.domains import finance, healthcare, supply_chain  # noqa: E402
from dust.embedded import Dust  # noqa: E402

QUESTIONS = ROOT / "tests" / "ask" / "questions.yaml"


def questions() -> list[str]:
    found = []
    for group in yaml.safe_load(QUESTIONS.read_text(encoding="utf-8")):
        found += [re.sub(r"\{(?:date|long|slash):(\d+)\}", r"day \1", str(q)) for q in group["ask"]]
    return found


def figures(times_ms: list[float]) -> str:
    ordered = sorted(times_ms)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    mean, p50 = statistics.fmean(ordered), statistics.median(ordered)
    return f"mean {mean:.3f} ms, p50 {p50:.3f} ms, p99 {p99:.3f} ms, max {ordered[-1]:.3f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20, help="times each question is parsed")
    parser.add_argument("--answers", type=int, default=60, help="questions answered end to end")
    parser.add_argument("--cohort", type=int, default=0, help="patients to time cohort questions over (0: none)")
    args = parser.parse_args()
    asked = questions()
    with tempfile.TemporaryDirectory() as scratch, Dust(f"sqlite:///{scratch}/dust.db") as db:
        with db.session() as session:
            healthcare.generate(session, size=20, days=30, seed=7)
            supply_chain.generate(session, size=32, days=30, seed=7)
            finance.generate(session, size=50, days=14, seed=7)
        built = []
        for _ in range(5):
            with db.session() as session:
                start = time.perf_counter()
                vocab = Vocabulary.of(session)
                built.append((time.perf_counter() - start) * 1000)
        parsed: list[float] = []
        for _ in range(args.rounds):
            for question in asked:
                start = time.perf_counter()
                with contextlib.suppress(DustError):  # a refused question is timed too
                    parse(question, vocab)
                parsed.append((time.perf_counter() - start) * 1000)
        answered: list[float] = []
        for question in asked[: args.answers]:
            with db.session() as session:
                start = time.perf_counter()
                with contextlib.suppress(DustError):
                    ask(session, question)
                answered.append((time.perf_counter() - start) * 1000)
    print(json.dumps({"questions": len(asked), "phrases": len(vocab.phrases), "rounds": args.rounds}))
    print(f"vocabulary from the database: {figures(built)}")
    print(f"parse, per question:          {figures(parsed)}")
    if answered:
        print(f"answer end to end ({len(answered)}):   {figures(answered)}")
    if args.cohort:
        cohort_questions(args.cohort)


COHORT_QUESTIONS = (
    "average temperature of patients over 65",  # one engine aggregate over the members' ids
    "patients with a heart rate over 100",  # then one read per patient
    "how many patients had a temperature over 37.5 in the last 7 days",
    "which patient has the highest heart rate",
    "top 3 patients by temperature",
    "who treats the most patients",  # the relations listed and counted
)


def cohort_questions(size: int) -> None:
    """Conditions on values and rankings read each candidate's values one by one: their time grows with the
    cohort (median of 3 answers each)."""
    with tempfile.TemporaryDirectory() as scratch, Dust(f"sqlite:///{scratch}/dust.db") as db:
        with db.session() as session:
            healthcare.generate(session, size=size, days=30, seed=7)
        for question in COHORT_QUESTIONS:
            took = []
            for _ in range(3):
                with db.session() as session:
                    start = time.perf_counter()
                    ask(session, question)
                    took.append((time.perf_counter() - start) * 1000)
            print(f"{size} patients, {question!r}: {statistics.median(took):.0f} ms")


if __name__ == "__main__":
    main()
