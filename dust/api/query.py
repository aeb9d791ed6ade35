"""Query parameters a hot route reads itself, in one validation.

FastAPI reads and validates each declared query parameter on its own, at ~17 µs apiece, present or not
(bench/serve.py's point read declared four: ~65 µs of the ~1.2 ms it cost in process). A route on the hot path
declares them as a ``QueryModel`` instead, reads them with ``Model.of(request)`` (one validation; a bad value is
a 422 worded as every other), and lists them in its OpenAPI with ``documented``, as FastAPI would have.
"""

from __future__ import annotations

from typing import Any, Self

from fastapi import Request
from pydantic import BaseModel, ConfigDict, ValidationError

from dust.core.errors import invalid_input


class QueryModel(BaseModel):
    """The query parameters of a route, by their names in the query string (``alias``); other names (a read's
    axis labels, say) are left to the route."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    @classmethod
    def of(cls, request: Request) -> Self:
        try:
            return cls.model_validate(dict(request.query_params))  # a name given twice: the last, as FastAPI
        except ValidationError as error:
            raise invalid_input([{**e, "loc": ("query", *e["loc"])} for e in error.errors()]) from None

    @classmethod
    def names(cls) -> frozenset[str]:
        return frozenset(field.alias or name for name, field in cls.model_fields.items())


def documented(model: type[QueryModel], route: dict[str, Any]) -> dict[str, Any]:
    """``route`` (a route's options, ``allow(...)``'s say) with ``model``'s fields added to its OpenAPI as query
    parameters, each as FastAPI lists one it reads."""
    schema = model.model_json_schema(by_alias=True)
    required = set(schema.get("required", ()))
    parameters = [_parameter(name, field, name in required) for name, field in schema["properties"].items()]
    extra = route.get("openapi_extra") or {}
    return {**route, "openapi_extra": {**extra, "parameters": [*extra.get("parameters", []), *parameters]}}


def _parameter(name: str, schema: dict[str, Any], required: bool) -> dict[str, Any]:
    parameter = {"name": name, "in": "query", "required": required, "schema": schema}
    if "description" in schema:
        parameter["description"] = schema["description"]
    return parameter
