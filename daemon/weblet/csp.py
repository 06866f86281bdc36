"""A weblet's Content-Security-Policy and Connection-Allowlist headers and iframe ``allow=`` attribute.

:func:`csp_for` builds the CSP header the gateway sends with every file of a
weblet; :func:`connection_allowlist` the header that switches WebRTC off
unless the manifest declares it; :func:`permissions_allow` the ``allow=``
attribute of the iframe the Chat page frames it in. Both are derived from a stored
:class:`~.manifest.WebletManifest`, and the manifest's origins are checked
again here, so nothing a bundle says reaches a header unchecked.
"""

from __future__ import annotations

import re

from ocapd.workers.archive import echo

from .manifest import PERMISSIONS, WebletManifest, normalize_origin

__all__ = ["csp_for", "connection_allowlist", "permissions_allow", "CONNECTION_ALLOWLIST_SINCE_CHROMIUM"]

#: The Chromium release that shipped ``Connection-Allowlist`` (and with it the
#: ``webrtc`` switch); ``ocapd doctor`` compares this machine's Chromium with it.
CONNECTION_ALLOWLIST_SINCE_CHROMIUM = 152

_HEADER_URL = re.compile(r"(https?|wss?)://([a-z0-9.-]+(?::[0-9]{1,5})?)(/[A-Za-z0-9._~/-]*)?")


def _header_url(value: str, name: str, *, schemes: tuple[str, ...], path: bool) -> tuple[str, str]:
    match = _HEADER_URL.fullmatch(value) if isinstance(value, str) else None
    if not match or match.group(1) not in schemes or (match.group(3) and not path):
        raise ValueError(f"csp_for: {name} {echo(value)} is not a plain {'/'.join(schemes)} URL")
    return match.group(1), match.group(2)


_REPORT_PATH = re.compile(r"/[A-Za-z0-9._~/-]*")


def csp_for(
    manifest: WebletManifest, *, self_origin: str, ws_url: str, frame_ancestor: str, report_path: str | None = None
) -> str:
    """The Content-Security-Policy header for a weblet served at ``self_origin``.

    Restrictive by default: scripts, styles, images, fonts and media from the
    weblet's own origin only; network connections only to its own CapTP
    WebSocket ``ws_url`` plus the manifest's declared ``connectSrc``; frames
    only from its declared ``frameSrc``; framed only by ``frame_ancestor``
    (the Chat page's origin). ``report_path``, if given, is where the browser
    posts violation reports on the weblet's own origin (``report-uri``:
    Chromium sends those at once, while ``report-to`` reports wait in a
    batch, and a policy with both ignores ``report-uri``). The manifest's origins are checked again here,
    so the header never carries anything unchecked. ``ws_url`` must belong to
    ``self_origin`` (same host and port; ws for http, wss for https):
    ValueError otherwise.
    """
    origin_scheme, origin_host = _header_url(self_origin, "self_origin", schemes=("http", "https"), path=False)
    ws_scheme, ws_host = _header_url(ws_url, "ws_url", schemes=("ws", "wss"), path=True)
    _header_url(frame_ancestor, "frame_ancestor", schemes=("http", "https"), path=False)
    if report_path is not None and not _REPORT_PATH.fullmatch(report_path):
        raise ValueError(f"csp_for: report_path {echo(report_path)} is not a plain path")
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
            *([f"report-uri {report_path}"] if report_path is not None else []),
        ]
    )


def connection_allowlist(manifest: WebletManifest) -> str:
    """The ``Connection-Allowlist`` header: WebRTC off unless the manifest declares ``"webrtc": true``.

    CSP does not govern WebRTC: ``connect-src`` leaves ``RTCPeerConnection``
    free to send STUN/TURN datagrams to any address the page names, and CSP's
    own ``webrtc 'block'`` is not implemented by Chromium (156 reports
    "Unrecognized Content-Security-Policy directive 'webrtc'"). The WICG
    Connection-Allowlist header is: with ``webrtc=block`` Chromium (152+)
    gathers no ICE candidate and opens no socket, and its browser process
    refuses sockets to the document's local child frames (``about:blank``,
    ``srcdoc``) too, ending a renderer that asks anyway.

    Here it is *only* that switch: the list matches every URL (``*://*:*``)
    and redirects are allowed, so what a weblet may fetch, frame or connect to
    is still exactly what its CSP says, and nothing else changes. Browsers
    without Connection-Allowlist (Firefox, Safari, Chromium before 152)
    ignore it: there a weblet's page can still use WebRTC (docs/security.md).
    """
    return f'("*://*:*");redirects=allow;webrtc={"allow" if manifest.webrtc is True else "block"}'


def permissions_allow(manifest: WebletManifest) -> str:
    """The iframe ``allow=`` attribute: the manifest's permissions, from the allowlist, in its order."""
    return "; ".join(p for p in PERMISSIONS if p in manifest.permissions)
