"""Ask: a question in plain English answered (dust.ask) as the signed-in user, with a chart of the data and the
structured query it ran."""

from __future__ import annotations

import json
from typing import Any

import dash_bootstrap_components as dbc
import plotly.graph_objects as go
from dash import Dash, Input, Output, State, dcc, html

from dust.ask import AskAnswer, ask
from dust.ui.pages.common import entity_href, problem, run

EXAMPLES = [
    "What was Jane Doe's temperature on day 2?",
    "average heart rate of female patients over the last 7 days",
    "who treats Jane Doe?",
    "which suppliers ship to warehouse 1?",
]


def layout() -> Any:
    form = dbc.Form(
        dbc.Row(
            [
                dbc.Col(
                    [
                        dbc.Label("Question", html_for="ask-q"),
                        dbc.Input(id="ask-q", placeholder=EXAMPLES[0], maxLength=500, autoFocus=True),
                    ],
                    md=10,
                ),
                dbc.Col(
                    dbc.Button("Ask", id="ask-go", color="primary", className="w-100"),
                    md=2,
                    className="d-flex align-items-end",
                ),
            ],
            className="g-2",
        ),
        id="ask-form",
        prevent_default_on_submit=True,
    )
    hints = html.P(["For example: ", *_examples()], className="text-muted small mt-2")
    return html.Div(
        [
            html.H1("Ask", className="h3"),
            form,
            hints,
            dcc.Loading(html.Div(id="ask-out", role="status")),  # read out when it changes
        ]
    )


def _examples() -> list[Any]:
    parts: list[Any] = []
    for i, text in enumerate(EXAMPLES):
        parts += [("; " if i else ""), html.Q(text)]
    return parts


def register(app: Dash) -> None:
    @app.callback(
        Output("ask-out", "children"),
        Input("ask-go", "n_clicks"),
        Input("ask-form", "n_submit"),
        State("ask-q", "value"),
        prevent_initial_call=True,
    )
    def answer(_clicks: Any, _submitted: Any, question: str | None) -> Any:
        return shown(question)


def shown(question: str | None) -> Any:
    """The answer to ``question`` as the page shows it: the sentence, candidates, a chart, entities, the query."""
    if not question or not question.strip():
        return problem("Type a question first.")
    answered, error = run(lambda s: ask(s, question))
    if answered is None:
        return problem(error)
    parts: list[Any] = [dbc.Alert(answered.answer, color="light", className="fs-5 my-2", id="ask-answer")]
    if answered.candidates:
        parts.append(
            html.Ul(
                [
                    html.Li([dcc.Link(c.name, href=entity_href(c.id)), " ", _told_apart(c.external_id, c.attributes)])
                    for c in answered.candidates
                ]
            )
        )
    chart = figure(answered)
    if chart is not None:
        parts.append(dcc.Graph(figure=chart, id="ask-chart", config={"displaylogo": False}))
    parts.append(_entities(answered.result))
    parts.append(
        html.Details(
            [
                html.Summary('The query (POST /api/v1/ask {"query": …} runs it again)'),
                html.Pre(json.dumps(answered.query.dumped(), indent=2), id="ask-query"),
            ],
            open=True,
        )
    )
    return parts


def _told_apart(external_id: str | None, attributes: dict[str, Any]) -> str:
    """What tells a candidate apart: "MRN-100001, birth_date 1961-08-30"."""
    return ", ".join([*([external_id] if external_id else []), *(f"{k} {v}" for k, v in attributes.items())])


def _entities(result: Any) -> Any:
    if not isinstance(result, dict) or not (result.get("entities") or result.get("ranked")):
        return None
    if result.get("ranked"):  # a ranking: in its order
        return html.Ol(
            [html.Li(dcc.Link(r["entity"]["name"], href=entity_href(r["entity"]["id"]))) for r in result["ranked"]]
        )
    return html.Ul([html.Li(dcc.Link(e["name"], href=entity_href(e["id"]))) for e in result["entities"]])


def figure(answered: AskAnswer) -> go.Figure | None:
    """A chart of the answer's data: lines over time for series and aggregates, bars for values, comparisons and
    rankings, points for anomalies; None for what has no numbers to draw (lists, counts, a question back)."""
    result, intent = answered.result, answered.query.intent
    if not isinstance(result, dict):
        return None
    fig = go.Figure()
    if intent in ("series", "stat") and result.get("series"):
        for name, values in result["series"].items():
            fig.add_scatter(x=result["timestamps"], y=values, mode="lines+markers", name=name)
    elif intent == "aggregate":
        for name, points in result["series"].items():
            fig.add_scatter(x=[p["time"] for p in points], y=[p["value"] for p in points], mode="lines", name=name)
    elif intent == "value" and result.get("values"):
        fig.add_bar(x=list(result["values"]), y=list(result["values"].values()))
    elif intent == "compare":
        names = [item["entity"]["name"] for item in result["items"]]
        values = [next(iter(item.get("values", {}).values()), None) for item in result["items"]]
        fig.add_bar(x=names, y=values)
    elif intent == "trend" and result.get("forecast"):
        points = result["forecast"]["points"]
        fig.add_scatter(x=[p["time"] for p in points], y=[p["value"] for p in points], mode="lines", name="forecast")
    elif intent == "rank" and result.get("ranked"):
        ranked = result["ranked"]
        fig.add_bar(x=[r["entity"]["name"] for r in ranked], y=[r["value"] for r in ranked])
    elif intent == "anomalies" and result.get("items"):
        items = result["items"]
        fig.add_scatter(
            x=[a["time"] for a in items],
            y=[a["value"] for a in items],
            mode="markers",
            text=[f"{a.get('entity_name')}: {a['label']} (score {a['score']:.2f})" for a in items],
        )
    else:
        return None
    units = {u for u in (result.get("units") or {}).values() if u}
    if not units and result.get("unit"):
        units = {result["unit"]}
    fig.update_layout(
        margin={"l": 50, "r": 10, "t": 30, "b": 40},
        height=360,
        template="plotly_white",
        yaxis_title=" / ".join(sorted(units)),
    )
    return fig
