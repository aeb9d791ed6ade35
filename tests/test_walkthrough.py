"""examples/walkthrough.py runs as a script, at a few epochs: import, questions, heatmap, anomalies, an R-GCN."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_walkthrough_runs(tmp_path: Path) -> None:
    script = ROOT / "examples" / "walkthrough.py"
    command = [sys.executable, str(script), "--out", str(tmp_path), "--epochs", "3"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"the walkthrough failed:\n{done.stdout}\n{done.stderr}"
    said = done.stdout
    assert "how many female patients? -> There are" in said
    assert "scored=" in said
    drawn = tmp_path / "heatmap.png" if (tmp_path / "heatmap.png").exists() else tmp_path / "heatmap.json"
    assert drawn.exists(), said
    if drawn.suffix == ".json":
        assert json.loads(drawn.read_text())["data"][0]["type"] == "heatmap"
    trained = said.strip().splitlines()[-1]
    assert trained.startswith("succeeded {'train_accuracy'"), trained
