"""The package's public names are exactly those in ``dust.__all__``, each is documented, and importing the package
costs nothing until one is used."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import dust

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_all_names_resolve_and_nothing_else_is_public() -> None:
    for name in dust.__all__:
        assert getattr(dust, name) is not None
    # submodules become attributes as they are imported (by other tests too): they are not public names
    public = {n for n, v in vars(dust).items() if not n.startswith("_") and not isinstance(v, ModuleType)}
    public -= {"annotations", "TYPE_CHECKING", "Any"}  # the module's own imports
    assert public == set(dust.__all__) - {"__version__"}


def test_public_names_appear_in_the_readme() -> None:
    # whole words: a short name must not pass as part of a longer one ("Dust" inside "DustError")
    missing = [n for n in dust.__all__ if n != "__version__" and not re.search(rf"\b{re.escape(n)}\b", README)]
    assert not missing, f"public names the README does not mention: {missing}"


def test_names_are_the_objects_of_their_modules() -> None:
    from dust.core.errors import NotFound
    from dust.embedded import open as open_

    assert dust.open is open_ and dust.NotFound is NotFound
    assert set(dust.__all__) == {*dust._PUBLIC, "__version__"}, "a public name without a module to load it from"
    assert set(dir(dust)) >= set(dust.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = dust.nope  # type: ignore[attr-defined]


def test_importing_it_loads_nothing_heavy() -> None:
    """A CLI command imports ``dust`` first: the embedded API (and with it nearly all of DUST) only on use."""
    code = "import sys, dust.core.config; print(sorted(m for m in ('dust.embedded', 'sqlalchemy') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
