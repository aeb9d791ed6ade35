"""The crash checker on fabricated logs: it must see a lost, partial or leaked write, or a missing audit record,
or it proves nothing."""

from __future__ import annotations

from collections import Counter

from tests.reliability.ledger import (
    Answered,
    AuditTrail,
    RelationWrite,
    Snapshot,
    StoredRelation,
    ValuesWrite,
    check,
)

T = "tensor-1"
EDGE = ("source", "target", "crash_0")


def batch(seq: int, outcome: str, values: dict[tuple[int, str], float], **extra: object) -> ValuesWrite:
    return ValuesWrite(0, seq, T, values, outcome, **extra)  # type: ignore[arg-type]


def stored(values: dict[tuple[int, str], float]) -> dict[tuple[str, int, str], float]:
    return {(T, t, label): v for (t, label), v in values.items()}


FIRST = {(0, "a"): 1.0, (0, "b"): 2.0}
SECOND = {(1, "a"): 3.0, (1, "b"): 4.0}


def test_a_database_holding_exactly_the_acked_writes_passes() -> None:
    log = [batch(0, "acked", FIRST), batch(1, "rejected", SECOND, invalid=True)]
    verdict = check(log, Snapshot(cells=stored(FIRST)))
    assert verdict.ok, verdict
    assert (verdict.acked, verdict.values, verdict.rejected) == (1, 2, 1)


def test_a_missing_acked_write_is_lost() -> None:
    log = [batch(0, "acked", FIRST), batch(1, "acked", SECOND)]
    verdict = check(log, Snapshot(cells=stored(FIRST)))
    assert not verdict.ok
    assert len(verdict.lost) == 1 and "#1" in verdict.lost[0]


def test_an_acked_value_that_differs_is_lost() -> None:
    verdict = check([batch(0, "acked", FIRST)], Snapshot(cells=stored({**FIRST, (0, "b"): 2.5})))
    assert len(verdict.lost) == 1


def test_an_unknown_write_may_be_all_there_or_not_at_all_but_not_half() -> None:
    log = [batch(0, "acked", FIRST), batch(1, "unknown", SECOND)]
    assert check(log, Snapshot(cells=stored(FIRST))).ok
    whole = check(log, Snapshot(cells=stored({**FIRST, **SECOND})))
    assert whole.ok and whole.applied == 1
    half = check(log, Snapshot(cells=stored({**FIRST, (1, "a"): 3.0})))
    assert len(half.partial) == 1 and not half.lost


def test_a_refused_batch_that_left_a_value_leaked() -> None:
    log = [batch(0, "acked", FIRST), batch(1, "rejected", SECOND, invalid=True)]
    verdict = check(log, Snapshot(cells=stored({**FIRST, (1, "b"): 4.0})))
    assert len(verdict.leaked) == 1 and "#1" in verdict.leaked[0]


def test_an_overwrite_needs_its_history_row() -> None:
    again = {(0, "a"): 9.0}
    log = [batch(0, "acked", FIRST), batch(1, "acked", again)]
    cells = stored({**FIRST, **again})
    assert check(log, Snapshot(cells=cells, history=Counter({(T, 0, "a", 1.0, 9.0): 1}))).ok
    verdict = check(log, Snapshot(cells=cells))
    assert len(verdict.lost) == 1 and "history" in verdict.lost[0]


def test_a_bad_batch_that_was_accepted_is_a_problem() -> None:
    verdict = check([batch(0, "acked", FIRST, invalid=True)], Snapshot(cells=stored(FIRST)))
    assert verdict.problems


def relation(seq: int, op: str, weight: float, outcome: str, relation_id: str | None = "r1") -> RelationWrite:
    return RelationWrite(0, seq, op, EDGE, weight, outcome, relation_id=relation_id)  # type: ignore[arg-type]


def test_relations_weights_and_their_history_are_checked() -> None:
    log = [relation(0, "create", 1.0, "acked"), relation(1, "patch", 2.0, "acked")]
    assert check(log, Snapshot(relations={EDGE: StoredRelation("r1", 2.0, [1.0, 2.0])})).ok
    lost_patch = check(log, Snapshot(relations={EDGE: StoredRelation("r1", 1.0, [1.0])}))
    assert len(lost_patch.lost) == 1 and "patch" in lost_patch.lost[0]
    lost_relation = check(log, Snapshot())
    assert len(lost_relation.lost) == 1


def test_an_unknown_relation_create_is_all_or_nothing() -> None:
    log = [relation(0, "create", 1.0, "unknown", relation_id=None)]
    assert check(log, Snapshot()).ok
    assert check(log, Snapshot(relations={EDGE: StoredRelation("r9", 1.0, [1.0])})).applied == 1
    without_history = check(log, Snapshot(relations={EDGE: StoredRelation("r9", 1.0, [])}))
    assert len(without_history.partial) == 1


def test_a_refused_relation_create_that_is_present_leaked() -> None:
    log = [relation(0, "create", 1.0, "rejected", relation_id=None)]
    verdict = check(log, Snapshot(relations={EDGE: StoredRelation("r9", 1.0, [1.0])}))
    assert len(verdict.leaked) == 1


def test_a_conflicting_create_leaves_the_weight_alone() -> None:
    log = [relation(0, "create", 1.0, "acked"), relation(1, "create", 5.0, "unknown")]
    assert check(log, Snapshot(relations={EDGE: StoredRelation("r1", 1.0, [1.0])})).ok
    overwritten = check(log, Snapshot(relations={EDGE: StoredRelation("r1", 5.0, [1.0, 5.0])}))
    assert overwritten.leaked


READ = Answered("r-1", "GET", "/api/v1/tensors/t1", "read", 200)
WRITE = Answered("r-2", "POST", "/api/v1/tensors/t1/values", "update", 200)
AUDIT: AuditTrail = {
    "r-1": {("read", "GET", "/api/v1/tensors/t1")},
    "r-2": {("update", "POST", "/api/v1/tensors/t1/values")},
}


def test_every_answered_request_needs_its_audit_record() -> None:
    verdict = check([], Snapshot(audit=AUDIT), [READ, WRITE])
    assert verdict.ok and verdict.reads == 1
    without_read = check([], Snapshot(audit={"r-2": AUDIT["r-2"]}), [READ, WRITE])
    assert len(without_read.missing) == 1 and "r-1" in without_read.missing[0] and not without_read.ok


def test_an_audit_record_of_another_action_or_path_does_not_count() -> None:
    wrong_action = check([], Snapshot(audit={"r-1": {("update", "GET", "/api/v1/tensors/t1")}}), [READ])
    assert len(wrong_action.missing) == 1 and "'read'" in wrong_action.missing[0]
    wrong_path = check([], Snapshot(audit={"r-1": {("read", "GET", "/api/v1/tensors/t2")}}), [READ])
    assert len(wrong_path.missing) == 1


def test_an_answer_without_a_request_id_cannot_be_audited() -> None:
    verdict = check([], Snapshot(audit=AUDIT), [Answered(None, "GET", "/api/v1/entities/e1", "read", 200)])
    assert len(verdict.missing) == 1 and "X-Request-ID" in verdict.missing[0]
