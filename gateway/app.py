"""The gateway: one HTTP + WebSocket port inside the daemon process.

A quart-trio app served by hypercorn's trio worker, in a task of the
daemon's nursery (started by ``gateway_hook``; the daemon never imports this
package). Every request is routed by its ``Host`` header to a **site** (a
virtual host): ``localhost:PORT`` and ``127.0.0.1:PORT`` are the Chat UI;
``<label>.localhost:PORT`` is one open weblet instance (``weblet_sites``,
managed by ``weblets.py``); any other host gets 404. Per site:

- ``GET /…`` answers from the site's file table (see ``static.py``), never
  from the filesystem;
- ``/_ocapd/ws`` upgrades to CapTP (one binary message per frame) if the
  ``Origin`` is the site's own (or, for the Chat UI only, absent); the
  session's bootstrap is the site's (for the Chat UI: a ``Gateway`` whose
  ``fetch(token)`` returns the token's agent; for a weblet instance: a
  ``WebletBootstrap``).

Sessions without a token (issue 9, item 8): a Chat UI session is
*anonymous* until it presents a valid token, either in the upgrade request
(the subprotocol ``ocapd-token.<token>`` beside ``ocapd-captp``; the chat
page does this) or with ``fetch``. Anonymous sessions have a small cap of
their own (``DaemonLimits.anonymous_sessions``), small CapTP limits (64 KiB
frames, a few answers) and ``anonymous_deadline`` seconds to authenticate,
after which they are closed. So idle sockets without a token can neither
fill the cap of authenticated sessions nor the daemon's file descriptors,
and whoever holds a token always gets in. Failed token checks are slowed
per connection: another connection's failures never delay a correct token.

Origin policy: browsers always send ``Origin`` on a WebSocket upgrade, so a
page from anywhere else is refused (403) - including a weblet's page on the
Chat UI's endpoint, and the Chat UI or another weblet on a weblet's. A client
without ``Origin`` is not a browser page (the CLI, a test, a script of the
user's): it may connect to the Chat UI's endpoint, where it still needs a
token to get anything, but not to a weblet's, which hands out the weblet's
powers to whoever connects (``Site.require_origin``).

Stopping: the daemon calls the service's ``aclose`` first thing (its
``before_stop`` hooks): sessions are aborted, their sockets closed with 1001
(going away), then hypercorn stops listening.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app
from quart import Response, request, websocket
from quart_trio import QuartTrio

from ocapd.captp import WEBSOCKET_BATCH_SUBPROTOCOL, Limits, Promise, far, open_connection
from ocapd.daemon.limits import DaemonLimits, session_limits
from ocapd.daemon.registry import registry_of

from .api import Api, LimitedHTTPConnection
from .csp_reports import CSP_REPORT_PATH, MAX_REPORT_BYTES, REPORT_CONTENT_TYPES
from .hook import DEFAULT_HOST, DEFAULT_PORT, LISTEN_BACKLOG, GatewayBindError, bind_listener
from .site import LiveSession, Site, plain_response
from .static import DEFAULT_STATIC_DIR, build_table, split_runtime
from .tokens import FailureThrottle, InvalidToken, TokenStore
from .transport import QuartWebSocketTransport, WebsocketConnection
from .weblets import WebletHosting

if TYPE_CHECKING:
    from ocapd.daemon.kernel import Kernel

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "Gateway",
    "GatewayConfig",
    "GatewayControl",
    "GatewayService",
    "Site",
    "chat_csp",
    "start_gateway",
]

log = logging.getLogger("ocapd.gateway")

#: The protocol's frame limit, and room for its 4-byte length: one CapTP frame
#: is one WebSocket message, or, under the batch subprotocol, a message holds
#: one or more length-prefixed frames (a frame as large as allowed goes alone).
#: Each frame is then checked against its session's own limit.
MAX_MESSAGE_SIZE = Limits().max_frame_size + 4
#: Our routes take no request bodies; anything larger is refused (413).
MAX_REQUEST_BODY = 64 * 1024
# Session caps (authenticated, anonymous, per weblet instance) are in
# ``ocapd.daemon.limits.DaemonLimits``: a held session costs some tens of KiB
# and a file descriptor, and the caps keep a runaway client from exhausting either.
#: What a session without a token may do: call ``fetch``/``ping`` a few at a
#: time. Its frames are tiny (a token is 43 characters); 256 KiB refuses a
#: large frame before it is decoded, while leaving room for a client that
#: sends a silly token and deserves the ordinary "invalid token" answer.
ANONYMOUS_LIMITS = Limits(max_frame_size=256 * 1024, max_answers=8, max_exports=64, max_imports=64)
#: The subprotocol the chat page offers, and the prefix of the one carrying its token.
SUBPROTOCOL = "ocapd-captp"
#: Chosen over ``SUBPROTOCOL`` when offered: several frames per message (docs/protocol.md §2).
BATCH_SUBPROTOCOL = WEBSOCKET_BATCH_SUBPROTOCOL
TOKEN_SUBPROTOCOL_PREFIX = "ocapd-token."
#: Why an anonymous session that did not authenticate in time ends.
ANONYMOUS_TIMEOUT_REASON = "closed: no valid token presented in time"
#: How long stopping waits for sessions to close, then for hypercorn to finish.
SHUTDOWN_TIMEOUT = 3.0
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
STOP_REASON = "closed: daemon stopping"
WS_PATH = "/_ocapd/ws"
ECHO_PATH = "/_ocapd/echo"

_BASE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass
class GatewayConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT  # 0: any free port (tests); the bound one is in ``GatewayService.port``
    static_dir: Path = DEFAULT_STATIC_DIR
    #: Benchmarks only: a raw WebSocket echo at /_ocapd/echo, to compare CapTP against.
    enable_echo: bool = False


def chat_csp(port: int) -> str:
    return (
        "default-src 'self'; script-src 'self'; "
        # blob: for a projection-only weblet's images: bytes of its bundle the page was handed over CapTP.
        "img-src 'self' blob:; "
        f"connect-src 'self' ws://localhost:{port} ws://127.0.0.1:{port}; "
        f"frame-src http://*.localhost:{port}; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'self'"
    )


async def _csp_report(site: Site, take: Any) -> Response:
    """A browser's CSP violation report for a weblet instance (csp_reports.py says what is kept)."""
    if (request.mimetype or "").lower() not in REPORT_CONTENT_TYPES:
        return plain_response(415, "not a CSP report", site.headers)
    if (request.content_length or 0) > MAX_REPORT_BYTES:
        return plain_response(413, "report too large", site.headers)
    body = await request.get_data(cache=False)  # also bounded by MAX_CONTENT_LENGTH
    if len(body) > MAX_REPORT_BYTES:
        return plain_response(413, "report too large", site.headers)
    status = take(body)
    if status == 204:
        return Response(b"", status=204)
    return plain_response(status, {400: "not a CSP report", 404: "not found", 429: "too many reports"}[status], site.headers)


# ---- what the browser reaches --------------------------------------------------------------


@far("Gateway")
class Gateway:
    """The bootstrap of a Chat UI session: exchanges a token for the agent it was minted for.

    One per session, so failed fetches are charged to that session only: a
    connection that guesses is slowed, and nobody else is.
    """

    def __init__(self, service: GatewayService, session_name: str) -> None:
        self._service = service
        self._session_name = session_name

    async def fetch(self, token: str) -> Any:
        """The agent (host or guest) ``token`` stands for; "invalid or revoked token" otherwise."""
        service = self._service
        record = await service.throttle.guard(self._session_name, lambda: service.tokens.check(token))
        service.authenticated(self._session_name, record.agent)
        return await service.kernel.provide(record.agent)

    def ping(self) -> str:
        return "pong"


# ---- what the CLI reaches (through the daemon facet) ---------------------------------------


@far("GatewayControl")
class GatewayControl:
    """The gateway's management surface: where it listens, and its tokens.

    Reached only through the daemon facet (``DaemonFacet.gateway()``), whose
    authority is the Unix socket's folder permission. Minting needs the agent
    itself, not a name: whoever holds an agent may hand out a token for it.
    """

    def __init__(self, service: GatewayService) -> None:
        self._service = service
        #: agent id -> chat URL minted during this daemon run (the secret is never stored).
        self._chat_urls: dict[str, str] = {}

    def info(self) -> dict[str, Any]:
        s = self._service
        return {
            "url": s.url,
            "port": s.port,
            "listening": s.port is not None and not s.stopping,
            "error": s.error,
            "sessions": len(s.sessions),
            "tokens": len(s.tokens.list()),
        }

    def list_tokens(self) -> list[dict[str, Any]]:
        kernel = self._service.kernel
        out = []
        for record in self._service.tokens.list():
            entry = record.public()
            entry["agent_type"] = kernel.type_of(record.agent) if record.agent in kernel.formulas else "unknown"
            out.append(entry)
        return out

    async def mint(self, agent: Any, label: str = "") -> dict[str, Any]:
        """A new token for ``agent``: its id, the secret (shown only now) and the chat URL."""
        agent_id = await self._agent_id(agent)
        secret, record = await self._service.tokens.mint(agent_id, label)
        return {**record.public(), "token": secret, "url": self._service.chat_url(secret)}

    async def chat_url(self, agent: Any) -> str:
        """The Chat UI's URL for ``agent``, with a token in the fragment.

        The token is minted on first use in this daemon run and reused after
        (its secret is kept only in memory, never on disk); a restart mints
        a new one, labelled "chat". Revoked tokens are not reused.
        """
        agent_id = await self._agent_id(agent)
        self._service.require_listening()
        url = self._chat_urls.get(agent_id)
        if url is not None:
            try:
                self._service.tokens.check(url.rsplit("#token=", 1)[1])
                return url
            except PermissionError:
                pass
        secret, _ = await self._service.tokens.mint(agent_id, "chat")
        url = self._chat_urls[agent_id] = self._service.chat_url(secret)
        return url

    async def revoke(self, id_prefix: str) -> dict[str, Any]:
        """Revoke a token by id (or unique id prefix): new fetches with it fail."""
        return (await self._service.tokens.revoke(id_prefix)).public()

    # -- weblet instances (see weblets.py) --
    async def open_instance(self, weblet_id: str) -> dict[str, str]:
        """A new instance of a weblet on its own origin: ``{"label", "url"}`` (``Weblet.open()``)."""
        return await self._service.weblets.open(weblet_id)

    def close_instance(self, label: str) -> bool:
        """Close one instance (its origin 404s, its sessions end); False if it was not open."""
        return self._service.weblets.close(label)

    def close_weblet_instances(self, weblet_id: str, reason: str = "cancelled") -> int:
        """Close every instance of a weblet (its incarnation's cancel hook calls this)."""
        return self._service.weblets.close_weblet(weblet_id, reason)

    def list_instances(self) -> list[dict[str, Any]]:
        """The open instances: label, url, weblet id, title, sessions, events recorded."""
        return self._service.weblets.list()

    async def follow_instance_notices(self, label: str, weblet_id: str) -> Any:
        """What the browser reported the CSP of ``weblet_id``'s instance ``label`` blocked: a stream (``Weblet.follow_notices``)."""
        return await self._service.weblets.follow_notices(label, weblet_id)

    def instance_events(self, label: str) -> list[dict[str, Any]]:
        """What an instance's page emitted (``events.emit``), oldest first."""
        return self._service.weblets.events(label)

    async def invoke_command(self, label: str, name: str, args: dict[str, Any] | None = None) -> Any:
        """Run a command the manifest declares, through the handlers the page registered."""
        return await self._service.weblets.invoke(label, name, args)

    def chat_sessions(self, agent_id: str) -> int:
        """Chat pages connected now for ``agent_id``: live CapTP sessions of the chat site that showed its token.

        The chat agent asks this before an MCP call waits for the user's
        Allow: with no chat open there is nobody to ask.
        """
        return sum(1 for live in self._service.sessions.values() if live.site.name == "chat" and agent_id in live.agents)

    async def _agent_id(self, agent: Any) -> str:
        if isinstance(agent, Promise):  # a pipelined E(facet).host(), say
            agent = await agent
        kernel = self._service.kernel
        agent_id = kernel.identify_value(agent)
        if agent_id is None or kernel.type_of(agent_id) not in ("host", "guest"):
            raise TypeError("tokens are minted for agents (hosts or guests) of this daemon")
        return agent_id


# ---- the service --------------------------------------------------------------------------


class GatewayService:
    """The running gateway: the app, its sites, tokens and live sessions."""

    def __init__(self, kernel: Kernel, tokens: TokenStore, config: GatewayConfig | None = None) -> None:
        self.kernel = kernel
        self.config = config or GatewayConfig()
        self.tokens = tokens
        self.throttle = FailureThrottle()
        self.limits: DaemonLimits = kernel.services.limits or DaemonLimits()
        #: Authenticated sessions held at once: the configured cap, lowered to
        #: fit the open-files limit less the owner's reserve and the anonymous cap.
        fd_limit = kernel.services.fd_limit or 1024
        self.max_sessions = max(
            1, min(self.limits.sessions, fd_limit - self.limits.fd_reserve - self.limits.anonymous_sessions)
        )
        self.anonymous = 0
        #: Upgrades let through by ``_refusal`` and not yet counted as sessions
        #: (accepting and starting a session awaits; other upgrades are checked meanwhile).
        self.opening_anonymous = 0
        self.opening_other = 0
        self.control = GatewayControl(self)
        self.port: int | None = None
        self.error: str | None = None
        self.stopping = False
        self.sessions: dict[str, LiveSession] = {}
        #: host header (lower case) -> site; filled once the port is known.
        self.hosts: dict[str, Site] = {}
        #: weblet instance label -> site, served at <label>.localhost:PORT (kept by ``weblets``).
        self.weblet_sites: dict[str, Site] = {}
        self.weblets = WebletHosting(self)
        self.api = Api(self)
        self._counter = 0
        self._drained = trio.Event()
        self._shutdown = trio.Event()
        self._stopped = trio.Event()
        table = build_table(self.config.static_dir)
        self._chat_files, self.runtime_files = split_runtime(table)
        self.app = self._build_app()

    # -- addresses --
    @property
    def url(self) -> str | None:
        return None if self.port is None else f"http://localhost:{self.port}/"

    def chat_url(self, token: str) -> str:
        # The token rides in the fragment: browsers never send it to a server or a log.
        return f"http://localhost:{self.port}/#token={token}"

    def require_listening(self) -> None:
        if self.port is None:
            raise RuntimeError(f"the gateway is not running: {self.error or 'not started'}")

    def site_for(self, host: str | None) -> Site | None:
        """The site a ``Host`` header names, or None (404)."""
        if not host or self.port is None:
            return None
        host = host.strip().lower()
        site = self.hosts.get(host)
        if site is not None:
            return site
        suffix = f".localhost:{self.port}"
        if host.endswith(suffix):
            return self.weblets.site(host[: -len(suffix)])  # None if closed or its weblet was cancelled
        return None

    async def revive_for(self, host: str | None) -> None:
        """If ``host`` names a persisted panel's origin that is not served now, serve it again (``WebletHosting.revive``)."""
        if not host or self.port is None:
            return
        suffix = f".localhost:{self.port}"
        host = host.strip().lower()
        if host.endswith(suffix):
            await self.weblets.revive(host[: -len(suffix)])

    def _make_sites(self, port: int) -> None:
        headers = {**_BASE_HEADERS, "Content-Security-Policy": chat_csp(port)}
        chat = Site(
            name="chat",
            files={**self._chat_files, **self.runtime_files},
            headers=headers,
            origins=frozenset({f"http://localhost:{port}", f"http://127.0.0.1:{port}"}),
            bootstrap=lambda session_name: Gateway(self, session_name),
        )
        self.hosts = {f"localhost:{port}": chat, f"127.0.0.1:{port}": chat}

    # -- the app --
    def _build_app(self) -> QuartTrio:
        app = QuartTrio("gateway")
        app.asgi_websocket_class = WebsocketConnection
        app.asgi_http_class = LimitedHTTPConnection  # the REST API's uploads may be larger (api.py)
        app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BODY
        app.url_map.merge_slashes = False
        app.url_map.strict_slashes = False
        methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

        async def serve_http(path: str = "") -> Response:
            await self.revive_for(request.headers.get("Host"))
            site = self.site_for(request.headers.get("Host"))
            if site is None:
                return plain_response(404, "unknown host", _BASE_HEADERS)
            if site.name == "chat" and self.api.is_api(request.path):
                return await self.api.dispatch(request.path)
            if request.method == "POST" and request.path == CSP_REPORT_PATH and site.on_report is not None:
                return await _csp_report(site, site.on_report)
            if request.method not in ("GET", "HEAD"):
                response = plain_response(405, "method not allowed", site.headers)
                response.headers["Allow"] = "GET, HEAD"
                return response
            return site.response_for(request.path, request.headers.get("If-None-Match"))

        app.add_url_rule("/", "root", serve_http, methods=methods, provide_automatic_options=False)
        app.add_url_rule("/<path:path>", "file", serve_http, methods=methods, provide_automatic_options=False)
        app.add_websocket("/<path:path>", "ws", self._websocket)

        @app.after_request
        async def base_headers(response: Response) -> Response:
            for name, value in _BASE_HEADERS.items():
                response.headers.setdefault(name, value)
            return response

        return app

    def authenticated(self, name: str, agent_id: str) -> None:
        """Session ``name`` presented a valid token for ``agent_id``: it is no longer anonymous.

        Its CapTP limits become the defaults, and the owner's (a host's)
        sessions leave the shared budget, as the CLI's never join it: what
        untrusted peers spend can never lock the owner out.
        """
        live = self.sessions.get(name)
        if live is not None:
            live.agents.add(agent_id)
        if live is None or not live.anonymous:
            return
        if self.authenticated_count() >= self.max_sessions:
            live.conn.close("closed: too many sessions")
            raise RuntimeError("too many sessions")
        live.anonymous = False
        self.anonymous -= 1
        live.authenticated.set()
        self._promote(live.conn, agent_id)

    def _promote(self, conn: Any, agent_id: str) -> None:
        conn.session.limits = session_limits(self.limits)
        if self.kernel.type_of(agent_id) == "host":
            conn.session.budget = None

    def authenticated_count(self) -> int:
        return len(self.sessions) - self.anonymous

    def _handshake_agent(self) -> str | None:
        """The agent id of a valid token offered in the upgrade request, or None.

        A wrong token there makes an anonymous session, not a refusal: the
        page then learns from ``fetch`` that its token is not accepted (a
        refused upgrade looks like a network failure, retried for ever).
        """
        for proto in websocket.requested_subprotocols:
            if proto.startswith(TOKEN_SUBPROTOCOL_PREFIX):
                try:
                    return self.tokens.check(proto[len(TOKEN_SUBPROTOCOL_PREFIX):]).agent
                except InvalidToken:
                    return None
        return None

    def _refusal(self, path: str) -> tuple[Site | None, Response | None]:
        """Check an upgrade before accepting it: (site, None) or (None, the HTTP refusal)."""
        site = self.site_for(websocket.headers.get("Host"))
        if site is None:
            return None, plain_response(404, "unknown host", _BASE_HEADERS)
        if path not in (WS_PATH, ECHO_PATH) or (path == ECHO_PATH and not self.config.enable_echo):
            return None, plain_response(404, "not found", site.headers)
        origin = websocket.headers.get("Origin")
        if (origin is None and site.require_origin) or (origin is not None and origin not in site.origins):
            return None, plain_response(403, "forbidden: this page's origin may not connect here", site.headers)
        if self.stopping:
            return None, plain_response(503, "the daemon is stopping", site.headers)
        if site.max_sessions is not None and site.sessions + site.opening >= site.max_sessions:
            return None, plain_response(503, "too many sessions for this instance", site.headers)
        if site.name == "chat" and self._handshake_agent() is None:
            if self.anonymous + self.opening_anonymous >= self.limits.anonymous_sessions:
                return None, plain_response(503, "too many sessions without a token", site.headers)
        elif self.authenticated_count() + self.opening_other >= self.max_sessions:
            return None, plain_response(503, "too many sessions", site.headers)
        return site, None

    def _reserve(self, site: Site, anonymous: bool, n: int) -> None:
        """Hold (``n=1``) or let go (``n=-1``) the place an accepted upgrade will take.

        The caps are checked before an upgrade is accepted and the session is
        counted only once it runs; without this, upgrades arriving together
        would all pass the check before any of them counted.
        """
        site.opening += n
        if anonymous:
            self.opening_anonymous += n
        else:
            self.opening_other += n

    async def _websocket(self, path: str) -> Response | None:
        await self.revive_for(websocket.headers.get("Host"))
        site, refusal = self._refusal("/" + path)
        if site is None:
            return refusal
        # The real object, not quart's proxy: our tasks outlive the proxy's context.
        ws = websocket._get_current_object()  # type: ignore[attr-defined]
        agent_id = self._handshake_agent() if site.name == "chat" else None
        anonymous = site.name == "chat" and agent_id is None
        # From the check above until the session is counted below, its place is held.
        self._reserve(site, anonymous, 1)
        reserved = True
        try:
            offered = websocket.requested_subprotocols
            batch = BATCH_SUBPROTOCOL in offered and path != ECHO_PATH[1:]
            subprotocol = BATCH_SUBPROTOCOL if batch else SUBPROTOCOL if SUBPROTOCOL in offered else None
            await ws.accept(subprotocol=subprotocol)
            if path == ECHO_PATH[1:]:
                await _echo(ws)
                return None
            self._counter += 1
            name = f"ws-{self._counter}"
            transport = QuartWebSocketTransport(ws, batching=batch, max_frame_size=MAX_MESSAGE_SIZE)
            sessions = self.kernel.services.sessions
            limits = session_limits(self.limits, ANONYMOUS_LIMITS if anonymous else None)
            budget = self.kernel.services.budget
            try:
                async with open_connection(transport, site.bootstrap(name), name=name, limits=limits, budget=budget) as conn:
                    live = self.sessions[name] = LiveSession(name, conn, site, transport, anonymous)
                    site.sessions += 1
                    if anonymous:
                        self.anonymous += 1
                    elif agent_id is not None:
                        live.agents.add(agent_id)
                        self._promote(conn, agent_id)
                    self._reserve(site, anonymous, -1)
                    reserved = False
                    sessions[name] = conn
                    try:
                        async with trio.open_nursery() as nursery:
                            if anonymous:
                                nursery.start_soon(self._anonymous_deadline, live)
                            await conn.wait_closed()
                            nursery.cancel_scope.cancel()
                    finally:
                        self.sessions.pop(name, None)
                        site.sessions -= 1
                        if live.anonymous:
                            self.anonymous -= 1
                        self.throttle.forget(name)
                        sessions.pop(name, None)
                        if self.stopping and not self.sessions:
                            self._drained.set()
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(SHUTDOWN_TIMEOUT):
                    await transport.close(CLOSE_GOING_AWAY if self.stopping else CLOSE_NORMAL)
            return None
        finally:
            if reserved:
                self._reserve(site, anonymous, -1)

    async def _anonymous_deadline(self, live: LiveSession) -> None:
        with trio.move_on_after(self.limits.anonymous_deadline):
            await live.authenticated.wait()
            return
        live.conn.close(ANONYMOUS_TIMEOUT_REASON)

    # -- running --
    def bind(self) -> socket.socket:
        """Bind the listening socket (raises ``GatewayBindError``, e.g. the port is taken)."""
        return bind_listener(self.config.host, self.config.port)

    def _hypercorn_config(self) -> HypercornConfig:
        config = HypercornConfig()
        config.websocket_max_message_size = MAX_MESSAGE_SIZE
        # Messages hypercorn queues for a session that is not reading them
        # (backpressure): each may be 16 MiB, so keep one, not ten.
        config.max_app_queue_size = 1
        config.backlog = LISTEN_BACKLOG
        config.graceful_timeout = SHUTDOWN_TIMEOUT
        config.accesslog = None
        config.errorlog = logging.getLogger("ocapd.gateway.http")
        config.include_server_header = False
        return config

    async def run(self, sock: socket.socket, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve on ``sock`` (from ``bind``) until ``aclose``; reports the port when listening."""
        port_file = self._port_file()
        try:
            port = sock.getsockname()[1]
            self._make_sites(port)
            config = self._hypercorn_config()
            async with trio.open_nursery() as nursery:
                await nursery.start(
                    partial(
                        worker_serve,
                        wrap_app(self.app, config.wsgi_max_body_size, None),
                        config,
                        sockets=Sockets([], [sock], []),
                        shutdown_trigger=self._shutdown.wait,
                    )
                )
                self.port = port
                if port_file is not None:
                    tmp = port_file.with_name(port_file.name + ".tmp")
                    tmp.write_text(f"{port}\n")
                    os.replace(tmp, port_file)
                log.info("gateway listening on %s", self.url)
                task_status.started(port)
        finally:
            self.port = None if self.stopping else self.port
            if port_file is not None:
                try:
                    port_file.unlink()
                except FileNotFoundError:
                    pass
            sock.close()
            self._stopped.set()

    def _port_file(self) -> Path | None:
        paths = self.kernel.services.paths
        return None if paths is None else Path(paths.run) / "gateway.port"

    async def aclose(self) -> None:
        """Stop: abort every session (sockets close with 1001), then stop listening. Idempotent."""
        if self.stopping:
            await self._stopped.wait()
            return
        self.stopping = True
        if self.sessions:
            # The close frame goes first, so a browser sees 1001 (going away) rather than
            # the abort it would answer by closing itself; the session then ends as disconnected.
            with trio.move_on_after(SHUTDOWN_TIMEOUT):
                async with trio.open_nursery() as nursery:
                    for live in list(self.sessions.values()):
                        nursery.start_soon(live.transport.close, CLOSE_GOING_AWAY)
            for live in list(self.sessions.values()):
                live.conn.close(STOP_REASON)
            with trio.move_on_after(SHUTDOWN_TIMEOUT):
                await self._drained.wait()
        self._shutdown.set()
        with trio.move_on_after(SHUTDOWN_TIMEOUT + 1):
            await self._stopped.wait()


async def _echo(ws: Any) -> None:
    """Benchmarks only: send every message back."""
    try:
        while True:
            await ws.send(await ws.receive())
    except trio.EndOfChannel:
        pass


async def start_gateway(
    kernel: Kernel,
    nursery: trio.Nursery,
    *,
    port: int = DEFAULT_PORT,
    host: str = DEFAULT_HOST,
    static_dir: Path | None = None,
    enable_echo: bool = False,
    sock: socket.socket | None = None,
) -> None:
    """Start the gateway in ``nursery`` (called by ``gateway.hook``, once this module is imported).

    ``sock``: the listening socket, already bound by the hook (so a taken port
    fails the daemon's start); without it, the port is bound here.

    It opens the gateway's tables (its own migrations), sets the control
    object as ``kernel.services.gateway`` and adds its shutdown to
    ``kernel.services.before_stop``. If the port cannot be
    bound, the daemon runs on without a gateway; the reason is logged and
    reported by ``ocapd chat``.
    """
    config = GatewayConfig(host=host, port=port, static_dir=static_dir or DEFAULT_STATIC_DIR, enable_echo=enable_echo)
    await registry_of(kernel)  # persisted panels are served from the first request on
    service = GatewayService(kernel, await TokenStore.open(kernel.db), config)
    kernel.services.gateway = service.control
    kernel.services.before_stop.append(service.aclose)
    try:
        if sock is None:
            sock = service.bind()
    except GatewayBindError as e:
        service.error = str(e)
        log.error("gateway: %s; the daemon runs without it (choose another with --port)", service.error)
        return
    await nursery.start(service.run, sock)
