"""examples/walkthrough.py runs as a script, at a few epochs: import, questions, heatmap, anomalies, an R-GCN."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")  # `make browsers`, which `make test` runs first, installs Debian's
PNG = b"\x89PNG\r\n\x1a\n"


def test_the_walkthrough_runs(tmp_path: Path) -> None:
    script = ROOT / "examples" / "walkthrough.py"
    command = [sys.executable, str(script), "--out", str(tmp_path), "--epochs", "3"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"the walkthrough failed:\n{done.stdout}\n{done.stderr}"
    said = done.stdout
    assert "how many female patients? -> There are" in said
    assert "scored=" in said
    if CHROMIUM.is_file():  # kaleido is in the images extra `make install` installs
        drawn = (tmp_path / "heatmap.png").read_bytes()
        assert f"heatmap: {tmp_path / 'heatmap.png'}" in said
        width, height = struct.unpack(">II", drawn[16:24])  # the IHDR chunk, first after the signature
        assert drawn[:8] == PNG and drawn[12:16] == b"IHDR" and (width, height) == (900, 420)
        assert len(drawn) > 10_000, "a heatmap of a patient's vitals, not a blank image"
    else:
        assert "heatmap as plotly JSON, not PNG, since there is no Chromium" in said
        assert json.loads((tmp_path / "heatmap.json").read_text())["data"][0]["type"] == "heatmap"
    trained = said.strip().splitlines()[-1]
    assert trained.startswith("succeeded {'train_accuracy'"), trained
