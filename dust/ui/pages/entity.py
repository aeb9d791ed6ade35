"""Entity: attributes (editable); each tensor as a heatmap, as lines with anomalies and trigger thresholds, and as a
3D surface with a time slider when it has two axes; record or correct a value in place; relations, add or remove.

Live: every few seconds each tensor is read again and redrawn if a value, anomaly or threshold changed.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import dash_bootstrap_components as dbc
import numpy as np
from dash import ALL, MATCH, Dash, Input, Output, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate
from pydantic import ValidationError
from sqlalchemy.orm import Session

from dust.core.errors import InvalidInput
from dust.engine import entities, relations, tensors
from dust.engine.entities import EntityPublic, EntityUpdate
from dust.engine.relations import Neighbourhood, RelationCreate
from dust.ui import data
from dust.ui.components import charts
from dust.ui.pages.common import as_uuid, done, empty_state, entity_href, problem, run

LIVE_MS = 3_000


def layout(entity_id: str) -> Any:
    wanted = as_uuid(entity_id)
    if wanted is None:
        return problem(f"'{entity_id}' is not an entity id. Find the entity on the Explore page.")
    found, error = run(lambda s: _load(s, wanted))
    if found is None:
        return html.Div([problem(error), dcc.Link("Back to Explore", href="/ui/")])
    entity, parts, near = found
    in_3d = any(_has_surface(p) for p in parts)
    return html.Div(
        [
            dcc.Store(id="entity-id", data=str(entity.id)),
            *([dcc.Store(id="entity-3d", data=True)] if in_3d else []),
            dcc.Interval(id="entity-live", interval=LIVE_MS),
            _header(entity),
            html.H2("Tensors", className="h4 mt-4"),
            *(
                [_tensor_card(p) for p in parts]
                or [
                    empty_state(
                        "This entity has no tensors yet. Create one over the API (POST /tensors) to record values here."
                    )
                ]
            ),
            html.H2("Relations", className="h4 mt-4"),
            html.Div(_relations(entity.id, near), id="relations-list"),
            _relation_form(),
        ]
    )


def _load(session: Session, entity_id: uuid.UUID) -> tuple[EntityPublic, list[data.TensorParts], Neighbourhood]:
    entity = entities.get(session, entity_id)
    parts = [data.tensor_parts(session, meta) for meta in tensors.of_entity(session, entity_id)]
    return entity, parts, relations.neighbourhood(session, entity_id)


# --- attributes -------------------------------------------------------------------------------------------------


def _header(entity: EntityPublic) -> Any:
    rows = [html.Tr([html.Th(k, scope="row"), html.Td(_shown(v))]) for k, v in entity.attributes.items()]
    edit = dbc.Card(
        dbc.CardBody(
            [
                dbc.Label("Name", html_for="edit-name"),
                dbc.Input(id="edit-name", value=entity.name),
                dbc.Label(
                    "Attributes to change (JSON; a key set to null is removed)", html_for="edit-attrs", className="mt-2"
                ),
                dbc.Textarea(id="edit-attrs", rows=2, placeholder='{"ward": "B2"}'),
                dbc.Button("Save", id="edit-go", color="secondary", className="mt-2"),
                html.Div(id="edit-msg", role="status"),
            ]
        )
    )
    return html.Div(
        [
            html.H1(
                [entity.name, " ", dbc.Badge(entity.kind, color="secondary", className="align-middle fs-6")],
                className="h3",
                id="entity-name",
            ),
            html.P(
                [
                    f"External id: {entity.external_id or '—'} · id {entity.id} · ",
                    dcc.Link("Open its graph", href=f"/ui/graph?entity={entity.id}"),
                ],
                className="text-muted small",
            ),
            dbc.Row(
                [
                    dbc.Col(
                        dbc.Table(html.Tbody(rows), size="sm", bordered=False)
                        if rows
                        else empty_state("No attributes."),
                        md=7,
                    ),
                    dbc.Col(dbc.Accordion([dbc.AccordionItem(edit, title="Edit")], start_collapsed=True), md=5),
                ]
            ),
        ]
    )


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)[:300]


# --- tensors ----------------------------------------------------------------------------------------------------


def _tensor_card(parts: data.TensorParts) -> Any:
    meta, key = parts.meta, str(parts.meta.id)
    grid = parts.grid
    picked = grid.rows[:1] if len(grid.rows) > 3 else grid.rows
    body = [
        dcc.Store(id={"type": "fp", "tensor": key}, data=parts.fingerprint),
        dcc.Store(id={"type": "bump", "tensor": key}),
        dcc.Graph(id={"type": "heatmap", "tensor": key}, figure=_heatmap(parts), config={"displaylogo": False}),
        dbc.Label("Labels drawn as lines", html_for=f"pick-{key}"),
        dcc.Dropdown(id={"type": "pick", "tensor": key}, options=grid.rows, value=picked, multi=True),
        dcc.Graph(id={"type": "lines", "tensor": key}, figure=_lines(parts, picked), config={"displaylogo": False}),
    ]
    if _has_surface(parts):
        body += _surface_parts(parts)
    body.append(_record_form(parts))
    title = f"{meta.schema_name} (v{meta.schema_version}) · {' × '.join(a.name for a in meta.axes)} × time"
    return dbc.Card([dbc.CardHeader(html.H3(title, className="h6 m-0")), dbc.CardBody(body)], className="mb-3")


def _heatmap(parts: data.TensorParts) -> Any:
    figure = charts.heatmap(parts.grid)
    figure.update_layout(uirevision=str(parts.meta.id))  # a redraw keeps the reader's zoom
    return figure


def _lines(parts: data.TensorParts, picked: list[str]) -> Any:
    figure = charts.lines(parts.grid, picked, parts.marks, parts.thresholds)
    figure.update_layout(uirevision=str(parts.meta.id))
    return figure


def _has_surface(parts: data.TensorParts) -> bool:
    return len(parts.meta.axes) == 2 and bool(parts.grid.times)


def _surface_parts(parts: data.TensorParts) -> list[Any]:
    key, last = str(parts.meta.id), len(parts.grid.times) - 1
    marks = {i: parts.grid.times[i].strftime("%Y-%m-%d") for i in sorted({0, last // 2, last})}
    return [
        html.Label("Time step of the 3D view", htmlFor=f"slider-{key}", className="form-label mt-3"),
        dcc.Slider(
            id={"type": "slider", "tensor": key},
            min=0,
            max=last,
            step=1,
            value=last,
            marks=marks,
            tooltip={"placement": "bottom"},
        ),
        dcc.Graph(id={"type": "surface", "tensor": key}, figure=_surface(parts, last), config={"displaylogo": False}),
    ]


def _surface(parts: data.TensorParts, step: int) -> Any:
    (first, second) = parts.meta.axes
    at = parts.grid.times[step].strftime("%Y-%m-%d %H:%M") if parts.grid.times else ""
    return charts.surface(parts.values[:, :, step], second.labels, first.labels, second.name, first.name, f"at {at}")


def _record_form(parts: data.TensorParts) -> Any:
    key = str(parts.meta.id)
    latest = parts.grid.times[-1].strftime("%Y-%m-%d") if parts.grid.times else ""
    axes = [
        dbc.Col(
            [
                dbc.Label(axis.name, html_for=f"rec-{key}-{axis.name}"),
                dcc.Dropdown(
                    id={"type": "rec-axis", "tensor": key, "axis": axis.name},
                    options=axis.labels,
                    value=axis.labels[0],
                    clearable=False,
                ),
            ],
            md=3,
        )
        for axis in parts.meta.axes
    ]
    return html.Div(
        [
            html.H4("Record or correct a value", className="h6 mt-3"),
            dbc.Row(
                [
                    *axes,
                    dbc.Col(
                        [
                            dbc.Label("Time (date or time index)", html_for=f"rec-time-{key}"),
                            dbc.Input(id={"type": "rec-time", "tensor": key}, value=latest),
                        ],
                        md=3,
                    ),
                    dbc.Col(
                        [
                            dbc.Label("Value", html_for=f"rec-value-{key}"),
                            dbc.Input(id={"type": "rec-value", "tensor": key}, type="text", inputMode="decimal"),
                        ],
                        md=2,
                    ),
                    dbc.Col(
                        dbc.Button("Record", id={"type": "rec-go", "tensor": key}, color="primary", className="w-100"),
                        md=1,
                        className="d-flex align-items-end",
                    ),
                ],
                className="g-2",
            ),
            html.Div(id={"type": "rec-msg", "tensor": key}, role="status"),
        ]
    )


# --- relations --------------------------------------------------------------------------------------------------


def _relations(entity_id: uuid.UUID, near: Neighbourhood) -> Any:
    if not near.edges:
        return empty_state("No relations yet: add one below.")
    names = {n.id: (n.name, n.kind) for n in near.nodes}
    rows = []
    for edge in near.edges:
        outgoing = edge.source_id == entity_id
        other = edge.target_id if outgoing else edge.source_id
        name, kind = names.get(other, ("(hidden)", ""))
        rows.append(
            html.Tr(
                [
                    html.Td(f"{'→' if outgoing else '←'} {edge.type}"),
                    html.Td([dcc.Link(name, href=entity_href(other)), html.Span(f" {kind}", className="text-muted")]),
                    html.Td(f"{edge.weight:.3g}"),
                    html.Td(
                        dbc.Button(
                            "Remove",
                            id={"type": "rel-del", "id": str(edge.id)},
                            size="sm",
                            color="link",
                            className="p-0",
                            title=f"Remove this {edge.type} relation",
                        )
                    ),
                ]
            )
        )
    head = html.Thead(html.Tr([html.Th("Type"), html.Th("With"), html.Th("Weight"), html.Th("")]))
    return dbc.Table([head, html.Tbody(rows)], size="sm", hover=True, responsive=True)


def _relation_form() -> Any:
    return dbc.Card(
        dbc.CardBody(
            [
                html.H3("Add a relation", className="h6"),
                dbc.Row(
                    [
                        dbc.Col(
                            [dbc.Label("Type", html_for="rel-type"), dbc.Input(id="rel-type", placeholder="treats")],
                            md=2,
                        ),
                        dbc.Col(
                            [
                                dbc.Label("Direction", html_for="rel-direction"),
                                dbc.Select(
                                    id="rel-direction",
                                    value="out",
                                    options=[
                                        {"label": "from this entity", "value": "out"},
                                        {"label": "to this entity", "value": "in"},
                                    ],
                                ),
                            ],
                            md=3,
                        ),
                        dbc.Col(
                            [
                                dbc.Label("Other entity (type to search)", html_for="rel-other"),
                                dcc.Dropdown(id="rel-other", placeholder="search by name"),
                            ],
                            md=4,
                        ),
                        dbc.Col(
                            [
                                dbc.Label("Weight", html_for="rel-weight"),
                                dbc.Input(id="rel-weight", type="number", value=1),
                            ],
                            md=1,
                        ),
                        dbc.Col(
                            dbc.Button("Add", id="rel-go", color="secondary", className="w-100"),
                            md=2,
                            className="d-flex align-items-end",
                        ),
                    ],
                    className="g-2",
                ),
                html.Div(id="rel-msg", role="status"),
            ]
        ),
        className="mt-2",
    )


# --- callbacks --------------------------------------------------------------------------------------------------


# A 3D view needs the full plotly.js. A tab that loaded the cartesian bundle for an earlier page (bundles.py) loads
# this page afresh, whose index then names the full one; until then the cartesian bundle draws no surface, quietly.
RELOAD_FOR_3D = """function (wanted) {
    if (wanted && window.dustPlotlyBundle === "cartesian") { window.location.reload(); }
    return window.dash_clientside.no_update;
}"""


def register(app: Dash) -> None:
    app.clientside_callback(RELOAD_FOR_3D, Output("entity-3d", "data"), Input("entity-3d", "data"))

    @app.callback(
        Output({"type": "heatmap", "tensor": MATCH}, "figure"),
        Output({"type": "lines", "tensor": MATCH}, "figure"),
        Output({"type": "fp", "tensor": MATCH}, "data"),
        Input("entity-live", "n_intervals"),
        Input({"type": "bump", "tensor": MATCH}, "data"),
        Input({"type": "pick", "tensor": MATCH}, "value"),
        State({"type": "fp", "tensor": MATCH}, "data"),
        prevent_initial_call=True,
    )
    def redraw(_tick: int | None, _bump: Any, picked: list[str] | None, seen: str | None) -> Any:
        tensor_id = uuid.UUID(ctx.outputs_list[0]["id"]["tensor"])
        parts, _error = run(lambda s: data.tensor_parts(s, tensors.get(s, tensor_id)))
        if parts is None:
            raise PreventUpdate  # gone or no longer visible: the page says so on its next load
        if parts.fingerprint == seen and ctx.triggered_id == "entity-live":
            raise PreventUpdate  # nothing changed: keep what is drawn
        return _heatmap(parts), _lines(parts, picked or []), parts.fingerprint

    @app.callback(
        Output({"type": "surface", "tensor": MATCH}, "figure"),
        Input({"type": "slider", "tensor": MATCH}, "value"),
        prevent_initial_call=True,
    )
    def turn(step: int | None) -> Any:
        tensor_id = uuid.UUID(ctx.outputs_list["id"]["tensor"])
        parts, _error = run(lambda s: data.tensor_parts(s, tensors.get(s, tensor_id)))
        if parts is None or step is None:
            raise PreventUpdate
        return _surface(parts, min(int(step), len(parts.grid.times) - 1))

    @app.callback(
        Output({"type": "rec-msg", "tensor": MATCH}, "children"),
        Output({"type": "bump", "tensor": MATCH}, "data"),
        Input({"type": "rec-go", "tensor": MATCH}, "n_clicks"),
        State({"type": "rec-axis", "tensor": MATCH, "axis": ALL}, "value"),
        State({"type": "rec-time", "tensor": MATCH}, "value"),
        State({"type": "rec-value", "tensor": MATCH}, "value"),
        prevent_initial_call=True,
    )
    def record(clicks: int | None, labels: list[str], time: str | None, value: str | None) -> Any:
        if not clicks:
            raise PreventUpdate
        tensor_id = uuid.UUID(ctx.outputs_list[0]["id"]["tensor"])
        axes = [item["id"]["axis"] for item in ctx.states_list[0]]
        cell: dict[str, Any] = dict(zip(axes, labels, strict=True))
        cell.update(time=_time(time), value=_number(value))

        written, error = run(lambda s: tensors.write_values(s, tensor_id, [cell]), write=True)
        if written is None:
            return problem(error), no_update
        return done(f"Recorded {cell['value']} at {time}."), clicks

    @app.callback(
        Output("rel-other", "options"),
        Input("rel-other", "search_value"),
        State("rel-other", "value"),
        prevent_initial_call=True,
    )
    def others(typed: str | None, chosen: str | None) -> Any:
        if not typed or len(typed) < 2:
            raise PreventUpdate
        found, _ = run(lambda s: entities.list_(s, q=typed, limit=10))
        options = [
            {"label": f"{e.name} ({e.kind}, {e.external_id or str(e.id)[:8]})", "value": str(e.id)}
            for e in (found.items if found else [])
        ]
        return options

    @app.callback(
        Output("relations-list", "children"),
        Output("rel-msg", "children"),
        Input("rel-go", "n_clicks"),
        Input({"type": "rel-del", "id": ALL}, "n_clicks"),
        State("entity-id", "data"),
        State("rel-type", "value"),
        State("rel-direction", "value"),
        State("rel-other", "value"),
        State("rel-weight", "value"),
        prevent_initial_call=True,
    )
    def change(
        add: int | None,
        removes: list[int | None],
        entity: str,
        kind: str | None,
        direction: str,
        other: str | None,
        weight: Any,
    ) -> Any:
        entity_id = uuid.UUID(entity)
        trigger = ctx.triggered_id
        if trigger == "rel-go" and add:
            work, said = _adding(entity_id, kind, direction, other, weight), "Relation added."
        elif isinstance(trigger, dict) and any(removes) and ctx.triggered[0]["value"]:
            relation_id = uuid.UUID(trigger["id"])
            work, said = (lambda s: relations.delete(s, relation_id)), "Relation removed."
        else:
            raise PreventUpdate
        _, error = run(work, write=True)
        near, failed = run(lambda s: relations.neighbourhood(s, entity_id))
        listed = _relations(entity_id, near) if near is not None else problem(failed)
        return listed, problem(error) if error else done(said)

    @app.callback(
        Output("edit-msg", "children"),
        Input("edit-go", "n_clicks"),
        State("entity-id", "data"),
        State("edit-name", "value"),
        State("edit-attrs", "value"),
        prevent_initial_call=True,
    )
    def edit(_clicks: int | None, entity: str, name: str | None, attrs: str | None) -> Any:
        try:
            patch = json.loads(attrs) if attrs and attrs.strip() else None
            update = EntityUpdate(name=name, attributes=patch)
        except ValueError as refused:
            return problem(_first_line(refused))
        changed, error = run(lambda s: entities.update(s, uuid.UUID(entity), update), write=True)
        return problem(error) if changed is None else done("Saved. Reload to see the attributes as stored.")


def _adding(entity_id: uuid.UUID, kind: str | None, direction: str, other: str | None, weight: Any) -> Any:
    def add(session: Session) -> Any:
        other_id = as_uuid(other)
        if other_id is None:
            raise InvalidInput("pick the other entity: type part of its name and choose it from the list")
        source, target = (entity_id, other_id) if direction == "out" else (other_id, entity_id)
        data_ = RelationCreate.model_validate(
            {"source_id": source, "target_id": target, "type": kind or "", "weight": 1.0 if weight is None else weight}
        )
        return relations.create(session, data_)

    return _validated(add)


def _validated(work: Any) -> Any:
    """Pydantic's refusals as the API words them (it answers 422 with the same messages)."""

    def run_it(session: Session) -> Any:
        try:
            return work(session)
        except ValidationError as error:
            raise InvalidInput(
                "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            ) from None

    return run_it


def _time(raw: str | None) -> Any:
    """A time index (digits) or a timestamp, as the API's ``time`` takes it; the engine words a bad one."""
    text = (raw or "").strip()
    return int(text) if text.lstrip("-").isdigit() else text


def _number(raw: Any) -> Any:
    """The value typed, as a number if it reads as one; otherwise as typed, for the engine to refuse in its words."""
    try:
        number = float(raw)
    except (TypeError, ValueError):
        return raw
    return number if np.isfinite(number) else raw


def _first_line(error: ValueError) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
    return f"attributes are not valid JSON: {error}"
