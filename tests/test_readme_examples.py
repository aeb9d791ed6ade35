"""Every code block in README.md and docs/*.md runs as written, as a person copying it from a fresh clone would.

What happens to a block is said by its fence and by a marker on the line before it:
- ```python: saved as a script and run alone with this interpreter (.venv/bin/python) in a fresh temporary directory;
- ```sh: run with bash, the blocks of one page in order in one shell (as a reader follows the page), in a fresh
  temporary directory with `.venv` linked in as in the clone, against `dust demo healthcare --serve` on a new SQLite
  file. Two lines are what a reader takes from `make run`'s output and are the only ones changed: a line
  `API=http://127.0.0.1:8000/api/v1` gets the served port instead of 8000, and a line `PASSWORD=…` gets the
  password the demo printed as its value (what follows it on the line, a comment, stays);
- ```text and ```json: output and shapes, never run;
- `<!-- not run: why -->` on the line before a python or sh fence: not run (`make run` serves until stopped).
A fence of any other language, or of none, fails the test: a command cannot hide in an unmarked block.
A block fails when it exits non-zero (bash runs with -e and pipefail) or prints a problem answer (4xx or 5xx).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.reliability.server import free_port

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN = {"python", "sh"}
SHOWN = {"text", "json"}
NOT_RUN = re.compile(r"<!-- not run: .+ -->")
FENCE = re.compile(r"^(\s*)```(.*)$")
API_LINE = re.compile(r"^API=http://127\.0\.0\.1:8000/api/v1$", re.MULTILINE)
PASSWORD_LINE = re.compile(r"^PASSWORD=\S*", re.MULTILINE)
PROBLEM = re.compile(r'"status":\s*[45]\d\d\b')
SECONDS = 120


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    language: str
    marked: bool  # `<!-- not run: … -->` on the line before
    code: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a Markdown page (indented ones too, with their indent removed)."""
    found, lines = [], page.read_text().splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, language = opening.group(1), opening.group(2).strip()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        assert end is not None, f"{page.relative_to(ROOT)}:{i + 1}: a fence that is never closed"
        code = "\n".join(line.removeprefix(indent) for line in lines[i + 1 : end]) + "\n"
        marked = i > 0 and bool(NOT_RUN.fullmatch(lines[i - 1].strip()))
        found.append(Block(page, i + 1, language, marked, code))
        i = end + 1
    return found


ALL = [block for page in PAGES for block in blocks(page)]
TO_RUN = [block for block in ALL if block.language in RUN and not block.marked]


def test_every_block_is_run_or_marked() -> None:
    unknown = [f"{b.where} ```{b.language}" for b in ALL if b.language not in RUN | SHOWN]
    assert not unknown, f"fences must be python or sh (run), or text or json (shown): {unknown}"
    stray = [b.where for b in ALL if b.marked and b.language not in RUN]
    assert not stray, f"`not run` marks only python and sh blocks: {stray}"
    assert {b.language for b in TO_RUN} == RUN, "the README's examples are found and run"


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment of a reader's shell: none of the test run's DUST_ settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DUST_")}
    return {**env, "COLUMNS": "200", **extra}


def _problems(output: str) -> list[str]:
    return [line for line in output.splitlines() if PROBLEM.search(line)]


@pytest.mark.parametrize("block", [b for b in TO_RUN if b.language == "python"], ids=lambda b: b.where)
def test_python_block_runs(block: Block, tmp_path: Path) -> None:
    (tmp_path / "example.py").write_text(block.code)
    done = subprocess.run(
        [sys.executable, "example.py"],
        cwd=tmp_path,
        env=_clean_env(TMPDIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=SECONDS,
        check=False,
    )
    assert done.returncode == 0, f"{block.where} failed:\n{done.stdout}\n{done.stderr}"


@dataclass(frozen=True)
class Demo:
    api: str
    password: str


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """`dust demo healthcare --serve` on a free port and a new SQLite file, as `make run` starts it."""
    home = tmp_path_factory.mktemp("demo")
    log = (home / "demo.log").open("w+")
    command = [str(Path(sys.executable).parent / "dust"), "demo", "healthcare", "--serve", "--port", str(free_port())]
    env = _clean_env(DUST_DATABASE_URL=f"sqlite:///{home / 'dust.db'}", DUST_LOG_LEVEL="WARNING")
    server = subprocess.Popen(command, cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield _started(server, home / "demo.log")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
        log.close()


def _started(server: subprocess.Popen[bytes], log: Path) -> Demo:
    """The demo's API URL and admin password, read from what it printed, once it answers."""
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline and server.poll() is None:
        said = log.read_text()
        password = re.search(r"with password (\S+)", said)
        serving = re.search(r"DUST is serving at (http://\S+?)/ ", said)
        if password and serving:
            try:
                if httpx.get(f"{serving[1]}/healthz", timeout=1).status_code == 200:
                    return Demo(f"{serving[1]}/api/v1", password[1])
            except httpx.TransportError:
                pass
        time.sleep(0.1)
    raise RuntimeError(f"the demo did not start:\n{log.read_text()[-4000:]}")


def _as_served(code: str, demo: Demo) -> str:
    """The page's code with the served port and the printed password pasted in; nothing else changes."""
    code = API_LINE.sub(f"API={demo.api}", code)
    return PASSWORD_LINE.sub(f"PASSWORD={demo.password}", code)


SH_PAGES = sorted({b.page for b in TO_RUN if b.language == "sh"})


@pytest.mark.parametrize("page", SH_PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_sh_blocks_run_against_the_demo(page: Path, demo: Demo, tmp_path: Path) -> None:
    script = "".join(_as_served(b.code, demo) for b in TO_RUN if b.page == page and b.language == "sh")
    (tmp_path / ".venv").symlink_to(sys.prefix)
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=SECONDS,
        check=False,
    )
    where = page.relative_to(ROOT)
    assert done.returncode == 0, f"{where}: the sh blocks failed:\n{done.stdout}\n{done.stderr}"
    assert not _problems(done.stdout), f"{where}: a request was refused:\n{_problems(done.stdout)}"
