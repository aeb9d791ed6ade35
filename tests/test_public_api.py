"""The package's public names are exactly those in ``dust.__all__``, and each is documented."""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import dust

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_all_names_resolve_and_nothing_else_is_public() -> None:
    for name in dust.__all__:
        assert getattr(dust, name) is not None
    # submodules become attributes as they are imported (by other tests too): they are not public names
    public = {n for n, v in vars(dust).items() if not n.startswith("_") and not isinstance(v, ModuleType)}
    public -= {"annotations"}  # from __future__
    assert public == set(dust.__all__) - {"__version__"}


def test_public_names_appear_in_the_readme() -> None:
    # whole words: a short name must not pass as part of a longer one ("Dust" inside "DustError")
    missing = [n for n in dust.__all__ if n != "__version__" and not re.search(rf"\b{re.escape(n)}\b", README)]
    assert not missing, f"public names the README does not mention: {missing}"
