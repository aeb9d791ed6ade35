"""Explore: search entities (fuzzy by name or record number, by kind and attributes), open one, create one."""

from __future__ import annotations

import json
from typing import Any

import dash_bootstrap_components as dbc
from dash import Dash, Input, Output, State, dcc, html

from dust.engine import entities, kinds
from dust.engine.entities import EntityCreate, EntityList
from dust.ui.pages.common import empty_state, entity_href, parse_filters, problem, run

PAGE = 50


def layout() -> Any:
    known, _ = run(lambda s: [k.kind for k in kinds.list_(s)])
    options = [{"label": "any kind", "value": ""}] + [{"label": k, "value": k} for k in known or []]
    search = dbc.Form(
        dbc.Row(
            [
                dbc.Col(
                    [
                        dbc.Label("Name or record number", html_for="explore-q"),
                        dbc.Input(id="explore-q", placeholder="e.g. jane doe (typos are fine)", debounce=True),
                    ],
                    md=5,
                ),
                dbc.Col(
                    [
                        dbc.Label("Kind", html_for="explore-kind"),
                        dcc.Dropdown(id="explore-kind", options=options, value="", clearable=False),
                    ],
                    md=2,
                ),
                dbc.Col(
                    [
                        dbc.Label("Attributes (key=value, …)", html_for="explore-attrs"),
                        dbc.Input(id="explore-attrs", placeholder="role=doctor", debounce=True),
                    ],
                    md=3,
                ),
                dbc.Col(
                    dbc.Button("Search", id="explore-go", color="primary", className="w-100"),
                    md=2,
                    className="d-flex align-items-end",
                ),
            ],
            className="g-2",
        ),
        id="explore-form",
        prevent_default_on_submit=True,
    )
    create = dbc.Card(
        dbc.CardBody(
            [
                html.H2("Create an entity", className="h5"),
                dbc.Row(
                    [
                        dbc.Col(
                            [
                                dbc.Label("Kind", html_for="create-kind"),
                                dbc.Input(id="create-kind", placeholder="patient"),
                            ],
                            md=3,
                        ),
                        dbc.Col([dbc.Label("Name", html_for="create-name"), dbc.Input(id="create-name")], md=4),
                        dbc.Col(
                            [
                                dbc.Label("External id (optional)", html_for="create-external"),
                                dbc.Input(id="create-external"),
                            ],
                            md=3,
                        ),
                        dbc.Col(
                            dbc.Button("Create", id="create-go", color="secondary", className="w-100"),
                            md=2,
                            className="d-flex align-items-end",
                        ),
                    ],
                    className="g-2",
                ),
                dbc.Label("Attributes (JSON object, optional)", html_for="create-attrs", className="mt-2"),
                dbc.Textarea(id="create-attrs", placeholder='{"birth_date": "1984-03-12"}', rows=2),
                html.Div(id="create-msg", role="status"),
            ]
        ),
        className="mt-4",
    )
    return html.Div(
        [
            html.H1("Explore", className="h3"),
            search,
            dcc.Loading(html.Div(id="explore-results", className="mt-3")),
            create,
        ]
    )


def results(found: EntityList) -> Any:
    if not found.items:
        return empty_state("No entity matches. Check the spelling, pick another kind, or create one below.")
    rows = [
        html.Tr(
            [
                html.Td(dcc.Link(e.name, href=entity_href(e.id))),
                html.Td(e.kind),
                html.Td(e.external_id or "—"),
                html.Td(_summary(e.attributes), className="small text-muted"),
            ]
        )
        for e in found.items
    ]
    head = html.Thead(html.Tr([html.Th("Name"), html.Th("Kind"), html.Th("External id"), html.Th("Attributes")]))
    more = html.P("More match: narrow the search.", className="small text-muted") if found.next_cursor else None
    return html.Div([dbc.Table([head, html.Tbody(rows)], hover=True, size="sm", responsive=True), more])


def _summary(attributes: dict[str, Any]) -> str:
    shown = [f"{k}: {v}" for k, v in attributes.items() if not isinstance(v, dict | list)][:4]
    return ", ".join(shown)


def register(app: Dash) -> None:
    @app.callback(
        Output("explore-results", "children"),
        Input("explore-go", "n_clicks"),
        Input("explore-q", "value"),
        Input("explore-kind", "value"),
        Input("explore-attrs", "value"),
    )
    def search(_clicks: int | None, q: str | None, kind: str | None, attrs: str | None) -> Any:
        try:
            filters = parse_filters(attrs)
        except ValueError as refused:
            return problem(str(refused))
        found, error = run(lambda s: entities.list_(s, kind=kind or None, q=q or None, attributes=filters, limit=PAGE))
        return problem(error) if found is None else results(found)

    @app.callback(
        Output("create-msg", "children"),
        Input("create-go", "n_clicks"),
        State("create-kind", "value"),
        State("create-name", "value"),
        State("create-external", "value"),
        State("create-attrs", "value"),
        prevent_initial_call=True,
    )
    def create(_clicks: int | None, kind: str | None, name: str | None, external: str | None, attrs: str | None) -> Any:
        try:
            attributes = json.loads(attrs) if attrs and attrs.strip() else {}
            data = EntityCreate(kind=kind or "", name=name or "", external_id=external or None, attributes=attributes)
        except ValueError as refused:  # pydantic's ValidationError and JSON's are ValueErrors
            return problem(_short(refused))
        made, failure = run(lambda s: entities.create(s, data), write=True)
        if made is None:
            return problem(failure)
        return dbc.Alert(["Created ", dcc.Link(made.name, href=entity_href(made.id)), "."], color="success")


def _short(error: ValueError) -> str:
    errors = getattr(error, "errors", None)
    if callable(errors):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors())
    return str(error)
