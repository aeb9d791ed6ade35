"""A trained entity classifier as bytes, and back: its weights, its settings, its classes and the graph it fit,
and, for a model with node features, how to build them again (``features.Encoder``: what it reads, the
training statistics). The features themselves are not stored: a prediction reads them as of its own date.

The graph goes with the weights because the model is transductive: the first layer learnt one vector per node,
so it predicts the nodes it was trained with, over the edges it was trained on (the graph as of its data
version). Stored with ``torch.save`` and read with ``torch.load(weights_only=True)``: tensors, numbers, text,
lists and dicts only, never pickled objects, so a stored artefact cannot run code when it is read.
"""

from __future__ import annotations

import io
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from dust.core.errors import InvalidInput
from dust.models import rgcn
from dust.models.features import Encoder
from dust.models.graph import RelationalGraph

FORMAT = 1


@dataclass
class Loaded:
    net: Any  # the torch Module, in eval mode
    graph: RelationalGraph  # featureless: ``encoder`` builds the features of a prediction's date
    classes: list[str]
    encoder: Encoder | None = None


def dump(
    net: Any, graph: RelationalGraph, classes: list[str], settings: rgcn.Settings, encoder: Encoder | None = None
) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(
        {
            "format": FORMAT,
            "state": net.state_dict(),
            "settings": asdict(settings),
            "classes": list(classes),
            "entity_ids": [str(entity) for entity in graph.entity_ids],
            "literals": list(graph.literals),
            "relation_types": list(graph.relation_types),
            "edges": torch.tensor([graph.sources, graph.targets, graph.types], dtype=torch.int64).reshape(3, -1),
            "weights": torch.tensor(graph.weights, dtype=torch.float64),
            "features": encoder.as_dict() if encoder is not None else None,
        },
        buffer,
    )
    return buffer.getvalue()


def load(data: bytes) -> Loaded:
    import torch

    stored = torch.load(io.BytesIO(data), weights_only=True)
    if stored.get("format") != FORMAT:
        raise InvalidInput(f"the model's artefact is of format {stored.get('format')}; this DUST reads {FORMAT}")
    sources, targets, types = stored["edges"].tolist()
    graph = RelationalGraph(
        entity_ids=[uuid.UUID(entity) for entity in stored["entity_ids"]],
        literals=stored["literals"],
        relation_types=stored["relation_types"],
        sources=sources,
        targets=targets,
        types=types,
        weights=stored["weights"].tolist(),
    )
    classes = stored["classes"]
    encoder = Encoder.from_dict(stored["features"]) if stored.get("features") else None
    columns = len(encoder.columns) if encoder is not None else 0
    net = rgcn.model(graph, len(classes), rgcn.Settings(**stored["settings"]), columns)
    net.load_state_dict(stored["state"])
    net.eval()
    return Loaded(net, graph, classes, encoder)
