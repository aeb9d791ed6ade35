"""Times in a question: "day 3", "2024-03-01", "March 1st 2024", "yesterday", "3 days ago", "last week", "over
the last 7 days", "between day 2 and 5", "since 2024-01-03", "latest", "at admission" (the first step recorded).

Each becomes a time reference of the query (dust.ask.query.TimeRef): an index, an ISO date or timestamp,
"first", "latest", or a moment relative to when the query runs ("today-1d", "now-24h"), kept relative so that
the query means the same when run again tomorrow as the question would."""

from __future__ import annotations

import re
from datetime import datetime

from dateutil import parser as dateparser

from dust.ask.query import TimeRef, When
from dust.ask.words import ORDINAL

_WORDS = "|".join(ORDINAL)
_N = rf"(\d{{1,6}}|{_WORDS})"
_UNIT = r"(hours?|days?|weeks?|wks?|months?|years?)"  # not "hr": that is a heart rate
_MONTHS = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sept?(?:ember)?|oct(?:ober)?"
    r"|nov(?:ember)?|dec(?:ember)?)"
)
_ORD = r"(?:st|nd|rd|th)?"
_DATES = [
    r"\d{4}-\d{1,2}-\d{1,2}(?:[t ]\d{1,2}:\d{2}(?::\d{2})?(?:\.\d+)?z?)?",
    rf"{_MONTHS}\.? \d{{1,2}}{_ORD},? \d{{4}}",
    rf"\d{{1,2}}{_ORD} (?:of )?{_MONTHS}\.?,? \d{{4}}",
    r"\d{1,2}/\d{1,2}/\d{4}",
    r"\d{4}/\d{1,2}/\d{1,2}",
]
DATE = re.compile(r"\b(?:" + "|".join(_DATES) + r")\b")
POINT = "\x01"  # stands for a time point found, numbered: \x01 0 \x01
_SPOT = re.compile(r"\x01(\d+)\x01")
_STEPS = r"(?:day|hour|step|week|month)"
_TO = r"(?:and|to|until|till|through|thru|-)"
_WITHIN = r"(?:in |over |during |for |within |from )?(?:the )?(?:last|past|previous|recent)"
_FIRST = r"(?:first|initial|earliest|start|beginning)(?: recorded| reading| value| measurement| one)?"
_LATEST = r"(?:latest|most recent|most recently|right now|currently|current|now|newest|last)"
_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(rf"\b(?:between|from) {_STEPS}s? {_N} {_TO} (?:{_STEPS} )?{_N}\b"), "steps"),
    (re.compile(rf"\b{_STEPS}s? {_N} ?(?:-|to|until|till|through|thru) ?(?:{_STEPS} )?{_N}\b"), "steps"),
    (re.compile(rf"\b{_WITHIN} {_N}? ?{_UNIT}\b"), "past"),
    (re.compile(rf"\b{_N} {_UNIT} ago\b"), "ago"),
    (re.compile(r"\b(?:the )?day before yesterday\b"), "before-yesterday"),
    (re.compile(r"\byesterday\b"), "yesterday"),
    (re.compile(r"\b(?:so far )?today\b"), "today"),
    (re.compile(r"\bthis (week|month|year)\b"), "this"),
    (re.compile(rf"\b(?:on |at |for |of )?(?:the )?(\d{{1,4}}(?:st|nd|rd|th)|{_WORDS}) {_STEPS}\b"), "ordinal"),
    (re.compile(rf"\b(?:on |at |for |of |in )?{_STEPS} ?#?{_N}\b"), "step"),
    (re.compile(r"\bd(\d{1,4})\b"), "dstep"),
    (re.compile(r"\b(?:on |at |upon )?(?:the )?(?:admission|admitted|intake|baseline|initially|at first)\b"),
     "first"),
    (re.compile(rf"\b(?:at |on )?(?:the )?(?:very )?{_FIRST}\b"), "first"),
    (re.compile(rf"\b(?:the )?{_LATEST}\b"), "latest"),
]  # fmt: skip
_DATE_RANGE = re.compile(
    rf"\b(?:between|from) {POINT}(\d+){POINT} (?:and|to|until|till|through|thru|-) {POINT}(\d+){POINT}"
)
_SINCE = re.compile(rf"\b(?:since|after|from|starting) {POINT}(\d+){POINT}")
_UNTIL = re.compile(rf"\b(?:until|till|before|up to|through) {POINT}(\d+){POINT}")
_UNIT_CODE = {"h": "h", "d": "d", "w": "w", "m": "m", "y": "y"}


class Times:
    """The time a question asks about, and the question with it taken out."""

    def __init__(self, text: str) -> None:
        self.points: list[TimeRef] = []
        self.when = When()
        self.text = self._take(text)

    def _take(self, text: str) -> str:
        text = _squeeze(DATE.sub(lambda m: self._point(_date(m.group(0))), text))
        for pattern, rule in _RULES:
            text = _squeeze(pattern.sub(lambda m, rule=rule: self._rule(rule, m), text))  # type: ignore[misc]
        text = _DATE_RANGE.sub(lambda m: self._range(int(m.group(1)), int(m.group(2))), text)
        text = _SINCE.sub(lambda m: self._range(int(m.group(1)), None), text)
        text = _UNTIL.sub(lambda m: self._range(None, int(m.group(1))), text)
        for found in _SPOT.finditer(text):
            if self.when.at is None and self.when.start is None and self.when.end is None:
                self.when.at = self.points[int(found.group(1))]
        return _SPOT.sub(" ", text)

    def _point(self, ref: TimeRef) -> str:
        self.points.append(ref)
        return f" {POINT}{len(self.points) - 1}{POINT} "

    def _range(self, start: int | None, end: int | None) -> str:
        if self.when.start is None and self.when.end is None and self.when.at is None:
            self.when.start = None if start is None else self.points[start]
            self.when.end = None if end is None else self.points[end]
        return " "

    def _rule(self, rule: str, m: re.Match[str]) -> str:
        if rule == "steps":
            return self._set(start=_number(m.group(1)), end=_number(m.group(2)))
        if rule == "past":
            count = _number(m.group(1)) if m.group(1) else 1
            unit = m.group(2)[0]
            anchor = "now" if unit == "h" else "today"
            return self._set(start=f"{anchor}-{count}{unit}" if unit != "d" or count else "today", end=anchor)
        if rule == "ago":
            unit = m.group(2)[0]
            return self._point(f"{'now' if unit == 'h' else 'today'}-{_number(m.group(1))}{unit}")
        if rule == "this":
            return self._set(start=f"today-{ {'week': 6, 'month': 29, 'year': 364}[m.group(1)] }d", end="today")
        simple: dict[str, TimeRef] = {"yesterday": "today-1d", "before-yesterday": "today-2d", "today": "today"}
        if rule in simple:
            return self._point(simple[rule])
        if rule in ("step", "ordinal", "dstep"):
            return self._point(_number(m.group(1)))
        if rule == "first":
            return self._point("first")
        if self.points or self.when.start is not None:  # "latest" next to another time adds nothing
            return " "
        return self._point("latest")

    def _set(self, *, start: TimeRef | None, end: TimeRef | None) -> str:
        if self.when.start is None and self.when.end is None:
            self.when.start, self.when.end = start, end
        return " "


def _squeeze(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def _number(text: str) -> int:
    digits = text.rstrip("stndrh")
    return int(digits) if digits.isdigit() else ORDINAL[text]


def _date(text: str) -> str:
    """An ISO 8601 date (or timestamp, if a time of day is given)."""
    try:
        parsed = dateparser.parse(text, default=datetime(2000, 1, 1))
    except (ValueError, OverflowError):
        return text
    if re.search(r"\d:\d", text):
        return parsed.strftime("%Y-%m-%dT%H:%M:%SZ")
    return parsed.date().isoformat()
