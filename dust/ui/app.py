"""The Dash app: a navigation bar, and the page the URL names, rendered server-side by one callback. Each page
module has ``layout(...)`` and ``register(app)`` (its callbacks, on this app instance: nothing global)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dash_bootstrap_components as dbc
import pandas  # noqa: F401  (see below)
from dash import Dash, Input, Output, dcc, html
from flask import Flask
from starlette.datastructures import State

from dust.ui import auth, bundles
from dust.ui.pages import ask, entity, explore, graph, insights, models
from dust.ui.pages.common import PREFIX, problem

ASSETS = Path(__file__).parent / "assets"
# pandas is imported whole with the UI: plotly's JSON encoder uses pandas once it is in sys.modules, and a job
# importing it in another thread (a model's training, through torch_geometric) leaves it there half-initialised
# for a moment, during which a callback's answer failed ("partially initialized module 'pandas' has no attribute
# 'NaT'"; the Models page's list, refreshed while a training started). Costs 0.2 s once per process.


def build(state: State) -> Dash:
    """The UI for the FastAPI app whose ``state`` it shares (sessions, settings, caches): served at /ui."""
    server = Flask("dust.ui")
    app = Dash(
        "dust.ui",
        server=server,  # type: ignore[arg-type]  # Dash takes a Flask app; its hint says bool
        routes_pathname_prefix="/",  # as Flask sees paths under the mount
        requests_pathname_prefix=f"{PREFIX}/",  # as the browser asks for them
        assets_folder=str(ASSETS),
        assets_path_ignore=["vendor"],  # served when asked for (bundles.py), not put on every page
        title="DUST",
        update_title=None,  # type: ignore[arg-type]  # None: the tab keeps its title while updating
        suppress_callback_exceptions=True,  # pages bring their components when shown
        serve_locally=True,  # no CDN: scripts and styles come from this server
        # Not eager_loading: plotly.js would then be parsed by every page, Explore too (measured: Explore's first
        # render 1.5-2.1 s lazy, 2.8-3.8 s eager; bench/ui.py). Pages with charts load it when they show one, and
        # only the cartesian bundle unless they draw in 3D (bundles.py).
    )
    auth.install(server, state)
    bundles.install(app)
    app.layout = shell
    _route(app)
    for page in (explore, entity, graph, insights, ask, models):
        page.register(app)
    return app


def shell() -> Any:
    """The frame around every page: called per request, so it names the signed-in user."""
    who = auth.whoami()
    user = f"{who.username} ({who.role.value})" if who else ""
    links = [
        dbc.NavItem(dbc.NavLink("Explore", href=f"{PREFIX}/", active="exact")),
        dbc.NavItem(dbc.NavLink("Graph", href=f"{PREFIX}/graph", active="partial")),
        dbc.NavItem(dbc.NavLink("Insights", href=f"{PREFIX}/insights", active="partial")),
        dbc.NavItem(dbc.NavLink("Ask", href=f"{PREFIX}/ask", active="partial")),
        dbc.NavItem(dbc.NavLink("Models", href=f"{PREFIX}/models", active="partial")),
    ]
    sign_out = html.Form(
        [
            html.Span(user, className="navbar-text me-2 text-light", id="whoami"),
            html.Button("Sign out", type="submit", className="btn btn-outline-light btn-sm"),
        ],
        method="post",
        action=f"{PREFIX}/logout",
        className="d-flex align-items-center ms-auto",
    )
    bar = dbc.Navbar(
        dbc.Container([dbc.NavbarBrand("DUST", href=f"{PREFIX}/"), dbc.Nav(links, navbar=True), sign_out], fluid=True),
        color="dark",
        dark=True,
        className="mb-3",
    )
    return html.Div(
        [
            dcc.Location(id="url", refresh="callback-nav"),
            bar,
            dbc.Container(html.Main(id="page", role="main"), fluid="xxl"),
        ]
    )


def page_for(path: str | None, search: str | None) -> Any:
    """The page a URL names (paths under /ui)."""
    parts = [p for p in (path or "").removeprefix(PREFIX).split("/") if p]
    if not parts or parts[0] == "explore":
        return explore.layout()
    if parts[0] == "entity" and len(parts) == 2:
        return entity.layout(parts[1])
    if parts[0] == "graph":
        return graph.layout(search or "")
    if parts[0] == "insights":
        return insights.layout()
    if parts[0] == "ask":
        return ask.layout()
    if parts[0] == "models" and len(parts) <= 2:
        return models.layout(parts[1] if len(parts) == 2 else None)
    return problem(f"No page at {path}. Use the navigation above.")


def _route(app: Dash) -> None:
    @app.callback(Output("page", "children"), Input("url", "pathname"), Input("url", "search"))
    def show(path: str | None, search: str | None) -> Any:
        return page_for(path, search)
