"""The wrapper page of an ``iframe-external`` weblet: its https entry, framed on the instance's own origin.

An ``iframe-external`` weblet's page lives elsewhere (its manifest's
``entry`` is an ``https://`` URL). The Chat page frames the instance's own
origin, ``http://<label>.localhost:PORT/``, like any weblet; there the gateway
serves this wrapper, which frames the entry with the stricter sandbox:

- ``sandbox="allow-scripts allow-forms"``: no ``allow-same-origin`` (the
  external page runs at an opaque origin: no cookies or storage of its own
  site, nothing of ocapd's), no popups, top navigation, downloads or modals;
- ``referrerpolicy="no-referrer"``, no ``allow=`` features;
- the entry URL is the frame's ``src`` in the page itself, never a query
  string (nothing about it reaches a log or another page's URL);
- the wrapper's CSP: ``default-src 'none'``, its one style by hash,
  ``frame-src`` only the entry's origin plus the manifest's ``frameSrc``,
  ``frame-ancestors`` only the Chat page, no forms, no base.

The external page gets no powers: it cannot open the instance's WebSocket
(its origin is opaque, so its ``Origin`` is not the instance's).

:func:`entry_problem` re-checks the stored entry whenever a wrapper is made;
the gateway answers 400 with its line instead of framing anything (a stored
manifest without an https entry — the schema refuses one at install, this is
the gateway's own check).
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
import unicodedata
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

__all__ = ["EXTERNAL_SANDBOX", "entry_problem", "wrapper_csp", "wrapper_page"]

#: The inner frame's sandbox: scripts and forms, never its own origin.
EXTERNAL_SANDBOX = "allow-scripts allow-forms"
#: The longest entry URL framed (the manifest schema's own limit).
MAX_ENTRY_LENGTH = 2000

_STYLE = "html,body{margin:0;height:100%;background:#fff}iframe{display:block;border:0;width:100%;height:100%}"
_STYLE_HASH = "'sha256-" + base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode() + "'"
_HOST = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+")


def entry_problem(entry: Any) -> str | None:
    """Why ``entry`` cannot be framed (one line), or None if it is a plain https URL on a host name."""
    if not isinstance(entry, str) or not entry:
        return "this weblet's manifest names no external entry (an https:// URL)"
    if len(entry) > MAX_ENTRY_LENGTH or any(c.isspace() or unicodedata.category(c) in ("Cc", "Cs") for c in entry):
        return "this weblet's external entry is not a usable URL"
    try:
        parts = urlsplit(entry)
        port = parts.port
    except ValueError:
        return "this weblet's external entry is not a usable URL"
    if parts.scheme.lower() != "https":
        return "this weblet's external entry is not an https:// URL"
    host = (parts.hostname or "").lower()
    if parts.username is not None or parts.password is not None:
        return "this weblet's external entry carries credentials"
    if not _HOST.fullmatch(host) or host.rsplit(".", 1)[-1].isdigit() or host.endswith(".localhost"):
        return "this weblet's external entry must name a public host (no IP literals, no local names)"
    if port is not None and not 0 < port < 65536:
        return "this weblet's external entry has a bad port"
    return None


def _origin(entry: str) -> str:
    parts = urlsplit(entry)
    host = (parts.hostname or "").lower()
    return f"https://{host}" + (f":{parts.port}" if parts.port not in (None, 443) else "")


def wrapper_csp(entry: str, frame_src: Iterable[str], chat_origin: str) -> str:
    """The wrapper's CSP: nothing but its style and one frame of the entry's origin (plus declared ``frameSrc``)."""
    frames = " ".join(dict.fromkeys([_origin(entry), *frame_src]))
    return (
        f"default-src 'none'; style-src {_STYLE_HASH}; frame-src {frames}; "
        f"frame-ancestors {chat_origin}; base-uri 'none'; form-action 'none'; object-src 'none'"
    )


def wrapper_page(entry: str, title: str) -> bytes:
    """The wrapper's HTML: no script, one sandboxed frame whose ``src`` is the (escaped) entry."""
    src, name = html.escape(entry, quote=True), html.escape(title, quote=True)
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8"><meta name="referrer" content="no-referrer">'
        f"<title>{name}</title><style>{_STYLE}</style></head>\n"
        f'<body><iframe src="{src}" sandbox="{EXTERNAL_SANDBOX}" referrerpolicy="no-referrer" title="{name}"></iframe></body></html>\n'
    ).encode()
