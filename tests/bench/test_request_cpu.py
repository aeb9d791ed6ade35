"""bench/request_cpu.py at a tiny size: it finds its routes through the API and measures each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "request_cpu.py"


def test_it_measures_the_anchor_and_the_hot_reads(tmp_path: Path) -> None:
    out = tmp_path / "cpu.json"
    command = [sys.executable, str(SCRIPT), "--rounds", "1", "--requests", "5", "--no-audit-commit", "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    figures = json.loads(out.read_text())["us_per_request"]
    assert list(figures) == ["/healthz", "/auth/me", "entity get", "point read"]
    assert all(0 < low <= middle for low, middle in figures.values())


def test_with_concurrent_clients_it_measures_an_entity_get_of_varied_ids_too(tmp_path: Path) -> None:
    out = tmp_path / "cpu.json"
    command = [sys.executable, str(SCRIPT), "--rounds", "1", "--requests", "8", "--clients", "4", "--varied"]
    subprocess.run([*command, "--no-audit-commit", "--out", str(out)], check=True, capture_output=True, timeout=300)
    figures = json.loads(out.read_text())["us_per_request"]
    assert list(figures) == ["/healthz", "/auth/me", "entity get", "point read", "entity get, varied ids"]
    assert all(0 < low <= middle for low, middle in figures.values())
