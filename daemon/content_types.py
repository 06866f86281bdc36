"""The one table of file types ocapd serves to browsers: extension -> Content-Type.

Used by the gateway for the Chat UI's folder (``ocapd.gateway.static``: a file
whose extension is not here is not served) and by weblet bundles
(``Bundle.content_type``: a file whose extension is not here is served as
``application/octet-stream``, which a browser neither runs nor renders). Every
response carries ``X-Content-Type-Options: nosniff``, so the browser trusts
this type: a script must be a ``text/javascript`` file.

Python source (``.py``) is deliberately absent: it is never served -- the Chat
UI's folder sits inside a Python package, and a weblet's backend runs in a
worker, not in the browser.

It lives on the daemon side because both may import it (the gateway imports
the daemon, never the other way). Stdlib ``mimetypes`` is not used: it reads
the machine's ``/etc/mime.types``, so a header would depend on the host.
"""

from __future__ import annotations

from types import MappingProxyType

__all__ = ["CONTENT_TYPES", "DEFAULT_CONTENT_TYPE", "content_type_for"]

#: Extension (lower case, with its dot) -> the exact Content-Type it is served with.
CONTENT_TYPES = MappingProxyType(
    {
        ".html": "text/html; charset=utf-8",
        ".htm": "text/html; charset=utf-8",
        ".js": "text/javascript; charset=utf-8",
        ".mjs": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
        ".json": "application/json",
        ".map": "application/json",
        ".txt": "text/plain; charset=utf-8",
        ".md": "text/markdown; charset=utf-8",
        ".svg": "image/svg+xml",
        ".png": "image/png",
        ".jpg": "image/jpeg",
        ".jpeg": "image/jpeg",
        ".gif": "image/gif",
        ".webp": "image/webp",
        ".avif": "image/avif",
        # The IANA-registered type (the gateway used to say image/x-icon, the
        # bundle reader this; every browser accepts either for an icon).
        ".ico": "image/vnd.microsoft.icon",
        ".woff": "font/woff",
        ".woff2": "font/woff2",
        ".ttf": "font/ttf",
        ".otf": "font/otf",
        ".wasm": "application/wasm",
        ".mp3": "audio/mpeg",
        ".ogg": "audio/ogg",
        ".wav": "audio/wav",
        ".mp4": "video/mp4",
        ".webm": "video/webm",
    }
)
#: What a file of any other extension is, where it is served at all.
DEFAULT_CONTENT_TYPE = "application/octet-stream"


def content_type_for(path: str) -> str | None:
    """The Content-Type for a file at ``path`` (its last segment's extension, case ignored), or None if unknown.

    ``a/b.JS`` is JavaScript; so is ``a/.js`` (the gateway never serves names
    starting with a dot; a bundle may hold one).
    """
    _, dot, suffix = path.rpartition("/")[2].rpartition(".")
    return CONTENT_TYPES.get("." + suffix.lower()) if dot else None
