"""``dust import rdf FILE.nt[.gz]``: an N-Triples graph as entities, relations and attributes.

- Each IRI or blank node is an entity, its IRI (or ``_:label``) the external id. An IRI already in DUST, of
  whatever kind, is that entity: an IRI names one thing. Its kind is the local name of its first ``rdf:type``
  in the file (``swrc#Person`` → ``person``), else ``resource``; its name its ``rdfs:label``, else the IRI's
  local name.
- A triple whose object is an IRI or blank node is a relation, of weight 1, valid since always, whose type is
  the predicate shortened (``predicate_types``); its ``predicate`` attribute keeps the IRI. ``rdf:type`` triples
  are relations too (``rdf-type``): the class is a neighbour, as the R-GCN paper has it.
- A triple whose object is a literal is an attribute of the subject, keyed by the shortened predicate: a number
  or boolean as such, anything else as its text (language tags and datatypes are dropped); several values of
  one predicate make a list.

The parser is rdflib's, fed one line at a time, so a bad line is reported with its number and skipped. The
triples are held in memory as text until written (one transaction): fine for the benchmark graphs (tens of
thousands of triples), not meant for a billion. Re-running adds nothing: entities are found by IRI, relations
by (source, target, type); an existing entity's attributes are left as they were.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import re
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError
from rdflib import BNode, Literal, URIRef
from rdflib.plugins.parsers.ntriples import DummySink, W3CNTriplesParser
from sqlalchemy.orm import Session

from dust.core.errors import InvalidInput
from dust.engine import entities, relations
from dust.engine.entities import EntityCreate
from dust.engine.relations import RelationCreate
from dust.importers.report import Report
from dust.storage.repositories import entities as entity_repo
from dust.storage.repositories import relations as relation_repo

Progress = Callable[[int, int | None], None]
RDF_TYPE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type"
RDFS_LABEL = "http://www.w3.org/2000/01/rdf-schema#label"
DEFAULT_KIND = "resource"
MAX_EXTERNAL_ID = 256  # EntityCreate.external_id
CHUNK = 5_000  # ids per IN (...) list and rows per insert
# Well-known vocabularies keep their usual prefix: rdf:type and a schema's own `type` stay apart, readably.
PREFIXES = {
    "http://www.w3.org/1999/02/22-rdf-syntax-ns#": "rdf",
    "http://www.w3.org/2000/01/rdf-schema#": "rdfs",
    "http://www.w3.org/2002/07/owl#": "owl",
    "http://www.w3.org/2001/XMLSchema#": "xsd",
    "http://www.w3.org/2004/02/skos/core#": "skos",
    "http://xmlns.com/foaf/0.1/": "foaf",
    "http://purl.org/dc/elements/1.1/": "dc",
    "http://purl.org/dc/terms/": "dcterms",
    "http://schema.org/": "schema",
    "https://schema.org/": "schema",
}


@dataclass
class Graph:
    """What the file says, as text: ``kinds`` and ``labels`` by node, ``literals[node][predicate]`` and the
    (subject, predicate, object) triples between nodes."""

    nodes: dict[str, None] = field(default_factory=dict)  # in order of appearance
    kinds: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    literals: dict[str, dict[str, list[Any]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    edges: dict[tuple[str, str, str], None] = field(default_factory=dict)
    predicates: Counter[str] = field(default_factory=Counter)


def import_file(session: Session, path: Path, progress: Progress | None = None) -> Report:
    """Import the N-Triples file at ``path`` (gzipped if it ends in .gz); what was imported and skipped, why."""
    if not path.is_file():
        raise InvalidInput(f"{path} is not a file: give an N-Triples file (.nt, or .nt.gz)")
    report = Report()
    graph = read(path, report, progress)
    types = predicate_types(graph.predicates)
    ids = _put_entities(session, graph, types, report)
    _put_relations(session, graph, types, ids, report)
    report.notes.append(
        "Relation types: " + ", ".join(f"{types[p]} = <{p}>" for p in sorted(types, key=types.__getitem__))
    )
    return report


def read(path: Path, report: Report, progress: Progress | None = None) -> Graph:
    """The file's graph; lines rdflib cannot parse, and IRIs too long for an external id, reported and skipped."""
    graph = Graph()
    size = path.stat().st_size
    tell = progress or (lambda done, total: None)

    class Sink(DummySink):
        def triple(self, s: Any, p: Any, o: Any) -> None:
            subject = _node(s)
            if subject is None:
                report.skip("triples", f"an IRI over {MAX_EXTERNAL_ID} characters", where)
                return
            graph.predicates[str(p)] += 1
            graph.nodes.setdefault(subject)
            if isinstance(o, Literal):
                if str(p) == RDFS_LABEL:
                    graph.labels.setdefault(subject, str(o))
                graph.literals[subject][str(p)].append(_value(o))
                return
            target = _node(o)
            if target is None:
                report.skip("triples", f"an IRI over {MAX_EXTERNAL_ID} characters", where)
                return
            graph.nodes.setdefault(target)
            if str(p) == RDF_TYPE:
                graph.kinds.setdefault(subject, kind_of(target))
            graph.edges.setdefault((subject, str(p), target))

    def _node(term: Any) -> str | None:
        text = f"_:{term}" if isinstance(term, BNode) else str(term)
        return text if isinstance(term, URIRef | BNode) and len(text) <= MAX_EXTERNAL_ID else None

    parser = W3CNTriplesParser(Sink(), bnode_context=_Labels())
    where = ""
    with _open(path) as (file, raw):
        for number, line in enumerate(file, 1):
            where = f"{path.name}:{number}"
            try:
                parser.parsestring(line)
            except Exception as problem:  # rdflib's ParseError and the term constructors' errors alike
                report.skip("lines", f"not N-Triples ({str(problem).splitlines()[0][:80]})", where)
            if number % 2000 == 0:
                tell(raw.tell(), size)
    tell(size, size)
    return graph


class _Labels(dict[str, BNode]):
    """Blank nodes keep the file's labels (rdflib would make fresh ones each run): ``_:b1`` is the same entity
    when the file is imported again, as an import that adds nothing needs. Labels name a blank node within
    one file only: another file's ``_:b1`` is taken to be the same one."""

    def get(self, key: str, default: Any = None) -> BNode:
        return BNode(key)


def _open(path: Path) -> Any:
    from contextlib import contextmanager

    @contextmanager
    def opened() -> Iterator[tuple[Iterator[str], IO[bytes]]]:
        with path.open("rb") as raw:
            if path.suffix == ".gz":
                with gzip.open(raw, "rt", encoding="utf-8", errors="replace") as text:
                    yield text, raw
            else:
                yield (line.decode("utf-8", errors="replace") for line in raw), raw

    return opened()


def _value(literal: Any) -> Any:
    """A literal's value as JSON: numbers and booleans as such, the rest as text."""
    value = literal.toPython()
    if isinstance(value, bool) or (isinstance(value, int) and abs(value) < 2**53):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return _CONTROL.sub("", str(literal))


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # attribute text holds none but tab and breaks


def local_name(iri: str) -> str:
    """What follows the IRI's last #, / or : (the whole IRI if nothing does)."""
    tail = re.split(r"[#/:]", iri.rstrip("/#"))[-1]
    return tail or iri


def _slug(text: str) -> str:
    """``isWorkedOnBy`` → ``is_worked_on_by``: lower case, words split at case changes, others to ``_``."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", text)
    slug = re.sub(r"[^a-z0-9]+", "_", words.lower()).strip("_")
    return slug if slug[:1].isalpha() else f"x{slug}"


def kind_of(class_iri: str) -> str:
    """The entity kind of an ``rdf:type`` class: its local name's slug, ``-`` for ``_`` (``InProceedings`` →
    ``in-proceedings``)."""
    return _slug(local_name(class_iri)).replace("_", "-")[:64]


def predicate_types(predicates: Counter[str] | list[str]) -> dict[str, str]:
    """A relation type (``^[a-z][a-z0-9_-]{0,63}$``) per predicate IRI: the local name's slug, prefixed by
    ``rdf-``, ``owl-`` … for the well-known vocabularies. Predicates of one file whose names would clash get
    the first 6 hex digits of their IRI's SHA-1 too, so that each type names one predicate."""
    named: dict[str, str] = {}
    for iri in predicates:
        prefix = next((p for ns, p in PREFIXES.items() if iri.startswith(ns)), None)
        name = _slug(local_name(iri))
        named[iri] = (f"{prefix}-{name}" if prefix else name)[:56]
    clashes = Counter(named.values())
    return {
        iri: f"{name}-{hashlib.sha1(iri.encode()).hexdigest()[:6]}" if clashes[name] > 1 else name
        for iri, name in named.items()
    }


def _attributes(found: dict[str, list[Any]], types: dict[str, str]) -> dict[str, Any]:
    return {types[p]: values[0] if len(values) == 1 else values for p, values in found.items()}


def _put_entities(session: Session, graph: Graph, types: dict[str, str], report: Report) -> dict[str, uuid.UUID]:
    """The entity id of each node: those already in DUST found by IRI, the others created."""
    nodes = list(graph.nodes)
    ids: dict[str, uuid.UUID] = {}
    for i in range(0, len(nodes), CHUNK):
        ids.update(entity_repo.ids_by_external_id_any_kind(session, nodes[i : i + CHUNK]))
    report.existing["entities"] += len(ids)
    new = [_entity(node, graph, types, report) for node in nodes if node not in ids]
    for i in range(0, len(new), CHUNK):
        part = new[i : i + CHUNK]
        made = entities.create_many(session, part)
        ids.update({str(data.external_id): e.id for data, e in zip(part, made, strict=True)})
    report.imported["entities"] += len(new)
    return ids


def _entity(node: str, graph: Graph, types: dict[str, str], report: Report) -> EntityCreate:
    kind = graph.kinds.get(node, DEFAULT_KIND)
    name = (graph.labels.get(node) or local_name(node)).strip()[:512] or node[:512]
    attributes = _attributes(graph.literals.get(node, {}), types)
    try:
        return EntityCreate(kind=kind, name=name, external_id=node, attributes=attributes)
    except ValidationError as problem:
        # A literal DUST cannot hold (a control character, too long a text…): the entity comes without them
        report.skip("literals", f"not valid as attributes ({problem.errors()[0]['msg'][:80]})", node)
        return EntityCreate(kind=kind, name=local_name(node)[:512], external_id=node)


def _put_relations(
    session: Session, graph: Graph, types: dict[str, str], ids: dict[str, uuid.UUID], report: Report
) -> None:
    keys = [(ids[s], ids[o], types[p], p) for s, p, o in graph.edges]
    for i in range(0, len(keys), CHUNK):
        part = keys[i : i + CHUNK]
        taken = relation_repo.find_edges(session, [k[:3] for k in part])
        fresh = [k for k in part if k[:3] not in taken]
        relations.create_many(
            session,
            [
                RelationCreate.model_construct(
                    source_id=s,
                    target_id=o,
                    type=t,
                    weight=1.0,
                    attributes={"predicate": p},
                    valid_from=None,
                    valid_to=None,
                )
                for s, o, t, p in fresh
            ],
        )
        report.imported["relations"] += len(fresh)
        report.existing["relations"] += len(part) - len(fresh)
