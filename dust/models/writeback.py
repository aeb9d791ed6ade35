"""An entity classifier's predictions written back into tensors (``write_back.tensor``).

Each predicted entity's tensor of the schema (made, from the schema's default origin, if it has none) gets the
class probabilities at the time step holding the prediction's moment (its ``as_of``, default now): one class's
into one cell (``class`` and ``labels`` naming a label of every axis), or every class's into the cell whose
label on ``axis`` is the class (``labels`` naming the other axes). Predicting again at a later moment adds a
step: a tensor of a model's scores over time, read, aggregated and watched by trigger rules like any other.

The writes are ordinary ones (``tensors.create_many`` and ``tensors.write_values``): audited, bound by the
caller's access, checked against the schema's ranges, and a value replaced keeps its history. The target is
checked before anything is predicted, so a bad one costs no write. A model does not write into a schema it reads
features from: its predictions would become its next inputs.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from dust.core.errors import InvalidInput, NotFound, did_you_mean
from dust.engine import access, schemas, tensors
from dust.engine.tensors import TensorCreate
from dust.models.schemas import Prediction, TensorWriteBack
from dust.storage.repositories import tensors as tensor_repo


@dataclass(frozen=True)
class Target:
    """Where the probabilities go: the schema, and per cell the class whose probability it takes and its
    labels."""

    schema: str
    cells: list[tuple[str, dict[str, str]]]  # (class, {axis: label})


def target(session: Session, spec: TensorWriteBack, classes: Sequence[str], reads: Collection[str]) -> Target:
    """The cells ``spec`` names for a model of ``classes`` that reads features from the schemas ``reads``; 422
    for an unknown schema, axis, label or class, an axis left without a label, or a schema the model reads."""
    name = spec.schema_name
    if name in reads:
        raise InvalidInput(
            f"write_back.tensor: the model reads its features from schema '{name}': its predictions would become "
            "its next inputs; write them into another schema"
        )
    try:
        sdef = schemas.get_def(session, name)
    except NotFound:
        known = [s.name for s in schemas.list_(session)]
        raise InvalidInput(
            f"write_back.tensor: there is no tensor schema '{name}'{did_you_mean(name, known)}"
        ) from None
    for named in spec.labels:
        sdef.axis(named)  # 422 naming an unknown axis
    if spec.axis is not None:
        axis = sdef.axis(spec.axis)
        if spec.axis in spec.labels:
            raise InvalidInput(f"write_back.tensor: axis '{spec.axis}' holds the classes; give it no label")
        absent = [c for c in classes if c not in axis.labels]
        if absent:
            raise InvalidInput(
                f"write_back.tensor: axis '{spec.axis}' of schema '{name}' has no label for the class "
                f"{absent[0]!r} (the model's classes: {', '.join(classes)})"
            )
        cells = [(c, {**spec.labels, spec.axis: c}) for c in classes]
    else:
        assert spec.class_ is not None  # one of the two, by the schema
        if spec.class_ not in classes:
            raise InvalidInput(
                f"write_back.tensor.class {spec.class_!r} is none of the model's classes: {', '.join(classes)}"
            )
        cells = [(spec.class_, dict(spec.labels))]
    for _, labels in cells:
        left = [a.name for a in sdef.axes if a.name not in labels]
        if left:
            raise InvalidInput(f"write_back.tensor.labels must name a label of axis '{left[0]}' of schema '{name}'")
        for axis_name, label in labels.items():
            sdef.label_index(sdef.axis(axis_name), label)  # 422 naming an unknown label
    return Target(sdef.name, cells)


def write(session: Session, where: Target, predictions: Sequence[Prediction], moment: datetime) -> int:
    """Each prediction's probabilities into its entity's tensor at the step holding ``moment``; how many
    entities were written."""
    ids = [p.entity_id for p in predictions]
    visible = access.visible_ids(session)
    tensor_of: dict[uuid.UUID, uuid.UUID] = {
        row.entity_id: row.id for row in tensor_repo.of_entities(session, where.schema, ids, within=visible)
    }
    new = [e for e in dict.fromkeys(ids) if e not in tensor_of]
    made = tensors.create_many(session, [TensorCreate(entity_id=e, schema_name=where.schema) for e in new])
    tensor_of.update((t.entity_id, t.id) for t in made)
    for prediction in predictions:
        values = [{"time": moment, **labels, "value": prediction.probabilities[cls]} for cls, labels in where.cells]
        tensors.write_values(session, tensor_of[prediction.entity_id], values)
    return len(predictions)
