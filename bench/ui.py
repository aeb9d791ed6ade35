"""First render of each UI page in a real browser, over the healthcare demo: the issue asks for under 2 s each at
``--size 10000``.

    .venv/bin/python bench/ui.py                 # --size 10000 (the demo is generated once, about 1.5 min)
    .venv/bin/python bench/ui.py --size 500 --runs 2

(a) the demo (``healthcare.generate``, as ``dust demo healthcare --size N``) into bench/out/ui-<N>.db, kept for
    the next run, and an admin to sign in as; (b) ``dust serve`` on a free port over it; (c) Debian's chromium
    (Playwright) signs in once, then opens each page ``--runs`` times, each time in a new tab: the time from the
    navigation's start until the page shows what it is for (the page's data drawn, not just its frame), as a
    user would wait for it. The first run of a page is its cold first render (the server builds its figures
    from the database); the median of the rest is a warm one. Then each page again as a link inside the app opens
it (from Explore, with the scripts already loaded: no new page), which is how a user mostly moves between them.

Pages: Explore (the first 50 entities), Entity (Jane Doe: her labs and vitals as heatmaps and lines, her
relations), Graph around Jane Doe (2 hops), Graph of every relation (the master tensor sampled past 1,500
nodes), Insights (mean temperature per week over every patient, the anomaly feed, open alerts, trigger rules).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from host import cpu_model
from playwright.sync_api import BrowserContext, Page, sync_playwright
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for its tests' helpers
from dust.core.security import Role
from dust.domains import healthcare
from dust.embedded import Dust
from dust.engine import entities, users
from dust.storage.repositories import users as user_repo
from tests.reliability.server import Server
from tests.ui import chromium

OUT = Path(__file__).parent / "out"
PASSWORD = "bench ui password"
TARGET_S = 2.0
WAIT_MS = 60_000


def prepare(size: int, days: int) -> tuple[str, uuid.UUID]:
    """The demo database (made once per size) with the admin "bench-ui"; Jane Doe's id."""
    OUT.mkdir(exist_ok=True)
    url = f"sqlite:///{OUT / f'ui-{size}.db'}"
    with Dust(url) as db, db.session() as session:
        if entities.list_(session, kind="patient", limit=1).items == []:
            started = time.perf_counter()
            healthcare.generate(session, size=size, days=days, seed=7)
            print(f"generated the demo at --size {size} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        if user_repo.by_username(session, "bench-ui") is None:
            users.create(session, users.UserCreate(username="bench-ui", password=PASSWORD, role=Role.admin))
        jane = entities.list_(session, kind="patient", q="Jane Doe", limit=1).items[0].id
    return url, jane


def pages(jane: uuid.UUID) -> dict[str, tuple[str, Callable[[Page], None]]]:
    """Each page: its path, and what shows when it has rendered."""

    def explore(page: Page) -> None:
        page.wait_for_selector("#explore-results table tbody tr")

    def entity(page: Page) -> None:
        page.wait_for_selector("#entity-name")
        page.wait_for_function("document.querySelectorAll('.card .js-plotly-plot .svg-container').length >= 4")
        page.wait_for_selector("#relations-list table")

    def graph(page: Page) -> None:
        page.wait_for_selector("#graph-list a")

    def insights(page: Page) -> None:
        page.wait_for_selector("#trend-figure .js-plotly-plot .scatterlayer .trace")
        page.wait_for_selector("#anomaly-feed table, #anomaly-feed p")
        page.wait_for_selector("#alert-list table, #alert-list p")
        page.wait_for_selector("#trigger-list table")

    return {
        "Explore": ("/ui/", explore),
        "Entity (Jane Doe)": (f"/ui/entity/{jane}", entity),
        "Graph around Jane Doe": (f"/ui/graph?entity={jane}", graph),
        "Graph of every relation": ("/ui/graph", graph),
        "Insights": ("/ui/insights", insights),
    }


def measure(base: str, jane: uuid.UUID, runs: int, shots: Path | None = None) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {}
    with sync_playwright() as playwright:
        browser = chromium.launch(playwright)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        sign_in = context.new_page()
        sign_in.goto(f"{base}/ui/login")
        sign_in.get_by_label("Username").fill("bench-ui")
        sign_in.get_by_label("Password").fill(PASSWORD)
        sign_in.get_by_role("button", name="Sign in").click()
        sign_in.wait_for_selector("#whoami")
        sign_in.close()
        for name, (path, ready) in pages(jane).items():
            for _ in range(runs):
                page = context.new_page()
                page.set_default_timeout(WAIT_MS)
                started = time.perf_counter()
                page.goto(base + path)
                ready(page)
                timings.setdefault(name, []).append(time.perf_counter() - started)
                if shots is not None and len(timings[name]) == 1:
                    page.wait_for_timeout(1_500)  # let the charts settle
                    page.screenshot(path=str(shots / f"ui-{slug(name)}.png"))
                page.close()
        in_app(context, base, pages(jane), runs, timings)
        browser.close()
    return timings


NAVIGATE = """(href) => { window.history.pushState({}, '', href);
                          window.dispatchEvent(new CustomEvent('_dashprivate_pushstate')); }"""


def in_app(
    context: BrowserContext,
    base: str,
    shown: dict[str, tuple[str, Callable[[Page], None]]],
    runs: int,
    timings: dict[str, list[float]],
) -> None:
    """Each page opened from Explore inside the app, as a link does (scripts loaded, no new page)."""
    explore_path, explore_ready = shown["Explore"]
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(base + explore_path)
    explore_ready(page)
    for name, (path, ready) in shown.items():
        if name == "Explore":
            continue
        for _ in range(runs):
            page.evaluate(NAVIGATE, explore_path)
            page.wait_for_selector("#explore-results table tbody tr")
            started = time.perf_counter()
            page.evaluate(NAVIGATE, path)
            ready(page)
            timings.setdefault(f"{name}, in the app", []).append(time.perf_counter() - started)
    page.close()


def slug(name: str) -> str:
    return "-".join(name.lower().replace("(", "").replace(")", "").split()[:2])


def report(size: int, timings: dict[str, list[float]], note: str) -> None:
    table = Table(title=f"UI first render, healthcare demo --size {size} ({note})")
    for column in ("page", "first (cold) s", "warm median s", f"under {TARGET_S:g} s"):
        table.add_column(column, justify="left" if column == "page" else "right")
    for name, seconds in timings.items():
        warm = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
        table.add_row(name, f"{seconds[0]:.2f}", f"{warm:.2f}", "yes" if max(seconds[0], warm) < TARGET_S else "NO")
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=10_000, help="patients in the demo")
    parser.add_argument("--days", type=int, default=90, help="days of vitals per patient")
    parser.add_argument("--runs", type=int, default=3, help="openings of each page (the first is cold)")
    parser.add_argument("--screenshots", type=Path, help="save each page as ui-<page>.png here (docs/images)")
    options = parser.parse_args()
    url, jane = prepare(options.size, options.days)
    with Server(url) as server:
        base = server.start().removesuffix("/api/v1")
        timings = measure(base, jane, options.runs, options.screenshots)
    load = ", ".join(f"{n:.1f}" for n in os.getloadavg())  # other work on the machine slows the browser most
    note = f"{cpu_model()}, {os.cpu_count()} cores, load {load}, Python {platform.python_version()}, SQLite"
    report(options.size, timings, note)
    result = {"size": options.size, "days": options.days, "machine": note, "seconds": timings}
    (OUT / f"ui-{options.size}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
