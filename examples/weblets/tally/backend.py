"""The tally weblet's backend: marks by label, shown as a projection (kind ``projection-only``).

There is no page: the host asks ``projection()`` and draws what it returns
(docs/weblets.md, "Projection-only weblets") from text nodes only, so a label
such as ``<b>hi</b>`` shows as those characters. The marks live in the
worker's memory. ``invoke(name, args)`` runs the manifest's commands for an
agent: ``mark`` (writes) and ``totals`` (read-only).
"""

import time
from typing import Any

from ocapd.sdk import Far

#: Labels kept, and the recent marks shown.
MAX_LABELS = 50
RECENT = 5


def make(powers: Any, context: Any) -> Any:
    totals: dict[str, int] = {}
    recent: list[tuple[str, str]] = []

    def mark(label: Any) -> int:
        """Add a mark to ``label``; return its total."""
        if not isinstance(label, str) or not 0 < len(label) <= 80:
            raise ValueError("mark: a label is 1 to 80 characters")
        if label not in totals and len(totals) >= MAX_LABELS:
            raise ValueError(f"mark: at most {MAX_LABELS} labels")
        totals[label] = totals.get(label, 0) + 1
        recent.insert(0, (time.strftime("%H:%M:%S"), label))
        del recent[RECENT:]
        return totals[label]

    def projection() -> dict[str, Any]:
        """What the host draws: see daemon/weblet/projection.py for the shape."""
        ranked = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
        return {
            "title": "Tally",
            "nodes": [
                {"type": "image", "src": "tally.png", "alt": "tally marks", "width": 32},
                {"type": "text", "text": f"{sum(totals.values())} marks", "style": "heading"},
                {"type": "kv", "items": [[label, n] for label, n in ranked] or [["(no marks yet)", ""]]},
                {"type": "table", "columns": ["time", "label"], "rows": [list(r) for r in recent]},
                {"type": "list", "items": [label for label, _ in ranked[:3]]},
                {"type": "text", "text": "Ask the agent to mark something, or: E(app).mark('coffee')", "style": "muted"},
            ],
        }

    def invoke(name: str, args: dict[str, Any]) -> Any:
        if name == "mark":
            return {"total": mark(args.get("label") if isinstance(args, dict) else None)}
        if name == "totals":
            return dict(totals)
        raise LookupError(f"the tally has no command {name!r}")

    return Far("Tally", mark=mark, projection=projection, invoke=invoke)
