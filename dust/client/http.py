"""The client's transport: one HTTP call at a time, signed in, with problem+json raised as DUST's own errors.

The methods of ``dust.Client`` are written once, as plans (``dust.client.plans``) that yield ``Call``s and get the
decoded answers back; ``Transport`` runs them over ``httpx.Client`` and ``AsyncTransport`` over
``httpx.AsyncClient``. Both share ``Credentials`` (what to sign with, and when to refresh) and ``answer`` (the
JSON of a success, or the exception its problem names).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import orjson

from dust.core.errors import (
    Conflict,
    DustError,
    Forbidden,
    InvalidInput,
    NotFound,
    OutOfRange,
    ProblemType,
    TooLarge,
    Unauthorized,
    Unavailable,
)

R = TypeVar("R")
PREFIX = "/api/v1"
# The exceptions the embedded API raises, by the problem type the server names them with. Other problems
# (405, 429, 5xx …) are a plain DustError with the server's status, title and type.
RAISED: dict[str, type[DustError]] = {
    ProblemType.invalid_input: InvalidInput,
    ProblemType.out_of_range: OutOfRange,
    ProblemType.unauthorized: Unauthorized,
    ProblemType.refresh_token_reused: Unauthorized,
    ProblemType.forbidden: Forbidden,
    ProblemType.not_found: NotFound,
    ProblemType.conflict: Conflict,
    ProblemType.too_large: TooLarge,
    ProblemType.unavailable: Unavailable,
}


@dataclass(frozen=True)
class Call:
    """One request: ``path`` under /api/v1, query ``params``, a JSON body or an HTML ``form``."""

    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    json: Any = None
    form: dict[str, str] | None = None
    signed: bool = True  # False for the sign-in calls themselves


@dataclass(frozen=True)
class Pause:
    """Wait ``seconds`` before the next call (polling a job), in the way of the transport: sleep or await."""

    seconds: float


# A client method as a generator: it yields calls (or pauses), is sent each one's decoded answer (a DustError is
# thrown into it, where it may be caught), and returns the result.
Plan = Generator[Call | Pause, Any, R]


def problem_of(response: httpx.Response) -> DustError:
    """The exception a 4xx/5xx answer stands for, with the server's ``detail`` and ``errors``."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    detail = str(body.get("detail") or response.reason_phrase or f"HTTP {response.status_code}")
    kind = RAISED.get(str(body.get("type")))
    if kind is Unauthorized:
        return Unauthorized(detail)
    if kind is not None:
        return kind(detail, errors=body.get("errors"))
    error = DustError(detail, errors=body.get("errors"))
    error.status = response.status_code
    error.title = str(body.get("title") or response.reason_phrase)
    if body.get("type") in ProblemType._value2member_map_:
        error.type = ProblemType(body["type"])
    return error


def answer(response: httpx.Response) -> Any:
    """The decoded JSON of a success (None for 204), else the problem raised."""
    if response.status_code >= 400:
        raise problem_of(response)
    if response.status_code == 204 or not response.content:
        return None
    return response.json()


class Credentials:
    """What a request is signed with: a token or API key as given, or the tokens of a sign-in with username and
    password, refreshed with the refresh token once when the server says the access token is no longer good."""

    def __init__(self, token: str | None, api_key: str | None, username: str | None, password: str | None) -> None:
        given = [name for name, v in (("token", token), ("api_key", api_key), ("username", username)) if v]
        if len(given) > 1:
            raise ValueError(f"give one of token, api_key or username/password, not {' and '.join(given)}")
        if (username is None) != (password is None):
            raise ValueError("username and password go together")
        self.access = token or api_key
        self.refresh: str | None = None
        self.login = (username, password) if username is not None and password is not None else None
        self.lock = threading.Lock()  # one refresh at a time: a refresh token is good for one use

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access}"} if self.access else {}

    def sign_in(self) -> Call | None:
        """The call that signs in, while not signed in yet."""
        if self.login is None or self.access is not None:
            return None
        username, password = self.login
        return Call("POST", "/auth/token", form={"username": username, "password": password}, signed=False)

    def renewal(self, used: str | None) -> Call | None:
        """The call that trades the refresh token for new tokens after ``used`` was refused, if it can be; None
        when another thread renewed them meanwhile (retry with those) or there is nothing to renew with."""
        if self.access != used or self.refresh is None:
            return None
        token, self.refresh = self.refresh, None  # used once: a second 401 is final
        return Call("POST", "/auth/refresh", json={"refresh_token": token}, signed=False)

    def took(self, pair: dict[str, Any]) -> None:
        self.access, self.refresh = pair["access_token"], pair["refresh_token"]


def _request(client: httpx.Client | httpx.AsyncClient, call: Call, headers: dict[str, str]) -> httpx.Request:
    headers = dict(headers) if call.signed else {}
    content = None
    if call.json is not None:  # orjson: fast for batches of values, and NumPy numbers, UUIDs and datetimes as JSON
        content = orjson.dumps(call.json, option=orjson.OPT_SERIALIZE_NUMPY)
        headers["Content-Type"] = "application/json"
    return client.build_request(
        call.method, PREFIX + call.path, params=list(call.params), content=content, data=call.form, headers=headers
    )


class Transport:
    """Runs plans over one ``httpx.Client`` (a pool of kept-alive connections)."""

    def __init__(self, url: str, credentials: Credentials, timeout: float) -> None:
        self.http = httpx.Client(base_url=url.rstrip("/").removesuffix(PREFIX), timeout=timeout)
        self.credentials = credentials

    def run(self, plan: Plan[R]) -> R:
        try:
            step = next(plan)
            while True:
                try:
                    if isinstance(step, Pause):
                        time.sleep(step.seconds)
                        answered = None
                    else:
                        answered = self.send(step)
                except DustError as problem:
                    step = plan.throw(problem)
                else:
                    step = plan.send(answered)
        except StopIteration as done:
            return done.value

    def send(self, call: Call) -> Any:
        credentials = self.credentials
        if call.signed:
            with credentials.lock:
                first = credentials.sign_in()
                if first is not None:
                    credentials.took(self.send(first))
        used = credentials.access
        response = self.http.send(_request(self.http, call, credentials.headers()))
        if response.status_code == 401 and call.signed:
            with credentials.lock:
                renewal = credentials.renewal(used)
                if renewal is not None:
                    credentials.took(self.send(renewal))
            if credentials.access != used:
                response = self.http.send(_request(self.http, call, credentials.headers()))
        return answer(response)

    def close(self) -> None:
        self.http.close()


class AsyncTransport:
    """Runs plans over one ``httpx.AsyncClient``."""

    def __init__(self, url: str, credentials: Credentials, timeout: float) -> None:
        self.http = httpx.AsyncClient(base_url=url.rstrip("/").removesuffix(PREFIX), timeout=timeout)
        self.credentials = credentials
        self.lock = asyncio.Lock()  # one sign-in or refresh at a time among the tasks

    async def run(self, plan: Plan[R]) -> R:
        try:
            step = next(plan)
            while True:
                try:
                    if isinstance(step, Pause):
                        await asyncio.sleep(step.seconds)
                        answered = None
                    else:
                        answered = await self.send(step)
                except DustError as problem:
                    step = plan.throw(problem)
                else:
                    step = plan.send(answered)
        except StopIteration as done:
            return done.value

    async def send(self, call: Call) -> Any:
        credentials = self.credentials
        if call.signed:
            async with self.lock:
                first = credentials.sign_in()
                if first is not None:
                    credentials.took(await self.send(first))
        used = credentials.access
        response = await self.http.send(_request(self.http, call, credentials.headers()))
        if response.status_code == 401 and call.signed:
            async with self.lock:
                renewal = credentials.renewal(used)
                if renewal is not None:
                    credentials.took(await self.send(renewal))
            if credentials.access != used:
                response = await self.http.send(_request(self.http, call, credentials.headers()))
        return answer(response)

    async def aclose(self) -> None:
        await self.http.aclose()
