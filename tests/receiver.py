"""A webhook receiver for tests: a real HTTP server on 127.0.0.1 in a thread.

It fails the first ``fail`` requests (answering ``status``), then answers 200, and records every request it got
(method, path, headers, body, what it answered). ``stall=True`` makes it take each request and never answer
until it is closed: a receiver that is up but dead. ``drip=seconds`` makes it answer 200 one byte at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    answered: int | None  # None: stalled, never answered


@dataclass
class Receiver:
    fail: int = 0
    status: int = 500
    stall: bool = False
    location: str | None = None  # sent with every failing answer (a redirect, when status is 3xx)
    drip: float | None = None  # seconds between the bytes of each answer: a receiver that answers very slowly
    says: bytes = b"receiver says no"  # the body of a failing answer
    requests: list[Received] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Event = field(default_factory=threading.Event)  # set by the first request
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def accepted(self) -> list[Received]:
        return [r for r in self.requests if r.answered is not None and 200 <= r.answered < 300]

    def answer(self, request: Received) -> int | None:
        """Record ``request``; what to answer it with (None: stall)."""
        with self._lock:
            failing = len([r for r in self.requests if r.answered != 200]) < self.fail
            request.answered = None if self.stall else (self.status if failing else 200)
            self.requests.append(request)
        self.arrived.set()
        return request.answered


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # the http.server naming
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status = receiver.answer(Received(self.command, self.path, headers, body, None))
            if status is None:
                receiver.released.wait(60)
                self.close_connection = True
                return
            answer = b'{"ok": true}' if status == 200 else receiver.says
            if receiver.drip is not None:
                self._drip(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", receiver.drip)
                return
            self.send_response(status)
            if status != 200 and receiver.location:
                self.send_header("Location", receiver.location)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def _drip(self, answer: bytes, seconds: float) -> None:
            for byte in answer:
                if receiver.released.wait(seconds):
                    return
                try:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                except OSError:  # the client gave up
                    return

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    return Handler


@contextmanager
def receiving(**options: Any) -> Iterator[Receiver]:
    """A receiver (``Receiver``'s fields as options) serving at ``receiver.url`` until the block ends."""
    receiver = Receiver(**options)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/dust"
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.released.set()
        server.shutdown()
        server.server_close()
        thread.join(5)
