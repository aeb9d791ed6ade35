"""Structured logging: one configuration for the whole process, JSON or console by setting.

A line is rendered where it is logged and written to stderr by one background thread, so a slow or blocked
stderr never stalls a request. Tracebacks are plain (no local variables: they held the signing key, tokens and
request bodies) and bounded in size (a RecursionError has a thousand frames).
"""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import os
import queue
import sys
import traceback

import structlog

MAX_FRAMES = 20  # innermost frames kept of each exception in a traceback
MAX_TRACEBACK_CHARS = 20_000
MAX_QUEUED_LINES = 10_000  # lines waiting for a slow stderr; beyond this they are counted and dropped


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
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _plain_exception, renderer],
    )
    handler = _QueueHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    _writer_queue()  # start the writer now rather than in the first request
    # Alembic narrates every migration step at INFO; our own line says which revision was reached.
    logging.getLogger("alembic").setLevel(max(root.level, logging.WARNING))
    # uvicorn's own access log would repeat our one line per request.
    logging.getLogger("uvicorn.access").handlers[:] = []
    logging.getLogger("uvicorn.access").propagate = False


def flush_logs(timeout: float = 5.0) -> bool:
    """Wait until every line logged so far is written; False if stderr did not take them within ``timeout``."""
    lines = _lines
    if lines is None:
        return True
    with lines.all_tasks_done:
        return lines.all_tasks_done.wait_for(lambda: not lines.unfinished_tasks, timeout)


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


class _QueueHandler(logging.handlers.QueueHandler):
    """Renders a record in the thread that logs it and queues the line for the writer thread.

    Rendering here keeps the request's context variables and the live exception at hand, and only a string
    crosses threads: no frames, no objects that may change before they are written.
    """

    def __init__(self) -> None:
        super().__init__(queue.Queue())  # unused: enqueue() asks for the writer's queue of this process
        self.dropped = 0

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return logging.makeLogRecord({"msg": self.format(record), "levelno": record.levelno})

    def enqueue(self, record: logging.LogRecord) -> None:
        # Called under the handler's lock, so `dropped` needs no other.
        lines = _writer_queue()
        try:
            if self.dropped:
                notice = f"{self.dropped} log lines were dropped: stderr did not keep up"
                lines.put_nowait(self.prepare(logging.LogRecord(__name__, logging.WARNING, "", 0, notice, (), None)))
                self.dropped = 0
            lines.put_nowait(record)
        except queue.Full:
            # Losing a line beats stalling every request behind a stderr nobody reads.
            self.dropped += 1


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now, so a replaced stderr (a test's capture) is honoured."""

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


_lines: queue.Queue[logging.LogRecord] | None = None  # what this process's writer thread writes


def _writer_queue() -> queue.Queue[logging.LogRecord]:
    """The queue of this process's writer thread, started on first use."""
    global _lines
    if _lines is None:
        _lines = queue.Queue(MAX_QUEUED_LINES)
        logging.handlers.QueueListener(_lines, _StderrHandler()).start()  # a daemon thread
    return _lines


def _forget_writer() -> None:
    global _lines
    _lines = None


atexit.register(flush_logs, 2.0)  # bounded: a blocked stderr must not keep the process from exiting
# A forked child inherits the queue but not the thread; it starts its own writer on its first line.
os.register_at_fork(after_in_child=_forget_writer)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
