"""What one request's log line costs: CPU microseconds per line (the logging thread and the writer thread
together), for each log format, with stderr going to a file as under ``dust serve``.

    .venv/bin/python bench/log_line.py              # 20,000 lines per format
    .venv/bin/python bench/log_line.py --lines 5000

The line is the one ``dust.api.middleware.RequestLog`` writes for every request, with a request id bound.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import structlog

from dust.core.logging import configure_logging, flush_logs, get_logger


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=20_000)
    args = parser.parse_args()
    out = sys.stdout
    with tempfile.TemporaryFile("w") as sink:
        sys.stderr = sink  # the lines go to a file, as a server's do; the figures to the terminal
        for fmt in ("console", "json"):
            print(f"{fmt:8} {per_line_us(fmt, args.lines):6.1f} µs CPU per request log line", file=out)
    print(f"Python {sys.version.split()[0]}, structlog {structlog.__version__}, {os.cpu_count()} cores", file=out)


def per_line_us(fmt: str, lines: int) -> float:
    configure_logging("INFO", fmt)
    log = get_logger("dust.request")
    structlog.contextvars.bind_contextvars(request_id="0123456789abcdef0123456789abcdef")
    flush_logs()
    started = time.process_time()  # all threads of the process: the writer's work counts
    for _ in range(lines):
        log.info(
            "request",
            method="GET",
            route="/api/v1/entities/{entity_id}",
            path="/api/v1/entities/2f1c9d2e-5b7a-4c1e-9f0a-3d2b1c4e5f60",
            status=200,
            duration_ms=1.23,
            user="bench-admin",
            client="127.0.0.1",
        )
    assert flush_logs(60)
    return (time.process_time() - started) * 1e6 / lines


if __name__ == "__main__":
    main()
