"""Answers as sentences: names, labels as words, values rounded for reading, units as people write them."""

from __future__ import annotations

from typing import Any

from dust.ask.query import Candidate, Query, TimeRef
from dust.ask.words import COMMON, plural, verb_base, verb_forms
from dust.engine.entities import EntityPublic
from dust.engine.views import TensorView

AGG_WORDS = {
    "mean": "average",
    "max": "highest",
    "min": "lowest",
    "sum": "total",
    "count": "number of",
    "p50": "median",
}


def shown(value: float | None, unit: str = "") -> str:
    if value is None:
        return "not recorded"
    digits = 0 if abs(value) >= 1000 else 1 if abs(value) >= 10 else 2
    text = f"{value:,.{digits}f}".rstrip("0").rstrip(".") if digits else f"{value:,.0f}"
    if unit in ("", "units"):
        return text + (" units" if unit == "units" else "")
    return f"{text}{'' if unit == '%' else ' '}{unit}"


def words(label: str) -> str:
    return label.replace("_", " ")


def _label(query: Query, label: str) -> str:
    """A label as words; one too plain to stand alone ("new") with its schema: "balance (new)"."""
    if label.lower() in COMMON and query.schema_name:
        return f"{words(query.schema_name)} ({label})"
    return words(label)


def possessive(name: str) -> str:
    return f"{name}'" if name.endswith("s") else f"{name}'s"


def when_text(ref: TimeRef | None, index: Any = None, stamp: Any = None, step: str = "time") -> str:
    """When a value was, as asked: "on day 2 (2026-01-03)", "on 2024-01-05 (hour 96)", "most recently (day 29)"."""
    on = f", {str(stamp)[:10]}" if stamp is not None else ""
    at = "at" if step in ("time", "hour", "minute", "second") else "on"
    if ref is None or ref == "latest":
        return f"most recently ({step} {index}{on})" if index is not None else "most recently"
    if ref == "first":
        return f"at the first recorded {step} ({step} {index}{on})" if index is not None else "first"
    if isinstance(ref, int):
        return f"{at} {step} {ref}" + (f" ({str(stamp)[:10]})" if stamp is not None else "")
    shown_at = str(stamp)[:10] if stamp is not None else ref
    return f"on {shown_at}" + (f" ({step} {index})" if index is not None else "")


def step_of(result: dict[str, Any]) -> str:
    """What one step of the tensor is called: "day" for a daily schema, else "time" (an index)."""
    return str(result.get("step") or "time")


def _what(query: Query) -> str:
    picked = " ".join(query.select.values())
    labels = " and ".join(_label(query, label) for label in query.labels) or (query.schema_name or "value")
    return f"{labels} of {picked}" if picked else labels


def value(entity: EntityPublic, query: Query, result: dict[str, Any], view: TensorView) -> str:
    values, units = result["values"], result["units"]
    if "times" in result:
        parts = [
            f"{words(k)} {shown(v, units[k])} ({step_of(result)} {result['times'][k]})"
            if len(values) > 1
            else shown(v, units[k])
            for k, v in values.items()
        ]
        told = "; ".join(parts)
        if len(values) == 1:
            time = next(iter(result["times"].values()))
            return f"{possessive(entity.name)} latest {_what(query)} ({step_of(result)} {time}) was {told}."
        return f"{possessive(entity.name)} latest {_what(query)}: {told}."
    at = when_text(query.when.at, result.get("time"), result.get("timestamp"), step_of(result))
    if len(values) == 1:
        v = next(iter(values.values()))
        return f"{possessive(entity.name)} {_what(query)} {at} was {shown(v, next(iter(units.values())))}."
    told = ", ".join(f"{words(k)} {shown(v, units[k])}" for k, v in values.items())
    return f"{possessive(entity.name)} {_what(query)} {at}: {told}."


def nothing(entity: EntityPublic, query: Query, why: str) -> str:
    return f"No {_what(query)} of {entity.name} is recorded then ({why})."


def series(entity: EntityPublic, query: Query, result: dict[str, Any]) -> str:
    times = result["times"]
    if not times:
        return f"No {_what(query)} of {entity.name} is recorded in that time."
    parts = []
    for name, values in result["series"].items():
        recorded = [v for v in values if v is not None]
        unit = result["units"][name]
        if recorded:
            low, high = min(recorded), max(recorded)
            parts.append(
                f"{words(name)} from {shown(low, unit)} to {shown(high, unit)} ({len(recorded)} values, last "
                f"{shown(recorded[-1], unit)})"
            )
    steps = plural(step_of(result))
    span = f"{steps} {times[0]} to {times[-1]} ({result['timestamps'][0][:10]} to {result['timestamps'][-1][:10]})"
    if not parts:
        return f"No {_what(query)} of {entity.name} is recorded over {span}."
    return f"Over {span}, {possessive(entity.name)} " + "; ".join(parts) + "."


def stat(entity: EntityPublic, query: Query, result: dict[str, Any]) -> str:
    agg = result["agg"]
    steps = plural(step_of(result))
    span = f"{steps} {result['times'][0]} to {result['times'][-1]}" if result["times"] else "the time asked"
    parts = []
    for name, found in result["stats"].items():
        unit = result["units"][name]
        if agg == "count":
            parts.append(f"{found['count']} {words(name)} values")
            continue
        told = shown(found["value"], unit)
        at = f" on {step_of(result)} {found['time']}" if "time" in found else ""
        parts.append(f"{AGG_WORDS[agg]} {words(name)} was {told}{at} ({found['count']} values)")
    return f"Over {span}, {possessive(entity.name)} " + "; ".join(parts) + "."


def compare(pair: list[EntityPublic], query: Query, items: list[dict[str, Any]]) -> str:
    parts = []
    numbers: list[float | None] = []
    for entity, item in zip(pair, items, strict=True):
        values = item.get("values", {})
        if not values:
            parts.append(f"{possessive(entity.name)} is not recorded")
            numbers.append(None)
            continue
        name, number = next(iter(values.items()))
        parts.append(f"{possessive(entity.name)} {shown(number, item['units'][name])}")
        numbers.append(number)
    step = step_of(items[0]) if items else "time"
    told = f"{words(_what(query)).capitalize()} {when_text(query.when.at, step=step)}: " + " and ".join(parts)
    first, second = numbers
    if first is not None and second is not None and first != second:
        higher = pair[0] if first > second else pair[1]
        unit = next(iter(items[0]["units"].values()), "")
        told += f"; {possessive(higher.name)} is higher by {shown(abs(first - second), unit)}"
    return told + "."


def trend(entity: EntityPublic, query: Query, result: dict[str, Any]) -> str:
    found, unit = result["trend"], result["unit"]
    label = words(query.labels[0]) if query.labels else "value"
    slope, p = found.get("slope"), found.get("p_value")
    head = f"{possessive(entity.name)} {label} over {result['values']} values"
    if slope is None:
        return f"{head}: no trend can be told."
    sloped = f"{shown(abs(slope), unit)} a {found['per']}"
    if p is not None and p >= 0.05:
        return f"{head} shows no clear trend (slope {shown(slope, unit)} a {found['per']}, p = {p:.2f})."
    way = "rising" if slope > 0 else "falling"
    return f"{head} is {way} by {sloped} (95% interval {shown(found['low'])} to {shown(found['high'])})."


def aggregate(query: Query, result: dict[str, Any], anchor: EntityPublic | None) -> str:
    who = _cohort_words(query) + (f" related to {anchor.name}" if anchor is not None else "")
    parts = []
    for label, points in result["series"].items():
        unit = result["units"][label]
        held = [p for p in points if p["value"] is not None]
        agg = AGG_WORDS.get(result["agg"], result["agg"])
        if not held:
            parts.append(f"no {words(label)} values of {who} are recorded then")
        elif len(points) == 1:
            point = held[0]
            value = shown(point["value"], "" if result["agg"] == "count" else unit)
            parts.append(
                f"the {agg} {words(label)} of {who} on {point['time'][:10]} was {value} ({point['count']} values)"
            )
        else:
            last = held[-1]
            values = [p["value"] for p in held]
            parts.append(
                f"the {agg} {words(label)} of {who} per step ranged from {shown(min(values), unit)} to "
                f"{shown(max(values), unit)} over {points[0]['time'][:10]} to {points[-1]['time'][:10]}; the "
                f"last, {last['time'][:10]}, was {shown(last['value'], unit)} ({last['count']} values)"
            )
    text = "; ".join(parts)
    return text[:1].upper() + text[1:] + "."


def _cohort_words(query: Query, count: int = 2) -> str:
    """The cohort without its anchor: "female patients", "practitioners with role doctor", "patients aged > 65"."""
    cohort = query.cohort
    if cohort is None:
        return "all"
    kind = (
        (cohort.kind if count == 1 else plural(cohort.kind))
        if cohort.kind
        else ("entity" if count == 1 else "entities")
    )
    plain = [str(v) for v in cohort.attributes.values() if isinstance(v, str) and len(v) > 1]
    other = [f"{k} {v}" if not isinstance(v, bool) else k for k, v in cohort.attributes.items() if str(v) not in plain]
    text = " ".join([*plain, kind]) + (f" with {', '.join(other)}" if other else "")
    for condition in cohort.conditions:
        value = f"{condition.value:g}" if isinstance(condition.value, float) else condition.value
        if condition.schema_name is None:
            text += f" {'aged' if condition.field == 'age' else condition.field} {condition.op} {value}"
            continue
        label = _label(query.model_copy(update={"schema_name": condition.schema_name}), condition.field)
        text += f" with {label} {condition.op} {value}{_condition_time(condition.when)}"
    return text


def _condition_time(when: Any) -> str:
    if when is None or (when.at in (None, "latest") and when.start is None and when.end is None):
        return " (latest value)"
    if when.at is not None:
        return f" ({when_text(when.at)})"
    return f" (at some time from {when.start or 'the first'} to {when.end or 'the last'})"


def ranked(query: Query, result: dict[str, Any]) -> str:
    """A ranking: the first (with those tied with it), its value, then the next ones: "Dr Li treats the most
    patients (6); then Dr Ali (4), …"."""
    rows = result["ranked"]
    count = result["count"]
    among = f"of {count} {_cohort_words(query, count) if query.cohort else 'entities'}"
    if not rows:
        return f"None found: no {_cohort_words(query)} have a value to rank by then."
    values = [shown(r["value"], "" if query.per is not None else result["unit"]) for r in rows]
    tied = [r["entity"]["name"] for r in rows if r["value"] == rows[0]["value"]]
    many = len(tied) > 1
    first = ", ".join(tied[:-1]) + f" and {tied[-1]}" if many else tied[0]
    rest = [f"{r['entity']['name']} ({v})" for r, v in zip(rows, values, strict=True)][len(tied) :]
    then = f"; then {', '.join(rest)}" if rest else ""
    if query.per is None:
        what = f"the {AGG_WORDS['min' if query.agg == 'min' else 'max']} {_what(query)}"
        return f"{first} {'have' if many else 'has'} {what} {among}: {values[0]}{' each' if many else ''}{then}."
    most = "fewest" if query.agg == "min" else "most"
    counted = plural(query.per.kind) if query.per.kind else "entities"
    if query.per.relation:
        verb, *tail = words(query.per.relation[0]).split()
        forms = verb_forms(verb_base(verb))
        how = " ".join(tail)
        if query.per.direction == "in":
            doing = f"{'are' if many else 'is'} {forms['past']} {how} by the {most} {counted}"
        else:
            doing = f"{forms['base'] if many else forms['third']} {how} the {most} {counted}"
    else:
        doing = f"{'are' if many else 'is'} related to the {most} {counted}"
    return f"{first} {' '.join(doing.split())}: {values[0]}{' each' if many else ''}{then}."


def _via(query: Query, anchor: EntityPublic, count: int) -> str:
    """How the cohort is related to its anchor: "2 entities treat Jane Doe", "Dr. Li treats 10 patients"."""
    cohort = query.cohort
    who = _cohort_words(query, count)
    if cohort is None or not cohort.relation:
        return f"{count} {who} related to {anchor.name}"
    verb, *tail = words(cohort.relation[0]).split()
    forms = verb_forms(verb_base(verb))
    rest = " ".join(tail)
    if cohort.direction == "in":
        return f"{count} {who} {forms['base'] if count != 1 else forms['third']} {rest} {anchor.name}".replace(
            "  ", " "
        )
    return f"{anchor.name} {forms['third']} {rest} {count} {who}".replace("  ", " ")


def listed(query: Query, result: dict[str, Any], anchor: EntityPublic | None) -> str:
    names = [e["name"] for e in result["entities"]]
    head = (
        _via(query, anchor, result["count"])
        if anchor is not None
        else f"{result['count']} {_cohort_words(query, result['count'])}"
    )
    if not names:
        return f"None found: {head}."
    more = f", and {result['count'] - len(names)} more" if result["count"] > len(names) else ""
    return f"{head}: {', '.join(names)}{more}."


def counted(query: Query, result: dict[str, Any], anchor: EntityPublic | None) -> str:
    if anchor is not None:
        return _via(query, anchor, result["count"]) + "."
    at_least = "at least " if result.get("more") else ""
    verb = "is" if result["count"] == 1 and not at_least else "are"
    return f"There {verb} {at_least}{result['count']} {_cohort_words(query, result['count'])}."


def anomalies(query: Query, result: dict[str, Any], entity: EntityPublic | None) -> str:
    what = " or ".join(_label(query, label) for label in query.labels) or "values"
    whose = f" of {entity.name}" if entity else ""
    items = result["items"]
    if not items:
        return f"No unusual {what}{whose} were flagged then."
    shown_items = "; ".join(
        f"{item.get('entity_name') or 'an entity'}: {words(item['label'])} {shown(item['value'], item['unit'])} on "
        f"{item['time'][:10]} (score {item['score']:.2f})"
        for item in items[:5]
    )
    more = f", and {len(items) - 5} more" if len(items) > 5 else ""
    return f"{len(items)} unusual {what}{whose}: {shown_items}{more}."


def alerts(query: Query, result: dict[str, Any], entity: EntityPublic | None) -> str:
    whose = f" on {entity.name}" if entity else ""
    items = result["items"]
    if not items:
        return f"No alerts{whose} then."
    told = "; ".join(f"{a['severity']}: {a['message']} ({a['state']}, {a['created_at'][:10]})" for a in items[:5])
    more = f", and {len(items) - 5} more" if len(items) > 5 else ""
    return f"{len(items)}{'+' if result.get('more') else ''} alerts{whose}: {told}{more}."


def candidate(found: Candidate) -> str:
    told = ", ".join(f"{k} {v}" for k, v in found.attributes.items())
    ext = f" ({found.external_id})" if found.external_id else ""
    return f"{found.name}{ext}{': ' + told if told else ''}, id {found.id}"
