"""What the browser on this machine enforces for weblets that CSP cannot: ``ocapd doctor``'s "browser" section.

WebRTC is the case: ``connect-src`` does not govern it and Chromium does not
implement CSP's ``webrtc`` directive, so the gateway switches it off with a
``Connection-Allowlist`` header (``csp.connection_allowlist``) that only
Chromium 152+ enforces. The report names the Chromium found here, whether it
is new enough, and what stays open in other browsers. It reads the version
(``--version``) and starts no browser.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any

from .csp import CONNECTION_ALLOWLIST_SINCE_CHROMIUM

__all__ = ["browser_report", "find_chromium", "WEBRTC_SUMMARY"]

#: Where a Chromium may be, in the order they are tried (OCAPD_CHROMIUM first).
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

WEBRTC_SUMMARY = (
    "not governed by CSP (connect-src does not cover it; Chromium ignores CSP's webrtc directive); "
    f"mitigation: every weblet that does not declare \"webrtc\": true is served with "
    f"Connection-Allowlist webrtc=block, which Chromium {CONNECTION_ALLOWLIST_SINCE_CHROMIUM}+ enforces "
    "(no ICE candidate, no datagram, child frames included); Firefox, Safari and older Chromium ignore it, "
    "so there a weblet's page can still send UDP (STUN/TURN) to any address; known gap: in Chromium 156 a refused "
    "attempt from a framed weblet's about:blank child ends the Chat tab's renderer (nothing is sent; reload the tab)"
)


def find_chromium() -> str | None:
    configured = os.environ.get("OCAPD_CHROMIUM")
    if configured:
        return configured
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _version(executable: str) -> tuple[str, int] | None:
    try:
        out = subprocess.run(
            [executable, "--version"], capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"((?:Chromium|Google Chrome)[^\n]*?\b(\d+)\.\d+\.\d+\.\d+)", out)
    return (match.group(1).strip(), int(match.group(2))) if match else None


def browser_report(executable: str | None = None) -> dict[str, Any]:
    """``{"webrtc": summary, "chromium": path or None, "version": text or None, "webrtc_blocked_here": bool or None}``.

    ``webrtc_blocked_here`` is True when the Chromium found is new enough to
    enforce the block, False when it is older, None when none was found (or
    its version could not be read): then only the summary applies.
    """
    path = executable or find_chromium()
    found = _version(path) if path else None
    blocked = None if found is None else found[1] >= CONNECTION_ALLOWLIST_SINCE_CHROMIUM
    return {
        "webrtc": WEBRTC_SUMMARY,
        "chromium": path,
        "version": found[0] if found else None,
        "webrtc_blocked_here": blocked,
    }
