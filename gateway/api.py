"""The widget manager's REST API on the Chat UI's site: ``/api/weblets/…``, ``/api/store``, ``/api/openapi.json``.

Seed 000's contract, served by the gateway for browsers and scripts that
prefer HTTP to CapTP. Every operation is a method of the host's
``WebletManager`` (``daemon/weblet_manager.py``), the same object the Chat
page reaches over CapTP, so the two never disagree.

Rules every route keeps:

- **Who.** ``Authorization: Bearer <token>``, a gateway token minted for a
  *host* (``ocapd chat`` mints one; ``ocapd tokens mint``). No token or a
  wrong one: 401 (failures are slowed per client address, as on the CapTP
  endpoint); a guest's token: 403. A request carrying an ``Origin`` other
  than the Chat UI's own is refused (403): no other page can drive the API
  with the user's browser, and no CORS headers are ever sent.
  ``/api/openapi.json`` alone needs no token.
- **Only the Chat UI's host.** On a weblet's origin (or any other Host) every
  ``/api`` path is 404.
- **Bodies.** JSON (``Content-Type: application/json``; anything else 415)
  of at most 64 KiB; an upload (``multipart/form-data`` with a ``file``
  part, to install or update from a file) of at most the bundle cap plus
  some room for the form. Larger: 413, counted while reading.
- **No paths.** No route takes a file path: files arrive as uploads, stores
  are named (the operator's ``weblets.json`` says where each one is).
- **Errors** are ``{"error": code, "detail": one line}`` with a 4xx status
  (500 only for the server's own faults, logged).

The routes are one table, :data:`ROUTES`: the dispatcher matches it and
:func:`openapi_document` describes it, so the document cannot drift from
what is served (the tests walk the document against the live server).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from quart import Response, request
from quart_trio.asgi import TrioASGIHTTPConnection
from werkzeug.exceptions import RequestEntityTooLarge

from ocapd.daemon.names import InvalidName
from ocapd.daemon.registry import ManagerError, PowersNeedConsent
from ocapd.daemon.weblet import BundleError
from ocapd.daemon.weblet_fetch import DEFAULT_MAX_BUNDLE_BYTES as MAX_ARCHIVE_SIZE
from ocapd.daemon.weblet_fetch import FetchError
from ocapd.daemon.weblet_manager import WebletManager
from ocapd.daemon.weblet_settings import SettingsError
from ocapd.daemon.weblet_store import HashMismatch, StoreError

from .tokens import INVALID_TOKEN_MESSAGE, InvalidToken

if TYPE_CHECKING:
    from .app import GatewayService

__all__ = ["API_PREFIX", "ROUTES", "Api", "LimitedHTTPConnection", "openapi_document"]

log = logging.getLogger("ocapd.gateway.api")

API_PREFIX = "/api/"
#: The API's own version (OpenAPI ``info.version``): bumped when a route or a shape changes.
API_VERSION = "1.0"
#: A JSON body: a URL, a store item, a config object. Same cap as every other gateway request.
MAX_JSON_BODY = 64 * 1024
#: An upload: the largest bundle a file install accepts, plus room for the form's other fields.
MAX_UPLOAD_BODY = MAX_ARCHIVE_SIZE + 256 * 1024
_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.extra = status, error, detail, extra


# ---- the routes ---------------------------------------------------------------------------------------
Handler = Callable[["Api", WebletManager, dict[str, str]], Awaitable[tuple[int, Any]]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # OpenAPI style: /api/weblets/{id}
    handler: str  # the Api method
    summary: str
    body: dict[str, Any] | None = None  # the JSON request schema, if it takes one
    upload: bool = False  # also accepts multipart/form-data with a file part
    auth: bool = True
    query: tuple[tuple[str, str], ...] = ()  # (name, description)
    responses: dict[str, str] = field(default_factory=dict)
    agent: bool = False  # the handler is given the host's chat agent, not its weblet manager
    regex: re.Pattern[str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]{1,128})", self.path)
        object.__setattr__(self, "regex", re.compile(pattern + r"\Z"))

    @property
    def params(self) -> list[str]:
        return re.findall(r"\{(\w+)\}", self.path)


_POWERS = {
    "description": 'The power level: "NONE" (default), "ENDO", "HOST" (trusted code only) or a list of your pet names.',
    "oneOf": [{"type": "string", "enum": ["NONE", "ENDO", "HOST"]}, {"type": "array", "items": {"type": "string"}}],
}
_INSTALL_BODY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "url": {"type": "string", "description": "An https:// URL of a weblet (bundle, manifest, or page linking one)."},
        "store": {"type": "string", "description": "A store's name (GET /api/store lists them)."},
        "id": {"type": "string", "description": "The weblet's id in the store."},
        "version": {"type": "string", "description": "The store version (default: the newest)."},
        "name": {"type": "string", "description": "The pet name (default: derived from the store id or title)."},
        "powers": _POWERS,
    },
}
_UPDATE_BODY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "version": {"type": "string", "description": "Store weblets: the version to go to (default: the newest)."},
        "accept_powers": {"type": "array", "items": {"type": "string"},
                          "description": "Powers the new version adds that the user accepted."},
    },
}  # fmt: skip
_ENABLE_BODY = {
    "type": "object",
    "required": ["id", "enabled"],
    "additionalProperties": False,
    "properties": {"id": {"type": "string"}, "enabled": {"type": "boolean"}},
}
_CONFIG_BODY = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"config": {"type": "object", "description": "The panel's settings (JSON, at most 16 KiB)."}},
}

_VISIBLE = {"type": "array", "items": {"type": "string"}, "maxItems": 64,
            "description": "The panel ids the chat shows (a hint: only this host's open panels count)."}
_MESSAGE_BODY = {
    "type": "object",
    "required": ["text"],
    "additionalProperties": False,
    "properties": {"text": {"type": "string", "maxLength": 4096}, "visible": _VISIBLE},
}
_PERMISSION_BODY = {
    "type": "object",
    "required": ["call", "decision"],
    "additionalProperties": False,
    "properties": {"call": {"type": "string"}, "decision": {"type": "string", "enum": ["once", "always", "deny"]}},
}
_REVOKE_BODY = {
    "type": "object",
    "required": ["weblet"],
    "additionalProperties": False,
    "properties": {"weblet": {"type": "string", "description": "The weblet's id or name."},
                   "command": {"type": "string", "description": "One command (default: all of the weblet's)."}},
}  # fmt: skip

ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/openapi.json", "openapi", "This document.", auth=False),
    Route("GET", "/api/weblets/list", "list", "The built-in and installed weblets, with their panels and available updates."),
    Route("POST", "/api/weblets/install", "install", "Install a weblet from a URL, a store, or an uploaded file.", body=_INSTALL_BODY, upload=True,
          responses={"201": "Installed: {weblet}", "409": "The name is taken", "422": "Refused: invalid bundle, fetch refused, hash mismatch"}),
    Route("POST", "/api/weblets/enable", "enable", "Enable or disable a weblet.", body=_ENABLE_BODY),
    Route("GET", "/api/weblets/{id}", "get", "One weblet."),
    Route("DELETE", "/api/weblets/{id}", "remove", "Uninstall a weblet (its names and panels go too)."),
    Route("POST", "/api/weblets/{id}/update", "update", "Update to the newest (or a given) version; store, URL, or an uploaded file.",
          body=_UPDATE_BODY, upload=True,
          responses={"200": "{weblet, updated}", "409": "powers_consent_required: the new version asks for more powers (listed in 'powers')"}),
    Route("GET", "/api/weblets/{id}/instances", "instances", "The weblet's panels."),
    Route("POST", "/api/weblets/{id}/instances", "create_instance", "Open a new panel; returns its panel id.", body=_CONFIG_BODY,
          responses={"201": "{panel, instance}"}),
    Route("PUT", "/api/weblets/{id}/instances/{panel}", "set_instance_config", "Change a panel's settings.", body=_CONFIG_BODY),
    Route("DELETE", "/api/weblets/{id}/instances/{panel}", "remove_instance", "Close a panel for good."),
    Route("GET", "/api/store", "store", "A store's catalogue: weblets, versions, powers, what you have installed.",
          query=(("store", 'The store\'s name (default "examples").'),)),
    # The chat agent (docs/agent.md): reached through the interface the daemon holds, never an import of chat_host.
    Route("GET", "/api/agent/tools", "agent_tools", "The tools the router or model gets for these visible panels.",
          query=(("visible", "Panel ids, separated by commas."),), agent=True),
    Route("POST", "/api/agent/message", "agent_message", "A chat message to the deterministic router: {reply, calls}.",
          body=_MESSAGE_BODY, agent=True),
    Route("POST", "/api/agent/permission", "agent_permission", "Answer a call waiting for permission: its new state.",
          body=_PERMISSION_BODY, agent=True, responses={"404": "No such call waiting (answered, expired, or never asked)"}),
    Route("GET", "/api/agent/pending", "agent_pending", "Calls waiting for the user's answer.", agent=True),
    Route("GET", "/api/agent/grants", "agent_grants", 'The stored "always" grants still in force.', agent=True),
    Route("POST", "/api/agent/grants/revoke", "agent_revoke", 'Drop "always" for a weblet\'s command, or all of its commands.',
          body=_REVOKE_BODY, agent=True),
    Route("GET", "/api/audit", "audit", "The audit log of agent calls, oldest first.",
          query=(("after", "Only rows after this seq (default 0; -1: the newest 'limit')."), ("limit", "At most this many (default 100).")),
          agent=True),
)  # fmt: skip


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of :data:`ROUTES`."""
    error = {"$ref": "#/components/schemas/Error"}
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        operation: dict[str, Any] = {"summary": route.summary, "operationId": route.handler}
        parameters = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}} for p in route.params]
        parameters += [{"name": n, "in": "query", "required": False, "description": d, "schema": {"type": "string"}} for n, d in route.query]
        if parameters:
            operation["parameters"] = parameters
        if route.body is not None:
            content: dict[str, Any] = {"application/json": {"schema": route.body}}
            if route.upload:
                content["multipart/form-data"] = {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary", "description": "A zip or a single HTML file."},
                            "name": {"type": "string"},
                            "powers": {"type": "string", "description": 'NONE, ENDO, HOST, or pet names separated by commas'},
                            "accept_powers": {"type": "string", "description": "update: accepted powers, separated by commas"},
                        },
                    }
                }
            operation["requestBody"] = {"required": route.handler != "create_instance", "content": content}
        responses: dict[str, Any] = {"200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}}
        for status, text in route.responses.items():
            responses[status] = {"description": text, "content": {"application/json": {"schema": error if status >= "400" else {"type": "object"}}}}
        responses.setdefault("400", {"description": "Bad request", "content": {"application/json": {"schema": error}}})
        if route.auth:
            responses["401"] = {"description": "No token, or an invalid or revoked one", "content": {"application/json": {"schema": error}}}
            responses["403"] = {"description": "A guest's token, or a foreign Origin", "content": {"application/json": {"schema": error}}}
        else:
            operation["security"] = []
        operation["responses"] = responses
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "ocapd widget manager", "version": API_VERSION,
                 "description": "Installed weblets, their panels and stores, per host. See docs/widget-manager.md."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "A host's gateway token (ocapd chat, ocapd tokens mint)."}},
            "schemas": {"Error": {"type": "object", "required": ["error", "detail"],
                                  "properties": {"error": {"type": "string"}, "detail": {"type": "string"}}}},
        },
        "paths": paths,
    }  # fmt: skip


def _is_upload_request(method: str, path: str) -> bool:
    return method == "POST" and (path == "/api/weblets/install" or re.fullmatch(r"/api/weblets/[^/]{1,128}/update", path) is not None)


class LimitedHTTPConnection(TrioASGIHTTPConnection):
    """quart-trio's HTTP connection, with the larger body cap on the two upload routes only.

    The app's ``MAX_CONTENT_LENGTH`` (64 KiB) holds everywhere else; quart
    counts the body as it arrives and refuses it (413) once it passes the cap.
    """

    def _create_request_from_scope(self, send: Any) -> Any:
        req = super()._create_request_from_scope(send)
        if _is_upload_request(req.method, req.path):
            req.max_content_length = MAX_UPLOAD_BODY
            req.body = req.body_class(req.content_length, MAX_UPLOAD_BODY)
        return req


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:500]


def _classify(error: BaseException) -> ApiError:
    """The status and code a REST client sees for an error of the manager."""
    detail = _one_line(error)
    if isinstance(error, ApiError):
        return error
    if isinstance(error, PowersNeedConsent):
        return ApiError(error.status, error.code, detail, powers=error.powers, version=error.version)
    if isinstance(error, ManagerError):
        return ApiError(error.status, error.code, detail)
    if isinstance(error, HashMismatch):
        return ApiError(422, "hash_mismatch", detail)
    if isinstance(error, StoreError):
        return ApiError(422, "store_error", detail)
    if isinstance(error, SettingsError):
        log.error("weblet settings: %s", detail)
        return ApiError(500, "settings_error", detail)
    if isinstance(error, BundleError):
        return ApiError(422, "invalid_weblet", detail)
    if isinstance(error, FetchError):
        return ApiError(422, "fetch_failed", detail)
    if isinstance(error, InvalidName):
        return ApiError(400, "invalid_name", detail)
    if isinstance(error, RequestEntityTooLarge):
        return ApiError(413, "too_large", "the request body is too large")
    if isinstance(error, LookupError):
        return ApiError(404, "not_found", detail)
    if isinstance(error, (ValueError, TypeError)):
        return ApiError(400, "bad_request", detail)
    return ApiError(422, "failed", detail)  # the install or update ran and failed (a backend's make() raised, say)


def _json_response(status: int, body: Any) -> Response:
    response = Response(json.dumps(body, ensure_ascii=False, separators=(",", ":")), status=status, content_type="application/json")
    response.headers.update(_HEADERS)
    return response


def error_response(error: ApiError) -> Response:
    response = _json_response(error.status, {"error": error.error, "detail": error.detail, **error.extra})
    if error.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="ocapd"'
    return response


class Api:
    """The REST routes of one gateway."""

    def __init__(self, service: GatewayService) -> None:
        self._service = service

    # -- dispatch ---------------------------------------------------------------------------------------
    def is_api(self, path: str) -> bool:
        return path == API_PREFIX[:-1] or path.startswith(API_PREFIX)

    async def dispatch(self, path: str) -> Response:
        """Answer an ``/api`` request on the Chat UI's site (the caller checked the site)."""
        try:
            route, params = self._match(path, request.method)
            origin = request.headers.get("Origin")
            chat = self._service.hosts.get((request.headers.get("Host") or "").strip().lower())
            if origin is not None and (chat is None or origin not in chat.origins):
                raise ApiError(403, "forbidden", "this page's origin may not use the API")
            if not route.auth:
                return _json_response(200, openapi_document())
            host = await self._authenticate()
            handler: Handler = getattr(Api, "_" + route.handler)
            status, body = await handler(self, await self._agent(host) if route.agent else await host.weblets(), params)
            return _json_response(status, body)
        except Exception as error:
            classified = _classify(error)
            if classified.status >= 500 or (classified.error == "failed" and not isinstance(error, ApiError)):
                log.warning("%s %s: %s", request.method, path, classified.detail, exc_info=classified.status >= 500)
            return error_response(classified)

    def _match(self, path: str, method: str) -> tuple[Route, dict[str, str]]:
        allowed: list[str] = []
        for route in ROUTES:
            m = route.regex.match(path)
            if m is None:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, m.groupdict()
            allowed.append(route.method)
        if allowed:
            raise ApiError(405, "method_not_allowed", f"{method} is not allowed here (allowed: {', '.join(sorted(set(allowed)))})")
        raise ApiError(404, "not_found", "no such API route (see /api/openapi.json)")

    async def _authenticate(self) -> Any:
        """The host the request's bearer token stands for (ApiError 401/403 otherwise)."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthorized", "send a host token as 'Authorization: Bearer <token>' (ocapd chat prints one)")
        service = self._service
        client = (request.scope.get("client") or ("unknown",))[0]
        try:
            record = await service.throttle.guard(client, lambda: service.tokens.check(token.strip()))
        except InvalidToken:
            raise ApiError(401, "unauthorized", INVALID_TOKEN_MESSAGE) from None
        kernel = service.kernel
        if record.agent not in kernel.formulas or kernel.type_of(record.agent) != "host":
            raise ApiError(403, "forbidden", "this token is not a host's: the weblet manager needs a host token")
        return await kernel.provide(record.agent)

    async def _agent(self, host: Any) -> Any:
        """The host's chat agent (``kernel.services.agent``: plugged in by the composition root)."""
        agents = self._service.kernel.services.agent
        if agents is None:
            raise ApiError(404, "not_found", "this daemon runs without the chat agent")
        return await agents.for_host(host)

    # -- bodies -----------------------------------------------------------------------------------------------
    async def _json_body(self, *, required: bool = True) -> dict[str, Any]:
        raw = await request.get_data(cache=False)
        if not raw:
            if required:
                raise ApiError(400, "bad_request", "send a JSON object (Content-Type: application/json)")
            return {}
        mime = (request.mimetype or "").lower()
        if mime != "application/json":
            raise ApiError(415, "unsupported_media_type", "send JSON with Content-Type: application/json")
        if len(raw) > MAX_JSON_BODY:
            raise ApiError(413, "too_large", f"a JSON body is at most {MAX_JSON_BODY} bytes")
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as e:
            raise ApiError(400, "bad_request", f"the body is not valid JSON: {_one_line(e)}") from None
        if not isinstance(body, dict):
            raise ApiError(400, "bad_request", "the body must be a JSON object")
        return body

    async def _upload(self) -> tuple[dict[str, str], bytes] | None:
        """The form fields and the ``file`` part of a multipart upload, or None if the request is not one."""
        if (request.mimetype or "").lower() != "multipart/form-data":
            return None
        files = await request.files
        form = await request.form
        upload = files.get("file")
        if upload is None:
            raise ApiError(400, "bad_request", "the upload has no 'file' part")
        data = upload.read(MAX_ARCHIVE_SIZE + 1)
        if len(data) > MAX_ARCHIVE_SIZE:
            raise ApiError(413, "too_large", f"a bundle is at most {MAX_ARCHIVE_SIZE // (1024 * 1024)} MiB")
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        filename = (upload.filename or "").replace("\\", "/").rsplit("/", 1)[-1][:255]
        if filename:
            fields["filename"] = filename
        return fields, data

    @staticmethod
    def _form_list(value: str | None) -> list[str] | None:
        if value is None or not value.strip():
            return None
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except ValueError:
                raise ApiError(400, "bad_request", "a list field must be JSON or comma-separated") from None
            return parsed if isinstance(parsed, list) else None
        return [p.strip() for p in text.split(",") if p.strip()]

    # -- handlers -------------------------------------------------------------------------------------------------
    async def _list(self, manager: WebletManager, params: dict[str, str]) -> tuple[int, Any]:
        return 200, {"weblets": await manager.list()}

    async def _get(self, manager: WebletManager, params: dict[str, str]) -> tuple[int, Any]:
        return 200, {"weblet": await manager.get(params["id"])}

    async def _install(self, manager: WebletManager, params: dict[str, str]) -> tuple[int, Any]:
        upload = await self._upload()
        if upload is not None:
            fields, data = upload
            unknown = set(fields) - {"name", "powers", "filename"}
            if unknown:
                raise ApiError(400, "bad_request", f"unknown form field {sorted(unknown)[0]!r}")
            powers: Any = fields.get("powers")
            if powers is not None and powers not in ("NONE", "ENDO", "HOST"):
                powers = self._form_list(powers)
            spec = {"name": fields.get("name") or None, "powers": powers, "filename": fields.get("filename")}
            return 201, {"weblet": await manager.install({k: v for k, v in spec.items() if v is not None}, data)}
        body = await self._json_body()
        if "filename" in body:
            raise ApiError(400, "bad_request", "unknown field 'filename' (upload the file as multipart/form-data)")
        return 201, {"weblet": await manager.install(body)}

    async def _enable(self, manager: WebletManager, params: dict[str, str]) -> tuple[int, Any]:
        body = await self._json_body()
        unknown = set(body) - {"id", "enabled"}
        if unknown or not isinstance(body.get("id"), str) or not isinstance(body.get("enabled"), bool):
            raise ApiError(400, "bad_request", 'send {"id": "<weblet id>", "enabled": true|false}')
        return 200, {"success": True, "weblet": await manager.enable(body["id"], body["enabled"])}

    async def _remove(self, manager: WebletManager, params: dict[str, str]) -> tuple[int, Any]:
        removed = await manager.remove(params["id"])
        return 200, {"success": True, **removed}

    async def _update(self, manager: WebletManager, params: dict[str, str]) -> tuple[int, Any]:
        upload = await self._upload()
        if upload is not None:
            fields, data = upload
            unknown = set(fields) - {"accept_powers", "filename"}
            if unknown:
                raise ApiError(400, "bad_request", f"unknown form field {sorted(unknown)[0]!r}")
            return 200, await manager.update(params["id"], None, self._form_list(fields.get("accept_powers")), data)
        body = await self._json_body(required=False)
        unknown = set(body) - {"version", "accept_powers"}
        if unknown:
            raise ApiError(400, "bad_request", f"unknown field {sorted(unknown)[0]!r} (known: version, accept_powers)")
        return 200, await manager.update(params["id"], body.get("version"), body.get("accept_powers"))

    async def _instances(self, manager: WebletManager, params: dict[str, str]) -> tuple[int, Any]:
        return 200, {"instances": manager.instances(params["id"])}

    async def _create_instance(self, manager: WebletManager, params: dict[str, str]) -> tuple[int, Any]:
        body = await self._json_body(required=False)
        if set(body) - {"config"}:
            raise ApiError(400, "bad_request", 'send {"config": {…}} or nothing')
        instance = await manager.create_instance(params["id"], body.get("config"))
        return 201, {"panel": instance["panel"], "instance": instance}

    async def _set_instance_config(self, manager: WebletManager, params: dict[str, str]) -> tuple[int, Any]:
        body = await self._json_body()
        if set(body) != {"config"}:
            raise ApiError(400, "bad_request", 'send {"config": {…}}')
        return 200, {"instance": await manager.set_instance_config(params["id"], params["panel"], body["config"])}

    async def _remove_instance(self, manager: WebletManager, params: dict[str, str]) -> tuple[int, Any]:
        removed = await manager.remove_instance(params["id"], params["panel"])
        return 200, {"success": True, **removed}

    async def _store(self, manager: WebletManager, params: dict[str, str]) -> tuple[int, Any]:
        name = request.args.get("store", "examples")
        return 200, {"stores": manager.stores(), **await manager.store(name)}

    # -- the chat agent (handlers given the host's agent: chat_host's HostAgent) ----------------------------------
    async def _agent_tools(self, agent: Any, params: dict[str, str]) -> tuple[int, Any]:
        return 200, {"tools": await agent.tools(request.args.get("visible", ""))}

    async def _agent_message(self, agent: Any, params: dict[str, str]) -> tuple[int, Any]:
        body = await self._json_body()
        if set(body) - {"text", "visible"} or not isinstance(body.get("text"), str):
            raise ApiError(400, "bad_request", 'send {"text": "…", "visible": ["<panel>", …]}')
        return 200, await agent.message(body["text"], body.get("visible"))

    async def _agent_permission(self, agent: Any, params: dict[str, str]) -> tuple[int, Any]:
        body = await self._json_body()
        if set(body) != {"call", "decision"}:
            raise ApiError(400, "bad_request", 'send {"call": "<id>", "decision": "once" | "always" | "deny"}')
        try:
            return 200, await agent.permission(body["call"], body["decision"])
        except ValueError as e:
            status = 400 if body["decision"] not in ("once", "always", "deny") else 404
            raise ApiError(status, "bad_request" if status == 400 else "not_found", _one_line(e)) from None

    async def _agent_pending(self, agent: Any, params: dict[str, str]) -> tuple[int, Any]:
        return 200, {"calls": await agent.pending()}

    async def _agent_grants(self, agent: Any, params: dict[str, str]) -> tuple[int, Any]:
        return 200, {"grants": await agent.grants()}

    async def _agent_revoke(self, agent: Any, params: dict[str, str]) -> tuple[int, Any]:
        body = await self._json_body()
        if set(body) - {"weblet", "command"}:
            raise ApiError(400, "bad_request", 'send {"weblet": "<id or name>", "command": "<optional>"}')
        return 200, {"revoked": await agent.revoke(body.get("weblet"), body.get("command"))}

    async def _audit(self, agent: Any, params: dict[str, str]) -> tuple[int, Any]:
        try:
            after = int(request.args.get("after", "0"))
            limit = int(request.args.get("limit", "100"))
        except ValueError:
            raise ApiError(400, "bad_request", "after and limit are whole numbers") from None
        return 200, {"entries": await agent.audit(after, limit)}
