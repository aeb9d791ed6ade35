"""The client's face is static: dust/client/methods.py spells out every method of ``dust.Dust`` for ``Client`` and
``AsyncClient`` (as ``python -m dust.client.surface`` writes it), and mypy checks calls to them."""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
from pathlib import Path

import pytest
from mypy import api as mypy_api

import dust
from dust.client import methods, surface
from dust.client.client import NOT_OVER_HTTP, PLANS
from dust.client.plans import OPERATIONS

ROOT = Path(__file__).resolve().parents[2]
REGENERATE = "run `.venv/bin/python -m dust.client.surface` and commit dust/client/methods.py"


def _defined(tree: ast.Module, cls: str, kind: type[ast.FunctionDef | ast.AsyncFunctionDef]) -> list[str]:
    """The public methods class ``cls`` of the module defines as ``kind`` (def or async def), from its source."""
    (found,) = (node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == cls)
    return [node.name for node in found.body if isinstance(node, kind) and not node.name.startswith("_")]


def test_every_method_of_dust_is_written_out_for_both_clients() -> None:
    """Read from the file, not the classes: what an editor or mypy sees without running anything."""
    public = [n for n, v in vars(dust.Dust).items() if not n.startswith("_") and callable(v)]
    wanted = [n for n in public if n not in NOT_OVER_HTTP and n != "close"]  # the clients' own close()
    assert wanted == [n for n in public if n in PLANS], "each method of Dust needs a plan (dust.client.client.PLANS)"
    tree = ast.parse(Path(methods.__file__).read_text())
    assert _defined(tree, "Methods", ast.FunctionDef) == wanted, REGENERATE
    assert _defined(tree, "AsyncMethods", ast.AsyncFunctionDef) == wanted, REGENERATE


def test_each_plan_written_out_takes_the_parameters_of_its_method_in_order() -> None:
    """The written methods hand their arguments on by position: a plan of its own (not one REST operation of the
    table, which binds them by the method's own signature) must name them as the method does, in its order."""
    for name in PLANS.keys() - OPERATIONS.keys():
        plan = list(inspect.signature(PLANS[name]).parameters)[1:]  # not the client
        method = list(inspect.signature(getattr(dust.Dust, name)).parameters)[1:]  # not self
        assert plan == method, f"{name}: the plan takes {plan}, Dust.{name} {method}"


def test_the_file_is_what_the_generator_makes_of_dust_now() -> None:
    """Signatures and docstrings as Dust has them today: a change to either there fails here until regenerated."""
    made = surface.source(n for n in vars(dust.Dust) if n in PLANS)
    assert Path(methods.__file__).read_text() == made, REGENERATE


SNIPPET = """
import uuid

import numpy as np

import dust
from dust.engine.entities import EntityList
from dust.engine.tensors import TensorPublic, WriteResult
from dust.engine.views import TensorView


def sync(tensor_id: uuid.UUID) -> None:
    db = dust.connect("http://127.0.0.1:8000", api_key="dust_x")
    meta: TensorPublic = db.get_tensor(tensor_id)
    page: EntityList = db.entities(kind="patient", limit=10, ward="A")
    view: TensorView = db.read_tensor(meta.id, latest=True)
    written: WriteResult = db.write_array(tensor_id, np.zeros((2, 3)), start=1)
    names: list[str] = [e.name for e in page.items]
    db.get_tensorr(tensor_id)  # E1
    db.get_tensor()  # E2
    count: int = db.get_entity(tensor_id)  # E3


async def concurrently(tensor_id: uuid.UUID) -> None:
    db = dust.connect_async("http://127.0.0.1:8000", token="t")
    meta: TensorPublic = await db.get_tensor(tensor_id)
    not_awaited: TensorPublic = db.get_tensor(tensor_id)  # E4
    await db.close()
"""


def test_mypy_checks_calls_to_a_connected_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Right calls type-check with the types the embedded API returns; a misspelt method, a missing argument, a
    wrong result type and a coroutine not awaited are each an error on their line. mypy runs with the project's
    settings and cache (`make lint` fills it), so only the snippet is checked anew."""
    monkeypatch.chdir(ROOT)  # where mypy finds dust (an editable install's import hook is no path it follows)
    code = textwrap.dedent(SNIPPET)
    out, err, _ = mypy_api.run(["--config-file", "pyproject.toml", "-c", code])
    errors = {int(m[1]) for m in re.finditer(r"^<string>:(\d+): error", out, re.MULTILINE)}
    marked = {i for i, line in enumerate(code.splitlines(), 1) if "# E" in line}
    assert errors == marked, f"{out}\n{err}"
