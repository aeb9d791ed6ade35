"""Logging: plain, bounded tracebacks without local variables; a writer thread that a blocked stderr cannot
stall; settings whose repr shows no secret."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
from collections.abc import Callable

import pytest

from dust.core import logging as dust_logging
from dust.core.config import Settings
from dust.core.logging import MAX_TRACEBACK_CHARS, configure_logging, exception_text, flush_logs, get_logger

WAIT = 10.0  # seconds; only a broken build waits this long


class BlockedStderr(io.StringIO):
    """A stderr whose reader has stopped: every write waits until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def write(self, text: str) -> int:
        self.entered.set()
        self.release.wait(WAIT)
        return super().write(text)

    def isatty(self) -> bool:
        return False


def recurse(depth: int) -> None:
    """Raise a RecursionError ``depth`` frames down, through two functions in turn so that Python cannot fold
    the traceback's repeated lines into one."""
    if depth <= 0:
        raise RecursionError("deep down")
    _recurse_again(depth - 1)


def _recurse_again(depth: int) -> None:
    recurse(depth - 1)


def finishes(work: Callable[[], object]) -> bool:
    """Run ``work`` in a thread; whether it finished within WAIT (it does not if logging blocks)."""
    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(WAIT)
    return not worker.is_alive()


def test_settings_repr_and_str_show_no_key_and_no_password() -> None:
    settings = Settings(
        database_url="postgresql+psycopg://u:hunter2@h/db", redis_url="redis://:redispw@h:6379/0", secret_key="s" * 40
    )
    for text in (repr(settings), str(settings), repr(settings.secret_key)):
        assert "hunter2" not in text and "redispw" not in text and "s" * 40 not in text
    assert settings.secret_key is not None and settings.secret_key.get_secret_value() == "s" * 40


@pytest.mark.parametrize("fmt", ["json", "console"])
@pytest.mark.parametrize("source", ["structlog", "stdlib"])
def test_a_logged_exception_is_a_plain_traceback_without_locals(
    fmt: str, source: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", fmt)
    flush_logs()
    capsys.readouterr()
    try:
        secret_local = "LOCALVALUE"
        raise ZeroDivisionError(len(secret_local))
    except ZeroDivisionError:
        if source == "structlog":
            get_logger("test").exception("failed")
        else:
            logging.getLogger("test.stdlib").exception("failed")
    assert flush_logs()
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ZeroDivisionError: 10" in err
    assert "LOCALVALUE" not in err


def test_a_deep_traceback_keeps_its_innermost_frames_and_says_it_was_cut() -> None:
    with pytest.raises(RecursionError) as raised:
        recurse(800)
    text = exception_text(raised.value)
    assert len(text) <= MAX_TRACEBACK_CHARS
    assert text.startswith("[traceback cut: ") and "outer frames left out" in text
    assert text.endswith("RecursionError: deep down")


def test_a_huge_exception_message_is_cut_in_the_middle() -> None:
    with pytest.raises(ValueError) as raised:
        raise ValueError("x" * 1_000_000)
    text = exception_text(raised.value)
    assert len(text) < MAX_TRACEBACK_CHARS + 100
    assert text.startswith("Traceback") and "characters left out]" in text and text.endswith("xxx")


def test_logging_returns_while_stderr_is_blocked_and_the_lines_arrive_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure_logging("INFO", "json")
    flush_logs()
    stderr = BlockedStderr()
    monkeypatch.setattr(sys, "stderr", stderr)
    log = get_logger("test")
    try:
        assert finishes(lambda: [log.info("line", i=i) for i in range(100)])
        assert stderr.entered.wait(WAIT)  # the writer thread is stuck in the first write
        assert not flush_logs(timeout=0.01)
    finally:
        stderr.release.set()
    assert flush_logs()
    assert [json.loads(line)["i"] for line in stderr.getvalue().splitlines()] == list(range(100))


def test_a_stderr_that_never_drains_costs_bounded_memory_and_the_loss_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure_logging("INFO", "json")
    flush_logs()
    stderr = BlockedStderr()
    monkeypatch.setattr(sys, "stderr", stderr)
    monkeypatch.setattr(dust_logging, "_lines", dust_logging._Lines(limit=3))
    log = get_logger("test")
    log.info("line", i=0)
    assert stderr.entered.wait(WAIT)  # the writer is stuck writing line 0
    assert finishes(lambda: [log.info("line", i=i) for i in range(1, 10)])  # 1..3 wait; 4..9 are dropped
    stderr.release.set()
    assert flush_logs()
    log.info("after")
    assert flush_logs()
    lines = [json.loads(line) for line in stderr.getvalue().splitlines()]
    assert [line.get("i") for line in lines[:4]] == [0, 1, 2, 3]
    notice, after = lines[4:]
    assert notice["event"] == "6 log lines were dropped: stderr did not keep up" and notice["level"] == "warning"
    assert after["event"] == "after"


def test_lines_logged_from_many_threads_are_all_written_once(capsys: pytest.CaptureFixture[str]) -> None:
    """The writer takes lines in batches without a lock on the logging side: none lost, none repeated."""
    configure_logging("INFO", "json")
    flush_logs()
    capsys.readouterr()
    log = get_logger("test")
    threads = [threading.Thread(target=lambda t=t: [log.info("line", t=t, i=i) for i in range(500)]) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert flush_logs()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert sorted((line["t"], line["i"]) for line in lines) == [(t, i) for t in range(4) for i in range(500)]
    for t in range(4):  # each thread's lines in the order it logged them
        assert [line["i"] for line in lines if line["t"] == t] == list(range(500))
