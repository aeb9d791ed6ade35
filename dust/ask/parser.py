"""A question in plain English → a structured query (dust.ask.query.Query), by rules over the database's
vocabulary (dust.ask.vocabulary): no model, no network, a few milliseconds a question.

The question is lower-cased and its times taken out (dust.ask.times); the words left are matched against the
vocabulary's phrases, longest first, then fuzzily (typos); words for what is asked (average, how many, trend,
unusual, vs…) set the intent and the aggregate; what is left, between the known words, are entity names.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from rapidfuzz import fuzz, process

from dust.ask.query import MAX_QUESTION, Cohort, Condition, Direction, EntityRef, Query, When
from dust.ask.times import Times
from dust.ask.vocabulary import LabelRef, Meaning, Vocabulary, phrase_of
from dust.ask.words import COMMON, STOP, SYNONYMS
from dust.core.errors import InvalidInput

FUZZY = 85  # rapidfuzz ratio a misspelt word needs to count as a vocabulary word: one slip in six letters
AGGREGATES: list[tuple[str, str]] = [
    (r"\b(?:average|avg|mean|typical)\b", "mean"),
    (r"\bmedian\b", "p50"),
    (r"\b(?:highest|max|maximum|peak|top|largest|biggest|most)\b", "max"),
    (r"\b(?:lowest|min|minimum|smallest|least|fewest|bottom)\b", "min"),
    (r"\b(?:total|sum|overall amount|in total|altogether)\b", "sum"),
]
INTENTS: list[tuple[str, str]] = [
    (r"\b(?:how many|number of|count of|count|how much of)\b", "count"),
    (r"\b(?:anomal\w*|unusual|abnormal\w*|outliers?|strange|odd|weird|irregular|suspicious|spikes?)\b", "anomalies"),
    (r"\b(?:alerts?|alarms?|warnings?|triggered|flagged)\b", "alerts"),
    (
        r"\b(?:trends?|trending|rising|falling|increasing|decreasing|going up|going down|getting (?:worse|better)"
        r"|improving|worsening|forecast\w*|predict\w*|projection|outlook|direction)\b",
        "trend",
    ),
    (r"\b(?:vs|versus|compare|compared|comparison|comparing|difference between|differ)\b", "compare"),
    (r"\b(?:than)\b", "than"),
    (r"\b(?:over time|series|history|each day|every day|daily|per day|day by day|plot|chart|graph)\b", "series"),
]
TITLES = frozenset({"dr", "mr", "mrs", "ms", "miss", "prof", "st"})
SEPARATORS = frozenset({"and", "vs", "versus", "or", "with", "to", "than"})
# A comparison: an age ("over 65", "aged under 40 years") or, next to a measure, a value ("a temperature over 38
# °C", "balance below 1,000"). Not "over 7 days": that is a time.
COMPARISON = re.compile(
    r"(?<!\w)(?:(aged|age|ages) )?(over|above|older than|more than|greater than|higher than|bigger than|larger than"
    r"|at least|at most|no more than|under|below|younger than|less than|fewer than|lower than|smaller than"
    r"|>=|<=|>|<) ?(\d{1,12}(?:\.\d+)?)(?![\d.])(?! ?(?:hours?|days?|weeks?|months?|minutes?)\b)"
    r"(?: ?(years?|yrs?|y/?o)(?: old)?\b)?"
    r"(?: ?(?:degrees?|deg|c|f|bpm|mmhg|percent|pct|units?|items?|dollars?|euros?|usd|eur)\b)?"
)
AGE_OPS = {"over": ">", "above": ">", "older than": ">", "more than": ">", "at least": ">=", ">=": ">=", ">": ">"}
AGE_OPS |= {"under": "<", "below": "<", "younger than": "<", "less than": "<", "<=": "<=", "<": "<"}
AGE_OPS |= {"greater than": ">", "higher than": ">", "bigger than": ">", "larger than": ">", "at most": "<="}
AGE_OPS |= {"no more than": "<=", "fewer than": "<", "lower than": "<", "smaller than": "<"}
# "50 years or older", "1000 or more": the comparison after the number, inclusive
OR_MORE = re.compile(
    r"(?<![\w.])(\d{1,12}(?:\.\d+)?)(?: ?(years?|yrs?)(?: old)?)? or (older|more|above|over|higher|greater|younger|less"
    r"|fewer|under|below|lower)\b"
)
_PLACE = "cmp"  # a comparison taken out of the text stands as cmpa, cmpb…: a word no vocabulary has
_PLACED = re.compile(rf"^{_PLACE}([a-h])$")
# "top 5 patients by …", "the 3 accounts with the highest balance": a ranking, of so many
RANK_TOP = re.compile(r"\b(top|bottom) (\d{1,3})\b")
RANK_N = re.compile(
    r"\b(\d{1,3})(?= [a-z]+(?: [a-z]+)? (?:with|having|that have|who have|by) (?:the )?"
    r"(?:highest|lowest|most|least|fewest|largest|smallest|biggest|top|max|maximum|minimum)\b)"
)
MAX_RANKED = 100  # the most a ranking gives (Query.limit)
RANK_WORDS = re.compile(r"\b(?:which|who)\b")
RANK_SAID = re.compile(r"\b(?:rank|ranked|ranking|rankings|order(?:ed)? by|sort(?:ed)? by)\b")
_TOKEN = re.compile(r"[^\W_]+(?:[-#_][^\W_]+)*")  # letters of any script: "Jerónimo" is one word
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass
class Span:
    start: int
    words: list[str]
    meanings: list[Meaning] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(self.words)


@dataclass
class Compared:
    """A comparison taken out of the question: an age, or a value of the measure named next to it."""

    op: str
    value: float
    age: bool  # said so: "aged over 65", "under 40 years"


@dataclass
class Reading:
    """What was found in a question, in the order of its words."""

    known: list[Span] = field(default_factory=list)
    names: list[Span] = field(default_factory=list)
    intents: set[str] = field(default_factory=set)
    agg: str | None = None
    conditions: list[Condition] = field(default_factory=list)
    labels: list[LabelRef] = field(default_factory=list)  # the labels chosen
    tokens: list[str] = field(default_factory=list)
    compared: list[Compared] = field(default_factory=list)
    rank: bool = False  # words that may ask for a ranking, with a highest or most: which, who
    ranked: bool = False  # words that do: top 5, rank by
    limit: int | None = None

    def of(self, what: str) -> list[tuple[Span, Meaning]]:
        """What the known phrases mean of one sort; a phrase that names a kind names no relation ("suppliers")."""
        found = []
        for span in self.known:
            kind = any(m.what == "kind" for m in span.meanings)
            label = any(m.what == "label" for m in span.meanings)
            found += [
                (span, m)
                for m in span.meanings
                if m.what == what
                and not (kind and what == "relation")
                and not (label and what in ("attr", "kind", "relation"))
            ]
        return found


def check(question: str) -> str:
    """The question, if it is one a person could ask: 422 for an empty, overlong or control-laden one."""
    if not isinstance(question, str) or not question.strip():
        raise InvalidInput('the question is empty; ask e.g. "What was Jane Doe\'s temperature on day 2?"')
    if len(question) > MAX_QUESTION:
        raise InvalidInput(
            f"the question has {len(question)} characters; at most {MAX_QUESTION}: ask one thing at a time"
        )
    if _CONTROL.search(question):
        raise InvalidInput(
            "the question holds a control character; only printable text, tabs and line breaks are allowed"
        )
    return question


def normalise(question: str) -> str:
    text = unicodedata.normalize("NFKC", question).lower()
    text = re.sub(r"[’‘`´]", "'", text)
    text = re.sub(r"(\w)'s\b", r"\1", text)  # possessives: jane's → jane
    text = re.sub(r"\bvs\.", " vs ", text)
    text = re.sub(r"\b(dr|mr|mrs|ms|prof|st)\.", r"\1", text)
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,000 → 1000
    text = re.sub(r"[^\w\s\-#/:.<>=]", " ", text)
    text = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", text)  # keep 37.5 and dates, drop full stops
    return re.sub(r"\s+", " ", text).strip()


def parse(question: str, vocab: Vocabulary) -> Query:
    """The structured query of ``question``; InvalidInput (422) saying what was understood when it is unclear."""
    text = normalise(check(question))
    reading = Reading()
    times = Times(_take_comparisons(text, reading))
    text = times.text
    text = _take_words(text, reading)
    _read_words(_TOKEN.findall(text), vocab, reading)
    _conditions(reading, vocab)
    query = _build(reading, vocab)
    query.when = times.when
    _time_conditions(query)
    if query.intent == "value" and (times.when.start is not None or times.when.end is not None):
        query.intent = "series"
    return query


def _take_comparisons(text: str, reading: Reading) -> str:
    """Comparisons out of the text, each left as a placeholder word: whether it is an age or a measure's value
    depends on the words next to it (_conditions)."""

    def take(m: re.Match[str]) -> str:
        age = bool(m.group(1) or m.group(4))
        if not age and re.search(r"\b(?:last|past|next)\s*$", text[: m.start()]):
            return m.group(0)
        if len(reading.compared) >= 8:
            raise InvalidInput("the question holds more than 8 comparisons; ask about at most 8 at a time")
        reading.compared.append(Compared(AGE_OPS[m.group(2)], float(m.group(3)), age))
        return f" {_PLACE}{'abcdefgh'[len(reading.compared) - 1]} "

    def after(m: re.Match[str]) -> str:
        up = m.group(3) in ("older", "more", "above", "over", "higher", "greater")
        word = {True: ">=", False: "<="}[up]
        return f" aged {word} {m.group(1)} years " if m.group(2) else f" {word} {m.group(1)} "

    return COMPARISON.sub(take, OR_MORE.sub(after, text))


def _take_words(text: str, reading: Reading) -> str:
    for found in RANK_TOP.finditer(text):
        reading.ranked, reading.limit = True, min(int(found.group(2)), MAX_RANKED) or None
        reading.agg = "min" if found.group(1) == "bottom" else "max"
    text = RANK_TOP.sub(" ", text)
    for found in RANK_N.finditer(text):
        reading.ranked, reading.limit = True, min(int(found.group(1)), MAX_RANKED) or None
    text = RANK_N.sub(" ", text)
    reading.rank = bool(RANK_WORDS.search(text))
    reading.ranked = reading.ranked or bool(RANK_SAID.search(text))
    text = RANK_SAID.sub(" ", text)
    for pattern, agg in AGGREGATES:
        if re.search(pattern, text):
            reading.agg = reading.agg or agg
            text = re.sub(pattern, " ", text)
    text = re.sub(r"\bhow (?:many|much) (?:units|items|pieces)(?: of)?\b", " ", text)  # a quantity, not a count
    for pattern, intent in INTENTS:
        if re.search(pattern, text):
            reading.intents.add(intent)
            text = re.sub(pattern, " and " if intent in ("compare", "than") else " ", text)
    return text


def _read_words(tokens: list[str], vocab: Vocabulary, reading: Reading) -> None:
    """Known phrases (longest first, then misspelt ones) and, between them, the names of entities."""
    i, loose = 0, []
    reading.tokens = tokens
    while i < len(tokens):
        if _PLACED.match(tokens[i]):
            i += 1
            continue
        for n in range(min(vocab.longest, len(tokens) - i), 0, -1):
            phrase = phrase_of(" ".join(tokens[i : i + n]))
            if phrase in vocab.phrases and not (n == 1 and i > 0 and tokens[i - 1] in TITLES):
                reading.known.append(Span(i, tokens[i : i + n], vocab.phrases[phrase]))
                i += n
                break
        else:
            loose.append(i)
            i += 1
    loose = [i for i in loose if not _fuzzy(i, tokens, vocab, reading)]
    _names(tokens, loose, reading)
    reading.known.sort(key=lambda s: s.start)


def _conditions(reading: Reading, vocab: Vocabulary) -> None:
    """Each comparison is on the measure named just before it ("a temperature of over 38"), or just after it
    ("less than 1000 units in stock"), else on age; a measure a comparison takes is not also the one asked for."""
    placed = [(i, _PLACED.match(t)) for i, t in enumerate(reading.tokens)]
    taken: dict[int, Span | None] = {}
    for side in ("before", "after"):  # a measure just before a comparison is its own, whatever follows
        for i, found in placed:
            if found is not None and taken.get(i) is None:
                compared = reading.compared["abcdefgh".index(found.group(1))]
                span = None if compared.age else _measure_next_to(i, reading, side)
                if span is not None:
                    reading.known.remove(span)
                taken[i] = span
    for i, span in taken.items():
        compared = reading.compared["abcdefgh".index(reading.tokens[i][-1])]
        if span is None:
            reading.conditions.append(Condition(field="age", op=compared.op, value=compared.value))
            continue
        labels, schema, axis, select = _labels(Reading(known=[span]), vocab)
        if not labels:  # a schema without a label to compare: the measure stays asked, the number is an age
            reading.known.append(span)
            reading.known.sort(key=lambda s: s.start)
            reading.conditions.append(Condition(field="age", op=compared.op, value=compared.value))
            continue
        reading.conditions.append(
            Condition(
                field=labels[0], op=compared.op, value=compared.value, schema_name=schema, axis=axis, select=select
            )
        )


def _measure_next_to(i: int, reading: Reading, side: str) -> Span | None:
    """The phrase naming a measure (a label or a schema) that ends at most 3 stop words before token ``i``, or
    (``side`` "after") starts at most 2 after it."""

    def measure(span: Span) -> bool:
        return any(m.what in ("label", "schema") for m in span.meanings)

    def gap(a: int, b: int) -> bool:
        return b - a <= 3 and all(t in STOP or t in SEPARATORS for t in reading.tokens[a:b])

    before = [s for s in reading.known if measure(s) and s.start + len(s.words) <= i]
    if side == "before":
        return before[-1] if before and gap(before[-1].start + len(before[-1].words), i) else None
    after = [s for s in reading.known if measure(s) and s.start > i]
    if after and after[0].start - i - 1 <= 2 and gap(i + 1, after[0].start):
        return after[0]
    return None


def _time_conditions(query: Query) -> None:
    """A list or count picked by values reads them at the question's time: that time is the conditions'."""
    if query.intent not in ("list", "count") or query.cohort is None or query.when == When():
        return
    for condition in query.cohort.conditions:
        if condition.schema_name is not None:
            condition.when = query.when
    if any(c.schema_name is not None for c in query.cohort.conditions):
        query.when = When()


def _fuzzy(i: int, tokens: list[str], vocab: Vocabulary, reading: Reading) -> bool:
    word = tokens[i]
    if len(word) < 5 or word in STOP or not word.isalpha() or (i > 0 and tokens[i - 1] in TITLES):
        return False
    found = process.extractOne(word, vocab.phrases.keys(), scorer=fuzz.ratio, score_cutoff=FUZZY)
    if found is None:
        return False
    reading.known.append(Span(i, [word], vocab.phrases[found[0]]))
    return True


def _names(tokens: list[str], loose: list[int], reading: Reading) -> None:
    """Runs of adjacent words that are neither known, nor stop words, nor separators are names; two joined by
    "of" are one ("Urgent Care Center of South Bay", "Bank of America"): a name is never asked "of" another."""
    run: list[int] = []
    for i in [*loose, -2]:
        if run and (i != run[-1] + 1 or tokens[i] in SEPARATORS or tokens[i] in STOP or _PLACED.match(tokens[i])):
            _add_name(reading, [tokens[j] for j in run], run[0], tokens)
            run = []
        if i >= 0 and tokens[i] not in SEPARATORS and tokens[i] not in STOP:
            run.append(i)


def _add_name(reading: Reading, words: list[str], start: int, tokens: list[str]) -> None:
    last = reading.names[-1] if reading.names else None
    if last is not None and start == last.start + len(last.words) + 1 and tokens[start - 1] == "of":
        last.words += ["of", *words]
    else:
        reading.names.append(Span(start, words))


def _build(reading: Reading, vocab: Vocabulary) -> Query:
    labels, schema, axis, select = _labels(reading, vocab)
    entity, other = _entities(reading)
    kind, attributes = _kind(reading)
    relation, direction = _relation(reading, entity)
    query = Query(intent="value", schema_name=schema, labels=labels, axis=axis, select=select)
    if "anomalies" in reading.intents or ("alerts" in reading.intents and not labels):
        query.intent = "anomalies" if "anomalies" in reading.intents else "alerts"
        query.entity = entity
        return query
    cohort = Cohort(kind=kind, attributes=attributes, conditions=reading.conditions, relation=relation)
    if entity is not None and (kind or attributes or relation or reading.conditions):
        cohort.related_to, cohort.direction, entity, other = entity, direction, None, None  # "patients of Dr House"
    ranking = reading.ranked or (reading.rank and reading.agg in ("max", "min"))
    if ranking and entity is None and (labels or (relation and cohort.related_to is None)):
        return _rank(query, cohort, reading, relation)
    if ranking and entity is None and cohort.related_to is None:
        raise InvalidInput(
            'I understood a ranking, but not by what: name a measure or a relation, e.g. "which patient has the '
            'highest temperature", "top 5 accounts by balance" or "who treats the most patients"',
            code="not_understood",
        )
    if labels:
        return _measure(query, entity, other, cohort, reading)
    if cohort.related_to is not None:
        query.intent, query.cohort = ("count" if "count" in reading.intents else "related"), cohort
        return query
    if kind or attributes or reading.conditions:
        query.intent, query.cohort = ("count" if "count" in reading.intents else "list"), cohort
        return query
    raise _unclear(reading, vocab, entity)


def _rank(query: Query, cohort: Cohort, reading: Reading, relation: list[str]) -> Query:
    """The entities with the highest value of a measure ("top 5 accounts by balance"), or the most entities
    related to them ("who treats the most patients")."""
    query.intent, query.agg, query.limit = "rank", ("min" if reading.agg == "min" else "max"), reading.limit
    if query.labels:
        if cohort.related_to is None:
            cohort.relation = []
        query.cohort = cohort if cohort != Cohort() else None
        return query
    verb, meaning = reading.of("relation")[0]
    ranked = _kind_of(reading, lambda s: s.start < verb.start)  # "which doctor treats the most patients"
    counted = _kind_of(reading, lambda s: s.start > verb.start)
    # conditions ("over 65") are the ranked ones' unless only the counted are named: "who treats the most patients
    # over 65"
    on_ranked = ranked[0] is not None or counted[0] is None
    ranked_cohort = Cohort(kind=ranked[0], attributes=ranked[1], conditions=cohort.conditions if on_ranked else [])
    query.cohort = ranked_cohort if ranked_cohort != Cohort() else None
    direction: Direction = "in" if meaning.voice == "passive" else "out"
    query.per = Cohort(
        kind=counted[0],
        attributes=counted[1],
        conditions=[] if on_ranked else cohort.conditions,
        relation=relation,
        direction=direction,
    )
    return query


def _kind_of(reading: Reading, where: Callable[[Span], bool]) -> tuple[str | None, dict[str, object]]:
    """_kind of the phrases ``where`` holds for."""
    part = Reading(known=[s for s in reading.known if where(s)], names=reading.names)
    return _kind(part)


def _measure(
    query: Query, entity: EntityRef | None, other: EntityRef | None, cohort: Cohort, reading: Reading
) -> Query:
    agg, intents = reading.agg, reading.intents
    if "count" in intents and any(r.unit for r in reading.labels):  # "how many SKU-003": a quantity, not a count
        agg = "count"
    if other is not None and entity is not None:  # without words of comparing, the second may be a label's name
        query.intent = "compare" if reading.intents & {"compare", "than", "and"} else "value"
        query.entity, query.other = entity, other
        return query
    if entity is not None:
        query.entity = entity
        if "trend" in intents:
            query.intent = "trend"
        elif agg is not None:
            query.intent, query.agg = "stat", agg  # type: ignore[assignment]
        elif "series" in intents:
            query.intent = "series"
        return query
    query.intent, query.agg = "aggregate", (agg or "mean")  # type: ignore[assignment]
    query.cohort = cohort if cohort != Cohort() else None
    return query


def _labels(reading: Reading, vocab: Vocabulary) -> tuple[list[str], str | None, str | None, dict[str, str]]:
    """The labels asked for: one schema's, on one axis; labels of its other axes pick the series."""
    found = reading.of("label")
    schemas = [m.name for _, m in reading.of("schema")]
    if not found and not schemas:
        return [], None, None, {}
    votes: Counter[str] = Counter()
    for _, meaning in found:
        assert meaning.label is not None
        votes[meaning.label.schema] += 2 if meaning.exact else 1
    for name in schemas:
        votes[name] += 1
    # the most named schema; of equals, one named itself, then the smallest (SKU-001 alone: stock, not flow)
    schema = max(votes, key=lambda s: (votes[s], s in schemas, -len(vocab.labels_of(s))))
    refs = _dedupe(_exact_or_parts(found, schema))
    if not refs:
        return _default_labels(vocab, schema)
    axes = {r.axis for r in refs}
    main = max(axes, key=lambda a: (any(r.unit for r in refs if r.axis == a), [x for x, _ in refs[0].axes].index(a)))
    reading.labels = refs
    measured = [r for r in vocab.labels_of(schema) if r.unit and r.axis not in axes]
    if not any(r.unit for r in refs) and measured:  # "SKU-003 at retailer 5": the product's stock, on_hand
        defaults = _default_labels(vocab, schema)
        return defaults[0], schema, defaults[2], {r.axis: r.label for r in refs}
    select = {r.axis: r.label for r in refs if r.axis != main}
    labels = [r.label for r in refs if r.axis == main]
    return labels, schema, main, select


def _exact_or_parts(found: list[tuple[Span, Meaning]], schema: str) -> list[LabelRef]:
    """Per phrase: its exact label if it has one, else every label it is a part of; parts next to each other name
    the labels they are all parts of ("diastolic pressure": diastolic_bp, not systolic_bp)."""
    refs: list[LabelRef] = []
    parts: list[LabelRef] | None = None
    end = -1
    for start in dict.fromkeys(s.start for s, _ in found):
        span = next(s for s, _ in found if s.start == start)
        mine = [m for s, m in found if s.start == start and m.label is not None and m.label.schema == schema]
        exact = [m.label for m in mine if m.exact and m.label is not None]
        loose = [m.label for m in mine if m.label is not None]
        strong = [m for m in mine if m.exact and not m.loose]
        if exact and not strong and _next_to_a_label(span, found, exact):
            continue  # "ldl cholesterol": LDL is named, "cholesterol" only says what it is
        if exact:
            refs += exact
            parts = None
        elif parts is not None and start == end and set(parts) & set(loose):
            kept = [r for r in parts if r in loose]
            refs = [r for r in refs if r not in parts or r in kept]
            parts = kept
        else:
            refs += loose
            parts = loose
        end = start + len(span.words)
    return refs


def _next_to_a_label(span: Span, found: list[tuple[Span, Meaning]], loose: list[LabelRef]) -> bool:
    """Whether a phrase just before or after ``span`` names, by its own name, a label of the axis that the
    everyday word ``span`` names ``loose`` on."""
    ends = (span.start, span.start + len(span.words))
    return any(
        (s.start + len(s.words) == ends[0] or s.start == ends[1])
        and m.exact
        and not m.loose
        and m.label is not None
        and any(m.label.schema == r.schema and m.label.axis == r.axis for r in loose)
        for s, m in found
    )


def _dedupe(refs: list[LabelRef]) -> list[LabelRef]:
    return list(dict.fromkeys(refs))


DEFAULT_LABELS = ("new", "current", "close", "closing", "value", "total", "on_hand", "amount", "level")


def _default_labels(vocab: Vocabulary, schema: str) -> tuple[list[str], str | None, str | None, dict[str, str]]:
    """A schema named without a label ("balance"): its label for the current value, else every label of its axis
    with units (or its last axis)."""
    refs = vocab.labels_of(schema)
    for ref in refs:
        if ref.label.lower() in DEFAULT_LABELS:
            return [ref.label], schema, ref.axis, {}
    axis = next((r.axis for r in refs if r.unit), refs[-1].axis if refs else None)
    return [r.label for r in refs if r.axis == axis][:16], schema, axis, {}


def _naming(span: Span, meaning: Meaning, reading: Reading) -> bool:
    """Whether a kind word is a name's: singular, and just before or after it ("warehouse 1", "Riverside clinic";
    not "patients Dr Li treats")."""
    if phrase_of(span.text) == phrase_of(meaning.name) or span.text in SYNONYMS:
        ends = {n.start for n in reading.names} | {n.start + len(n.words) for n in reading.names}
        return span.start + len(span.words) in ends or span.start in ends
    return False


def _kind(reading: Reading) -> tuple[str | None, dict[str, object]]:
    """The kind asked about, and attribute values it must have; a kind word just before a name is that name's."""
    spans = [(s, m) for s, m in reading.of("kind") if not _naming(s, m, reading)]
    kind = spans[0][1].name if spans else None
    attributes: dict[str, object] = {}
    for _, meaning in reading.of("attr"):
        if kind is None or meaning.name == kind:
            kind = meaning.name
            attributes.setdefault(meaning.key, meaning.value)
    return kind, attributes


def _entities(reading: Reading) -> tuple[EntityRef | None, EntityRef | None]:
    refs = []
    for span in reading.names[:2]:
        before = [
            s for s in reading.known if s.start + len(s.words) == span.start or s.start == span.start + len(span.words)
        ]
        kinds = [m.name for s in before for m in s.meanings if m.what == "kind" and _naming(s, m, reading)]
        refs.append(EntityRef(name=span.text, kind=kinds[0] if kinds else None))
    if len(reading.names) > 1:
        first, second = reading.names[:2]
        if "and" in reading.tokens[first.start + len(first.words) : second.start]:
            reading.intents.add("and")  # "Jane and John": two alike, compared
    return (refs[0] if refs else None), (refs[1] if len(refs) > 1 else None)


def _relation(reading: Reading, entity: EntityRef | None) -> tuple[list[str], Direction]:
    found = reading.of("relation")
    if not found:
        return [], "both"
    span, meaning = found[0]
    types = list(dict.fromkeys(m.name for _, m in found))
    anchor = next((s for s in reading.names if entity is not None and s.text == entity.name), None)
    if meaning.voice == "passive":  # "treated by Dr Li": Dr Li is the source; "Jane is treated by": the target
        return types, "in" if anchor is not None and anchor.start < span.start else "out"
    if meaning.voice == "agent" or anchor is None or anchor.start > span.start:
        return types, "in"
    return types, "out"


def _unclear(reading: Reading, vocab: Vocabulary, entity: EntityRef | None) -> InvalidInput:
    understood = []
    if entity is not None:
        understood.append(f"a name ('{entity.name}')")
    if reading.agg:
        understood.append(f"an aggregate ({reading.agg})")
    if reading.intents:
        understood.append("words for " + ", ".join(sorted(reading.intents)))
    said = "; ".join(understood) if understood else "nothing I can look up"
    label = next((r.label for refs in vocab.schemas.values() for r in refs if r.unit and r.label not in COMMON), None)
    kind = next(iter(sorted(vocab.kinds)), "patient")
    example = f'"What was <name>\'s {label.replace("_", " ")} on day 2?"' if label else ""
    return InvalidInput(
        f"I could not tell what to look up: I understood {said}, but no measure, kind of entity or relation. "
        f'Name one, e.g. {example + " or " if example else ""}"How many {kind}s are there?"',
        code="not_understood",
    )
