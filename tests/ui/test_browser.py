"""The UI end to end: a real ``dust serve`` over the healthcare demo, driven by Debian's Chromium through Playwright.

Every test saves a screenshot under tests/ui/screenshots/ (git-ignored) and fails on any browser console error.
``make test`` installs chromium with apt-get when /usr/bin/chromium is missing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright
from sqlalchemy.orm import Session

from dust.core.security import Role
from dust.domains import healthcare
from dust.embedded import Dust
from dust.engine import entities, relations, tensors, users
from dust.engine.users import UserCreate
from tests.reliability.server import Server
from tests.ui import chromium

SHOTS = Path(__file__).parent / "screenshots"
PASSWORD = "a long enough password"
WAIT_MS = 20_000  # a page's first render or a live update, on a machine running other tests meanwhile


@dataclass(frozen=True)
class Demo:
    base: str
    jane_does: list[uuid.UUID]
    vitals: dict[uuid.UUID, uuid.UUID]  # each Jane Doe's vitals tensor
    doctor: uuid.UUID  # treats the first Jane Doe; the user "clinician" is this doctor
    stranger: uuid.UUID  # a patient that doctor does not treat


def _doctor_of(session: Session, patient: uuid.UUID) -> uuid.UUID:
    near = relations.neighbourhood(session, patient, types=["treats"], direction="in")
    return next(n.id for n in near.nodes if n.kind == "practitioner" and n.attributes.get("role") == "doctor")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    url = f"sqlite:///{tmp_path_factory.mktemp('ui') / 'dust.db'}"
    with Dust(url) as db, db.session() as session:
        healthcare.generate(session, size=40, days=30, seed=7)
        users.create(session, UserCreate(username="admin", password=PASSWORD, role=Role.admin))
        does = [e.id for e in entities.list_(session, kind="patient", q="Jane Doe", limit=2).items]
        vitals = {p: next(t.id for t in tensors.of_entity(session, p) if t.schema_name == "vitals") for p in does}
        doctor = _doctor_of(session, does[0])
        users.create(
            session, UserCreate(username="clinician", password=PASSWORD, role=Role.clinician, entity_id=doctor)
        )
        treated = {n.id for n in relations.neighbourhood(session, doctor, types=["treats"], direction="out").nodes}
        stranger = next(p.id for p in entities.list_(session, kind="patient", limit=100).items if p.id not in treated)
    with Server(url) as server:
        server.start()
        yield Demo(server.base, does, vitals, doctor, stranger)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = chromium.launch(playwright)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser context (no cookies); a screenshot after the test; no console error allowed."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    opened = context.new_page()
    opened.set_default_timeout(WAIT_MS)
    expect.set_options(timeout=WAIT_MS)
    errors: list[str] = []
    opened.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    SHOTS.mkdir(exist_ok=True)
    opened.screenshot(path=str(SHOTS / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert not errors, f"browser console errors: {errors}"


def sign_in(page: Page, demo: Demo, username: str = "admin", then: str = "/") -> None:
    page.goto(demo.base + then)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#whoami")).to_contain_text(username)


def by_id(page: Page, **parts: str) -> Locator:
    """A pattern-matching Dash component: its DOM id is its id dict as JSON, keys sorted."""
    key = ",".join(f'"{k}":"{v}"' for k, v in sorted(parts.items()))
    return page.locator(f"[id='{{{key}}}']")


LAST_TEMPERATURE = """([id]) => {
    const plot = document.getElementById(id).querySelector('.js-plotly-plot');
    if (!plot || !plot.data) return null;
    const trace = plot.data[0], row = trace.y.indexOf('temperature');
    const cells = trace.customdata[row], last = cells[cells.length - 1];
    return last[0] === null ? null : Number(last[0]);
}"""


def test_sign_in_find_jane_doe_and_record_a_temperature(page: Page, demo: Demo) -> None:
    sign_in(page, demo)
    search = page.get_by_label("Name or record number")
    search.fill("jnae doe")  # a typo: the search is fuzzy
    search.press("Enter")
    expect(page.locator("#explore-results a", has_text="Jane Doe")).to_have_count(2)  # told apart by record number
    page.locator("#explore-results a", has_text="Jane Doe").first.click()
    expect(page.locator("#entity-name")).to_contain_text("Jane Doe")
    shown = uuid.UUID(page.url.rsplit("/", 1)[1])
    tensor = str(demo.vitals[shown])
    heatmap = by_id(page, tensor=tensor, type="heatmap")
    expect(heatmap.locator(".js-plotly-plot")).to_be_visible()
    by_id(page, axis="metric", tensor=tensor, type="rec-axis").click()
    page.get_by_role("option", name="temperature", exact=True).click()
    value, record = by_id(page, tensor=tensor, type="rec-value"), by_id(page, tensor=tensor, type="rec-go")
    message = by_id(page, tensor=tensor, type="rec-msg")
    value.fill("99")  # outside 25..45 °C: refused, in the API's words
    record.click()
    expect(message).to_contain_text("temperature 99 Cel is outside its valid range 25..45 Cel")
    value.fill("36.123")
    record.click()
    expect(message).to_contain_text("Recorded")
    heatmap_id = heatmap.get_attribute("id")
    page.wait_for_function(f"(args) => ({LAST_TEMPERATURE})(args) === 36.123", arg=[heatmap_id])


# Where Cytoscape drew a node, in the page's coordinates: Cytoscape keeps its instance on its container element.
NODE_AT = """(id) => {
    const host = [...document.querySelectorAll("#graph-view, #graph-view *")].find((e) => e._cyreg && e._cyreg.cy);
    const node = host && host._cyreg.cy.getElementById(id);
    if (!node || node.empty() || !node.visible()) return null;
    const box = host.getBoundingClientRect(), at = node.renderedPosition();
    return {x: box.left + at.x, y: box.top + at.y};
}"""


def _settled(page: Page, node: str) -> dict[str, float]:
    """Where the node is drawn once the layout has placed it (the same place twice, a quarter second apart)."""
    before = None
    for _ in range(40):
        at = page.wait_for_function(NODE_AT, arg=node).json_value()
        if at == before:
            return at  # type: ignore[no-any-return]
        before = at
        page.wait_for_timeout(250)
    raise AssertionError(f"node {node} never stopped moving")


def test_the_graph_leads_to_her_doctor(page: Page, demo: Demo) -> None:
    sign_in(page, demo, then=f"/ui/entity/{demo.jane_does[0]}")
    page.get_by_role("link", name="Open its graph").click()
    expect(page.locator("#graph-view canvas").first).to_be_attached()
    listed = page.locator("#graph-list a", has_text="Dr.")
    expect(listed.first).to_be_visible()
    # a click on the doctor's node in the canvas opens the doctor
    at = _settled(page, str(demo.doctor))
    page.wait_for_load_state("networkidle")  # no callback still in flight when the click leaves the page
    page.mouse.click(at["x"], at["y"])
    expect(page.locator("#entity-name")).to_contain_text("practitioner")
    assert page.url.endswith(f"/ui/entity/{demo.doctor}")
    # and so does its link in the list under the graph, for keyboard users
    page.go_back()
    page.locator(f"#graph-list a[href='/ui/entity/{demo.doctor}']").click()
    expect(page.locator("#entity-name")).to_contain_text("practitioner")
    assert page.url.endswith(f"/ui/entity/{demo.doctor}")


def _token(demo: Demo) -> dict[str, str]:
    signed = httpx.post(f"{demo.base}/api/v1/auth/token", data={"username": "admin", "password": PASSWORD})
    return {"Authorization": f"Bearer {signed.json()['access_token']}"}


def test_an_alert_arrives_after_a_fever_is_written(page: Page, demo: Demo) -> None:
    sign_in(page, demo, then="/ui/insights")
    expect(page.locator("#alert-list")).to_be_visible()
    patient = demo.jane_does[1]
    tensor = demo.vitals[patient]
    auth = _token(demo)
    read = httpx.get(f"{demo.base}/api/v1/tensors/{tensor}", headers=auth).json()
    written = httpx.post(
        f"{demo.base}/api/v1/tensors/{tensor}/values",
        json={"values": [{"time": read["time"]["end"], "metric": "temperature", "value": 39.7}]},
        headers=auth,
    )
    assert written.status_code == 200, written.text
    alert = page.locator("#alert-list tr", has_text="Fever: Jane Doe at 39.7")  # shown without a reload
    expect(alert).to_be_visible()
    alert.get_by_role("button", name="Acknowledge").click()
    expect(page.locator("#alert-msg")).to_contain_text("acknowledged")
    expect(page.locator("#alert-list tr", has_text="Fever: Jane Doe at 39.7")).to_contain_text("acknowledged")


def test_a_clinician_reaches_their_own_patients_only(page: Page, demo: Demo) -> None:
    sign_in(page, demo, username="clinician", then=f"/ui/entity/{demo.jane_does[0]}")
    expect(page.locator("#entity-name")).to_contain_text("Jane Doe")
    page.goto(f"{demo.base}/ui/entity/{demo.stranger}")
    expect(page.locator("main [role=alert]")).to_contain_text(f"entity {demo.stranger} does not exist")
    expect(page.locator("#entity-name")).to_have_count(0)


def test_without_a_session_every_page_asks_to_sign_in(page: Page, demo: Demo) -> None:
    page.goto(f"{demo.base}/")  # / sends browsers to /ui, which asks to sign in first
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    assert "/ui/login?next=" in page.url
    sign_in(page, demo)
    # Signed out while the page's first callbacks are still in flight, they answer 401 (rightly), and Dash's
    # renderer then logs a console error of its own ("body stream already read"): let them finish first.
    page.wait_for_load_state("networkidle")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    page.goto(f"{demo.base}/ui/insights")
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
