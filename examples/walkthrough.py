"""A tour of what DUST is for, in notebook cells (`# %%`: VS Code, PyCharm and Jupytext run them one by one).

Imports the shared Synthea sample (../shared/data/synthea; without it, the healthcare demo at a small size), asks
questions in plain English, draws a patient's vitals as a heatmap, finds anomalies, and trains an R-GCN to tell
patients with hypertension from those without over the master tensor. As a script:

    .venv/bin/python examples/walkthrough.py [--out DIR] [--epochs N]

It makes a fresh `walkthrough.db` and the heatmap in DIR (default ./walkthrough-out). tests/test_walkthrough.py
runs it at a few epochs.
"""

# %%
import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import dust
from dust.importers import synthea
from dust.ui.components import charts

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", type=Path, default=Path("walkthrough-out"))
parser.add_argument("--epochs", type=int, default=50)
args, _ = parser.parse_known_args()  # a notebook kernel passes arguments of its own
args.out.mkdir(parents=True, exist_ok=True)
SYNTHEA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "synthea"

# %% [markdown]
# ## Import patients
# Synthea's CSV export becomes patients, practitioners and organizations (entities), their vitals and labs
# (tensors on a daily grid) and who treats whom (relations, weighted by encounters).

# %%
for old in args.out.glob("walkthrough.db*"):  # start afresh at every run
    old.unlink()
url = f"sqlite:///{args.out / 'walkthrough.db'}"
if SYNTHEA.is_dir():
    db = dust.open(url)
    with db.session() as s:
        print(dict(synthea.import_directory(s, SYNTHEA).imported))
else:  # no shared data here: the generated healthcare demo, as `dust demo healthcare --size 60` makes it
    env = {**os.environ, "DUST_DATABASE_URL": url}
    subprocess.run([Path(sys.executable).parent / "dust", "demo", "healthcare", "--size", "60"], env=env, check=True)
    db = dust.open(url)
print("kinds:", [kind.kind for kind in db.kinds()])

# %% [markdown]
# ## Ask questions
# Parsed offline with the database's own vocabulary; the answer carries the query it ran.

# %%
patient = db.get_entity(db.relations(type="treats", limit=1).items[0].target_id)  # a patient someone treats
for question in ["how many female patients?", f"who treats {patient.name}?", f"what was {patient.name}'s heart rate?"]:
    answer = db.ask(question)
    print(question, "->", answer.answer)

# %% [markdown]
# ## A heatmap of one patient's vitals
# The UI's own figure builder (plotly), saved as a PNG by kaleido (the `images` extra), which draws it in a
# Chromium: the machine's own, `/usr/bin/chromium` (`make browsers` installs Debian's) or `BROWSER_PATH`. kaleido is
# given that path, so it never looks for a browser of its own to download, and no MathJax, which it would fetch
# from a CDN. Without kaleido or a Chromium the figure is saved as JSON, which `plotly.io.read_json(path).show()`
# draws.

# %%
vitals = next(t for t in db.entity_tensors(patient.id) if t.schema_name == "vitals")
figure = charts.heatmap(charts.grid_of(db.read_tensor(vitals.id)), title=f"{patient.name}: vitals")
chromium = Path(os.environ.get("BROWSER_PATH") or "/usr/bin/chromium")
if importlib.util.find_spec("kaleido") and chromium.is_file():
    import kaleido

    size = {"format": "png", "width": 900, "height": 420}
    for attempt in range(3):
        try:
            png = kaleido.calc_fig_sync(figure, opts=size, kopts={"path": str(chromium), "mathjax": False})
            break
        except Exception as error:
            # kaleido 1.5 may ask its page to draw before the page's script has loaded, on a busy machine
            # ("kaleido_scopes is not defined"): a new try opens a new page
            if "kaleido_scopes" not in str(error) or attempt == 2:
                raise
    (args.out / "heatmap.png").write_bytes(png)
    print("heatmap:", args.out / "heatmap.png")
else:
    figure.write_json(args.out / "heatmap.json")
    if not importlib.util.find_spec("kaleido"):
        why = "kaleido is not installed (pip install -e '.[images]')"
    else:
        why = f"there is no Chromium at {chromium} (`make browsers` installs Debian's; or set BROWSER_PATH)"
    print(f"heatmap as plotly JSON, not PNG, since {why}:", args.out / "heatmap.json")

# %% [markdown]
# ## Anomalies
# A robust z-score (median absolute deviation) on every patient's heart rate, scored over the stored history.

# %%
db.put_anomaly_rule("vitals", "heart_rate", "mad", settings={"window": 30, "warmup": 3}, threshold=0.5)
print(db.scan_anomalies(schema="vitals", label="heart_rate"))
for anomaly in db.anomalies(schema="vitals", limit=5).items:
    print(anomaly.score, anomaly.value, anomaly.reason)

# %% [markdown]
# ## An R-GCN: who has hypertension?
# Each patient is labelled from its conditions; the model sees only the graph (who treats whom, where they work,
# the patients' other attributes as nodes), and is tested on a held-out fifth of the patients.

# %%
for p in db.patients(limit=500).items:
    conditions = p.attributes.get("conditions") or []
    hypertensive = any("hypertension" in str(c.get("description", "")).lower() for c in conditions)
    db.update_patient(p.id, attributes={"hypertension": hypertensive})
model = db.train_model(
    {
        "task": "entity-classification",
        "name": "hypertension",
        "kind": "patient",
        "target": {"attribute": "hypertension"},
        "settings": {"epochs": args.epochs, "seed": 0},
    }
)
print(model.status, model.error or {k: model.metrics[k] for k in ("train_accuracy", "test_accuracy", "classes")})
db.close()
