"""Structured logging: one configuration for the whole process, JSON or console by setting.

A line is rendered where it is logged and written to stderr by one background thread, so a slow or blocked
stderr never stalls a request. Tracebacks are plain (no local variables: they held the signing key, tokens and
request bodies) and bounded in size (a RecursionError has a thousand frames).
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import sys
import threading
import traceback
from typing import cast

import structlog

MAX_FRAMES = 20  # innermost frames kept of each exception in a traceback
MAX_TRACEBACK_CHARS = 20_000
MAX_QUEUED_LINES = 10_000  # lines waiting for a slow stderr; beyond this they are counted and dropped
PAUSE_SECONDS = 0.05  # how often the writer looks for lines to write: how late a line may reach stderr


def configure_logging(level: str = "INFO", fmt: str = "console") -> None:
    """Route structlog and the standard library through one renderer at ``level``."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        # Only a safety net: _plain_exception has already turned exc_info into text. The default formatter
        # (rich) prints every frame's local variables.
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # structlog's own loggers render their line and hand it to the writer directly: through the standard library
    # (a record, its handlers, a formatter that copies the record) a line cost four times as much, and a request
    # logs one (bench/log_line.py).
    structlog.configure(
        processors=[*shared, _plain_exception, renderer],
        logger_factory=_LineLogger,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=False,  # configure_logging may run again (tests, the CLI): loggers follow it
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _plain_exception, renderer],
    )
    handler = _LineHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    _writer()  # start the writer now rather than in the first request
    # Alembic narrates every migration step at INFO; our own line says which revision was reached.
    logging.getLogger("alembic").setLevel(max(root.level, logging.WARNING))
    # uvicorn's own access log would repeat our one line per request.
    logging.getLogger("uvicorn.access").handlers[:] = []
    logging.getLogger("uvicorn.access").propagate = False


def flush_logs(timeout: float = 5.0) -> bool:
    """Wait until every line logged so far is written; False if stderr did not take them within ``timeout``."""
    return _lines is None or _lines.flush(timeout)


def exception_text(error: BaseException) -> str:
    """``error``'s traceback without local variables, its innermost frames only, at most a few pages long."""
    depth = sum(1 for _ in traceback.walk_tb(error.__traceback__))
    text = "".join(traceback.format_exception(error, limit=-MAX_FRAMES)).rstrip("\n")
    if depth > MAX_FRAMES:
        text = f"[traceback cut: {depth - MAX_FRAMES} outer frames left out]\n{text}"
    if len(text) > MAX_TRACEBACK_CHARS:
        # Both ends: the head says where it started, the tail holds the exception and its message.
        half = MAX_TRACEBACK_CHARS // 2
        text = f"{text[:half]}\n[traceback cut: {len(text) - 2 * half} characters left out]\n{text[-half:]}"
    return text


def _plain_exception(_logger: object, _name: str, event: structlog.types.EventDict) -> structlog.types.EventDict:
    """Replace ``exc_info`` by ``exception``: the traceback as bounded plain text."""
    exc_info = event.pop("exc_info", None)
    if isinstance(exc_info, BaseException):
        error: BaseException | None = exc_info
    elif isinstance(exc_info, tuple):
        error = exc_info[1]
    else:
        error = sys.exc_info()[1] if exc_info else None
    if error is not None:
        event["exception"] = exception_text(error)
    return event


class _LineLogger:
    """What structlog's loggers write through: the line, rendered by the processors, goes to the writer."""

    def __init__(self, *_args: object) -> None:
        pass

    def msg(self, line: str) -> None:
        _writer().put(line)

    debug = info = warning = warn = error = err = critical = fatal = exception = log = msg


class _LineHandler(logging.Handler):
    """The standard library's records (uvicorn, SQLAlchemy, Alembic…), rendered as structlog's lines are.

    Rendered in the thread that logs, where the live exception is at hand; only the line crosses threads."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        _writer().put(line)


class _Lines:
    """Lines waiting for stderr, and the thread that writes them: at most ``limit`` wait (beyond, they are counted
    and dropped, and the count is logged once stderr takes lines again); a thread that logs never waits.

    Nobody wakes the writer for a line: it looks every ``PAUSE_SECONDS`` and writes every line waiting at once.
    Waking it for each line cost a thread switch per request, more than rendering the line."""

    def __init__(self, limit: int = MAX_QUEUED_LINES) -> None:
        self.limit = limit
        self.dropped = 0
        self._waiting: collections.deque[str] = collections.deque()
        self._in_hand = 0  # lines taken from _waiting and not yet written
        self._written = 0  # lines written, ever
        self._changed = threading.Condition()
        threading.Thread(target=self._run, name="dust-log-writer", daemon=True).start()

    def put(self, line: str) -> None:
        if len(self._waiting) >= self.limit:
            self.dropped += 1  # losing a line beats stalling every request behind a stderr nobody reads
            return
        if self.dropped:
            dropped, self.dropped = self.dropped, 0
            logging.getLogger(__name__).warning(f"{dropped} log lines were dropped: stderr did not keep up")
        self._waiting.append(line)

    def flush(self, timeout: float) -> bool:
        with self._changed:
            target = self._written + self._in_hand + len(self._waiting)
            self._changed.notify_all()  # the writer need not finish its pause
            return self._changed.wait_for(lambda: self._written >= target, timeout)

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait(PAUSE_SECONDS)  # or less: a flush wakes it
                lines = [self._waiting.popleft() for _ in range(len(self._waiting))]
                self._in_hand = len(lines)
            if lines:
                self._write(lines)
            with self._changed:
                self._written += len(lines)
                self._in_hand = 0
                self._changed.notify_all()

    @staticmethod
    def _write(lines: list[str]) -> None:
        try:
            sys.stderr.write("\n".join(lines) + "\n")
            sys.stderr.flush()
        except Exception:  # a closed or broken stderr: nothing to tell it with
            pass


_lines: _Lines | None = None  # this process's writer


def _writer() -> _Lines:
    """This process's writer, started on first use (whatever ``sys.stderr`` is when it writes: a test's capture
    is honoured)."""
    global _lines
    if _lines is None:
        _lines = _Lines()
    return _lines


def _forget_writer() -> None:
    global _lines
    _lines = None


atexit.register(flush_logs, 2.0)  # bounded: a blocked stderr must not keep the process from exiting
# A forked child inherits the queue but not the thread; it starts its own writer on its first line.
os.register_at_fork(after_in_child=_forget_writer)


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    """A logger: ``log.info("event", key=value, …)``; also ``debug``, ``warning``, ``error``, ``exception``."""
    return cast(structlog.typing.FilteringBoundLogger, structlog.get_logger(name))
