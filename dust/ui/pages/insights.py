"""Insights: a system-wide trend of one label (with cohort pickers), the anomaly feed, alerts to acknowledge or
resolve, and (for admins) the trigger rules to enable or disable. The feed and the alerts refresh every few
seconds."""

from __future__ import annotations

import uuid
from typing import Any

import dash_bootstrap_components as dbc
from dash import ALL, Dash, Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate

from dust.core.security import Permission
from dust.engine import access, alerts, anomalies, entities, insights, kinds, schemas, triggers
from dust.engine.alerts import AlertUpdate
from dust.engine.triggers import TriggerUpdate
from dust.ui.auth import settings
from dust.ui.components import charts
from dust.ui.pages.common import as_uuid, done, empty_state, entity_href, parse_filters, problem, run

LIVE_MS = 3_000
FEED = 20
BUCKETS = ["", "day", "week", "month", "year"]


def layout() -> Any:
    found, error = run(lambda s: (schemas.list_(s), [k.kind for k in kinds.list_(s)], _is_admin(s)))
    if found is None:
        return problem(error)
    known, kind_names, admin = found
    # The example first, where the schemas have it: average temperature over time.
    first = next((s for s in known if s.name == "vitals"), known[0] if known else None)
    labels = [label for axis in first.axes for label in axis.labels] if first else []
    label = "temperature" if "temperature" in labels else (labels[0] if labels else None)
    trend = dbc.Card(
        dbc.CardBody(
            [
                html.H2("Trend across entities", className="h5"),
                dbc.Row(
                    [
                        _pick("Schema", "trend-schema", [s.name for s in known], first.name if first else None, 2),
                        _pick("Label", "trend-label", labels, label, 2),
                        _pick("Aggregate", "trend-agg", list(insights.AGGREGATES), "mean", 2),
                        _pick("Bucket", "trend-bucket", BUCKETS, "week", 2),
                        _pick("Kind", "trend-kind", ["", *kind_names], "", 2),
                        dbc.Col(
                            [
                                dbc.Label("Attributes (key=value)", html_for="trend-attrs"),
                                dbc.Input(id="trend-attrs", debounce=True, placeholder="gender=F"),
                            ],
                            md=2,
                        ),
                    ],
                    className="g-2",
                ),
                dbc.Row(
                    [
                        dbc.Col(
                            [
                                dbc.Label("Related to (e.g. a doctor's patients)", html_for="trend-related"),
                                dcc.Dropdown(id="trend-related", placeholder="type a name to search"),
                            ],
                            md=4,
                        ),
                        dbc.Col(
                            [
                                dbc.Label("By relation type", html_for="trend-relation"),
                                dbc.Input(id="trend-relation", debounce=True, placeholder="treats"),
                            ],
                            md=2,
                        ),
                    ],
                    className="g-2 mt-1",
                ),
                dcc.Loading(dcc.Graph(id="trend-figure", config={"displaylogo": False})),
                html.Div(id="trend-msg", role="status"),
            ]
        )
    )
    parts = [
        html.H1("Insights", className="h3"),
        dcc.Interval(id="insights-live", interval=LIVE_MS),
        trend if known else empty_state("No schemas yet: load a demo (`dust demo`) or create one over the API."),
        dbc.Row(
            [
                dbc.Col([html.H2("Anomalies", className="h5 mt-4"), html.Div(id="anomaly-feed")], lg=6),
                dbc.Col(
                    [
                        html.H2("Alerts", className="h5 mt-4"),
                        html.Div(id="alert-msg", role="status"),
                        html.Div(id="alert-list"),
                    ],
                    lg=6,
                ),
            ]
        ),
    ]
    if admin:
        parts += [
            html.H2("Trigger rules", className="h5 mt-4"),
            html.Div(id="trigger-msg", role="status"),
            html.Div(_triggers_table(), id="trigger-list"),
        ]
    return html.Div(parts)


def _is_admin(session: Any) -> bool:
    who = access.principal(session)
    return who is None or who.may(Permission.admin)


def _pick(label: str, id_: str, options: list[str], value: str | None, width: int) -> Any:
    shown = [{"label": o or "any" if id_ != "trend-bucket" else o or "schema steps", "value": o} for o in options]
    return dbc.Col(
        [dbc.Label(label, html_for=id_), dcc.Dropdown(id=id_, options=shown, value=value, clearable=False)], md=width
    )


def _feed() -> Any:
    found, error = run(lambda s: anomalies.list_anomalies(s, limit=FEED))
    if found is None:
        return problem(error)
    if not found.items:
        return empty_state("No anomalies flagged. Anomaly rules (PUT /anomaly-rules) flag values as they are written.")
    rows = [
        html.Tr(
            [
                html.Td(a.time.strftime("%Y-%m-%d")),
                html.Td(dcc.Link(a.reason or str(a.entity_id), href=entity_href(a.entity_id))),
                html.Td(f"{a.schema_name}/{a.label}"),
                html.Td(f"{a.value:.4g}"),
                html.Td(f"{a.score:.2f}"),
            ]
        )
        for a in found.items
    ]
    head = html.Thead(html.Tr([html.Th(h) for h in ("When", "Entity", "Series", "Value", "Score")]))
    return dbc.Table([head, html.Tbody(rows)], size="sm", hover=True, responsive=True)


def _alerts() -> Any:
    found, error = run(lambda s: alerts.list_alerts(s, state=["open", "acknowledged"], limit=FEED))
    if found is None:
        return problem(error)
    if not found.items:
        return empty_state("No open alerts. Trigger rules raise them when a value crosses a threshold.")
    rows = []
    for a in found.items:
        who = dcc.Link(a.entity.name, href=entity_href(a.entity.id)) if a.entity.id else a.entity.name
        buttons = (
            [
                dbc.Button(
                    "Acknowledge",
                    id={"type": "alert-ack", "id": a.id},
                    size="sm",
                    color="outline-secondary",
                    className="me-1",
                )
            ]
            if a.state == "open"
            else []
        )
        buttons.append(
            dbc.Button("Resolve", id={"type": "alert-resolve", "id": a.id}, size="sm", color="outline-success")
        )
        rows.append(
            html.Tr(
                [
                    html.Td(dbc.Badge(a.severity, color="danger" if a.severity in ("high", "critical") else "warning")),
                    html.Td(
                        [
                            html.Div(a.message, className="alert-message"),
                            html.Small(["on ", who, f" · {a.state}"], className="text-muted"),
                        ]
                    ),
                    html.Td(buttons, className="text-nowrap"),
                ]
            )
        )
    return dbc.Table(html.Tbody(rows), size="sm", responsive=True)


def _triggers_table() -> Any:
    found, error = run(lambda s: triggers.list_(s))
    if found is None:
        return problem(error)
    if not found.items:
        return empty_state("No trigger rules. Create one over the API (POST /triggers) or load a domain pack.")
    rows = [
        html.Tr(
            [
                html.Td(
                    dbc.Switch(
                        id={"type": "trigger-on", "id": str(t.id)},
                        value=t.enabled,
                        label="enabled",
                        label_class_name="visually-hidden",
                    )
                ),
                html.Td([html.Strong(t.name), html.Div(t.description or "", className="small text-muted")]),
                html.Td(f"v{t.version}", className="small"),
            ]
        )
        for t in found.items
    ]
    return dbc.Table(html.Tbody(rows), size="sm", responsive=True)


def register(app: Dash) -> None:
    @app.callback(
        Output("trend-label", "options"),
        Output("trend-label", "value"),
        Input("trend-schema", "value"),
        State("trend-label", "value"),
        prevent_initial_call=True,
    )
    def labels(schema: str | None, current: str | None) -> Any:
        found, _ = run(lambda s: schemas.get(s, schema or ""))
        if found is None:
            raise PreventUpdate
        names = [label for axis in found.axes for label in axis.labels]
        return names, current if current in names else names[0]

    @app.callback(
        Output("trend-figure", "figure"),
        Output("trend-msg", "children"),
        Input("trend-schema", "value"),
        Input("trend-label", "value"),
        Input("trend-agg", "value"),
        Input("trend-bucket", "value"),
        Input("trend-kind", "value"),
        Input("trend-attrs", "value"),
        Input("trend-related", "value"),
        Input("trend-relation", "value"),
    )
    def trend(
        schema: str | None,
        label: str | None,
        agg: str | None,
        bucket: str | None,
        kind: str | None,
        attrs: str | None,
        related: str | None,
        relation: str | None,
    ) -> Any:
        if not schema or not label:
            return charts.empty("Pick a schema and a label."), None
        try:
            filters = parse_filters(attrs)
        except ValueError as refused:
            return charts.empty("Fix the attribute filter."), problem(str(refused))
        points, error = run(
            lambda s: insights.aggregate_by_step(
                s,
                schema,
                label,
                agg or "mean",
                kind or None,
                bucket=bucket or None,
                attributes=filters,
                related_to=as_uuid(related),
                relation=relation or None,
            )
        )
        if points is None:
            return charts.empty("No trend: see the message below."), problem(error)
        return charts.trend(points, f"{agg} {label} per {bucket or 'step'}"), None

    @app.callback(
        Output("trend-related", "options"),
        Input("trend-related", "search_value"),
        prevent_initial_call=True,
    )
    def related(typed: str | None) -> Any:
        if not typed or len(typed) < 2:
            raise PreventUpdate
        found, _ = run(lambda s: entities.list_(s, q=typed, limit=10))
        return [{"label": f"{e.name} ({e.kind})", "value": str(e.id)} for e in (found.items if found else [])]

    @app.callback(Output("anomaly-feed", "children"), Input("insights-live", "n_intervals"))
    def feed(_tick: int | None) -> Any:
        return _feed()

    @app.callback(
        Output("alert-list", "children"),
        Output("alert-msg", "children"),
        Input("insights-live", "n_intervals"),
        Input({"type": "alert-ack", "id": ALL}, "n_clicks"),
        Input({"type": "alert-resolve", "id": ALL}, "n_clicks"),
    )
    def alert_list(_tick: int | None, _acks: list[Any], _resolves: list[Any]) -> Any:
        trigger = ctx.triggered_id
        said = None
        if isinstance(trigger, dict) and ctx.triggered[0]["value"]:
            state = "acknowledged" if trigger["type"] == "alert-ack" else "resolved"
            changed, error = run(
                lambda s: alerts.update_alert(s, int(trigger["id"]), AlertUpdate(state=state)), write=True
            )
            said = problem(error) if changed is None else done(f"Alert {trigger['id']} {state}.")
        return _alerts(), said

    @app.callback(
        Output("trigger-msg", "children"),
        Input({"type": "trigger-on", "id": ALL}, "value"),
        prevent_initial_call=True,
    )
    def switch(_values: list[Any]) -> Any:
        trigger = ctx.triggered_id
        if not isinstance(trigger, dict):
            raise PreventUpdate
        enabled = bool(ctx.triggered[0]["value"])
        trigger_id = uuid.UUID(trigger["id"])

        private = settings().webhook_allow_private

        def change(session: Any) -> Any:
            return triggers.update(session, trigger_id, TriggerUpdate(enabled=enabled), allow_private=private)

        changed, error = run(change, write=True)
        return problem(error) if changed is None else done(f"{changed.name} {'enabled' if enabled else 'disabled'}.")
