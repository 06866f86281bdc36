"""Real headless Chromium for the browser tests: Debian's `chromium`, driven by Playwright.

Never a downloaded browser: Playwright launches the system executable
(`/usr/bin/chromium`, or `OCAPD_CHROMIUM`). Chromium writes into HOME, so each
module's browser gets a private HOME and XDG folders. In CI (where
`scripts/setup` installs both) a missing browser or Playwright fails the run
instead of skipping it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

if os.environ.get("CI"):
    import playwright.sync_api as sync_api
else:
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
expect = sync_api.expect

CHROMIUM = os.environ.get("OCAPD_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
#: Headless, and nothing that reaches for the network on its own (this machine has none).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Generous for a loaded machine; passing runs take a fraction of it.
EXPECT_TIMEOUT_MS = 15_000

requires_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"), reason=f"no Chromium at {CHROMIUM}"
)


@contextmanager
def launch_chromium(home: Path) -> Iterator[Any]:
    """A Chromium whose profile lives under ``home``."""
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"), "XDG_CACHE_HOME": str(home / "cache")}
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, env=env, headless=True)
        try:
            yield browser
        finally:
            browser.close()
