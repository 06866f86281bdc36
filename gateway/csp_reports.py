"""CSP violation reports from weblet pages, turned into a few short notices for the page's host.

A weblet's CSP (``csp_for``) names ``report-uri /_ocapd/csp-report`` on the
instance's own origin, so when the browser blocks something in a weblet's
page — typically the inline script of a single-HTML bundle, which the weblet
CSP does not run — it posts a report there, and the Chat shows one line
about it (docs/weblets.md).

Anyone who can reach the port can post such a report too (no token is
needed: the browser sends none), so a report is treated as a hint, never as
data to pass on:

- only bodies of the report types browsers send (``application/csp-report``,
  ``application/reports+json``), at most ``MAX_REPORT_BYTES``: a weblet's own
  page cannot send that content type with a form, and a cross-origin
  ``fetch`` of it needs a preflight the gateway refuses;
- each instance has an allowance of ``REPORT_BURST`` reports, refilled at
  ``REPORT_RATE`` per second; past it the answer is 429;
- a report is reduced to a known directive (``script-src``, … without the
  ``-elem``/``-attr`` suffix) and what was blocked: ``inline``, ``eval``,
  ``wasm-eval``, the origin of a URL, or ``other``; anything else is dropped;
- each distinct (directive, blocked) pair makes one notice, and an instance
  keeps at most ``MAX_NOTICES`` of them: repeats and floods change nothing.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CSP_REPORT_PATH",
    "MAX_NOTICES",
    "MAX_REPORT_BYTES",
    "REPORT_BURST",
    "REPORT_CONTENT_TYPES",
    "REPORT_RATE",
    "NoticeBoard",
    "reduce_report",
]

#: Where a weblet page's browser posts its violation reports (on the instance's own origin).
CSP_REPORT_PATH = "/_ocapd/csp-report"
#: Chromium's report of a blocked inline script is under 1 KiB; a long policy (many
#: declared origins) is quoted in it whole. 16 KiB is ample for either.
MAX_REPORT_BYTES = 16 * 1024
#: The content types browsers post reports with (``report-uri``, ``report-to``).
REPORT_CONTENT_TYPES = frozenset({"application/csp-report", "application/reports+json"})
#: Reports one instance may post in a burst, and how fast that allowance comes back.
#: A page that trips the CSP sends one report per blocked element: a few at load.
REPORT_BURST = 20
REPORT_RATE = 1.0
#: Distinct notices one instance keeps (and so at most this many lines in the Chat).
MAX_NOTICES = 8

#: Directive families a notice may name (``script-src-elem`` is reported as ``script-src``).
DIRECTIVES = frozenset(
    {
        "default-src", "script-src", "style-src", "img-src", "font-src", "media-src", "connect-src",
        "frame-src", "child-src", "worker-src", "manifest-src", "object-src", "base-uri", "form-action",
    }
)  # fmt: skip
_KEYWORDS = frozenset({"inline", "eval", "wasm-eval"})
_URL_ORIGIN = re.compile(r"(https?|wss?)://([a-z0-9.-]{1,253}(?::[0-9]{1,5})?)(?:[/?#].*)?", re.DOTALL)


def _directive(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    name = value.strip().split(" ", 1)[0].lower()
    for suffix in ("-elem", "-attr"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    return name if name in DIRECTIVES else None


def _blocked(value: Any) -> str:
    if not isinstance(value, str):
        return "other"
    if value in _KEYWORDS:
        return value
    match = _URL_ORIGIN.fullmatch(value)
    return f"{match.group(1)}://{match.group(2)}" if match else "other"


def reduce_report(body: bytes) -> list[tuple[str, str]]:
    """The (directive, blocked) pairs a report body states; ValueError if it is not a report at all.

    Takes ``report-uri``'s ``{"csp-report": {...}}`` and ``report-to``'s list of
    ``{"type": "csp-violation", "body": {...}}``. Violations naming no known
    directive are left out.
    """
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise ValueError("not a JSON report") from None
    if isinstance(data, dict) and isinstance(data.get("csp-report"), dict):
        report = data["csp-report"]
        raw = [(report.get("effective-directive") or report.get("violated-directive"), report.get("blocked-uri"))]
    elif isinstance(data, list):
        raw = [
            (item["body"].get("effectiveDirective"), item["body"].get("blockedURL"))
            for item in data[:MAX_NOTICES]
            if isinstance(item, dict) and item.get("type") == "csp-violation" and isinstance(item.get("body"), dict)
        ]
    else:
        raise ValueError("not a CSP report")
    pairs = []
    for directive, blocked in raw:
        name = _directive(directive)
        if name is not None:
            pairs.append((name, _blocked(blocked)))
    return pairs


@dataclass
class NoticeBoard:
    """One instance's notices and report allowance."""

    notices: list[dict[str, Any]] = field(default_factory=list)
    _tokens: float = REPORT_BURST
    _refilled: float = field(default_factory=time.monotonic)

    def allow(self) -> bool:
        """Take one report from the allowance; False when it is spent."""
        now = time.monotonic()
        self._tokens = min(REPORT_BURST, self._tokens + (now - self._refilled) * REPORT_RATE)
        self._refilled = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def add(self, label: str, directive: str, blocked: str) -> dict[str, Any] | None:
        """Record a violation; the new notice, or None if it was known already or the board is full."""
        if len(self.notices) >= MAX_NOTICES:
            return None
        if any(n["directive"] == directive and n["blocked"] == blocked for n in self.notices):
            return None
        notice = {"label": label, "seq": len(self.notices) + 1, "directive": directive, "blocked": blocked}
        self.notices.append(notice)
        return notice
