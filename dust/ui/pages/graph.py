"""Graph: the master tensor around an entity (1-3 hops) or across every relation, filtered by relation type, weight
and time ("as of"); nodes coloured by kind, anomalous entities ringed, a click opens the entity. Past the node
budget the server sends a sample and the page says so; the same nodes are listed as links for keyboard users."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import dash_bootstrap_components as dbc
import dash_cytoscape as cyto
from dash import Dash, Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate
from sqlalchemy.orm import Session

from dust.engine import anomalies, entities, relations
from dust.ui import data
from dust.ui.components import graph as drawing
from dust.ui.pages.common import as_uuid, empty_state, entity_href, problem, run

LISTED = 200  # nodes listed as links under the graph
ANOMALIES = 500  # recent anomalies whose entities are ringed
# Entities the view of every relation draws: Chromium here lays out and draws 600 in about a second, 1,500 (the
# budget around an entity, Grafana's limit) in nearly three (docs/ui.md#first-render-at---size-10000)
WHOLE = 600


def layout(search: str) -> Any:
    centre = (parse_qs(search.lstrip("?")).get("entity") or [""])[0]
    chosen, _ = run(lambda s: entities.get(s, uuid.UUID(centre))) if as_uuid(centre) else (None, None)
    options = [{"label": f"{chosen.name} ({chosen.kind})", "value": str(chosen.id)}] if chosen else []
    controls = dbc.Row(
        [
            dbc.Col(
                [
                    dbc.Label("Around entity (empty: every relation)", html_for="graph-entity"),
                    dcc.Dropdown(
                        id="graph-entity",
                        options=options,
                        value=str(chosen.id) if chosen else None,
                        placeholder="type a name to search",
                    ),
                ],
                md=4,
            ),
            dbc.Col(
                [
                    dbc.Label("Relation types", html_for="graph-types"),
                    dcc.Dropdown(id="graph-types", multi=True, placeholder="all types"),
                ],
                md=3,
            ),
            dbc.Col(
                [
                    dbc.Label("Hops", html_for="graph-depth"),
                    dbc.Select(
                        id="graph-depth", value="1", options=[{"label": str(n), "value": str(n)} for n in (1, 2, 3)]
                    ),
                ],
                md=1,
            ),
            dbc.Col(
                [
                    dbc.Label("Least weight", html_for="graph-weight"),
                    dbc.Input(id="graph-weight", type="number", placeholder="any"),
                ],
                md=2,
            ),
            dbc.Col(
                [
                    dbc.Label("As of (days ago)", html_for="graph-asof"),
                    dcc.Slider(
                        id="graph-asof",
                        min=0,
                        max=365,
                        step=1,
                        value=0,
                        marks={0: "now", 90: "90", 180: "180", 365: "365"},
                    ),
                ],
                md=2,
            ),
        ],
        className="g-2",
    )
    return html.Div(
        [
            html.H1("Graph", className="h3"),
            controls,
            html.Div(id="graph-note", role="status", className="mt-2"),
            dcc.Loading(
                cyto.Cytoscape(
                    id="graph-view",
                    elements=[],
                    layout={"name": "concentric", "animate": False},
                    style={"width": "100%", "height": "65vh", "border": "1px solid #dee2e6"},
                    minZoom=0.05,
                    maxZoom=4,
                )
            ),
            html.P(
                "Fill: kind · line colour: relation type, width: weight · ringed: anomalous. Click a node to open it.",
                className="small text-muted",
            ),
            html.H2("Entities shown", className="h5 mt-3"),
            html.Div(id="graph-list"),
        ]
    )


def _draw(
    session: Session, centre: uuid.UUID | None, types: list[str], depth: int, weight: float | None, at: datetime | None
) -> tuple[drawing.Sampled, set[str], dict[str, str]]:
    if centre is not None:
        near = relations.neighbourhood(session, centre, types=types, depth=depth, min_weight=weight, at=at)
        nodes = [drawing.GNode(str(n.id), n.name, n.kind) for n in near.nodes]
        edges = [drawing.GEdge(str(e.id), str(e.source_id), str(e.target_id), e.type, e.weight) for e in near.edges]
        sampled = drawing.sample(nodes, edges, keep=[str(centre)])
    else:
        sampled = _whole(session, types, weight, at)
    flagged = {str(a.entity_id) for a in anomalies.list_anomalies(session, limit=ANOMALIES).items}
    return sampled, flagged, {n.id: n.kind for n in sampled.nodes}


def _whole(session: Session, types: list[str], weight: float | None, at: datetime | None) -> drawing.Sampled:
    """The best connected entities of every relation (the master tensor), at most ``WHOLE`` of them, named as
    the reader may see them."""
    found = relations.strongest(session, WHOLE, types=types, at=at, min_weight=weight)
    shown = data.presented(session, found.entity_ids)
    nodes = [drawing.GNode(str(i), shown[i]["name"], shown[i]["kind"]) for i in found.entity_ids if i in shown]
    edges = [drawing.GEdge(str(e.id), str(e.source_id), str(e.target_id), e.type, e.weight) for e in found.edges]
    sampled = drawing.Sampled(nodes, edges, found.total_entities, found.total_relations)
    if sampled.cut:
        sampled.notes.append(
            f"Showing the {len(nodes):,} best connected of {found.total_entities:,} entities (by total weight) and "
            f"the {len(edges):,} relations among them, of {found.total_relations:,}. Narrow it by relation type "
            "or weight, or open an entity's graph."
        )
    return sampled


def _listing(sampled: drawing.Sampled) -> Any:
    named = sorted((n for n in sampled.nodes if n.name), key=lambda n: (n.kind, n.name))[:LISTED]
    if not named:
        return empty_state("No entities to show: pick an entity above, or loosen the type and weight filters.")
    # One component per entity, not three (a list item, a link, a span): Dash's renderer does work for each new
    # component times every component shown.
    items = [dcc.Link(f"{n.name} ({n.kind})", href=entity_href(n.id), className="d-block") for n in named]
    more = f" (the first {LISTED})" if len(sampled.nodes) > LISTED else ""
    return html.Div(
        [
            html.P(f"{len(sampled.nodes):,} entities{more}:", className="small"),
            html.Nav(items, className="small", style={"columnWidth": "16rem"}, title="Entities shown"),
        ]
    )


def register(app: Dash) -> None:
    @app.callback(
        Output("graph-view", "elements"),
        Output("graph-view", "stylesheet"),
        Output("graph-note", "children"),
        Output("graph-list", "children"),
        Output("graph-types", "options"),
        Input("graph-entity", "value"),
        Input("graph-types", "value"),
        Input("graph-depth", "value"),
        Input("graph-weight", "value"),
        Input("graph-asof", "value"),
        State("graph-types", "options"),
    )
    def draw(
        centre: str | None,
        types: list[str] | None,
        depth: str | None,
        weight: Any,
        days: int | None,
        known: list[Any] | None,
    ) -> Any:
        at = datetime.now(UTC) - timedelta(days=int(days)) if days else None
        wanted = as_uuid(centre)
        least = float(weight) if isinstance(weight, int | float) else None
        found, error = run(lambda s: _draw(s, wanted, list(types or []), int(depth or 1), least, at))
        if found is None:
            return [], [], problem(error), None, known or []
        sampled, flagged, kinds_ = found
        elements = drawing.elements(sampled, flagged, str(wanted) if wanted else None)
        style = drawing.stylesheet(set(kinds_.values()), {e.type for e in sampled.edges}, len(sampled.nodes))
        notes = [dbc.Alert(n, color="info", className="py-2") for n in sampled.notes]
        if not sampled.nodes:
            notes.append(empty_state("Nothing to draw: no relations match. Pick an entity, or loosen the filters."))
        names = sorted(
            {*(o if isinstance(o, str) else o["value"] for o in known or []), *(e.type for e in sampled.edges)}
        )
        return elements, style, notes, _listing(sampled), names

    @app.callback(
        Output("graph-entity", "options"),
        Input("graph-entity", "search_value"),
        State("graph-entity", "options"),
        prevent_initial_call=True,
    )
    def search(typed: str | None, current: list[Any] | None) -> Any:
        if not typed or len(typed) < 2:
            raise PreventUpdate
        found, _ = run(lambda s: entities.list_(s, q=typed, limit=10))
        return [{"label": f"{e.name} ({e.kind})", "value": str(e.id)} for e in (found.items if found else [])]

    @app.callback(
        Output("url", "href", allow_duplicate=True),
        Input("graph-view", "tapNodeData"),
        prevent_initial_call=True,
    )
    def open_node(node: dict[str, Any] | None) -> Any:
        if not node or not node.get("id"):
            raise PreventUpdate
        return entity_href(node["id"])
