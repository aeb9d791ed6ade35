"""`dust import rdf FILE.nt[.gz]`: IRIs as entities, triples between them as relations, literals as attributes."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dust.cli import app
from dust.embedded import Dust
from dust.engine import relations
from dust.importers import rdf
from dust.storage.repositories import entities as entity_repo

AIFB = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "rgcn" / "aifb" / "aifb_stripped.nt.gz"
EX = "http://example.org/"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
RDFS = "http://www.w3.org/2000/01/rdf-schema#"
TRIPLES = f"""\
<{EX}alice> <{RDF}type> <{EX}onto#Person> .
<{EX}alice> <{RDF}type> <{EX}onto#Agent> .
<{EX}alice> <{RDFS}label> "Alice A."@en .
<{EX}alice> <{EX}onto#age> "42"^^<http://www.w3.org/2001/XMLSchema#integer> .
<{EX}alice> <{EX}onto#nick> "al" .
<{EX}alice> <{EX}onto#nick> "ali" .
<{EX}alice> <{EX}onto#worksAt> <{EX}acme> .
<{EX}alice> <{EX}onto#type> <{EX}acme> .
<{EX}bob> <{EX}other/type> <{EX}acme> .
_:b1 <{EX}onto#worksAt> <{EX}acme> .
this line is not N-Triples
<{EX}acme> <{EX}onto#name> "ACME\\u0085 Corp" .
<{EX}alice> <{EX}onto#worksAt> <{EX}acme> .
"""


def write(tmp_path: Path, text: str = TRIPLES, name: str = "small.nt") -> Path:
    path = tmp_path / name
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def test_entities_relations_and_literals_then_again_adds_nothing(db: Dust, tmp_path: Path) -> None:
    path = write(tmp_path)
    with db.session() as session:
        report = rdf.import_file(session, path)
    assert report.imported == {"entities": 6, "relations": 6}  # alice, bob, acme, _:b1, 2 classes; duplicate once
    assert sum(report.skipped.values()) == 1 and report.where[next(iter(report.skipped))] == ["small.nt:11"]
    with db.session() as session:
        alice = entity_repo.by_external_id(session, "person", f"{EX}alice")  # the first rdf:type gives the kind
        acme = entity_repo.by_external_id(session, "resource", f"{EX}acme")  # untyped: the default kind
        blank = entity_repo.by_external_id(session, "resource", "_:b1")
        assert alice is not None and acme is not None and blank is not None
        assert alice.name == "Alice A."  # rdfs:label; its language tag is dropped
        assert alice.attributes == {"age": 42, "nick": ["al", "ali"], "rdfs-label": "Alice A."}
        assert acme.name == "acme" and acme.attributes == {"name": "ACME Corp"}  # a control character left out
        types = {r.type for r in relations.repo.all_edges(session, [])}
    # rdf:type keeps its vocabulary's prefix; onto#type and other/type clash, so each gets its IRI's hash
    clashing = rdf.predicate_types([f"{EX}onto#type", f"{EX}other/type"])
    assert types == {"rdf-type", "works_at", *clashing.values()} and all(
        t.startswith("type-") for t in clashing.values()
    )
    with db.session() as session:
        again = rdf.import_file(session, path)
    assert again.nothing_new and again.existing == {"entities": 6, "relations": 6}


def test_predicate_types_are_valid_readable_and_distinct() -> None:
    iris = [f"{RDF}type", f"{EX}a#type", f"{EX}b/type", f"{EX}onto#isWorkedOnBy", f"{EX}onto#2nd", f"{RDFS}subClassOf"]
    named = rdf.predicate_types(iris)
    assert named[f"{RDF}type"] == "rdf-type" and named[f"{EX}onto#isWorkedOnBy"] == "is_worked_on_by"
    assert named[f"{RDFS}subClassOf"] == "rdfs-sub_class_of" and named[f"{EX}onto#2nd"] == "x2nd"
    assert named[f"{EX}a#type"].startswith("type-") and len(set(named.values())) == len(iris)
    assert all(relations.TYPE_NAME.match(t) for t in named.values())


def test_the_command_reads_gzip_and_reports(tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUST_DATABASE_URL", database_url)
    result = CliRunner().invoke(app, ["import", "rdf", str(write(tmp_path, name="small.nt.gz"))])
    assert result.exit_code == 0, result.output
    assert "Imported: 6 entities, 6 relations" in result.output and "rdf-type = <" in result.output
    missing = CliRunner().invoke(app, ["import", "rdf", str(tmp_path / "nope.nt")])
    assert missing.exit_code != 0


@pytest.mark.skipif(not AIFB.is_file(), reason="no AIFB in ../shared/data/rgcn")
def test_aifb(db: Dust) -> None:
    """29,043 triples: 20,338 between resources (relations), 8,705 with a literal (attributes). The benchmark's
    8,285 nodes are 2,835 resources and 5,450 distinct literals (dust.models.graph makes those nodes again)."""
    with db.session() as session:
        report = rdf.import_file(session, AIFB)
    assert report.imported == {"entities": 2835, "relations": 20338} and not report.skipped
