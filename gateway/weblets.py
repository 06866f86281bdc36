"""Weblet instances: each open instance is a virtual host of its own, ``<label>.localhost:PORT``.

Opening a weblet (``Weblet.open()`` in the daemon, which reaches this
through ``kernel.services.gateway.open_instance``) registers an
**instance**: a fresh label of 32 random hex characters and a site for the
Host ``<label>.localhost:PORT``. Browsers treat every such host as its own
origin, so two instances (even of one weblet) cannot read each other's DOM,
storage or cookies, and neither can read the Chat UI's.

What an instance's site serves:

- ``GET /`` the manifest's entry file, ``GET /<path>`` the bundle's other
  files: looked up in a table built once from the *stored* bundle blob
  (``read_bundle`` of the weblet formula's readable blob, checked against the
  formula's digest, cached by digest), never from a request path. The
  backend's ``.py`` files are not in the table: they are the worker's, not the
  page's. Anything else is 404.
- ``GET /_ocapd/weblet.js``, ``/_ocapd/captp.js``, ``/_ocapd/vendor/…``: the
  same runtime files as every site (the weblet SDK and the browser CapTP).
- Every response carries the CSP built server-side from the stored manifest
  (``csp_for``: ``default-src 'none'``, connections only to this instance's
  own ``/_ocapd/ws`` plus the manifest's declared origins, ``frame-ancestors``
  the Chat UI's origin only), ``X-Content-Type-Options: nosniff``,
  ``Referrer-Policy: no-referrer``, ``Cross-Origin-Resource-Policy:
  same-origin``, and ``Connection-Allowlist`` with ``webrtc=block`` unless
  the manifest declares ``"webrtc": true`` (``connection_allowlist``: CSP
  does not govern WebRTC; Chromium 152+ enforces this).
- ``POST /_ocapd/csp-report``: the browser's reports of what the CSP
  blocked in the page (the CSP's ``report-uri``); each distinct violation
  becomes one bounded notice for whoever follows the instance's notices
  (``Weblet.follow_notices``: the Chat shows a line). ``csp_reports.py``
  says how reports are bounded and reduced.
- ``WS /_ocapd/ws``: CapTP, accepted only with ``Origin:
  http://<label>.localhost:PORT`` exactly. Other weblets, the Chat UI, any
  other page and clients sending no ``Origin`` at all get 403: only a page
  of this instance talks to its endpoint. The session's bootstrap is a
  ``WebletBootstrap`` whose ``fetch()`` returns ``{powers, app, instance}``.

Lifetime. An instance opened with ``Weblet.open()`` lives in memory only: it
ends with the daemon (a restart forgets its label). A **panel** made through
the widget manager (``daemon/registry.py``) is a row: its label is served
again, on first request after a restart, an update or a re-enable, by
:meth:`WebletHosting.revive` — the same origin, now backed by the weblet's
current formula. ``close_instance(label)`` ends one (a panel's row stays
until the manager removes it). Cancelling the weblet (directly, or by
cancelling something it stands on: its guest, its backend, the backend's
worker) ends all of its instances. Two mechanisms, on purpose:

1. the weblet's incarnation has a cancel hook (``daemon/weblets.py``) that
   calls ``close_weblet_instances``, which closes the instances and aborts
   their live CapTP sessions at once;
2. every request also checks that the weblet value the instance was opened
   with is still the live incarnation of its formula
   (``kernel.identify_value``; a cancelled value is forgotten there), so an
   instance can never outlive its weblet even between the cancel and its hook.

Removing the weblet's *name* alone does not cancel it (names are not
capabilities); the Chat UI's remove is cancel, then remove.
"""

from __future__ import annotations

import builtins
import collections
import hashlib
import logging
import secrets
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import trio

from ocapd.captp import E, RemotePromise, RemoteRef, encode, far, is_remotable
from ocapd.daemon.formulas import WebletFormula
from ocapd.daemon.limits import DaemonLimits
from ocapd.daemon.petstore import ChangeStream
from ocapd.daemon.weblet import WebletManifest, connection_allowlist, csp_for, parse_manifest, read_bundle

from .csp_reports import CSP_REPORT_PATH, NoticeBoard, reduce_report
from .external import entry_problem, wrapper_csp, wrapper_page
from .site import LiveSession, Site
from .static import StaticFile

if TYPE_CHECKING:
    from ocapd.daemon.kernel import Kernel

__all__ = ["HostingGateway", "WebletBootstrap", "WebletHosting", "WebletInstance", "LABEL_HEX_CHARS", "MAX_INSTANCES"]

log = logging.getLogger("ocapd.gateway.weblets")

#: A label is 128 random bits: unguessable, and 32 characters fit in one DNS label (63 max).
LABEL_HEX_CHARS = 32
#: Instances open at once. An instance costs a few KiB here (its file table is
#: shared by digest); the browser pays a renderer per frame, far more. This
#: bounds what a runaway opener (a script of the user's, a buggy UI) can pile up.
MAX_INSTANCES = 4096
#: Parsed bundles kept for reopening without reading the blob again. Open
#: instances hold their own table, so evicting one here frees nothing in use.
BUNDLE_CACHE_SIZE = 32
#: Events an instance keeps for its host (oldest dropped first).
MAX_EVENTS = 256
#: One event's name and encoded payload: events are notes for the host, not a data channel.
MAX_EVENT_NAME = 128
MAX_EVENT_PAYLOAD = 64 * 1024
#: Where the SDK and the CapTP endpoint live on every site.
WS_PATH = "/_ocapd/ws"
CLOSED_REASON = "closed: weblet instance closed"


#: What a refused instance (an external entry the gateway will not frame) answers as its manifest.
_REFUSED_MANIFEST = WebletManifest.model_validate({"title": "refused weblet"})


# ---- what a weblet page reaches --------------------------------------------------------------


@far("WebletBootstrap")
class WebletBootstrap:
    """Position 0 of a weblet page's CapTP session.

    Why an object with ``fetch()`` rather than the record ``{powers, app,
    instance}`` itself: the bootstrap sits at export position 0, which the
    protocol defines as a *remotable* (the peer holds it by reference and
    calls methods on it). A record is copy data and has no position. So the
    bootstrap is a small far object, and ``fetch()`` answers with the
    record, whose fields are references. It also keeps the shape of the Chat
    UI's ``Gateway.fetch(token)``: one call, then everything else.
    """

    def __init__(self, hosting: WebletHosting, instance: _Instance) -> None:
        self._hosting = hosting
        self._instance = instance

    async def fetch(self) -> dict[str, Any]:
        """``{"powers": the weblet's guest, "app": its backend's object or None, "instance": …}``.

        ``powers`` is the weblet's own guest agent (its names and mailbox; a
        guest never holds its host's powers unless it was installed with
        HOST, and then only as a name in its own store). ``app`` is what the
        backend's ``make(powers, context)`` returned, reincarnated if its
        worker was restarted.
        """
        instance = self._hosting.require_open(self._instance)
        kernel = self._hosting.kernel
        formula = instance.formula
        powers = await kernel.provide(formula.guest)
        app = await kernel.provide(formula.backend) if formula.backend is not None else None
        self._hosting.require_open(instance)
        return {"powers": powers, "app": app, "instance": instance.facet}


@far("WebletInstance")
class WebletInstance:
    """An open instance, as its own page sees it: who it is, and what it tells its host."""

    def __init__(self, hosting: WebletHosting, instance: _Instance) -> None:
        self._hosting = hosting
        self._instance = instance

    def label(self) -> str:
        return self._instance.label

    def manifest(self) -> dict[str, Any]:
        """The stored, normalized manifest (what the host validated at install)."""
        return self._instance.manifest.model_dump(mode="json")

    def emit(self, event: str, payload: Any = None) -> None:
        """Record an event for the host (kept in memory, the last ``MAX_EVENTS``).

        ``event`` is a short name; ``payload`` is copy data (no references),
        at most ``MAX_EVENT_PAYLOAD`` bytes encoded.
        """
        instance = self._hosting.require_open(self._instance)
        if not isinstance(event, str) or not 0 < len(event) <= MAX_EVENT_NAME:
            raise ValueError(f"emit: the event name must be a string of 1 to {MAX_EVENT_NAME} characters")
        try:
            size = len(encode(payload))
        except TypeError as e:
            raise TypeError(f"emit: the payload must be plain data (no references): {e}") from None
        if size > MAX_EVENT_PAYLOAD:
            raise ValueError(f"emit: the payload is {size} bytes encoded; at most {MAX_EVENT_PAYLOAD}")
        declared = instance.manifest.interface is not None and event in instance.manifest.interface.events
        instance.events.append({"event": event, "payload": payload, "declared": declared, "time": time.time()})

    def register_commands(self, commands: Any) -> None:
        """Hand the host the page's command handlers: a remotable with ``invoke(name, args)``.

        A later registration replaces the earlier one (a page registers once
        per session; a reload registers again).
        """
        instance = self._hosting.require_open(self._instance)
        if not (isinstance(commands, (RemoteRef, RemotePromise)) or is_remotable(commands)):
            raise TypeError("register_commands: give the object holding the handlers (weblet.js does)")
        instance.commands = commands

    def panel(self) -> str | None:
        """The widget manager's panel id of this instance, or None if it was opened without one."""
        return self._instance.panel

    def config(self) -> dict[str, Any]:
        """The panel's settings (the widget manager's instance config); ``{}`` if it has none."""
        registry = self._hosting.kernel.services.weblet_registry
        found = registry.instance_by_label(self._instance.label) if registry is not None else None
        return dict(found[0].config) if found is not None else {}

    def close(self) -> None:
        """Close this instance: its origin stops serving and its sessions end (this one too)."""
        # After this call has answered: closing aborts the session carrying it.
        self._hosting.kernel.nursery.start_soon(self._hosting.close_later, self._instance.label)


# ---- the instances ---------------------------------------------------------------------------


class HostingGateway(Protocol):
    """What weblet hosting needs of the running gateway (``app.GatewayService``)."""

    kernel: Kernel
    port: int | None  # None while not listening
    runtime_files: dict[str, StaticFile]  # the SDK and CapTP files every site serves
    weblet_sites: dict[str, Site]  # label -> site: the gateway routes <label>.localhost here
    sessions: dict[str, LiveSession]  # every live CapTP session, on any site
    limits: DaemonLimits  # the daemon's resource limits (sessions per instance)

    def require_listening(self) -> None: ...


@dataclass(eq=False)
class _Instance:
    label: str
    weblet_id: str
    weblet: Any  # the weblet's live value when opened; while it is still the live one, so is this
    formula: Any  # the WebletFormula
    manifest: WebletManifest
    origin: str
    url: str
    site: Site
    facet: WebletInstance = field(init=False)
    events: collections.deque[dict[str, Any]] = field(default_factory=lambda: collections.deque(maxlen=MAX_EVENTS))
    commands: Any = None
    opened: float = field(default_factory=time.time)
    closed: bool = False
    panel: str | None = None  # the widget manager's panel id, if it is a persisted panel
    #: What the browser reported the CSP blocked in the page (bounded: see csp_reports.py).
    board: NoticeBoard = field(default_factory=NoticeBoard)
    #: Who follows those notices (held weakly: a stream lives as long as its follower holds it).
    followers: weakref.WeakSet[ChangeStream] = field(default_factory=weakref.WeakSet)


class WebletHosting:
    """The open instances of one gateway, and the sites that serve them."""

    def __init__(self, service: HostingGateway) -> None:
        self._service = service
        self.kernel: Kernel = service.kernel
        self._instances: dict[str, _Instance] = {}
        self._tables: collections.OrderedDict[str, dict[str, StaticFile]] = collections.OrderedDict()
        self._reviving: dict[str, trio.Event] = {}

    # -- opening -----------------------------------------------------------------------------
    async def revive(self, label: str) -> None:
        """Serve a persisted panel's label again, if it is one and is not being served.

        Panels are rows of the registry: after a restart (or after their
        weblet was updated or re-enabled) the first request for their origin
        opens them again with the same label, backed by the weblet's current
        formula. Labels that are no panel, or whose weblet is disabled, stay 404.
        """
        if label in self._instances:
            return
        registry = self.kernel.services.weblet_registry
        found = registry.instance_by_label(label) if registry is not None else None
        if found is None or not found[1].enabled:
            return
        busy = self._reviving.get(label)
        if busy is not None:
            await busy.wait()
            return
        done = self._reviving[label] = trio.Event()
        try:
            instance, record = found
            await self.open(record.formula, label=label, panel=instance.panel)
        except Exception as e:  # the site stays 404; say why in the log
            log.warning("panel %s (%s) could not be served again: %s", found[0].panel, label, e)
        finally:
            del self._reviving[label]
            done.set()

    async def open(self, weblet_id: str, *, label: str | None = None, panel: str | None = None) -> dict[str, str]:
        """Register a new instance of the weblet ``weblet_id``: ``{"label", "url"}``.

        ``label`` and ``panel``: a persisted panel's (``revive``); otherwise a fresh random label.
        """
        service = self._service
        service.require_listening()
        kernel = self.kernel
        if not isinstance(weblet_id, str) or weblet_id not in kernel.formulas or kernel.type_of(weblet_id) != "weblet":
            raise LookupError("open: not a weblet of this daemon")
        if len(self._instances) >= MAX_INSTANCES:
            raise RuntimeError(f"open: {MAX_INSTANCES} weblet instances are open already; close some first")
        weblet = await kernel.provide(weblet_id)  # incarnates the guest and starts the backend
        formula = kernel.formula(weblet_id)
        assert isinstance(formula, WebletFormula)  # checked above; formulas never change type
        kind = formula.manifest.get("kind", "iframe")
        if kind not in ("iframe", "iframe-external"):
            raise ValueError(f"open: a {kind!r} weblet has no page the gateway serves")
        # An external entry is re-checked here, before the schema: one the gateway will not frame answers 400.
        refusal = entry_problem(formula.manifest.get("entry")) if kind == "iframe-external" else None
        manifest = parse_manifest(formula.manifest, where="the stored manifest") if refusal is None else None
        files = await self._files_for(formula, manifest) if manifest is not None and kind == "iframe" else {}
        port = service.port
        if port is None:  # stopped while we read the bundle
            service.require_listening()
        if label is None:
            label = secrets.token_hex(LABEL_HEX_CHARS // 2)
        elif label in self._instances:
            raise RuntimeError("open: that label is being served already")
        origin = f"http://{label}.localhost:{port}"
        chat_origin = f"http://localhost:{port}"
        headers = {
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cross-Origin-Resource-Policy": "same-origin",
        }
        if manifest is None:
            pass  # refused: plain_response sets its own CSP
        elif manifest.kind == "iframe-external":
            # The wrapper page frames the https entry with the stricter sandbox (external.py).
            files = {"/": StaticFile(wrapper_page(manifest.entry, manifest.title), "text/html; charset=utf-8",
                                     '"' + hashlib.sha256(manifest.entry.encode()).hexdigest()[:32] + '"')}
            headers["Content-Security-Policy"] = wrapper_csp(manifest.entry, manifest.csp.frameSrc, chat_origin)
            headers["Connection-Allowlist"] = connection_allowlist(manifest)
        else:
            headers["Content-Security-Policy"] = csp_for(
                manifest, self_origin=origin, ws_url=f"ws://{label}.localhost:{port}{WS_PATH}", frame_ancestor=chat_origin,
                report_path=CSP_REPORT_PATH,
            )  # fmt: skip
            # CSP does not govern WebRTC; this does (Chromium 152+), unless the manifest declares it.
            headers["Connection-Allowlist"] = connection_allowlist(manifest)
        instance: _Instance
        site = Site(
            name=f"weblet {label}",
            # An external weblet's site is its wrapper alone: no SDK (its page is not ours to serve).
            files={**files, **service.runtime_files} if kind == "iframe" else files,
            headers=headers,
            # Only an iframe weblet's own page talks CapTP; an external page gets no powers at all.
            origins=frozenset({origin}) if kind == "iframe" else frozenset(),
            bootstrap=lambda session_name: WebletBootstrap(self, instance),
            max_sessions=self._service.limits.instance_sessions,
            require_origin=True,
            refusal=refusal,
            on_report=(lambda body: self.report(instance, body)) if kind == "iframe" else None,
        )
        instance = _Instance(
            label=label, weblet_id=weblet_id, weblet=weblet, formula=formula,
            manifest=manifest if manifest is not None else _REFUSED_MANIFEST,
            origin=origin, url=origin + "/", site=site, panel=panel,
        )  # fmt: skip
        instance.facet = WebletInstance(self, instance)
        self._instances[label] = instance
        service.weblet_sites[label] = site
        log.info("weblet %s… opened at %s", weblet_id[:12], instance.url)
        return {"label": label, "url": instance.url}

    async def _files_for(self, formula: Any, manifest: WebletManifest) -> dict[str, StaticFile]:
        """URL path -> file for a weblet's stored bundle (parsed once per digest)."""
        digest = formula.digest
        table = self._tables.get(digest) if digest else None
        if table is not None:
            self._tables.move_to_end(digest)
            return table
        blob = await self.kernel.provide(formula.bundle)
        data = await blob.bytes()
        bundle = await trio.to_thread.run_sync(read_bundle, data)  # up to tens of MiB: off the event loop
        if digest and bundle.digest != digest:
            raise RuntimeError("open: the stored bundle does not match the weblet's digest; reinstall it")
        table = {}
        for path, body in bundle.files.items():
            if path.endswith(".py"):  # the backend's source: run by the worker, never served
                continue
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            table["/" + path] = StaticFile(body, bundle.content_type(path), etag)
        entry = table.get("/" + manifest.entry)
        if entry is None:
            raise RuntimeError(f"open: the bundle has no entry file {manifest.entry!r}")
        table["/"] = entry
        if digest:
            self._tables[digest] = table
            while len(self._tables) > BUNDLE_CACHE_SIZE:
                self._tables.popitem(last=False)
        return table

    # -- looking up --------------------------------------------------------------------------
    def _alive(self, instance: _Instance) -> bool:
        return not instance.closed and self.kernel.identify_value(instance.weblet) == instance.weblet_id

    def site(self, label: str) -> Site | None:
        """The site of an open instance, or None (unknown, closed, or its weblet was cancelled)."""
        instance = self._instances.get(label)
        if instance is None:
            return None
        if not self._alive(instance):
            self._close(instance, "closed: the weblet was cancelled")
            return None
        return instance.site

    def require_open(self, instance: _Instance) -> _Instance:
        if not self._alive(instance):
            if not instance.closed:
                self._close(instance, "closed: the weblet was cancelled")
            raise RuntimeError("this weblet instance is closed")
        return instance

    def _get(self, label: str) -> _Instance:
        site = self.site(label) if isinstance(label, str) else None
        if site is None:
            raise LookupError("no open weblet instance with that label")
        return self._instances[label]

    # -- closing -----------------------------------------------------------------------------
    def _close(self, instance: _Instance, reason: str) -> None:
        if instance.closed:
            return
        instance.closed = True
        instance.commands = None
        self._instances.pop(instance.label, None)
        self._service.weblet_sites.pop(instance.label, None)
        for live in list(self._service.sessions.values()):
            if live.site is instance.site:
                live.conn.close(reason)
        for stream in list(instance.followers):
            stream.close()
        log.info("weblet instance %s closed (%s)", instance.label, reason)

    def close(self, label: str, reason: str = CLOSED_REASON) -> bool:
        """Close one instance; False if there was no such open instance."""
        instance = self._instances.get(label) if isinstance(label, str) else None
        if instance is None:
            return False
        self._close(instance, reason)
        return True

    async def close_later(self, label: str) -> None:
        await trio.sleep(0)  # let the answer to the call that asked for this go out first
        self.close(label)

    def close_weblet(self, weblet_id: str, reason: str) -> int:
        """Close every instance of a weblet; returns how many were open."""
        mine = [i for i in self._instances.values() if i.weblet_id == weblet_id]
        for instance in mine:
            self._close(instance, f"closed: {reason}")
        return len(mine)

    # -- the host's view ---------------------------------------------------------------------
    def list(self) -> builtins.list[dict[str, Any]]:
        out = []
        for instance in list(self._instances.values()):
            if not self._alive(instance):
                self._close(instance, "closed: the weblet was cancelled")
                continue
            out.append(
                {
                    "label": instance.label,
                    "panel": instance.panel,
                    "url": instance.url,
                    "weblet": instance.weblet_id,
                    "title": instance.manifest.title,
                    "opened": instance.opened,
                    "sessions": sum(1 for s in self._service.sessions.values() if s.site is instance.site),
                    "events": len(instance.events),
                    "notices": len(instance.board.notices),
                    "commands": instance.commands is not None,
                }
            )
        return out

    def events(self, label: str) -> builtins.list[dict[str, Any]]:
        return list(self._get(label).events)

    # -- what the browser reports -------------------------------------------------------------
    def report(self, instance: _Instance, body: bytes) -> int:
        """A CSP violation report posted to ``instance``'s origin: the HTTP status to answer."""
        if instance.closed:
            return 404
        if not instance.board.allow():
            return 429
        try:
            pairs = reduce_report(body)
        except ValueError:
            return 400
        for directive, blocked in pairs:
            notice = instance.board.add(instance.label, directive, blocked)
            if notice is not None:
                log.info("weblet instance %s: the browser blocked %s (%s)", instance.label, blocked, directive)
                for stream in list(instance.followers):
                    stream.push(dict(notice))
        return 204

    async def follow_notices(self, label: str, weblet_id: str) -> ChangeStream:
        """A stream of the notices of ``weblet_id``'s instance ``label``: those recorded so far, then each new one.

        A manager's panel not served yet (its page is loading) is served now.
        """
        await self.revive(label)
        instance = self._instances.get(label)
        if instance is None or instance.weblet_id != weblet_id or self.site(label) is None:
            raise LookupError(f"no open instance {label!r} of this weblet")
        stream = ChangeStream(on_close=instance.followers.discard)
        for notice in instance.board.notices:
            stream.push(dict(notice))
        instance.followers.add(stream)
        return stream

    async def invoke(self, label: str, name: str, args: dict[str, Any] | None = None) -> Any:
        """Run a command the instance's page registered (it must be declared in the manifest)."""
        instance = self._get(label)
        interface = instance.manifest.interface
        if interface is None or name not in interface.commands:
            raise LookupError(f"the weblet declares no command {name!r}")
        if instance.commands is None:
            raise RuntimeError("the weblet's page has not registered its commands (is it open in a browser?)")
        return await E(instance.commands).invoke(name, dict(args or {}))
