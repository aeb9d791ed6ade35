"""Slow clients against a real ``dust serve``: a request trickled in (head or body), a connection that sends
nothing and a head without end are each cut off at ``DUST_REQUEST_TIMEOUT_SECONDS`` or ``DUST_MAX_HEADER_BYTES``,
while other clients are served, and nothing is left held afterwards.

Raw sockets, since an HTTP client sends a request whole. Every loop is bounded (``LIMIT`` seconds of trickling).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from dust.core.errors import ProblemType
from tests.reliability.server import Server, admin_key, bearer, database

TIMEOUT = 2.0  # DUST_REQUEST_TIMEOUT_SECONDS of the server under test
SLACK = 3.0  # how late a cut-off may come on a loaded machine
LIMIT = TIMEOUT + SLACK + 2  # longest any trickle goes on before the test gives up on the server
ENDLESS_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 4096  # never reaches \r\n\r\n


@dataclass
class Live:
    server: Server
    key: str

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.server.base.removeprefix("http://").split(":")
        return host, int(port)

    def connect(self) -> socket.socket:
        return socket.create_connection(self.address, timeout=LIMIT)

    def sockets(self) -> int:
        """Sockets the server process holds open (its listening socket among them)."""
        assert self.server.process is not None
        fds = f"/proc/{self.server.process.pid}/fd"
        return sum(_link(f"{fds}/{fd}").startswith("socket:") for fd in _listdir(fds))


def _link(path: str) -> str:
    """Where a descriptor points, or '' if it was closed since the directory was listed."""
    try:
        return os.readlink(path)
    except FileNotFoundError:
        return ""


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:  # pragma: no cover - the server died; the test fails on its assertions
        return []


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    with database("sqlite") as url:
        key = admin_key(url)
        env = {"DUST_REQUEST_TIMEOUT_SECONDS": str(TIMEOUT), "DUST_LOG_LEVEL": "WARNING"}
        with Server(url, **env) as server:
            server.start()
            yield Live(server, key)


@dataclass
class Cut:
    seconds: float  # from connecting until the server answered or closed
    answer: bytes  # what it sent back before closing (b"" if nothing)

    def problem(self, status: int) -> dict[str, Any]:
        head, _, body = self.answer.partition(b"\r\n\r\n")
        assert head.startswith(f"HTTP/1.1 {status} ".encode()), self.answer[:200]
        assert b"content-type: application/problem+json" in head.lower()
        found: dict[str, Any] = json.loads(body)
        assert found["status"] == status
        assert found["type"] == {408: ProblemType.request_timeout, 431: ProblemType.header_too_large}[status]
        return found


def trickle(sock: socket.socket, first: bytes, then: bytes, started: float, interval: float = 0.2) -> Cut:
    """Send ``first``, then ``then`` a byte every ``interval`` s until the server answers or closes (or LIMIT)."""
    sock.sendall(first)
    for i in range(int(LIMIT / interval)):
        readable, _, _ = select.select([sock], [], [], interval)
        if readable:
            return Cut(time.monotonic() - started, read_to_end(sock))
        try:
            sock.sendall(then[i % len(then) : i % len(then) + 1])
        except OSError:  # closed under us between two looks
            return Cut(time.monotonic() - started, read_to_end(sock))
    raise AssertionError(f"the server still took a trickled request after {LIMIT} s")


def read_to_end(sock: socket.socket) -> bytes:
    data = b""
    for _ in range(1000):
        try:
            chunk = sock.recv(65536)
        except OSError:
            return data
        if not chunk:
            return data
        data += chunk
    raise AssertionError("the server kept sending")


def cut_in_time(cut: Cut) -> None:
    assert TIMEOUT - 0.1 <= cut.seconds <= TIMEOUT + SLACK, cut.seconds


def body_trickle(live: Live, name: str) -> Cut:
    """POST an entity whose JSON is complete but whose declared length is not: the rest is trickled blanks."""
    body = json.dumps({"kind": "patient", "name": name}).encode()
    head = (
        f"POST /api/v1/entities HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {live.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body) + 1000}\r\n\r\n"
    ).encode()
    with live.connect() as sock:
        return trickle(sock, head + body, b" ", time.monotonic())


def test_a_client_trickling_its_headers_gets_408_and_is_disconnected(live: Live) -> None:
    started = time.monotonic()
    with live.connect() as sock:
        cut = trickle(sock, b"", ENDLESS_HEAD, started)
    cut_in_time(cut)
    assert f"did not arrive within {TIMEOUT:g} s" in cut.problem(408)["detail"]


def test_a_client_trickling_its_body_gets_408_and_nothing_is_written(live: Live) -> None:
    cut = body_trickle(live, "Slow Body")
    cut_in_time(cut)
    assert b"connection: close" in cut.answer.lower()
    assert "DUST_REQUEST_TIMEOUT_SECONDS" in cut.problem(408)["detail"]
    # The JSON that did arrive was a whole entity: a 408 must still mean that nothing was done.
    found = httpx.get(f"{live.server.api}/entities", params={"q": "Slow Body"}, headers=bearer(live.key))
    assert found.status_code == 200 and found.json()["items"] == []


def test_a_connection_that_sends_nothing_is_closed(live: Live) -> None:
    started = time.monotonic()
    with live.connect() as sock:
        readable, _, _ = select.select([sock], [], [], LIMIT)
        assert readable, f"an idle connection was still open after {LIMIT} s"
        cut = Cut(time.monotonic() - started, read_to_end(sock))
    cut_in_time(cut)
    assert cut.answer == b""  # nobody asked anything: closed without an answer


def test_a_head_over_the_size_bound_is_431_at_once(live: Live) -> None:
    started = time.monotonic()
    with live.connect() as sock:
        # Just over the bound, and no more: what the server has not read when it closes would reset the
        # connection, and the reset could overtake the answer. It may answer before taking it all.
        with contextlib.suppress(OSError):
            sock.sendall(b"GET /healthz HTTP/1.1\r\n" + b"X-Big: " + b"b" * 70_000 + b"\r\n")
        cut = Cut(time.monotonic() - started, read_to_end(sock))
    assert cut.seconds < TIMEOUT
    assert "DUST_MAX_HEADER_BYTES" in cut.problem(431)["detail"]


def test_others_are_served_during_trickles_and_nothing_is_left_held(live: Live) -> None:
    """Trickles (more than the 40 worker threads) hold no thread: requests that need one are served meanwhile;
    once the trickles are cut off the server holds no more sockets than before, and a burst all succeeds."""
    api, auth = live.server.api, bearer(live.key)
    assert httpx.get(f"{live.server.base}/healthz").status_code == 200
    time.sleep(0.3)  # the server closes its side of that connection
    before = live.sockets()
    trickles = 50
    with ThreadPoolExecutor(trickles) as pool:
        cuts = [pool.submit(body_trickle, live, f"Trickle {n}") for n in range(trickles)]
        time.sleep(0.3)  # every trickle connected and sending
        with httpx.Client(headers=auth, timeout=TIMEOUT + SLACK) as client:
            made = client.post(f"{api}/entities", json={"kind": "patient", "name": "Served meanwhile"})
            health = client.get(f"{live.server.base}/healthz")
        assert made.status_code == 201 and health.status_code == 200
        assert not any(cut.done() for cut in cuts), "a trickle ended before the requests beside it were served"
        ends = [cut.result() for cut in cuts]
    assert all(b" 408 " in cut.answer[:20] for cut in ends)
    with httpx.Client(headers=auth, timeout=TIMEOUT + SLACK) as client:
        statuses = [client.get(f"{api}/entities", params={"limit": 5}).status_code for _ in range(100)]
    assert statuses == [200] * 100
    for _ in range(50):  # the server closes its side once it sees ours closed
        if live.sockets() <= before:
            break
        time.sleep(0.1)
    assert live.sockets() <= before


def test_beyond_max_connections_a_request_is_503_until_the_deadline_frees_them() -> None:
    limit = 4
    with database("sqlite") as url:
        env = {"DUST_REQUEST_TIMEOUT_SECONDS": str(TIMEOUT), "DUST_MAX_CONNECTIONS": str(limit)}
        with Server(url, DUST_LOG_LEVEL="WARNING", **env) as server:
            server.start()
            live = Live(server, "")
            idle = [live.connect() for _ in range(limit)]
            try:
                time.sleep(0.2)
                busy = httpx.get(f"{server.base}/healthz")
                assert busy.status_code == 503 and busy.headers["content-type"] == "application/problem+json"
                assert "DUST_MAX_CONNECTIONS" in busy.json()["detail"] and busy.headers["retry-after"] == "1"
                assert busy.json()["type"] == ProblemType.unavailable
                for sock in idle:  # each is closed by the server at the deadline
                    readable, _, _ = select.select([sock], [], [], LIMIT)
                    assert readable and read_to_end(sock) == b""
                assert httpx.get(f"{server.base}/healthz").status_code == 200
            finally:
                for sock in idle:
                    sock.close()
