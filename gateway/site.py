"""Sites: the virtual hosts the gateway serves (the Chat UI, one per open weblet instance), and their sessions.

A ``Site`` is what one ``Host`` header gets: a table of files (never the
filesystem), the headers every response carries, the origins allowed to open
its CapTP endpoint, and the bootstrap object of each session there. ``app``
routes requests to sites; ``weblets`` makes a site per open instance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from quart import Response

from .static import StaticFile
from .transport import QuartWebSocketTransport

__all__ = ["LiveSession", "Site", "plain_response"]


@dataclass
class Site:
    """One virtual host: its files, response headers, allowed origins and CapTP bootstrap."""

    name: str
    files: dict[str, StaticFile]
    headers: dict[str, str]
    origins: frozenset[str]
    bootstrap: Callable[[str], Any]  # session name -> the session's bootstrap object
    sessions: int = field(default=0)
    #: Upgrades let through and not yet counted in ``sessions`` (see ``GatewayState._reserve``).
    opening: int = field(default=0)
    #: Sessions this site may hold at once (weblet instances: ``instance_sessions``); None: no own cap.
    max_sessions: int | None = None
    #: Refuse upgrades that carry no ``Origin`` (weblet sites: only their own page may connect).
    require_origin: bool = False
    #: Set: every request gets 400 with this line (a panel the gateway will not frame, e.g. a bad external entry).
    refusal: str | None = None
    #: Takes a CSP violation report posted to this site (a weblet instance's); returns the HTTP status.
    on_report: Callable[[bytes], int] | None = None

    def response_for(self, path: str, if_none_match: str | None) -> Response:
        if self.refusal is not None:
            return plain_response(400, self.refusal, self.headers)
        f = self.files.get(path)
        if f is None:
            return plain_response(404, "not found", self.headers)
        if if_none_match is not None and f.etag in [t.strip() for t in if_none_match.split(",")]:
            response = Response(b"", status=304)
        else:
            response = Response(f.body, status=200, content_type=f.content_type)
        response.headers["ETag"] = f.etag
        response.headers["Cache-Control"] = "no-cache"
        response.headers.update(self.headers)
        return response


def plain_response(status: int, text: str, headers: dict[str, str] | None = None) -> Response:
    """A short text answer (errors), which no page can embed or run scripts in."""
    response = Response(text + "\n", status=status, content_type="text/plain; charset=utf-8")
    response.headers["Content-Security-Policy"] = "default-src 'none'; frame-ancestors 'none'"
    if headers:
        response.headers.update(headers)
    return response


class LiveSession:
    """A CapTP session open on a site: its connection, its WebSocket, and whether it has shown a token yet."""

    __slots__ = ("name", "conn", "site", "transport", "anonymous", "authenticated", "agents")

    def __init__(self, name: str, conn: Any, site: Site, transport: QuartWebSocketTransport, anonymous: bool = False) -> None:
        self.name = name
        self.conn = conn
        self.site = site
        self.transport = transport
        #: A chat session that has not presented a valid token (it has a deadline and a cap of its own).
        self.anonymous = anonymous
        #: Set when an anonymous session presents a valid token.
        self.authenticated = trio.Event()
        #: The agents this session holds a valid token for (the handshake's, and each ``fetch``'s).
        self.agents: set[str] = set()
