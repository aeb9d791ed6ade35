"""A QueryModel reads a route's query as FastAPI would read those parameters one by one, and documents them alike."""

from __future__ import annotations

from typing import Annotated

import pytest
from fastapi import FastAPI, Query, Request
from fastapi.testclient import TestClient
from pydantic import Field

from dust.api.problems import install as install_problems
from dust.api.query import QueryModel, documented
from dust.engine.fields import Timestamp


class Window(QueryModel):
    start: str | None = Field(None, alias="from", max_length=8, description="First.")
    limit: int = Field(10, ge=1, le=100)
    as_of: Timestamp | None = None
    kind: str = Field(description="Required.")


def _app() -> FastAPI:
    app = FastAPI()
    install_problems(app)

    @app.get("/declared")
    def declared(
        kind: Annotated[str, Query(description="Required.")],
        start: Annotated[str | None, Query(alias="from", max_length=8, description="First.")] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 10,
        as_of: Annotated[Timestamp | None, Query()] = None,
    ) -> dict[str, object]:
        return {"from": start, "limit": limit, "as_of": as_of, "kind": kind}

    @app.get("/read", **documented(Window, {}))
    def read(request: Request) -> dict[str, object]:
        window = Window.of(request)
        return {"from": window.start, "limit": window.limit, "as_of": window.as_of, "kind": window.kind}

    return app


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(_app())


@pytest.mark.parametrize(
    "query",
    [
        "kind=a",
        "kind=a&from=2026&limit=5&as_of=2026-01-01T00:00:00%2B01:00&axis=label",
        "kind=a&limit=1&limit=7",  # given twice: the last
        "kind=a&from=123456789",  # too long
        "kind=a&limit=0&as_of=12345",  # two problems: both named, the first in the detail
        "from=x",  # the required one missing
        "kind=a&as_of=yesterday",
    ],
)
def test_it_answers_as_the_parameters_declared_one_by_one(client: TestClient, query: str) -> None:
    declared, read = client.get(f"/declared?{query}"), client.get(f"/read?{query}")
    assert (read.status_code, read.json()) == (declared.status_code, declared.json())


def test_a_bad_value_is_a_422_that_names_the_parameter(client: TestClient) -> None:
    problem = client.get("/read?kind=a&from=123456789").json()
    assert problem["status"] == 422
    assert problem["detail"] == "query.from: String should have at most 8 characters"


def test_the_openapi_lists_them_as_fastapi_lists_declared_ones(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    by_name = {p["name"]: p for p in paths["/declared"]["get"]["parameters"]}
    assert sorted(paths["/read"]["get"]["parameters"], key=lambda p: p["name"]) == sorted(
        by_name.values(), key=lambda p: p["name"]
    )


def test_names_are_those_of_the_query_string() -> None:
    assert Window.names() == {"from", "limit", "as_of", "kind"}
