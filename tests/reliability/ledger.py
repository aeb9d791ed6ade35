"""What the crash clients sent and what they were told, and the check of a database against it.

Every write is logged with its outcome: ``acked`` (a 2xx came back), ``rejected`` (a 4xx or 5xx came back),
``unknown`` (in flight when the server died: no answer) or ``unsent`` (the connection was refused, so the
server never saw it). After the restart the database must hold every acked write exactly, nothing of a
rejected or unsent one, and each unknown write either whole or not at all.

Two rules of the clients keep the check exact without knowing the server's order of commits: each cell and
each relation is written by one client only (so the order of its writes is that client's order), and an
unknown write ends its client's log (the server is gone).

Every request answered 2xx, read or write, is also kept by its ``X-Request-ID`` (``Answered``): the database
must hold an audit record of it, with the action it stands for, however soon after the answer the server died.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

Outcome = Literal["acked", "rejected", "unknown", "unsent"]
Cell = tuple[str, int, str]  # tensor id, time index, label
Edge = tuple[str, str, str]  # source id, target id, type
HistoryRow = tuple[str, int, str, float, float]  # tensor id, time index, label, old value, new value


@dataclass
class ValuesWrite:
    """One ``POST /tensors/{id}/values``: the valid cells it carried (a bad batch also carries a bad item)."""

    client: int
    seq: int
    tensor: str
    cells: dict[tuple[int, str], float]
    outcome: Outcome = "unknown"
    status: int | None = None
    invalid: bool = False

    def cell_values(self) -> Iterable[tuple[Cell, float]]:
        return (((self.tensor, time, label), value) for (time, label), value in self.cells.items())

    def name(self) -> str:
        bad = " (bad batch)" if self.invalid else ""
        return (
            f"client {self.client} #{self.seq}: {len(self.cells)} values to tensor {self.tensor}{bad}, {self.outcome}"
        )


@dataclass
class RelationWrite:
    """One ``POST /relations`` (create) or ``PATCH /relations/{id}`` (patch: a new weight)."""

    client: int
    seq: int
    op: Literal["create", "patch"]
    edge: Edge
    weight: float
    outcome: Outcome = "unknown"
    status: int | None = None
    relation_id: str | None = None
    invalid: bool = False

    def name(self) -> str:
        bad = " (bad request)" if self.invalid else ""
        what = f"relation {self.op} {self.edge[2]} weight {self.weight:g}{bad}"
        return f"client {self.client} #{self.seq}: {what}, {self.outcome}"


Write = ValuesWrite | RelationWrite


@dataclass
class Answered:
    """A request answered 2xx, read or write: its audit record was committed before the answer was sent."""

    request_id: str | None  # the answer's X-Request-ID
    method: str
    path: str  # as the server saw it (with the /api/v1 prefix), as its audit record keeps it
    action: str  # what its audit record must say: read, create or update
    status: int

    def name(self) -> str:
        return f"{self.method} {self.path} answered {self.status} (request {self.request_id})"


AuditTrail = dict[str, set[tuple[str, str | None, str | None]]]  # request id: its records' (action, method, path)


@dataclass
class StoredRelation:
    id: str
    weight: float
    weights: list[float]  # the weight history, oldest first


@dataclass
class Snapshot:
    """The database as read back after the restart."""

    cells: dict[Cell, float] = field(default_factory=dict)  # recorded (non-NaN) values only
    history: Counter[HistoryRow] = field(default_factory=Counter)
    relations: dict[Edge, StoredRelation] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # integrity check, undecodable blocks, orphan rows
    audit: AuditTrail = field(default_factory=dict)


@dataclass
class Verdict:
    acked: int = 0
    values: int = 0  # values in acked batches
    rejected: int = 0
    unknown: int = 0
    unsent: int = 0
    applied: int = 0  # unknown writes found whole in the database
    lost: list[str] = field(default_factory=list)  # acked writes not (exactly) there
    partial: list[str] = field(default_factory=list)  # writes partly there
    leaked: list[str] = field(default_factory=list)  # rejected or unsent writes (partly) there, or stray data
    problems: list[str] = field(default_factory=list)
    reads: int = 0  # reads answered 2xx (their audit records are checked, as the acked writes' are)
    missing: list[str] = field(default_factory=list)  # answered requests without their audit record

    @property
    def ok(self) -> bool:
        return not (self.lost or self.partial or self.leaked or self.problems or self.missing)


def check(log: Sequence[Write], snapshot: Snapshot, answered: Iterable[Answered] = ()) -> Verdict:
    """Compare ``snapshot`` with what ``log`` says was acknowledged, rejected or left unknown, and with the
    requests ``answered`` 2xx (reads and writes), whose audit records it must hold."""
    verdict = Verdict(problems=list(snapshot.problems))
    _count(log, verdict)
    ordered = sorted(log, key=lambda w: (w.client, w.seq))
    _check_values([w for w in ordered if isinstance(w, ValuesWrite)], snapshot, verdict)
    _check_relations([w for w in ordered if isinstance(w, RelationWrite)], snapshot, verdict)
    _check_audit(answered, snapshot.audit, verdict)
    return verdict


def _check_audit(answered: Iterable[Answered], trail: AuditTrail, verdict: Verdict) -> None:
    """Each answered request must have an audit record with its action, method and path: a read's record is
    committed by the batch writer, apart from the read, and the answer must wait for that commit."""
    for request in answered:
        verdict.reads += request.action == "read"
        if request.request_id is None:
            verdict.missing.append(f"{request.name()}: no X-Request-ID, so no audit record can be found")
            continue
        records = trail.get(request.request_id, set())
        if (request.action, request.method, request.path) in records:
            continue
        found = f"only {sorted(records, key=str)}" if records else "none"
        verdict.missing.append(f"{request.name()}: no '{request.action}' audit record; found {found}")


def _count(log: Sequence[Write], verdict: Verdict) -> None:
    for write in log:
        if write.outcome == "acked":
            verdict.acked += 1
            verdict.values += len(write.cells) if isinstance(write, ValuesWrite) else 0
            if write.invalid:
                verdict.problems.append(f"a bad request was accepted: {write.name()}")
        elif write.outcome == "rejected":
            verdict.rejected += 1
        elif write.outcome == "unsent":
            verdict.unsent += 1
        else:
            verdict.unknown += 1


def _same(a: float | None, b: float | None) -> bool:
    return a == b or (a is not None and b is not None and math.isnan(a) and math.isnan(b))


# --- tensor values ----------------------------------------------------------------------------------------


@dataclass
class _Cells:
    """The state the log says the cells must be in, and which write put each value there."""

    expected: dict[Cell, float] = field(default_factory=dict)
    writer: dict[Cell, ValuesWrite] = field(default_factory=dict)
    history: dict[HistoryRow, list[ValuesWrite]] = field(default_factory=lambda: defaultdict(list))
    refused: dict[Cell, list[ValuesWrite]] = field(default_factory=lambda: defaultdict(list))

    def apply(self, write: ValuesWrite, only: set[Cell] | None = None) -> None:
        for cell, new in write.cell_values():
            if only is not None and cell not in only:
                continue
            old = self.expected.get(cell)
            if old is not None and old != new:  # the engine keeps a replaced value, not one rewritten unchanged
                self.history[(*cell, old, new)].append(write)
            self.expected[cell] = new
            self.writer[cell] = write

    def refuse(self, write: ValuesWrite) -> None:
        for cell, _ in write.cell_values():
            self.refused[cell].append(write)


def _check_values(writes: list[ValuesWrite], snapshot: Snapshot, verdict: Verdict) -> None:
    cells = _Cells()
    for write in writes:
        if write.outcome == "acked":
            cells.apply(write)
        elif write.outcome == "unknown":
            _settle_unknown(write, cells, snapshot, verdict)
        else:
            cells.refuse(write)
    _compare_cells(cells, snapshot, verdict)
    _compare_history(cells, snapshot, verdict)


def _settle_unknown(write: ValuesWrite, cells: _Cells, snapshot: Snapshot, verdict: Verdict) -> None:
    """An unknown write is all there or not there at all; which one, the database says."""
    new, old = set(), set()
    for cell, value in write.cell_values():
        before, now = cells.expected.get(cell), snapshot.cells.get(cell)
        if _same(value, before):
            continue  # rewritten unchanged: says nothing either way
        if _same(now, value):
            new.add(cell)
        elif _same(now, before):
            old.add(cell)
    if new and old:
        verdict.partial.append(f"{write.name()}: {len(new)} cells written, {len(old)} not")
        cells.apply(write, only=new)  # reported once, here, not again as lost cells
    elif new:
        verdict.applied += 1
        cells.apply(write)
    else:
        cells.refuse(write)


def _compare_cells(cells: _Cells, snapshot: Snapshot, verdict: Verdict) -> None:
    lost: dict[int, tuple[ValuesWrite, list[str]]] = {}
    leaked: dict[int, tuple[ValuesWrite | None, list[str]]] = {}
    for cell in cells.expected.keys() | snapshot.cells.keys():
        want, got = cells.expected.get(cell), snapshot.cells.get(cell)
        if _same(want, got):
            continue
        note = f"(t={cell[1]}, {cell[2]}) holds {got!r}, expected {want!r}"
        refused = next((w for w in cells.refused.get(cell, []) if _same(w.cells[cell[1:]], got)), None)
        writer = cells.writer.get(cell)
        if refused is None and writer is not None:
            lost.setdefault(id(writer), (writer, []))[1].append(note)
        else:
            leaked.setdefault(id(refused), (refused, []))[1].append(f"tensor {cell[0]} {note}")
    for writer, notes in lost.values():
        verdict.lost.append(f"{writer.name()}: {len(notes)} cells wrong, e.g. {notes[0]}")
    for refused, notes in leaked.values():
        who = refused.name() if refused is not None else "no write of the log"
        verdict.leaked.append(f"{who}: {len(notes)} cells present, e.g. {notes[0]}")


def _compare_history(cells: _Cells, snapshot: Snapshot, verdict: Verdict) -> None:
    """Each replaced value is kept once, in the same transaction as its replacement."""
    wanted = Counter({row: len(writes) for row, writes in cells.history.items()})
    for row, missing in (wanted - snapshot.history).items():
        writer = cells.history[row][-1]
        note = f"{writer.name()}: {missing} history row(s) for (t={row[1]}, {row[2]}) {row[3]!r} -> {row[4]!r} missing"
        (verdict.lost if writer.outcome == "acked" else verdict.partial).append(note)
    for row, extra in (snapshot.history - wanted).items():
        verdict.leaked.append(f"{extra} history row(s) no applied write explains: tensor {row[0]} {row[1:]}")


# --- relations --------------------------------------------------------------------------------------------


@dataclass
class _Edge:
    id: str | None
    weights: list[float]
    writer: RelationWrite
    reported: bool = False  # found partly written, and said so


def _check_relations(writes: list[RelationWrite], snapshot: Snapshot, verdict: Verdict) -> None:
    edges: dict[Edge, _Edge] = {}
    refused: dict[Edge, list[RelationWrite]] = defaultdict(list)
    for write in writes:
        if write.outcome == "acked":
            _apply_edge(edges, write)
        elif write.outcome != "unknown" or not _settle_unknown_edge(edges, write, snapshot, verdict):
            refused[write.edge].append(write)
    for edge in edges.keys() | snapshot.relations.keys():
        _compare_edge(edges.get(edge), snapshot.relations.get(edge), refused.get(edge, []), verdict)


def _apply_edge(edges: dict[Edge, _Edge], write: RelationWrite, relation_id: str | None = None) -> None:
    state = edges.get(write.edge)
    if write.op == "create" or state is None:
        edges[write.edge] = _Edge(relation_id or write.relation_id, [write.weight], write)
        return
    if write.weight != state.weights[-1]:  # the engine appends to the history only a weight that changes
        state.weights.append(write.weight)
    state.writer = write


def _settle_unknown_edge(edges: dict[Edge, _Edge], write: RelationWrite, snapshot: Snapshot, verdict: Verdict) -> bool:
    """Whether an unknown write took effect (all of it; a part is reported as partial and counts as taken)."""
    state, stored = edges.get(write.edge), snapshot.relations.get(write.edge)
    if write.op == "create" and state is not None:
        return False  # a create of a relation that exists is refused (409) if it ran at all
    if write.op == "patch" and (state is None or write.weight == state.weights[-1]):
        return False  # a patch of a relation never made, or to the weight it has: nothing to tell apart
    before = state.weights if state is not None else []
    if stored is not None and stored.weights == [*before, write.weight] and stored.weight == write.weight:
        verdict.applied += 1
        _apply_edge(edges, write, stored.id)
        return True
    if stored is None if state is None else _unchanged(stored, before):
        return False
    if stored is not None and (state is None or write.weight in (stored.weight, *stored.weights[-1:])):
        verdict.partial.append(f"{write.name()}: weight {stored.weight:g}, history {stored.weights}")
        edges[write.edge] = _Edge(stored.id, list(stored.weights), write, reported=True)
        return True
    return False  # differs from the acked writes too: the comparison reports it as lost


def _unchanged(stored: StoredRelation | None, weights: list[float]) -> bool:
    return stored is not None and stored.weights == weights and stored.weight == weights[-1]


def _compare_edge(
    want: _Edge | None, got: StoredRelation | None, refused: list[RelationWrite], verdict: Verdict
) -> None:
    if (want is None and got is None) or (want is not None and want.reported):
        return
    if want is None:
        assert got is not None
        culprit = next((w.name() for w in refused if w.weight == got.weight), "no write of the log")
        verdict.leaked.append(f"{culprit}: relation {got.id} with weight {got.weight:g} is present")
        return
    if got is None:
        verdict.lost.append(f"{want.writer.name()}: relation {want.id} is missing")
        return
    if (want.id is not None and got.id != want.id) or got.weights != want.weights or got.weight != want.weights[-1]:
        culprit = next((w for w in refused if w.weight == got.weight), None)
        note = f"relation {got.id}: weight {got.weight:g}, history {got.weights}, expected {want.weights}"
        if culprit is not None:
            verdict.leaked.append(f"{culprit.name()}: {note}")
        else:
            verdict.lost.append(f"{want.writer.name()}: {note}")
