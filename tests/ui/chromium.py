"""Debian's chromium as the browser tests and bench/ui.py drive it (Playwright; never a downloaded browser)."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Browser, Playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def launch(playwright: Playwright) -> Browser:
    assert Path(CHROMIUM).exists(), "chromium is missing: `make test` installs it (apt-get install -y chromium)"
    return playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
