"""The words a database gives questions, built when asked from what it holds: each schema's labels (and its
name), units and the labels' everyday names (``heart_rate`` → "heart rate", "pulse", "hr"), the kinds of its
entities and their plurals, attribute values ("female", "doctors", "cardiology"), and the relation types with
their verb forms (``ships_to`` → "ship to", "shipped to"; ``treats`` → "who treats", "treated by").

A new schema, kind or relation type is understood as soon as it exists: no code names them.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy.orm import Session

from dust.ask.words import COMMON, STOP, SYNONYMS, VALUE_WORDS, plural, verb_base, verb_forms
from dust.engine import access, schemas
from dust.storage.repositories import vocabulary as repo

SAMPLE = 500  # entities of each kind whose attribute values become words
MAX_VALUES = 40  # an attribute with more distinct values than this names things, not groups: no words from it
MAX_PHRASE = 5  # words in the longest phrase matched
_SPLIT = re.compile(r"[_\-\s./]+")
# UCUM units as people write them
UNITS = {"Cel": "°C", "[degF]": "°F", "mm[Hg]": "mmHg", "/min": "/min", "kg/m2": "kg/m²", "10*3/uL": "×10³/µL"}
UNITS |= {"10*6/uL": "×10⁶/µL", "mL/min/{1.73_m2}": "mL/min/1.73 m²", "{beats}/min": "bpm"}
BIRTH = re.compile(r"birth|born|dob", re.IGNORECASE)


@dataclass(frozen=True)
class LabelRef:
    schema: str
    axis: str
    label: str
    unit: str | None
    axes: tuple[tuple[str, tuple[str, ...]], ...]  # every axis of the schema with its labels

    @property
    def shown_unit(self) -> str:
        return "" if self.unit is None else UNITS.get(self.unit, self.unit)


@dataclass(frozen=True)
class Meaning:
    what: str  # label | schema | kind | attr | relation
    label: LabelRef | None = None
    exact: bool = True  # for a label: the phrase is its whole name, not a part shared with others
    name: str = ""  # schema, kind or relation type
    key: str = ""  # attr: the attribute
    value: Any = None  # attr: its value
    voice: str = ""  # relation: active | passive | agent
    loose: bool = False  # an everyday word for it (SYNONYMS): yields to a label named next to it ("ldl cholesterol")


@dataclass
class Vocabulary:
    phrases: dict[str, list[Meaning]] = field(default_factory=lambda: defaultdict(list))
    kinds: set[str] = field(default_factory=set)
    schemas: dict[str, list[LabelRef]] = field(default_factory=dict)
    relations: set[str] = field(default_factory=set)
    ages: dict[str, str] = field(default_factory=dict)  # kind → the attribute holding a birth date
    longest: int = 1

    @classmethod
    def build(
        cls,
        schema_list: Iterable[Any],
        kinds: Iterable[str],
        attributes: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
        relations: Iterable[str] = (),
    ) -> Vocabulary:
        """From schema definitions (each with ``name`` and ``axes``), kind names, sample attributes by kind and
        relation type names."""
        vocab = cls()
        for schema in schema_list:
            vocab._add_schema(schema)
        for kind in kinds:
            vocab._add_kind(kind)
        for kind, samples in (attributes or {}).items():
            vocab._add_attributes(kind, samples)
        for type_ in relations:
            vocab._add_relation(type_)
        vocab._add_synonyms()
        vocab.longest = max((len(p.split()) for p in vocab.phrases), default=1)
        return vocab

    @classmethod
    def of(cls, session: Session) -> Vocabulary:
        """The vocabulary of the database, with attribute values from the entities the principal may see."""
        kinds = repo.kinds(session)
        visible = access.visible_ids(session)
        samples = {kind: repo.attribute_sample(session, kind, visible, SAMPLE) for kind in kinds}
        return cls.build(schemas.list_(session), kinds, samples, repo.relation_types(session))

    def add(self, phrase: str, meaning: Meaning) -> None:
        words = phrase_of(phrase)
        if words and meaning not in self.phrases[words]:
            self.phrases[words].append(meaning)

    def _add_schema(self, schema: Any) -> None:
        axes = tuple((a.name, tuple(a.labels)) for a in schema.axes)
        refs = []
        for axis in schema.axes:
            for label in axis.labels:
                ref = LabelRef(schema.name, axis.name, label, axis.units.get(label), axes)
                refs.append(ref)
                self._add_label(ref)
        self.schemas[schema.name] = refs
        name = phrase_of(schema.name)
        if name not in COMMON:
            self.add(name, Meaning("schema", name=schema.name))
            self.add(plural(name), Meaning("schema", name=schema.name))

    def _add_label(self, ref: LabelRef) -> None:
        words = phrase_of(ref.label)
        if words in COMMON or words in STOP or not words:
            return  # "in", "out", "new": reached through SYNONYMS only
        for text in (words, plural(words)):
            self.add(text, Meaning("label", label=ref))
        parts = words.split()
        expanded = " ".join(" ".join(SYNONYMS.get(p, (p,))[:1]) for p in parts)  # systolic bp → systolic blood pressure
        if expanded != words:
            self.add(expanded, Meaning("label", label=ref))
            self.add(plural(expanded), Meaning("label", label=ref))
        if any(c.isdigit() for c in words):
            return  # a code (SKU-001): its parts ("sku") are no names of it
        for text in {words, expanded}:  # "blood pressure" names both systolic_bp and diastolic_bp, as a part
            tokens = text.split()
            for n in range(1, len(tokens)):
                for start in range(len(tokens) - n + 1):
                    part = " ".join(tokens[start : start + n])
                    if part not in COMMON and part not in STOP and len(part) > 2:
                        self.add(part, Meaning("label", label=ref, exact=False))

    def _add_kind(self, kind: str) -> None:
        self.kinds.add(kind)
        words = phrase_of(kind)
        self.add(words, Meaning("kind", name=kind))
        self.add(plural(words), Meaning("kind", name=kind))

    def _add_attributes(self, kind: str, samples: Sequence[Mapping[str, Any]]) -> None:
        values: dict[str, set[Any]] = defaultdict(set)
        for attributes in samples:
            for key, value in attributes.items():
                if isinstance(value, bool) or (isinstance(value, str) and 0 < len(value) <= 40):
                    values[key].add(value)
                if isinstance(value, str) and BIRTH.search(key) and kind not in self.ages:
                    self.ages[kind] = key
        for key, found in values.items():
            if len(found) > MAX_VALUES or (len(found) > 3 and len(found) == len(samples)):
                continue  # an identifier (one value per entity), not a group
            for value in found:
                if value is True:
                    self.add(key, Meaning("attr", name=kind, key=key, value=True))
                elif isinstance(value, str):
                    self._add_value(kind, key, value)

    def _add_value(self, kind: str, key: str, value: str) -> None:
        meaning = Meaning("attr", name=kind, key=key, value=value)
        words = phrase_of(value)
        spoken = [*VALUE_WORDS.get(words, ())]
        if len(words) > 1 and words not in STOP and not words.isdigit():
            spoken += [words, plural(words)]
            if words.endswith("ology"):  # cardiology → cardiologist
                spoken += [words[:-1] + "ist", words[:-1] + "ists"]
        for text in spoken:
            self.add(text, meaning)

    def _add_relation(self, type_: str) -> None:
        self.relations.add(type_)
        words = phrase_of(type_).split()
        verb, tail = words[0], " ".join(words[1:])
        forms = verb_forms(verb_base(verb))
        for use, form in [*forms.items(), ("given", verb)]:
            if use == "agent":
                self.add(f"{form} {tail}".strip(), Meaning("relation", name=type_, voice="agent"))
                self.add(f"{plural(form)} {tail}".strip(), Meaning("relation", name=type_, voice="agent"))
                continue
            self.add(f"{form} {tail}".strip(), Meaning("relation", name=type_, voice="active"))
            if tail and len(forms["base"]) > 3:  # "where does Dr Li work": works_at without its "at"
                self.add(form, Meaning("relation", name=type_, voice="active"))
            if use in ("past", "given"):
                self.add(f"{form} {tail} by".strip(), Meaning("relation", name=type_, voice="passive"))
        for noun in (forms["base"] + "ment", forms["base"] + "ments"):  # pay → payments, ship → shipments
            self.add(noun, Meaning("relation", name=type_, voice="noun"))

    def _add_synonyms(self) -> None:
        """Everyday words mean what the phrases they stand for mean here, if anything."""
        for word, targets in SYNONYMS.items():
            for target in targets:
                for meaning in self.phrases.get(phrase_of(target), []):
                    self.add(word, replace(meaning, loose=True))
                for ref in (r for refs in self.schemas.values() for r in refs):
                    if phrase_of(ref.label) == phrase_of(target):  # "stock" → on_hand, a label too common to index
                        self.add(word, Meaning("label", label=ref, loose=True))

    def labels_of(self, schema: str) -> list[LabelRef]:
        return self.schemas.get(schema, [])


def phrase_of(text: str) -> str:
    return " ".join(_SPLIT.split(text.lower())).strip()
