"""A weblet's Content-Security-Policy header and iframe ``allow=`` attribute, derived from its manifest.

:func:`csp_for` builds the header the gateway sends with every file of a
weblet; :func:`permissions_allow` the ``allow=`` attribute of the iframe the
Chat page frames it in. Both are derived from a stored
:class:`~.manifest.WebletManifest`, and the manifest's origins are checked
again here, so nothing a bundle says reaches a header unchecked.
"""

from __future__ import annotations

import re

from ocapd.workers.archive import echo

from .manifest import PERMISSIONS, WebletManifest, normalize_origin

__all__ = ["csp_for", "permissions_allow"]

_HEADER_URL = re.compile(r"(https?|wss?)://([a-z0-9.-]+(?::[0-9]{1,5})?)(/[A-Za-z0-9._~/-]*)?")


def _header_url(value: str, name: str, *, schemes: tuple[str, ...], path: bool) -> tuple[str, str]:
    match = _HEADER_URL.fullmatch(value) if isinstance(value, str) else None
    if not match or match.group(1) not in schemes or (match.group(3) and not path):
        raise ValueError(f"csp_for: {name} {echo(value)} is not a plain {'/'.join(schemes)} URL")
    return match.group(1), match.group(2)


def csp_for(manifest: WebletManifest, *, self_origin: str, ws_url: str, frame_ancestor: str) -> str:
    """The Content-Security-Policy header for a weblet served at ``self_origin``.

    Restrictive by default: scripts, styles, images, fonts and media from the
    weblet's own origin only; network connections only to its own CapTP
    WebSocket ``ws_url`` plus the manifest's declared ``connectSrc``; frames
    only from its declared ``frameSrc``; framed only by ``frame_ancestor``
    (the Chat page's origin). The manifest's origins are checked again here,
    so the header never carries anything unchecked. ``ws_url`` must belong to
    ``self_origin`` (same host and port; ws for http, wss for https):
    ValueError otherwise.
    """
    origin_scheme, origin_host = _header_url(self_origin, "self_origin", schemes=("http", "https"), path=False)
    ws_scheme, ws_host = _header_url(ws_url, "ws_url", schemes=("ws", "wss"), path=True)
    _header_url(frame_ancestor, "frame_ancestor", schemes=("http", "https"), path=False)
    if ws_host != origin_host or ws_scheme != {"http": "ws", "https": "wss"}[origin_scheme]:
        raise ValueError(f"csp_for: ws_url {echo(ws_url)} is not on the weblet's own origin {echo(self_origin)}")
    try:
        connect = [normalize_origin(o) for o in manifest.csp.connectSrc]
        frames = [normalize_origin(o) for o in manifest.csp.frameSrc]
    except ValueError as e:
        raise ValueError(f"csp_for: {e}") from None
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "font-src 'self'",
            "media-src 'self'",
            "connect-src " + " ".join([ws_url, *connect]),
            "frame-src " + (" ".join(frames) or "'none'"),
            f"frame-ancestors {frame_ancestor}",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
        ]
    )


def permissions_allow(manifest: WebletManifest) -> str:
    """The iframe ``allow=`` attribute: the manifest's permissions, from the allowlist, in its order."""
    return "; ".join(p for p in PERMISSIONS if p in manifest.permissions)
