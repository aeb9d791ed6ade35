"""R-GCN entity classification on AIFB: DUST's training (`dust model train`'s path) beside a plain PyTorch
Geometric script on the same graph, in the same run.

    .venv/bin/python bench/rgcn.py                  # 10 seeds × 50 epochs each, both sides interleaved
    .venv/bin/python bench/rgcn.py --runs 3         # quicker

DUST: ``dust import rdf`` into a fresh SQLite file, then ``dust.models.classification`` — the graph from the
master tensor (literals as nodes), two FastRGCNConv layers. Plain: the graph read from the same .nt.gz by
rdflib as PyG's ``Entities`` dataset builds it (every subject and object a node, each predicate and its inverse
a relation), the same two layers and settings, written out here without DUST. The runs alternate (DUST seed k,
plain seed k, …) so that other work on the machine weighs on both alike. Seconds per epoch are the training
loop's (forward, loss, backward, step), wall clock; DUST's reading of the graph from the database is shown on
its own. Target: DUST's seconds per epoch ≤ 1.2× the plain script's. Prints a table; JSON in bench/out/.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

AIFB = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rgcn" / "aifb"
OUT = Path(__file__).resolve().parent / "out"


def plain_graph(path: Path) -> tuple[Any, Any, dict[str, int]]:
    """(edge_index, edge_type, node of each IRI) as PyG's Entities.process makes them, from the file alone."""
    import rdflib
    import torch

    g = rdflib.Graph()
    with gzip.open(path, "rb") as file:
        g.parse(file=file, format="nt")
    predicates = sorted(set(g.predicates()))
    nodes = {str(n): i for i, n in enumerate(sorted({str(n) for n in set(g.subjects()) | set(g.objects())}))}
    rel = {p: i for i, p in enumerate(predicates)}
    edges = []
    for s, p, o in g:
        edges.append((nodes[str(s)], nodes[str(o)], 2 * rel[p]))
        edges.append((nodes[str(o)], nodes[str(s)], 2 * rel[p] + 1))
    edge = torch.tensor(edges).t()
    return edge[:2].contiguous(), edge[2].contiguous(), nodes


def plain_run(
    edge_index: Any, edge_type: Any, num_nodes: int, train: Any, test: Any, seed: int, epochs: int, l2: float
) -> dict[str, float]:
    import torch
    import torch.nn.functional as F
    from torch_geometric.nn import FastRGCNConv

    relations = int(edge_type.max()) + 1
    classes = int(max(train[1].max(), test[1].max())) + 1

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = FastRGCNConv(num_nodes, 16, relations)
            self.conv2 = FastRGCNConv(16, classes, relations)

        def forward(self) -> Any:
            return self.conv2(F.relu(self.conv1(None, edge_index, edge_type)), edge_index, edge_type)

    torch.manual_seed(seed)
    net = Net()
    optimizer = torch.optim.Adam(
        [{"params": net.conv1.parameters(), "weight_decay": l2}, {"params": net.conv2.parameters()}], lr=0.01
    )
    started = time.perf_counter()
    for _ in range(epochs):
        net.train()
        optimizer.zero_grad()
        F.cross_entropy(net()[train[0]], train[1]).backward()
        optimizer.step()
    seconds = (time.perf_counter() - started) / epochs
    net.eval()
    with torch.no_grad():
        predicted = net().argmax(-1)
    accuracy = float((predicted[test[0]] == test[1]).float().mean())
    return {"seconds_per_epoch": seconds, "test_accuracy": accuracy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--data", type=Path, default=AIFB)
    parser.add_argument("--l2", type=float, default=None, help="L2 on the first layer (default: DUST's)")
    args = parser.parse_args()
    import torch

    import dust
    from dust.importers import rdf
    from dust.models import classification, rgcn

    nt = args.data / "aifb_stripped.nt.gz"
    train_labels = classification.read_labels(args.data / "trainingSet.tsv", "person", "label_affiliation")
    test_labels = classification.read_labels(args.data / "testSet.tsv", "person", "label_affiliation")
    with tempfile.TemporaryDirectory() as tmp, dust.open(f"sqlite:///{tmp}/aifb.db") as db:
        started = time.perf_counter()
        with db.session() as session:
            rdf.import_file(session, nt)
        imported = time.perf_counter() - started
        started = time.perf_counter()
        with db.session() as session:
            problem = classification.prepare(session, train_labels, test_labels)
        prepared = time.perf_counter() - started

    started = time.perf_counter()
    edge_index, edge_type, nodes = plain_graph(nt)
    plain_read = time.perf_counter() - started
    classes = {label: i for i, label in enumerate(problem.classes)}

    def split(rows: list[tuple[str, str]]) -> tuple[Any, Any]:
        return torch.tensor([nodes[n] for n, _ in rows]), torch.tensor([classes[label] for _, label in rows])

    train, test = split(train_labels.rows), split(test_labels.rows)
    settings = rgcn.Settings(epochs=args.epochs)
    if args.l2 is not None:
        settings = rgcn.Settings(epochs=args.epochs, l2=args.l2)
    ours: list[Any] = []
    theirs: list[dict[str, float]] = []
    for seed in range(args.runs):
        ours.append(classification.run(problem, settings, seed))
        theirs.append(plain_run(edge_index, edge_type, len(nodes), train, test, seed, args.epochs, settings.l2))
        mine, plain = ours[-1], theirs[-1]
        print(
            f"seed {seed}: DUST {mine.test_accuracy:.4f} {mine.seconds_per_epoch:.3f} s/epoch; "
            f"plain {plain['test_accuracy']:.4f} {plain['seconds_per_epoch']:.3f} s/epoch",
            flush=True,
        )

    def stats(values: list[float]) -> tuple[float, float]:
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    dust_acc, plain_acc = stats([r.test_accuracy or 0.0 for r in ours]), stats([r["test_accuracy"] for r in theirs])
    dust_s, plain_s = stats([r.seconds_per_epoch for r in ours]), stats([r["seconds_per_epoch"] for r in theirs])
    result = {
        "runs": args.runs,
        "epochs": args.epochs,
        "graph": {
            "dust_nodes": problem.graph.num_nodes,
            "dust_edges": problem.graph.num_edges,
            "plain_nodes": len(nodes),
            "plain_edges": int(edge_index.shape[1]),
        },
        "dust": {"test_accuracy": dust_acc, "seconds_per_epoch": dust_s, "import_s": imported, "graph_s": prepared},
        "plain": {"test_accuracy": plain_acc, "seconds_per_epoch": plain_s, "graph_s": plain_read},
        "overhead": dust_s[0] / plain_s[0],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
    }
    print()
    print(
        f"graph: DUST {problem.graph.num_nodes} nodes, {problem.graph.num_edges} edges; "
        f"plain {len(nodes)} nodes, {edge_index.shape[1]} edges"
    )
    print(f"{'':8}{'test accuracy':>22}{'s / epoch':>20}{'graph read, s':>16}")
    for name, acc, sec, read in (("DUST", dust_acc, dust_s, prepared), ("plain", plain_acc, plain_s, plain_read)):
        print(f"{name:8}{acc[0]:>14.4f} ± {acc[1]:.4f}{sec[0]:>12.4f} ± {sec[1]:.4f}{read:>16.2f}")
    print(
        f"DUST / plain seconds per epoch: {result['overhead']:.3f} (target ≤ 1.2); import {imported:.1f} s; "
        f"load average {result['load_average'][0]:.1f}"
    )
    OUT.mkdir(exist_ok=True)
    (OUT / "rgcn.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
