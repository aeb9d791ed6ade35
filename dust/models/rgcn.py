"""Entity classification with a relational graph convolutional network (Schlichtkrull et al. 2018).

Two R-GCN layers (PyTorch Geometric's FastRGCNConv) over the graph of ``dust.models.graph``: featureless nodes
(the first layer's input is one-hot, so it learns a vector per node and relation), mean aggregation per relation
(the paper's 1/c_{i,r}), a root weight for the self-loop, ReLU between, softmax cross-entropy on the labelled
nodes, full-batch Adam. FastRGCNConv is RGCNConv's computation edge by edge: the same model (and the same
parameters), some 30 times faster here, because RGCNConv's loop over relations makes a gradient the size of all
the first layer's weights for each relation (90 on AIFB: 4 GB of writes an epoch). Weight decomposition: none
(full weights, the paper's AIFB setting), ``bases`` B (basis decomposition) or ``blocks`` (block-diagonal).
The defaults are the paper's AIFB settings: hidden 16, 50 epochs, Adam lr 0.01, no L2 (``l2`` puts one on the
first layer, as the paper for its other graphs and PyG's example: 5e-4; on AIFB that scored 94.4 against 96.4).

Node features (``graph.features``, ``dust.models.features``): the first layer's input is then the one-hot
vector and the features side by side. A layer is linear in its input, so that is the featureless layer plus
one more FastRGCNConv over the features (no bias of its own): h = ReLU(conv1(one-hot) + features1(x)). With
``embeddings`` off the one-hot part goes: the first layer sees the features alone, and a node's own vector
can no longer learn its training label by heart. A featureless model is built and drawn exactly as before.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from dust.core.errors import InvalidInput
from dust.models.graph import RelationalGraph

FIRST_LAYER = ("conv1.", "features1.")  # the parameters ``l2`` applies to


@dataclass(frozen=True)
class Settings:
    hidden: int = 16
    epochs: int = 50
    lr: float = 0.01
    l2: float = 0.0  # on the first layer's weights only: the paper's AIFB setting (5e-4 for its other graphs)
    bases: int | None = None  # basis decomposition with this many bases; None: full weights
    blocks: int | None = None  # block-diagonal decomposition with this many blocks (hidden must divide by it)
    dropout: float = 0.0  # the paper uses none for entity classification
    embeddings: bool = True  # the one-hot input (a learnt vector per node); off only beside features

    def check(self) -> None:
        if self.hidden < 1 or self.epochs < 1 or not (self.lr > 0 and math.isfinite(self.lr)):
            raise InvalidInput("hidden and epochs must be at least 1, lr a positive number")
        if not (self.l2 >= 0 and math.isfinite(self.l2)) or not 0 <= self.dropout < 1:
            raise InvalidInput("l2 must be a number of 0 or more, dropout from 0 to under 1")
        if self.bases is not None and self.blocks is not None:
            raise InvalidInput("give bases or blocks, not both")
        if (self.bases is not None and self.bases < 1) or (self.blocks is not None and self.blocks < 1):
            raise InvalidInput("bases and blocks must be at least 1")


@dataclass(frozen=True)
class Run:
    seed: int
    train_accuracy: float
    test_accuracy: float | None
    seconds_per_epoch: float


def model(graph: RelationalGraph, classes: int, settings: Settings, features: int = 0) -> Any:
    """The untrained two-layer R-GCN for ``graph`` with ``features`` input columns (a torch Module); its
    forward takes (edge_index, edge_type, x): x the [nodes, features] input, None without features."""
    import torch
    import torch.nn.functional as F
    from torch_geometric.nn import FastRGCNConv as RGCNConv

    decomposition = {"num_bases": settings.bases, "num_blocks": settings.blocks}
    relations = max(graph.num_relations, 1)

    class RGCN(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # The first layer cannot be block-diagonal: its one-hot input has no blocks (PyG refuses x=None).
            first = {"num_bases": settings.bases} if settings.blocks else decomposition
            # in this order: a featureless model draws its initial weights exactly as it always did
            if settings.embeddings:
                self.conv1 = RGCNConv(graph.num_nodes, settings.hidden, relations, **first)
            if features:
                self.features1 = RGCNConv(features, settings.hidden, relations, bias=False, **first)
            self.conv2 = RGCNConv(settings.hidden, classes, relations, **decomposition)

        def forward(
            self, edge_index: torch.Tensor, edge_type: torch.Tensor, x: torch.Tensor | None = None
        ) -> torch.Tensor:
            if not settings.embeddings:
                h = self.features1(x, edge_index, edge_type)
            else:
                h = self.conv1(None, edge_index, edge_type)
                if features:
                    h = h + self.features1(x, edge_index, edge_type)
            x = F.relu(h)
            x = F.dropout(x, p=settings.dropout, training=self.training)
            out: torch.Tensor = self.conv2(x, edge_index, edge_type)
            return out

    return RGCN()


class EpochClock:
    """A training loop's seconds per epoch, less the time its progress reports (``on_epoch``) take: those are
    not the model's."""

    def __init__(self, on_epoch: Callable[[int], None] | None) -> None:
        self.on_epoch = on_epoch
        self.started = time.perf_counter()
        self.reporting = 0.0

    def done(self, epoch: int) -> None:
        if self.on_epoch is not None:
            said = time.perf_counter()
            self.on_epoch(epoch)
            self.reporting += time.perf_counter() - said

    def per_epoch(self, epochs: int) -> float:
        return (time.perf_counter() - self.started - self.reporting) / epochs


def train(
    graph: RelationalGraph,
    train_nodes: Sequence[int],
    train_labels: Sequence[int],
    classes: int,
    settings: Settings,
    seed: int,
    test_nodes: Sequence[int] = (),
    test_labels: Sequence[int] = (),
) -> Run:
    """Train one model from ``seed`` (the same seed, the same accuracies) and measure it."""
    net, seconds = fit(graph, train_nodes, train_labels, classes, settings, seed)
    predicted = probabilities(net, graph).argmax(dim=-1)
    return Run(
        seed=seed,
        train_accuracy=_accuracy(predicted, train_nodes, train_labels),
        test_accuracy=_accuracy(predicted, test_nodes, test_labels) if test_nodes else None,
        seconds_per_epoch=seconds,
    )


def fit(
    graph: RelationalGraph,
    train_nodes: Sequence[int],
    train_labels: Sequence[int],
    classes: int,
    settings: Settings,
    seed: int,
    on_epoch: Callable[[int], None] | None = None,
) -> tuple[Any, float]:
    """A model trained from ``seed`` (the same seed, the same model) and its seconds per epoch; ``on_epoch(k)``
    is called after epoch k (1..epochs), to report progress."""
    import torch
    import torch.nn.functional as F

    check(settings, classes, graph.num_features)
    torch.manual_seed(seed)
    edge_index, edge_type, _ = graph.tensors()
    x = graph.x()
    net = model(graph, classes, settings, graph.num_features)
    first = [p for n, p in net.named_parameters() if n.startswith(FIRST_LAYER)]
    rest = [p for n, p in net.named_parameters() if not n.startswith(FIRST_LAYER)]
    optimizer = torch.optim.Adam(
        [{"params": first, "weight_decay": settings.l2}, {"params": rest, "weight_decay": 0.0}], lr=settings.lr
    )
    nodes, labels = torch.tensor(list(train_nodes)), torch.tensor(list(train_labels))
    clock = EpochClock(on_epoch)
    for epoch in range(1, settings.epochs + 1):
        net.train()
        optimizer.zero_grad()
        loss = F.cross_entropy(net(edge_index, edge_type, x)[nodes], labels)
        loss.backward()
        optimizer.step()
        clock.done(epoch)
    seconds = clock.per_epoch(settings.epochs)
    net.eval()
    return net, seconds


def check(settings: Settings, classes: int, features: int = 0) -> None:
    """InvalidInput for settings that cannot train a model of ``classes`` classes on ``features`` columns."""
    settings.check()
    if not settings.embeddings and not features:
        raise InvalidInput("a model without node embeddings needs node features: give settings.features")
    if settings.blocks and (settings.hidden % settings.blocks or classes % settings.blocks):
        raise InvalidInput(f"blocks ({settings.blocks}) must divide hidden ({settings.hidden}) and the classes")


def probabilities(net: Any, graph: RelationalGraph) -> Any:
    """Each node's class probabilities (a torch tensor [nodes, classes]): the softmax of the model's output."""
    import torch

    edge_index, edge_type, _ = graph.tensors()
    with torch.no_grad():
        return torch.softmax(net(edge_index, edge_type, graph.x()), dim=-1)


def _accuracy(predicted: Any, nodes: Sequence[int], labels: Sequence[int]) -> float:
    hits = sum(int(predicted[n]) == label for n, label in zip(nodes, labels, strict=True))
    return hits / len(nodes)


def summary(runs: Sequence[Run], settings: Settings) -> dict[str, Any]:
    """The metrics of one or more runs: each accuracy's mean, and with several runs its standard deviation."""
    out: dict[str, Any] = {"task": "entity-classification", "runs": len(runs), "settings": asdict(settings)}
    for key in ("train_accuracy", "test_accuracy", "seconds_per_epoch"):
        values = [getattr(r, key) for r in runs if getattr(r, key) is not None]
        if not values:
            continue
        out[key] = statistics.fmean(values)
        if len(runs) > 1:
            out[f"{key}_std"] = statistics.stdev(values)
    if len(runs) > 1:
        out["test_accuracies"] = [r.test_accuracy for r in runs]
    out["seeds"] = [r.seed for r in runs]
    return out
