"""``dust.Client``: the methods of ``dust.Dust``, with the same names, arguments and results, over REST.

    db = dust.connect("http://127.0.0.1:8000", username="ada", password="…")  # or token=, api_key=
    jane = db.create_entity("patient", "Jane Doe")
    db.read_tensor(t.id, labels={"metric": "heart_rate"}).to_pandas()

Each method is a plan (``dust.client.plans``, ``tensors``, ``extra``) run by a transport (``dust.client.http``):
``Client`` over ``httpx.Client``, ``AsyncClient`` over ``httpx.AsyncClient`` (``await db.get_entity(…)``). The
methods themselves are written out in ``dust.client.methods`` (made by ``python -m dust.client.surface``), so that
editors and type checkers see them with their signatures.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from dust.client import extra, tensors
from dust.client.http import AsyncTransport, Credentials, Plan, Transport
from dust.client.methods import AsyncMethods, Methods
from dust.client.plans import OPERATIONS, operation
from dust.engine.tensors import TensorPublic

MAX_BATCH = 100_000  # DUST_MAX_BATCH_VALUES's default; a server that takes fewer says so (413) and gets halves
TIMEOUT = 60.0
PLANS: dict[str, Callable[..., Plan[Any]]] = {name: operation(name, op) for name, op in OPERATIONS.items()} | {
    "read_tensor": tensors.read_tensor,
    "get_tensor": tensors.get_tensor,
    "create_tensors": tensors.create_tensors,
    "write_values": tensors.write_values,
    "write_array": tensors.write_array,
    "write_arrays": tensors.write_arrays,
    "create_entities": extra.create_entities,
    "train_model": extra.train_model,
    "predict": extra.predict,
}
# Methods of Dust a client has no use for, and why (tests/client/test_parity.py holds Client to the rest).
NOT_OVER_HTTP = {
    "session": "a transaction in this process for engine calls; over HTTP each request is its own transaction",
}


class _Base:
    """What the plans of both clients keep: tensors' metadata and the largest batch to send."""

    def __init__(self, batch: int) -> None:
        self._axes: dict[uuid.UUID, TensorPublic] = {}
        self._batch = batch

    def _remember(self, meta: TensorPublic) -> TensorPublic:
        self._axes[meta.id] = meta
        return meta

    def _batches(self, cells: Sequence[Any], what: str) -> Iterator[Sequence[Any]]:
        """``cells`` in batches the server takes, each one request (all or nothing); a bar on a terminal when
        there are several."""
        size = self._batch
        if len(cells) <= size:
            yield cells
            return
        console = Console(stderr=True)
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, disable=not console.is_terminal) as progress:
            task = progress.add_task(f"writing {what}", total=len(cells))
            for first in range(0, len(cells), size):
                yield cells[first : first + size]
                progress.advance(task, len(cells[first : first + size]))


class Client(_Base, Methods):
    """A served DUST, with the methods of ``dust.Dust`` (``dust.connect``)."""

    def __init__(self, transport: Transport, *, batch: int = MAX_BATCH) -> None:
        super().__init__(batch)
        self._transport = transport

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self._transport.run(PLANS[name](self, *args, **kwargs))

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncClient(_Base, AsyncMethods):
    """``Client`` with every method a coroutine (``dust.connect_async``)."""

    def __init__(self, transport: AsyncTransport, *, batch: int = MAX_BATCH) -> None:
        super().__init__(batch)
        self._transport = transport

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return await self._transport.run(PLANS[name](self, *args, **kwargs))

    async def close(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()


def connect(
    url: str,
    *,
    token: str | None = None,
    api_key: str | None = None,
    username: str | None = None,
    password: str | None = None,
    timeout: float = TIMEOUT,
) -> Client:
    """A ``Client`` for the DUST served at ``url`` (``http://host:8000``, with or without ``/api/v1``), signed in
    with an access ``token``, an ``api_key``, or ``username`` and ``password`` (then refreshed as needed)."""
    credentials = Credentials(token, api_key, username, password)
    transport = Transport(url, credentials, timeout)
    first = credentials.sign_in()
    if first is not None:  # a wrong password fails here, not at the first call
        try:
            credentials.took(transport.send(first))
        except BaseException:
            transport.close()
            raise
    return Client(transport)


def connect_async(
    url: str,
    *,
    token: str | None = None,
    api_key: str | None = None,
    username: str | None = None,
    password: str | None = None,
    timeout: float = TIMEOUT,
) -> AsyncClient:
    """``connect`` for asyncio: an ``AsyncClient``, which signs in at its first call."""
    return AsyncClient(AsyncTransport(url, Credentials(token, api_key, username, password), timeout))
