"""Plugins: DUST's own built-ins register through the hooks, and an installed package's plugin is found, listed
by `dust plugins list` and GET /plugins, and its detector, analysis, trigger actions, importer and command are
usable.

The example package (tests/plugins/example) is really installed — built by pip into a directory of its own,
which is then put on the import path of this process and of the `dust` commands run here — so the entry-point
lookup is the one a user's installed plugin goes through.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from dust.anomalies.base import Score
from dust.jobs import Worker
from dust.plugins import hookimpl, registry
from tests.api.conftest import API, ONE_BACKEND, World
from tests.jobs.conftest import until

EXAMPLE = Path(__file__).parent / "example"
DUST = Path(sys.executable).parent / "dust"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The example plugin package, installed by pip into a directory put on this process's import path."""
    work = tmp_path_factory.mktemp("plugin")
    shutil.copytree(EXAMPLE, work / "source")  # pip builds in the source tree: keep tests/ clean
    target = work / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target)]
    subprocess.run([*pip, str(work / "source")], check=True, capture_output=True)
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    registry.reload()
    yield target
    sys.path.remove(str(target))
    sys.modules.pop("dust_example", None)
    registry.reload()


def test_the_builtins_are_a_plugin_like_any_other() -> None:
    dust = registry.plugins()[0]
    assert (dust.name, dust.builtin) == ("dust", True)
    assert "healthcare" in dust.domain_packs
    assert dust.analyses == ["trend", "seasonality", "forecast"]
    assert set(dust.detectors) == set(registry.detectors()) - {"threshold"}
    assert dust.trigger_actions == ["alert", "write", "attribute", "weight", "webhook"]
    assert dust.importers == ["synthea", "fhir", "paysim", "rdf"]


def test_an_installed_plugin_is_found_with_what_it_adds(installed: Path) -> None:
    example = next(p for p in registry.plugins() if p.name == "dust-example")
    assert (example.version, example.builtin) == ("0.1.0", False)
    assert (example.detectors, example.analyses, example.commands, example.domain_packs) == (
        ["threshold"],
        ["range"],
        ["hello"],
        [],
    )
    assert (example.trigger_actions, example.importers) == (["note", "append"], ["people"])


def test_its_detector_scores_like_a_builtin_and_resumes_from_its_state(installed: Path) -> None:
    threshold = registry.detectors()["threshold"]
    detector = threshold(limit=50)
    assert detector.update(0, 40).score == 0.0
    flagged = detector.update(60, 51)
    assert flagged.score == 1.0 and flagged.reason == "{label} 51 is above the limit of 50"
    resumed = threshold.restore(detector.state(), limit=50)
    assert resumed.update(120, 70) == Score(1.0, "{label} 70 is above the limit of 50")


def _dust(site: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200", **(env or {})}
    return subprocess.run([str(DUST), *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def test_dust_plugins_list_names_it_and_its_command_runs(installed: Path) -> None:
    listed = _dust(installed, "plugins", "list")
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if "dust-example" in line)
    assert "0.1.0" in line and "threshold" in line and "range" in line and "hello" in line
    assert "note, append" in line and "people" in line
    hello = _dust(installed, "hello", "--name", "Jane")
    assert (hello.returncode, hello.stdout) == (0, "hello, Jane, from the example plugin\n")


@ONE_BACKEND
def test_get_plugins_lists_it_for_admins_only(installed: Path, login_as: Callable[..., TestClient]) -> None:
    listed = login_as("admin").get("/api/v1/plugins")
    assert listed.status_code == 200, listed.text
    by_name = {p["name"]: p for p in listed.json()["items"]}
    assert by_name["dust-example"] == {
        "name": "dust-example",
        "version": "0.1.0",
        "builtin": False,
        "detectors": ["threshold"],
        "analyses": ["range"],
        "trigger_actions": ["note", "append"],
        "importers": ["people"],
        "domain_packs": [],
        "commands": ["hello"],
    }
    assert listed.json()["items"][0]["name"] == "dust"
    assert login_as("clinician").get("/api/v1/plugins").status_code == 403


@pytest.fixture
def clashing() -> Iterator[None]:
    """A second plugin that adds a detector under a built-in's name."""

    class Mad:
        name = "mad"

    plugin = SimpleNamespace(dust_detectors=hookimpl(lambda: [Mad]))
    registry.manager().register(plugin, name="clash")
    registry.detectors.cache_clear()
    yield
    registry.reload()


def test_two_plugins_adding_one_name_is_an_error_naming_both(clashing: None) -> None:
    with pytest.raises(registry.PluginConflict, match="plugins 'dust' and 'clash' both add a detector named 'mad'"):
        registry.detectors()


@ONE_BACKEND
def test_its_detector_flags_values_written_through_the_api(
    installed: Path, login_as: Callable[..., TestClient]
) -> None:
    admin = login_as("admin")
    schema = {"name": "vitals", "axes": [{"name": "metric", "labels": ["heart_rate"]}]}
    assert admin.post("/api/v1/schemas", json=schema).status_code == 201
    patient = admin.post("/api/v1/patients", json={"name": "Jane Doe"}).json()["id"]
    tensor = admin.post("/api/v1/tensors", json={"entity_id": patient, "schema": "vitals"}).json()["id"]
    rule = {"detector": "threshold", "settings": {"limit": 100}}
    assert admin.put("/api/v1/anomalies/rules/vitals/heart_rate", json=rule).status_code == 200
    cells = [{"time": t, "metric": "heart_rate", "value": v} for t, v in enumerate([90, 120, 95])]
    assert admin.post(f"/api/v1/tensors/{tensor}/values", json={"values": cells}).status_code == 200
    (flagged,) = admin.get("/api/v1/anomalies", params={"entity_id": patient}).json()["items"]
    assert (flagged["detector"], flagged["time_index"], flagged["value"]) == ("threshold", 1, 120.0)
    assert flagged["reason"] == "heart_rate 120 is above the limit of 100"


@ONE_BACKEND
def test_its_analysis_comes_with_the_built_in_ones(installed: Path, login_as: Callable[..., TestClient]) -> None:
    admin = login_as("admin")
    schema = {"name": "vitals", "axes": [{"name": "metric", "labels": ["heart_rate"]}]}
    assert admin.post("/api/v1/schemas", json=schema).status_code == 201
    patient = admin.post("/api/v1/patients", json={"name": "Jane Doe"}).json()["id"]
    tensor = admin.post("/api/v1/tensors", json={"entity_id": patient, "schema": "vitals"}).json()["id"]
    cells = [{"time": t, "metric": "heart_rate", "value": 60.0 + t} for t in range(10)]
    assert admin.post(f"/api/v1/tensors/{tensor}/values", json={"values": cells}).status_code == 200
    analysed = admin.get(f"/api/v1/tensors/{tensor}/analysis", params={"label": "heart_rate"})
    assert analysed.status_code == 200, analysed.text
    assert analysed.json()["more"] == {"range": {"low": 60.0, "high": 69.0}}
    assert analysed.json()["trend"]["slope"] == pytest.approx(1.0)


def _rule(admin: TestClient, *then: dict[str, Any]) -> dict[str, Any]:
    rule = {"name": "fever", "when": {"schema": "vitals", "label": "temperature", "op": ">", "value": 39}, "then": then}
    made = admin.post(f"{API}/triggers", json=rule)
    assert made.status_code == 201, made.text
    return dict(made.json())


def _fever(client: TestClient, tensor: str, value: float = 39.6) -> None:
    cells = [{"time": 1, "metric": "temperature", "value": value}]
    assert client.post(f"{API}/tensors/{tensor}/values", json={"values": cells}).status_code == 200


@ONE_BACKEND
def test_a_rule_with_its_action_runs_it_in_the_writes_transaction(
    installed: Path, client: TestClient, world: World
) -> None:
    follow = {"type": "treats", "direction": "in"}
    note = {"action": "note", "follow": follow, "message": "{entity.name}: {value}"}
    rule = _rule(client, {"action": "alert"}, note)
    assert rule["then"][1] == {**note, "follow": {**follow, "depth": 1}, "attribute": "note"}
    _fever(client, world["TPA"])
    doctor = client.get(f"{API}/entities/{world['A']}").json()
    assert doctor["attributes"]["note"] == "Pat A: 39.6"
    assert "note" not in client.get(f"{API}/entities/{world['B']}").json()["attributes"]  # treats someone else
    (firing,) = client.get(f"{API}/triggers/{rule['id']}/firings").json()["items"]
    assert firing["effects"] == {"alerts": 1, "note": 1}


@ONE_BACKEND
def test_an_action_that_calls_out_runs_after_commit_as_a_job(
    installed: Path, client: TestClient, world: World, worker: Worker, tmp_path: Path
) -> None:
    out = tmp_path / "fired.txt"
    _rule(client, {"action": "append", "path": str(out), "message": "{rule}: {entity.name} {label} {value}"})
    _fever(client, world["TPA"])
    (job,) = client.get(f"{API}/jobs", params={"kind": "triggers.action"}).json()["items"]
    ended = until(lambda: (j := client.get(f"{API}/jobs/{job['id']}").json())["state"] in ("succeeded", "failed") and j)
    assert (ended["state"], ended["result"]) == ("succeeded", {"appended_to": str(out)}), ended["error"]
    assert out.read_text() == "fever: Pat A temperature 39.6\n"


@ONE_BACKEND
def test_its_actions_settings_are_checked_when_a_rule_is_saved(installed: Path, client: TestClient) -> None:
    when = {"schema": "vitals", "label": "temperature", "op": ">", "value": 39}
    assert client.post(f"{API}/schemas", json={"name": "vitals", "axes": [{"name": "m", "labels": ["temperature"]}]})
    bad = {"action": "note", "attribute": "Not An Attribute", "message": "{nope}", "colour": "red"}
    refused = client.post(f"{API}/triggers", json={"name": "r", "when": when, "then": [bad]})
    assert refused.status_code == 422 and refused.headers["content-type"] == "application/problem+json"
    problems = {".".join(map(str, e["loc"])): e["msg"] for e in refused.json()["errors"]}
    assert set(problems) == {"body.then.0.note.attribute", "body.then.0.note.message", "body.then.0.note.colour"}
    assert "unknown placeholder {nope}" in problems["body.then.0.note.message"]

    unknown = client.post(f"{API}/triggers", json={"name": "r", "when": when, "then": [{"action": "nte"}]})
    assert unknown.status_code == 422
    assert unknown.json()["detail"] == (
        "body.then.0.action: unknown action 'nte' (the actions are alert, write, attribute, weight, webhook, "
        "append, note); did you mean 'note'?"
    )


def test_dust_import_runs_its_importer(installed: Path, tmp_path: Path) -> None:
    names = tmp_path / "names.txt"
    names.write_text("Jane Doe\n\nJohn Smith\n")
    database = f"sqlite:///{tmp_path / 'dust.db'}"
    first = _dust(installed, "import", "people", str(names), env={"DUST_DATABASE_URL": database})
    assert first.returncode == 0, first.stderr
    assert "Imported: 2 people" in first.stderr and "Skipped 1 lines: empty (e.g. names.txt:2)" in first.stderr
    again = _dust(installed, "import", "people", str(names), env={"DUST_DATABASE_URL": database})
    assert "Nothing new" in again.stderr and "Already there: 2 people" in again.stderr
    helped = _dust(installed, "import", "--help")
    assert "people" in helped.stdout and "Load people from text files" in helped.stdout
