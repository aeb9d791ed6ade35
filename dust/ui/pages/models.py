"""Models: train a relational model (dust.models) as the signed-in user and watch it train; a model's metrics, and
its predictions — each one explained on request, and written back as an attribute by those who may write. A
link-prediction model shows its ranking metrics (MRR, Hits@k) and lists an entity's likeliest targets by a type.

Every call goes through the models registry (dust.models.registry), as the API's /models routes do, so the same
access rules hold: analysts and viewers may not train, a clinician sees their own models and the shared ones (an
admin's), predictions name only entities the reader may see, de-identified for analysts. While a model is queued
or training, its progress is read again every 2 s.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from typing import Any, TypeVar

import dash_bootstrap_components as dbc
from dash import ALL, Dash, Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from dust.core.errors import invalid_input
from dust.core.security import Permission
from dust.engine import access, entities
from dust.models import link_prediction, registry, tasks
from dust.models.schemas import ModelCreate, ModelPublic, Neighbour, PredictRequest, PredictResult, TrainSettings
from dust.ui import data
from dust.ui.components import charts
from dust.ui.pages.common import PREFIX, as_uuid, empty_state, entity_href, problem, run

LIVE_MS = 2_000
LISTED = 50  # models the list shows, newest first
SHOWN = 100  # predictions a table shows; the rest are counted
TOP = 8  # relations and neighbours an explanation shows
TASK = "entity-classification"
LINKS = "link-prediction"
ACTIVE = ("queued", "running")
BADGES = {"queued": "secondary", "running": "info", "succeeded": "success", "failed": "danger"}
M = TypeVar("M", bound=BaseModel)


def model_href(model_id: Any) -> str:
    return f"{PREFIX}/models/{model_id}"


def layout(model_id: str | None = None) -> Any:
    """The list with the training form, or (``/ui/models/<id>``) one model."""
    if model_id is not None:
        return detail(model_id)
    found, error = run(_choices)
    if found is None:
        return problem(error)
    refusal, kinds, types, attributes = found
    listing, active = listed()
    return html.Div(
        [
            html.H1("Models", className="h3"),
            dcc.Store(id="models-changed"),
            dcc.Interval(id="models-live", interval=LIVE_MS, disabled=not active),
            _train_form(kinds, types, attributes)
            if refusal is None
            else dbc.Alert(f"You may not train models: {refusal}.", color="info", id="train-refused"),
            html.H2("Models you may use", className="h5 mt-4"),
            html.Div(listing, id="models-list"),
        ]
    )


def _choices(session: Session) -> tuple[str | None, list[str], list[str], list[str]]:
    """Why the user may not train (None: they may), and the form's kinds, relation types and attributes."""
    who = access.principal(session)
    if who is not None and not who.may(Permission.write):
        return access.refusal(who.role, Permission.write), [], [], []
    kinds, types = data.kinds_and_types(session)
    return None, kinds, types, data.label_attributes(session, _first_kind(kinds))


def _first_kind(kinds: list[str]) -> str | None:
    return "patient" if "patient" in kinds else (kinds[0] if kinds else None)


def _field(label: str, control: Any, width: int) -> Any:
    return dbc.Col([dbc.Label(label, html_for=control.id), control], md=width)


def _train_form(kinds: list[str], types: list[str], attributes: list[str]) -> Any:
    settings = TrainSettings()  # its defaults
    first = dbc.Row(
        [
            _field("Name", dbc.Input(id="train-name", placeholder="e.g. gender", maxLength=128), 3),
            _field("Task", dcc.Dropdown(id="train-task", options=sorted(tasks.TASKS), value=TASK, clearable=False), 3),
            _field("Kind of entity", dcc.Dropdown(id="train-kind", options=kinds, value=_first_kind(kinds)), 3),
            dbc.Col(
                [
                    dbc.Label("Target attribute (its values are the classes)", html_for="train-attribute"),
                    dcc.Dropdown(id="train-attribute", options=attributes, placeholder="pick one"),
                ],
                md=3,
                id="train-attribute-col",
            ),
            dbc.Col(
                [
                    dbc.Label("Relation types to predict", html_for="train-relations"),
                    dcc.Dropdown(id="train-relations", options=types, multi=True, placeholder="pick one or more"),
                ],
                md=3,
                id="train-relations-col",
                style={"display": "none"},
            ),
        ],
        className="g-2",
    )
    second = dbc.Row(
        [
            _field("Relation types (none: all)", dcc.Dropdown(id="train-types", options=types, multi=True), 5),
            _field("Epochs", dbc.Input(id="train-epochs", type="number", min=1, step=1, value=settings.epochs), 2),
            _field("Seed", dbc.Input(id="train-seed", type="number", min=0, step=1, value=settings.seed), 2),
            _field("As of (optional)", dbc.Input(id="train-as-of", type="date"), 2),
            dbc.Col(
                dbc.Button("Train", id="train-go", color="primary", className="w-100"),
                md=1,
                className="d-flex align-items-end",
            ),
        ],
        className="g-2 mt-1",
    )
    return dbc.Card(
        dbc.CardBody(
            [
                html.H2("Train a model", className="h5"),
                dbc.Form([first, second], id="train-form", prevent_default_on_submit=True),
                html.Div(id="train-msg", role="status"),
            ]
        )
    )


# --- the list ---------------------------------------------------------------------------------------------------


def listed() -> tuple[Any, bool]:
    """The models table, and whether one is still queued or training (the page then reads it again)."""
    found, error = run(lambda s: _with_names(s, registry.list_(s, limit=LISTED).items))
    if found is None:
        return problem(error), False
    models, names = found
    if not models:
        return empty_state(
            "No models yet. Admins, clinicians and members train them here; an admin's are shared with everyone."
        ), False
    head = html.Thead(
        html.Tr([html.Th(h) for h in ("Name", "Version", "Status", "Test score", "Data version", "Trained by")])
    )
    rows = [
        html.Tr(
            [
                html.Td(dcc.Link(m.name, href=model_href(m.id))),
                html.Td(m.version),
                html.Td(_status(m), style={"minWidth": "12rem"}),
                html.Td(_score(m)),
                html.Td(_when(m.data_version)),
                html.Td(names.get(m.created_by or "", "—")),
            ]
        )
        for m in models
    ]
    table = dbc.Table([head, html.Tbody(rows)], size="sm", hover=True, responsive=True)
    return table, any(m.status in ACTIVE for m in models)


def _with_names(session: Session, models: list[ModelPublic]) -> tuple[list[ModelPublic], dict[str, str]]:
    return models, data.usernames(session, [m.created_by for m in models])


def _status(model: ModelPublic) -> Any:
    badge = dbc.Badge(model.status, color=BADGES[model.status], className="me-2")
    if model.status not in ACTIVE:
        return [badge, html.Div(model.error, className="small text-danger")] if model.error else badge
    percent = round(100 * model.progress)
    return [
        badge,
        dbc.Progress(
            value=percent,
            label=f"{percent}%",
            striped=True,
            animated=model.status == "running",
            className="my-1",
            style={"height": "1rem"},
        ),
        html.Small(model.message or "waiting for a worker", className="text-muted"),
    ]


def _score(model: ModelPublic) -> str:
    """The test metric the list shows: accuracy, or for links the filtered MRR."""
    metrics = model.metrics or {}
    if model.task == LINKS:
        return "—" if metrics.get("test_mrr") is None else f"MRR {metrics['test_mrr']:.3f}"
    return _percent(metrics.get("test_accuracy"))


def _percent(value: Any) -> str:
    return "—" if value is None else f"{value:.1%}"


def _when(value: datetime | None) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def submitted(
    name: str | None,
    task: str | None,
    kind: str | None,
    attribute: str | None,
    types: list[str] | None,
    epochs: Any,
    seed: Any,
    as_of: str | None,
    relations: list[str] | None = None,
) -> tuple[Any, str | None]:
    """The form's training request submitted as the signed-in user: (what the page says, the new model's id)."""
    links = task == LINKS
    if not name or not name.strip() or not (relations if links else attribute):
        return problem(f"Give the model a name and pick its {'relation types' if links else 'target attribute'}."), None
    settings = {key: value for key, value in (("epochs", epochs), ("seed", seed)) if value not in (None, "")}
    body = {
        "task": task or TASK,
        "name": name.strip(),
        "kind": None if links else kind or None,
        "target": {"relations": relations} if links else {"attribute": attribute},
        "types": types or None,
        "as_of": as_of or None,
        "settings": settings,
    }
    model, error = run(lambda s: registry.submit(s, _valid(ModelCreate, body)), write=True)
    if model is None:
        return problem(error), None
    said = [
        f"Training {model.name}, version {model.version}: follow it below or ",
        dcc.Link("open it", href=model_href(model.id)),
        ".",
    ]
    return dbc.Alert(said, color="success", className="py-2 my-2"), str(model.id)


def _valid(shape: type[M], body: dict[str, Any]) -> M:
    """``body`` as ``shape``; a 422 in the API's words otherwise."""
    try:
        return shape.model_validate(body)
    except ValidationError as error:
        raise invalid_input(error.errors()) from None


# --- one model --------------------------------------------------------------------------------------------------


def detail(model_id: str) -> Any:
    wanted = as_uuid(model_id)
    back = dcc.Link("← All models", href=f"{PREFIX}/models")
    if wanted is None:
        return html.Div([problem(f"'{model_id}' is not a model id. Pick one from the list."), back])
    found, error = run(lambda s: _model(s, wanted))
    if found is None:
        return html.Div([problem(error), back])
    model = found[0]
    return html.Div(
        [
            dcc.Store(id="model-ref", data={"id": str(model.id), "kind": model.kind, "task": model.task}),
            dcc.Interval(id="model-live", interval=LIVE_MS, disabled=model.status not in ACTIVE),
            back,
            html.Div(_body(*found), id="model-body"),
        ]
    )


def _model(session: Session, model_id: uuid.UUID) -> tuple[ModelPublic, dict[str, str], bool]:
    """The model, who trained it, and whether the reader may write (back)."""
    model = registry.get(session, model_id)
    who = access.principal(session)
    return model, data.usernames(session, [model.created_by]), who is None or who.may(Permission.write)


def _body(model: ModelPublic, names: dict[str, str], may_write: bool) -> Any:
    parts = [
        html.H1(
            [f"{model.name} ", html.Small(f"version {model.version}", className="text-muted")],
            className="h3 mt-2",
            id="model-title",
        ),
        html.Div(_status(model), id="model-status"),
        dbc.Row(
            [
                dbc.Col([html.H2("Metrics", className="h5 mt-3"), _metrics(model)], lg=6),
                dbc.Col([html.H2("How it was trained", className="h5 mt-3"), _about(model, names)], lg=6),
            ]
        ),
    ]
    if model.status == "succeeded":
        parts.append(_links_card(model) if model.task == LINKS else _predict_card(model, may_write))
    return parts


def _table(rows: list[tuple[str, Any]], id_: str) -> Any:
    body = [html.Tr([html.Th(k, scope="row", className="fw-normal text-muted"), html.Td(v)]) for k, v in rows]
    return dbc.Table(html.Tbody(body), size="sm", id=id_)


def _metrics(model: ModelPublic) -> Any:
    m = model.metrics
    if not m:
        return empty_state("Its metrics show here once it has trained.")
    if model.task == LINKS:
        return _link_metrics(m)
    split = m.get("split") or {}
    held_out = (
        "the test labels given"
        if split.get("test_labels")
        else f"{split.get('test_fraction', 0):.0%} of each class held out (seed {split.get('seed')})"
    )
    counts = m.get("class_counts") or {}
    rows = [
        ("Test accuracy", _percent(m.get("test_accuracy"))),
        ("Train accuracy", _percent(m.get("train_accuracy"))),
        *([("Runs", m["runs"])] if "runs" in m else []),
        ("Classes", ", ".join(f"{c} ({counts.get(c, '?')})" for c in m.get("classes", []))),
        ("Train / test size", f"{m.get('train_size')} / {m.get('test_size')}"),
        ("Test set", held_out),
        ("Seconds per epoch", f"{m['seconds_per_epoch']:.3g}" if m.get("seconds_per_epoch") is not None else "—"),
        ("Graph", f"{m.get('nodes', 0):,} nodes, {m.get('edges', 0):,} edges, {m.get('relations', 0)} relation types"),
    ]
    return _table(rows, "model-metrics")


def _link_metrics(m: dict[str, Any]) -> Any:
    split = m.get("split") or {}
    seconds = m.get("seconds_per_epoch")
    rows = [
        ("Filtered MRR", _number(m.get("test_mrr"))),
        ("A random scorer's MRR", _number(m.get("chance_mrr"))),
        *((f"Hits@{k}", _percent(m.get(f"test_hits@{k}"))) for k in (1, 3, 10)),
        ("Relations predicted", ", ".join(m.get("target_relations", []))),
        ("Train / test relations", f"{m.get('train_size')} / {m.get('test_size')}"),
        (
            "Test set",
            f"{split.get('test_fraction', 0):.0%} of the relations predicted held out (seed {split.get('seed')})",
        ),
        ("Seconds per epoch", f"{seconds:.3g}" if seconds is not None else "—"),
        ("Graph", f"{m.get('nodes', 0):,} nodes, {m.get('edges', 0):,} edges, {m.get('relations', 0)} relation types"),
    ]
    return _table(rows, "model-metrics")


def _number(value: Any) -> str:
    return "—" if value is None else f"{value:.3f}"


def _about(model: ModelPublic, names: dict[str, str]) -> Any:
    target = model.target
    what = (
        f"attribute {target['attribute']}"
        if "attribute" in target
        else f"relations {', '.join(target['relations'])}"
        if "relations" in target
        else ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in target.items())
    )
    size = f"{model.artefact_bytes / 1e6:.1f} MB" if model.artefact_bytes else "—"
    rows = [
        ("Task", model.task),
        ("Kind", model.kind or "any"),
        ("Target", what),
        ("Relation types", ", ".join(model.types) if model.types else "all"),
        ("As of", _when(model.as_of) if model.as_of else "now (when it trained)"),
        ("Data version", _when(model.data_version)),
        ("Settings", ", ".join(f"{k} {v}" for k, v in model.settings.items() if v is not None)),
        ("Trained by", names.get(model.created_by or "", "—") + (" (shared with everyone)" if model.shared else "")),
        ("Trained", f"{_when(model.created_at)} → {_when(model.finished_at)}"),
        ("Stored", size),
    ]
    return _table(rows, "model-about")


def _predict_card(model: ModelPublic, may_write: bool) -> Any:
    kind = model.kind or "entity"
    parts: list[Any] = [
        html.H2("Predict", className="h5"),
        dbc.Row(
            [
                dbc.Col(
                    [
                        dbc.Label(
                            f"Entities (none picked: every {kind} of its graph you may see)",
                            html_for="predict-entities",
                        ),
                        dcc.Dropdown(id="predict-entities", multi=True, placeholder="type a name to search"),
                    ],
                    md=9,
                ),
                dbc.Col(
                    dbc.Button("Predict", id="predict-go", color="primary", className="w-100"),
                    md=3,
                    className="d-flex align-items-end",
                ),
            ],
            className="g-2",
        ),
        dcc.Store(id="predict-ids"),
    ]
    if may_write:
        stem = re.sub(r"[^A-Za-z0-9_]", "_", str(model.target.get("attribute") or model.name))
        parts.append(
            dbc.Row(
                [
                    _field(
                        "Write the classes to the attribute",
                        dbc.Input(id="writeback-attr", value=f"predicted_{stem}"),
                        6,
                    ),
                    dbc.Col(
                        dbc.Button("Write back as attribute", id="writeback-go", color="outline-primary"),
                        md=3,
                        className="d-flex align-items-end",
                    ),
                ],
                className="g-2 mt-1",
            )
        )
        parts.append(html.Div(id="writeback-msg", role="status"))
    parts.append(dcc.Loading(html.Div(id="predict-out", role="status")))
    return dbc.Card(dbc.CardBody(parts), className="mt-4")


def _links_card(model: ModelPublic) -> Any:
    """Pick an entity and a relation type: its likeliest targets, among the entities of the model's graph."""
    relations = list(model.target.get("relations") or [])
    parts = [
        html.H2("Likeliest targets", className="h5"),
        dbc.Row(
            [
                _field(
                    "Source entity",
                    dcc.Dropdown(id="link-source", placeholder="type a name to search"),
                    5,
                ),
                _field(
                    "Relation type",
                    dcc.Dropdown(id="link-type", options=relations, value=relations[0], clearable=False),
                    3,
                ),
                _field("How many", dbc.Input(id="link-top", type="number", min=1, max=100, step=1, value=10), 2),
                dbc.Col(
                    dbc.Button("Top targets", id="link-go", color="primary", className="w-100"),
                    md=2,
                    className="d-flex align-items-end",
                ),
            ],
            className="g-2",
        ),
        dcc.Loading(html.Div(id="link-out", role="status")),
    ]
    return dbc.Card(dbc.CardBody(parts), className="mt-4")


def top_targets(ref: dict[str, Any], source: str | None, type_: str | None, k: Any) -> Any:
    """The likeliest targets of ``source`` by ``type_`` as a table: entity, score, and whether it is stored."""
    if not source or not type_:
        return problem("Pick a source entity and a relation type.")
    body = {"source": source, "type": type_, "top": k or 10}
    answer, error = _predicted(ref, body)
    if answer is None:
        return problem(error)
    if not answer.links:
        return empty_state("No entity of its graph that you may see: nothing to rank.")
    rows = [
        html.Tr(
            [
                html.Td(dcc.Link(link.target_name, href=entity_href(link.target_id))),
                html.Td(f"{link.score:.3f}"),
                html.Td("yes" if link.exists else "—"),
            ]
        )
        for link in answer.links
    ]
    head = html.Thead(html.Tr([html.Th(h) for h in ("Target", "Score", "Already related")]))
    source_name = answer.links[0].source_name
    said = f"The {len(rows)} likeliest targets of {source_name} by {type_} (data version {_when(answer.data_version)})."
    return [
        html.P(said, className="small text-muted mt-3 mb-1"),
        dbc.Table([head, html.Tbody(rows)], size="sm", hover=True, responsive=True, id="link-table"),
    ]


def _predicted(ref: dict[str, Any], body: dict[str, Any]) -> tuple[PredictResult | None, str | None]:
    """``POST /models/{id}/predict`` with ``body``, as the signed-in user. In a write transaction, as the API's
    POST runs: the picked entities are locked against deletion while predicted (PostgreSQL refuses that lock in
    a read-only transaction), and the audit records and a write-back commit with it."""
    return run(lambda s: registry.predict(s, uuid.UUID(ref["id"]), _valid(PredictRequest, body)), write=True)


def predictions(ref: dict[str, Any], picked: list[str] | None) -> tuple[Any, dict[str, Any] | None]:
    """The model's predictions as a table (with an Explain button a row), and what was asked (for writing back)."""
    asked = {"entity_ids": picked or None}
    answer, error = _predicted(ref, asked)
    if answer is None:
        return problem(error), None
    if not answer.predictions:
        return empty_state("No entity of its graph that you may see: nothing to predict."), asked
    rows = [
        html.Tr(
            [
                html.Td(dcc.Link(p.name, href=entity_href(p.entity_id))),
                html.Td(p.predicted),
                html.Td(f"{p.probability:.3f}"),
                html.Td(
                    dbc.Button(
                        "Explain",
                        id={"type": "model-explain", "id": str(p.entity_id)},
                        size="sm",
                        color="outline-secondary",
                    )
                ),
            ]
        )
        for p in answer.predictions[:SHOWN]
    ]
    total = len(answer.predictions)
    said = f"{total} prediction{'s' if total > 1 else ''}" + (f", the first {SHOWN} shown" if total > SHOWN else "")
    head = html.Thead(html.Tr([html.Th(h) for h in ("Entity", "Class", "Probability", "")]))
    return [
        html.P(f"{said} (data version {_when(answer.data_version)}).", className="small text-muted mt-3 mb-1"),
        html.Div(id="explain-out"),  # inside: a new prediction clears the last explanation
        dbc.Table([head, html.Tbody(rows)], size="sm", hover=True, responsive=True, id="predict-table"),
    ], asked


def explanation(ref: dict[str, Any], entity_id: str) -> Any:
    """Why the model predicts what it does for one entity: relation types (a bar chart) and neighbours (links)."""
    asked = {"entity_ids": [entity_id], "explain": True, "top": TOP}
    answer, error = _predicted(ref, asked)
    if answer is None:
        return problem(error)
    p = answer.predictions[0]
    explained = p.explanation
    assert explained is not None  # asked for
    chart = charts.importances(
        [r.type for r in explained.relations], [r.importance for r in explained.relations], "Relation types"
    )
    neighbours = (
        html.Ol([html.Li([*_node(n), f" {n.importance:+.3g}"]) for n in explained.neighbours])
        if explained.neighbours
        else empty_state("No neighbour you may see mattered.")
    )
    title: list[Any] = [
        "Why ",
        dcc.Link(p.name, href=entity_href(p.entity_id)),
        f" is {p.predicted} ({p.probability:.0%})",
    ]
    return dbc.Card(
        dbc.CardBody(
            [
                html.H3(title, className="h6"),
                dbc.Row(
                    [
                        dbc.Col(dcc.Graph(figure=chart, id="explain-chart", config={"displaylogo": False}), lg=6),
                        dbc.Col([html.H4("Neighbours that mattered most", className="h6"), neighbours], lg=6),
                    ]
                ),
                html.P(
                    f"{explained.method}, in logit units: positive speaks for the class, negative against it.",
                    className="small text-muted mb-0",
                ),
            ]
        ),
        className="my-2",
        id="explain-card",
    )


def _node(node: Neighbour) -> list[Any]:
    """A neighbour as the parts of a list item (flat: Dash renders no component inside a nested list)."""
    if node.entity_id is None:
        return [html.Code(json.dumps(node.value)), " (an attribute value)"]
    return [dcc.Link(node.name or str(node.entity_id), href=entity_href(node.entity_id)), f" ({node.kind})"]


def written(ref: dict[str, Any], attribute: str | None, asked: dict[str, Any] | None) -> Any:
    """The last prediction's classes written to ``attribute`` of its entities, as the signed-in user."""
    if asked is None:
        return problem("Predict first: the classes shown are the ones written.")
    if not attribute or not attribute.strip():
        return problem("Name the attribute to write the classes to.")
    body = {**asked, "write_back": {"attribute": attribute.strip()}}
    answer, error = _predicted(ref, body)
    if answer is None:
        return problem(error)
    return dbc.Alert(_wrote(answer, attribute.strip()), color="success", className="py-2 my-2")


def _wrote(answer: PredictResult, attribute: str) -> str:
    n = answer.written
    return f"Wrote {attribute} on {n} entit{'ies' if n != 1 else 'y'}: each one's predicted class."


# --- callbacks --------------------------------------------------------------------------------------------------


def register(app: Dash) -> None:
    @app.callback(
        Output("train-attribute", "options"),
        Output("train-attribute", "value"),
        Input("train-kind", "value"),
        State("train-attribute", "value"),
        prevent_initial_call=True,
    )
    def attributes(kind: str | None, current: str | None) -> Any:
        found, _ = run(lambda s: data.label_attributes(s, kind))
        options = found or []
        return options, current if current in options else None

    @app.callback(
        Output("train-attribute-col", "style"),
        Output("train-kind", "disabled"),
        Output("train-relations-col", "style"),
        Output("train-epochs", "value"),
        Input("train-task", "value"),
        prevent_initial_call=True,
    )
    def task_fields(task: str | None) -> Any:
        """Link prediction: relation types to predict instead of a kind and an attribute, and its own epochs."""
        links = task == LINKS
        epochs = link_prediction.DEFAULTS["epochs"] if links else TrainSettings().epochs
        hidden = {"display": "none"}
        return hidden if links else {}, links, {} if links else hidden, epochs

    @app.callback(
        Output("train-msg", "children"),
        Output("models-changed", "data"),
        Input("train-go", "n_clicks"),
        Input("train-form", "n_submit"),
        State("train-name", "value"),
        State("train-task", "value"),
        State("train-kind", "value"),
        State("train-attribute", "value"),
        State("train-types", "value"),
        State("train-epochs", "value"),
        State("train-seed", "value"),
        State("train-as-of", "value"),
        State("train-relations", "value"),
        prevent_initial_call=True,
    )
    def train(_clicks: Any, _submitted: Any, *fields: Any) -> Any:
        return submitted(*fields)

    @app.callback(
        Output("models-list", "children"),
        Output("models-live", "disabled"),
        Input("models-live", "n_intervals"),
        Input("models-changed", "data"),
        prevent_initial_call=True,
    )
    def refresh(_tick: Any, _changed: Any) -> Any:
        listing, active = listed()
        return listing, not active

    @app.callback(
        Output("model-body", "children"),
        Output("model-live", "disabled"),
        Input("model-live", "n_intervals"),
        State("model-ref", "data"),
        prevent_initial_call=True,
    )
    def progress(_tick: Any, ref: dict[str, Any]) -> Any:
        found, error = run(lambda s: _model(s, uuid.UUID(ref["id"])))
        if found is None:
            return problem(error), True
        return _body(*found), found[0].status not in ACTIVE

    @app.callback(
        Output("predict-entities", "options"),
        Input("predict-entities", "search_value"),
        State("predict-entities", "value"),
        State("predict-entities", "options"),
        State("model-ref", "data"),
        prevent_initial_call=True,
    )
    def search(typed: str | None, picked: list[str] | None, options: list[Any] | None, ref: dict[str, Any]) -> Any:
        if not typed or len(typed) < 2:
            raise PreventUpdate
        found, _ = run(lambda s: entities.list_(s, q=typed, kind=ref.get("kind"), limit=10))
        kept = [o for o in options or [] if o["value"] in (picked or [])]  # the picked keep their names
        offered = [{"label": f"{e.name} ({e.kind})", "value": str(e.id)} for e in (found.items if found else [])]
        return kept + [o for o in offered if o["value"] not in (picked or [])]

    @app.callback(
        Output("link-source", "options"),
        Input("link-source", "search_value"),
        State("link-source", "value"),
        State("link-source", "options"),
        prevent_initial_call=True,
    )
    def search_source(typed: str | None, picked: str | None, options: list[Any] | None) -> Any:
        if not typed or len(typed) < 2:
            raise PreventUpdate
        found, _ = run(lambda s: entities.list_(s, q=typed, limit=10))
        kept = [o for o in options or [] if o["value"] == picked]  # the picked keeps its name
        offered = [{"label": f"{e.name} ({e.kind})", "value": str(e.id)} for e in (found.items if found else [])]
        return kept + [o for o in offered if o["value"] != picked]

    @app.callback(
        Output("link-out", "children"),
        Input("link-go", "n_clicks"),
        State("link-source", "value"),
        State("link-type", "value"),
        State("link-top", "value"),
        State("model-ref", "data"),
        prevent_initial_call=True,
    )
    def link_targets(_clicks: Any, source: str | None, type_: str | None, k: Any, ref: dict[str, Any]) -> Any:
        return top_targets(ref, source, type_, k)

    @app.callback(
        Output("predict-out", "children"),
        Output("predict-ids", "data"),
        Input("predict-go", "n_clicks"),
        State("predict-entities", "value"),
        State("model-ref", "data"),
        prevent_initial_call=True,
    )
    def predict(_clicks: Any, picked: list[str] | None, ref: dict[str, Any]) -> Any:
        return predictions(ref, picked)

    @app.callback(
        Output("explain-out", "children"),
        Input({"type": "model-explain", "id": ALL}, "n_clicks"),
        State("model-ref", "data"),
        prevent_initial_call=True,
    )
    def explain(_clicks: list[Any], ref: dict[str, Any]) -> Any:
        trigger = ctx.triggered_id
        if not isinstance(trigger, dict) or not ctx.triggered[0]["value"]:
            raise PreventUpdate  # buttons just drawn, not clicked
        return explanation(ref, trigger["id"])

    @app.callback(
        Output("writeback-msg", "children"),
        Input("writeback-go", "n_clicks"),
        State("writeback-attr", "value"),
        State("predict-ids", "data"),
        State("model-ref", "data"),
        prevent_initial_call=True,
    )
    def write_back(_clicks: Any, attribute: str | None, asked: dict[str, Any] | None, ref: dict[str, Any]) -> Any:
        return written(ref, attribute, asked)
