"""The documentation site (mkdocs.yml) builds with warnings as errors, and its generated references list every
route, CLI command and setting there is."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from mkdocs.config import load_config

from dust import reference
from dust.api.app import create_app
from dust.cli import app as cli
from dust.core.config import Settings
from tests.test_docs import _commands
from tests.test_readme_examples import PAGES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`mkdocs build --strict` into a temporary directory, as `make docs` runs it."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    return out


@pytest.fixture(scope="module")
def openapi() -> dict:
    """The app's OpenAPI document: every route it serves (the routes do not depend on the backend)."""
    settings = Settings(database_url="sqlite:///:memory:", secret_key="test-docs-site-" + "x" * 32)
    return create_app(settings, migrate=False).openapi()


def _text(site: Path, page: str) -> str:
    """A built page's text, tags stripped (`<code>GET /x</code>` reads `GET /x`)."""
    return html.unescape(re.sub(r"<[^>]+>", "", (site / page / "index.html").read_text()))


def test_every_route_is_in_the_rest_reference(site: Path, openapi: dict) -> None:
    text = _text(site, "reference/rest")
    routes = [f"{m.upper()} {path}" for path, item in openapi["paths"].items() for m in item]
    assert len(routes) > 50
    missing = [route for route in routes if route not in text]
    assert not missing, f"routes missing from the built REST reference: {missing}"


def test_every_cli_command_is_in_the_cli_reference(site: Path) -> None:
    headings = set(re.findall(r"<h2 id=[^>]*>(dust[^<]*)<", (site / "reference/cli/index.html").read_text()))
    commands = _commands(cli, "dust")
    assert "dust users create" in commands
    missing = [c for c in commands if c not in headings]
    assert not missing, f"CLI commands missing from the built CLI reference: {missing}"


def test_every_setting_is_in_the_settings_page(site: Path) -> None:
    text = _text(site, "reference/settings")
    missing = [f"DUST_{name.upper()}" for name in Settings.model_fields if f"DUST_{name.upper()}" not in text]
    assert not missing, f"settings missing from the built settings page: {missing}"


def _nav_pages(nav: list) -> list[str]:
    found = []
    for item in nav:
        for value in item.values() if isinstance(item, dict) else [item]:
            found += _nav_pages(value) if isinstance(value, list) else [value]
    return found


def test_every_page_of_the_nav_has_its_blocks_run() -> None:
    """tests/test_readme_examples.py runs the blocks of every page in the nav; the generated pages' blocks are the
    README's, which it runs too."""
    nav = _nav_pages(load_config(str(ROOT / "mkdocs.yml"))["nav"])
    assert "quickstart.md" in nav and "reference/rest.md" in nav
    run = {str(page.relative_to(ROOT / "docs")) for page in PAGES if page.parent == ROOT / "docs"}
    unrun = [page for page in nav if page not in run and page not in reference.GENERATED]
    assert not unrun, f"pages of the site whose code blocks no test runs: {unrun}"


def test_readme_sections_link_from_docs() -> None:
    readme = "## First\n\nSee [api](docs/api.md#paging), [bench](bench/README.md), [Second](#second).\n\n## Second\n"
    assert reference.readme_section("First", readme, promote=True) == (
        "# First\n\nSee [api](api.md#paging), bench (`bench/README.md` in the repository), Second.\n\n"
    )


def test_the_rest_reference_says_parameters_bodies_and_answers(openapi: dict) -> None:
    page = reference.rest(openapi)
    write = page[page.index("### `POST /api/v1/tensors/{tensor_id}/values`") :]
    write = write[: write.index("\n### ")]
    assert "| `tensor_id` | path | yes | string (uuid) |" in write
    assert "Request body (required): `application/json`: ValuesWrite" in write
    assert "| 404 | No such tensor, or not yours to see. (Problem) |" in write


def _section(page: str, heading: str) -> str:
    start = page.index(heading)
    end = page.find("\n### ", start + len(heading))
    return page[start : end if end > 0 else len(page)]


def test_the_rest_reference_lists_the_fields_of_each_body_and_answer(openapi: dict) -> None:
    page = reference.rest(openapi)
    components = openapi["components"]["schemas"]
    unlisted = []
    for path, item in openapi["paths"].items():
        for method, operation in item.items():
            section = _section(page, f"### `{method.upper()} {path}`")
            shown = [c.get("schema", {}) for c in operation.get("requestBody", {}).get("content", {}).values()]
            for answer in (a for status, a in operation["responses"].items() if status.startswith("2")):
                schemas = [c.get("schema") or {} for c in answer.get("content", {}).values()]
                shown += [s.get("items", {}) if s.get("type") == "array" else s for s in schemas]
            for name in filter(None, map(reference._model, shown)):
                missing = [f for f in components[name].get("properties", {}) if f"| `{f}` |" not in section]
                unlisted += [f"{method.upper()} {path}: {name}.{f}" for f in missing]
    assert not unlisted, f"fields the REST reference does not list under their operation: {unlisted}"
    schema = _section(page, "### `POST /api/v1/schemas`")
    assert "| `axes` | list[[Axis](#axis)] | yes | At most 8 items. |" in schema  # a nested model: a link
    assert "Answer (201): `SchemaPublic`" in schema and "| `version` | integer | yes |  |" in schema
    axis = _section(page, "\n### Axis\n")  # linked: its own table in the models section at the end
    assert page.index("## Models of bodies and answers") < page.index("\n### Axis\n")
    assert "| `labels` | list[string] | yes |" in axis


def test_every_link_of_the_rest_reference_lands_on_its_heading(site: Path) -> None:
    built = (site / "reference/rest/index.html").read_text()
    anchors = set(re.findall(r'id="([^"]+)"', built))
    links = set(re.findall(r'href="#([^"]+)"', built))
    assert len(links) > 50 and not links - anchors, sorted(links - anchors)
    assert "axis" in links and "timeinfo" in links


def test_the_cli_reference_says_arguments_and_options() -> None:
    page = reference.cli(typer.main.get_command(cli))
    create = page[page.index("## dust users create") :]
    assert "Usage: `dust users create [OPTIONS] USERNAME`" in create
    assert "| `--role` (required) |  | admin, clinician, member, analyst or viewer. |" in create


def test_the_quickstart_carries_the_readmes_first_session(site: Path) -> None:
    text = _text(site, "quickstart")
    assert "A first session" in text and "$API/auth/token" in text
    assert "from README.md" not in text
