"""Which plotly.js a page loads, and how long browsers keep the UI's static files.

dcc.Graph loads plotly.js the first time a page of the tab shows a chart, from ``window._dashPlotlyJSURL``: the
full bundle (4.8 MB) by default, whose parsing was most of a chart page's first render in a new tab. Only the
entity page of a tensor with two axes draws a 3D surface; every other chart (heatmaps, lines, bars) is in
plotly.js's cartesian bundle (1.5 MB; npm ``plotly.js-cartesian-dist-min``, MIT, vendored in
``assets/vendor/`` at the version the ``plotly`` package ships). So the index page names the bundle its path
needs in a ``dust-plotly`` meta tag, which ``assets/plotly-bundle.js`` hands to dcc.Graph; a tab that loaded the
cartesian bundle and then opens a 3D view in the app reloads that page once (``entity.py``), as a new tab would.
"""

from __future__ import annotations

import os
import re
import uuid
from typing import Any

import plotly
from dash import Dash
from dash.fingerprint import build_fingerprint
from flask import Response, request

from dust.engine import tensors
from dust.ui.pages.common import PREFIX, run

PLOTLY_VERSION = "4.1.1"  # plotly.js in the installed ``plotly`` package; the vendored bundle must match it
CARTESIAN = f"assets/vendor/plotly-cartesian-{PLOTLY_VERSION}.min.js"
FULL = "package_data/plotly.min.js"
ENTITY = re.compile(r"^/entity/([0-9a-fA-F-]{36})/?$")
YEAR = 31_536_000


def install(app: Dash) -> None:
    """The meta tag on every index page; the cache lifetimes of static files."""
    plain = app.interpolate_index

    def interpolate_index(**parts: Any) -> str:
        parts["metas"] = parts.get("metas", "") + meta(request.path)
        return plain(**parts)

    app.interpolate_index = interpolate_index  # type: ignore[method-assign, assignment]
    app.server.after_request(cache_headers)


def meta(path: str) -> str:
    """The tag naming the bundle for the page at ``path`` (as Flask sees it, under the mount)."""
    bundle, url = ("full", full_url()) if needs_3d(path) else ("cartesian", f"{PREFIX}/{CARTESIAN}")
    return f'<meta name="dust-plotly" content="{url}" data-bundle="{bundle}">'


def needs_3d(path: str) -> bool:
    """The entity page of an entity with a tensor of two axes (drawn as a surface too)."""
    found = ENTITY.match(path)
    if found is None:
        return False
    entity_id = uuid.UUID(found.group(1))
    shown, _ = run(lambda s: any(len(t.axes) == 2 for t in tensors.of_entity(s, entity_id)))
    return bool(shown)


def full_url() -> str:
    """The full bundle at its fingerprinted URL, which Dash serves with a year's cache lifetime."""
    path = os.path.join(os.path.dirname(plotly.__file__), FULL)
    fingerprinted = build_fingerprint(FULL, plotly.__version__, int(os.stat(path).st_mtime))
    return f"{PREFIX}/_dash-component-suites/plotly/{fingerprinted}"


def cache_headers(response: Response) -> Response:
    """Static files whose URL changes with their content (the vendored bundle's version in its name, Dash's
    ``?m=<mtime>`` on assets) are kept a year: a new tab then reads them from the browser's cache instead of
    asking again for each (304s)."""
    versioned = request.path.startswith("/assets/vendor/") or bool(request.args.get("m"))
    if response.status_code == 200 and request.path.startswith("/assets/") and versioned:
        response.headers["Cache-Control"] = f"public, max-age={YEAR}, immutable"
    return response
