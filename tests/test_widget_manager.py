"""The widget manager: installed weblets and panels as server-side truth, installs from file, URL and store, the REST API.

A real daemon (with its gateway on a free port) and real clients: REST over
httpx to 127.0.0.1, CapTP over the daemon's socket. The URL installs fetch
from a local HTTPS server with a throwaway CA (test_weblet_fetch's), which
the daemon trusts and allows only through its operator setting
(``state/weblets.json``); the same URL is refused without it.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from daemon_harness import DaemonProcess, zip_bundle
from gateway_clients import http, websocket
from test_weblet_fetch import Pki, Reply, Server, pki  # noqa: F401 - pki is a fixture

from ocapd.captp import E, RemoteError, open_websocket_connection
from ocapd.daemon.weblet import read_bundle
from ocapd.daemon.weblet_store import examples_catalogue_path, version_key

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


# ---- bundles and catalogues --------------------------------------------------------------------------


def counter_zip() -> bytes:
    return zip_bundle({p.name: p.read_bytes() for p in (EXAMPLES / "weblets" / "counter").iterdir() if p.is_file()})


def versioned_zip(version: str, powers: list[str] | None = None, title: str = "Versioned") -> bytes:
    """A weblet whose backend says which version it is, and which declares a read command."""
    manifest = {
        "title": title, "version": version, "backend": "backend.py", "powers": powers or [],
        "interface": {"commands": {"version": {"description": "Which version runs.", "readOnly": True}}},
    }  # fmt: skip
    backend = f"from ocapd.sdk import Far\n\ndef make(powers, context):\n    return Far('Versioned', version=lambda: {version!r})\n"
    return zip_bundle({"weblet.json": json.dumps(manifest), "index.html": f"<!doctype html><title>v{version}</title>", "backend.py": backend})


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_store(folder: Path) -> Path:
    """A local catalogue: 'versioned' 1.0.0 and 2.0.0 (which adds a power), 'plain' 1.0.0 and 1.1.0, and a tampered entry."""
    folder.mkdir(parents=True, exist_ok=True)
    bundles = {
        "versioned-1.0.0.zip": versioned_zip("1.0.0"),
        "versioned-2.0.0.zip": versioned_zip("2.0.0", ["notes"]),
        "plain-1.0.0.zip": versioned_zip("1.0.0", title="Plain"),
        "plain-1.1.0.zip": versioned_zip("1.1.0", title="Plain"),
        "tampered.zip": versioned_zip("1.0.0", title="Tampered"),
    }
    for name, data in bundles.items():
        (folder / name).write_bytes(data)

    def version(v: str, file: str, powers: list[str] | None = None, digest: str | None = None) -> dict[str, Any]:
        entry: dict[str, Any] = {"version": v, "bundle": file, "sha256": digest or sha(bundles[file]), "powers": powers or []}
        return entry

    catalogue = {
        "ocapdStore": 1,
        "title": "Test store",
        "weblets": [
            {"id": "versioned", "title": "Versioned", "versions": [
                version("1.0.0", "versioned-1.0.0.zip"), version("2.0.0", "versioned-2.0.0.zip", ["notes"])]},
            {"id": "plain", "title": "Plain", "versions": [version("1.0.0", "plain-1.0.0.zip"), version("1.1.0", "plain-1.1.0.zip")]},
            {"id": "tampered", "title": "Tampered", "versions": [version("1.0.0", "tampered.zip", digest="0" * 64)]},
        ],
    }  # fmt: skip
    path = folder / "catalogue.json"
    path.write_text(json.dumps(catalogue))
    return path


# ---- the daemon and its clients ------------------------------------------------------------------------
def write_settings(d: DaemonProcess, **settings: Any) -> None:
    state = d.home / "state"
    state.mkdir(parents=True, exist_ok=True)
    (state / "weblets.json").write_text(json.dumps(settings))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def host_token(d: DaemonProcess) -> str:
    return d.chat_url().split("#token=", 1)[1]


class Rest:
    """The REST API as a client sees it."""

    def __init__(self, d: DaemonProcess, token: str | None) -> None:
        self.port = d.gateway_port
        self.token = token

    async def call(self, method: str, path: str, *, token: str | None | bool = True, source: str | None = None, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        bearer = self.token if token is True else token
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        transport = httpx.AsyncHTTPTransport(local_address=source) if source else None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", trust_env=False, transport=transport, timeout=60) as client:
            return await client.request(method, path, headers=headers, **kw)

    async def ok(self, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        r = await self.call(method, path, **kw)
        assert r.status_code == status, (r.status_code, r.text)
        return r.json()

    async def weblets(self) -> dict[str, dict[str, Any]]:
        return {w["name"]: w for w in (await self.ok("GET", "/api/weblets/list"))["weblets"]}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, pki: Pki):  # noqa: F811 - the fixture
    root = tmp_path_factory.mktemp("manager")
    (root / "ca.pem").write_bytes(pki.ca_pem)
    d = DaemonProcess(root / "home")
    d.home.mkdir()
    write_settings(d, stores={"test": str(write_store(root / "store"))}, fetch={"allowed_hosts": ["127.0.0.1"], "ca_file": str(root / "ca.pem")})
    d.start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def rest(daemon: DaemonProcess) -> Rest:
    return Rest(daemon, host_token(daemon))


@asynccontextmanager
async def manager(d: DaemonProcess) -> AsyncIterator[Any]:
    async with d.connect() as (host, _, _):
        yield await E(host).weblets()


@asynccontextmanager
async def panel_session(port: int, label: str) -> AsyncIterator[dict[str, Any]]:
    vhost = f"{label}.localhost:{port}"
    async with websocket(port, vhost, f"http://{vhost}") as ws:
        async with open_websocket_connection(ws, None, name="panel") as conn:
            yield await E(conn.bootstrap()).fetch()


# ---- installing --------------------------------------------------------------------------------------
async def test_installs_from_a_file_a_url_and_a_store_are_listed_with_their_source_and_version(
    daemon: DaemonProcess, rest: Rest, pki: Pki, nursery: trio.Nursery  # noqa: F811
) -> None:
    site = Server(pki.server_context())
    await site.start(nursery)
    site.routes = {"/plain.zip": lambda: Reply(200, versioned_zip("3.1.4", title="From the web"), [("content-type", "application/zip")])}
    url = f"https://127.0.0.1:{site.port}/plain.zip"

    by_file = await rest.ok("POST", "/api/weblets/install", 201, files={"file": ("counter.zip", counter_zip())}, data={"name": "filed"})
    by_url = await rest.ok("POST", "/api/weblets/install", 201, json={"url": url, "name": "fetched"})
    by_store = await rest.ok("POST", "/api/weblets/install", 201, json={"store": "examples", "id": "counter", "name": "stored"})

    listed = await rest.weblets()
    assert (listed["filed"]["source"], listed["filed"]["source_ref"], listed["filed"]["version"]) == ("file", "counter.zip", "1.1.0")
    assert (listed["fetched"]["source"], listed["fetched"]["source_ref"], listed["fetched"]["version"]) == ("url", url, "3.1.4")
    assert (listed["stored"]["source"], listed["stored"]["store"], listed["stored"]["store_id"], listed["stored"]["version"]) == (
        "store", "examples", "counter", "1.1.0",
    )  # fmt: skip
    assert {by_file["weblet"]["id"], by_url["weblet"]["id"], by_store["weblet"]["id"]} == {listed[n]["id"] for n in ("filed", "fetched", "stored")}
    assert all(listed[n]["enabled"] and not listed[n]["builtin"] for n in ("filed", "fetched", "stored"))
    assert [w["id"] for w in listed.values() if w["builtin"]] == ["inventory", "inbox"]
    assert site.paths() == ["/plain.zip"]
    # The same URL, once the operator no longer allows the host: refused, and the server sees nothing.
    write_settings(daemon, stores={})
    try:
        refused = await rest.call("POST", "/api/weblets/install", json={"url": url, "name": "fetched-again"})
    finally:
        write_settings(daemon, stores={"test": str(daemon.home.parent / "store" / "catalogue.json")},
                       fetch={"allowed_hosts": ["127.0.0.1"], "ca_file": str(daemon.home.parent / "ca.pem")})  # fmt: skip
    assert refused.status_code == 422
    assert refused.json() == {"error": "fetch_failed", "detail": "refused: 127.0.0.1 is a loopback address"}
    assert site.paths() == ["/plain.zip"]


async def test_a_download_reports_progress_through_a_job(daemon: DaemonProcess, pki: Pki, nursery: trio.Nursery) -> None:  # noqa: F811
    site = Server(pki.server_context())
    await site.start(nursery)
    bundle = versioned_zip("1.0.0", title="Progress") + b""
    site.routes = {"/p.zip": lambda: Reply(200, bundle, chunks=4)}
    async with manager(daemon) as m:
        job = await E(m).start_install({"url": f"https://127.0.0.1:{site.port}/p.zip", "name": "progress"})
        events = []
        while not (event := await E(job).next())["done"]:
            events.append(event["value"])
        result = await E(job).result()
    progress = [e["progress"] for e in events if "progress" in e]
    assert progress[0]["received"] == 0 and progress[-1]["received"] == len(bundle)
    assert events[-1] == {"done": True, "result": result} and result["name"] == "progress"


async def test_a_bundle_whose_hash_differs_from_the_catalogue_is_refused_and_leaves_nothing(daemon: DaemonProcess, rest: Rest) -> None:
    before = daemon.out("list")
    r = await rest.call("POST", "/api/weblets/install", json={"store": "test", "id": "tampered", "name": "tampered"})
    assert r.status_code == 422 and r.json()["error"] == "hash_mismatch", r.text
    assert r.json()["detail"].startswith("refused: the bundle of tampered 1.0.0 does not match the store's sha256")
    assert daemon.out("list") == before
    assert "tampered" not in await rest.weblets()


async def test_an_update_that_adds_a_power_asks_again_and_refusing_keeps_the_old_version_running(daemon: DaemonProcess, rest: Rest) -> None:
    installed = (await rest.ok("POST", "/api/weblets/install", 201, json={"store": "test", "id": "versioned", "version": "1.0.0"}))["weblet"]
    wid, name = installed["id"], installed["name"]
    panel = (await rest.ok("POST", f"/api/weblets/{wid}/instances", 201))["instance"]
    listed = (await rest.weblets())[name]
    assert listed["update"] == {"version": "2.0.0", "powers_added": ["notes"], "notes": ""}
    async with daemon.connect() as (host, _, _):
        guest_before = (await E(E(host).lookup(name)).info())["guest_handle"]

    refused = await rest.call("POST", f"/api/weblets/{wid}/update", json={})
    assert refused.status_code == 409
    assert refused.json()["error"] == "powers_consent_required" and refused.json()["powers"] == ["notes"]
    assert (await rest.weblets())[name]["version"] == "1.0.0"
    async with panel_session(rest.port, panel["label"]) as fetched:
        assert await E(fetched["app"]).version() == "1.0.0"  # the old version still runs

    done = await rest.ok("POST", f"/api/weblets/{wid}/update", json={"accept_powers": ["notes"]})
    assert done["updated"] is True and done["weblet"]["version"] == "2.0.0" and done["weblet"]["id"] == wid
    assert done["weblet"]["instances"][0]["panel"] == panel["panel"] and done["weblet"]["update"] is None
    async with daemon.connect() as (host, _, _):
        assert (await E(E(host).lookup(name)).info())["guest_handle"] == guest_before  # the same guest, the same name
    async with panel_session(rest.port, panel["label"]) as fetched:  # the same origin, now the new version
        assert await E(fetched["app"]).version() == "2.0.0"
    again = await rest.ok("POST", f"/api/weblets/{wid}/update", json={})
    assert again["updated"] is False


async def test_enable_disable_update_and_delete_change_what_the_agent_sees_at_once(daemon: DaemonProcess, rest: Rest) -> None:
    wid = (await rest.ok("POST", "/api/weblets/install", 201, json={"store": "test", "id": "plain", "version": "1.0.0", "name": "seen"}))["weblet"]["id"]
    panel = (await rest.ok("POST", f"/api/weblets/{wid}/instances", 201, json={"config": {"colour": "blue"}}))["panel"]
    assert re.fullmatch(r"seen-[0-9a-f]{12}", panel)

    async with manager(daemon) as m:

        async def seen() -> list[tuple[str, str]]:
            return [(e["weblet"], e["manifest"]["version"]) for e in await E(m).manifests_for([panel, "inbox", "nobody-123"])]

        assert await seen() == [(wid, "1.0.0"), ("inbox", "1.0.0")]
        await rest.ok("POST", "/api/weblets/enable", json={"id": wid, "enabled": False})
        assert await seen() == [("inbox", "1.0.0")]
        assert (await http(rest.port, "/", f"{(await E(m).instances(wid))[0]['label']}.localhost:{rest.port}"))[0] == 404
        await rest.ok("POST", "/api/weblets/enable", json={"id": wid, "enabled": True})
        assert await seen() == [(wid, "1.0.0"), ("inbox", "1.0.0")]
        await rest.ok("POST", f"/api/weblets/{wid}/update", json={})
        assert await seen() == [(wid, "1.1.0"), ("inbox", "1.0.0")]
        await rest.ok("DELETE", f"/api/weblets/{wid}")
        assert await seen() == [("inbox", "1.0.0")]
    assert "seen" not in daemon.out("list").split()


async def test_panels_are_created_configured_and_closed(rest: Rest) -> None:
    wid = (await rest.ok("POST", "/api/weblets/install", 201, files={"file": ("c.zip", counter_zip())}, data={"name": "panels"}))["weblet"]["id"]
    first = (await rest.ok("POST", f"/api/weblets/{wid}/instances", 201, json={"config": {"size": "big"}}))["instance"]
    second = (await rest.ok("POST", f"/api/weblets/{wid}/instances", 201))["instance"]
    assert first["label"] != second["label"] and first["url"] == f"http://{first['label']}.localhost:{rest.port}/"
    changed = await rest.ok("PUT", f"/api/weblets/{wid}/instances/{first['panel']}", json={"config": {"size": "small"}})
    assert changed["instance"]["config"] == {"size": "small"}
    async with panel_session(rest.port, first["label"]) as fetched:
        assert await E(fetched["instance"]).config() == {"size": "small"}
        assert await E(fetched["instance"]).panel() == first["panel"]
    await rest.ok("DELETE", f"/api/weblets/{wid}/instances/{second['panel']}")
    assert [i["panel"] for i in (await rest.ok("GET", f"/api/weblets/{wid}/instances"))["instances"]] == [first["panel"]]
    assert (await http(rest.port, "/", f"{second['label']}.localhost:{rest.port}"))[0] == 404


async def test_the_store_lists_versions_powers_and_what_is_installed(rest: Rest) -> None:
    store = await rest.ok("GET", "/api/store", params={"store": "test"})
    assert store["stores"] == ["examples", "test"]
    versioned = next(w for w in store["weblets"] if w["id"] == "versioned")
    assert [(v["version"], v["powers"]) for v in versioned["versions"]] == [("2.0.0", ["notes"]), ("1.0.0", [])]
    unknown = await rest.call("GET", "/api/store", params={"store": "/etc"})
    assert unknown.status_code == 422 and unknown.json()["detail"].startswith("no store named '/etc'")


# ---- the REST API's rules ------------------------------------------------------------------------------
def _routes(document: dict[str, Any]) -> list[tuple[str, str, bool]]:
    out = []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            out.append((method.upper(), re.sub(r"\{\w+\}", "x" * 32, path), operation.get("security") != []))
    return out


async def test_every_route_in_the_openapi_document_refuses_missing_wrong_and_guest_tokens(daemon: DaemonProcess, rest: Rest) -> None:
    document = await rest.ok("GET", "/api/openapi.json", token=None)
    routes = _routes(document)
    from ocapd.gateway.api import ROUTES

    assert {(m, p) for m, p, _ in routes} == {(r.method, re.sub(r"\{\w+\}", "x" * 32, r.path)) for r in ROUTES}
    assert len(routes) >= 12
    daemon.out("mkguest", "api-visitor", "api-visitor-agent")
    minted = daemon.cli("tokens", "mint", "--as", "api-visitor-agent", "--json").stdout
    guest = re.search(r'"token": "([^"]+)"', minted).group(1)  # type: ignore[union-attr]
    for n, (method, path, secured) in enumerate(routes):
        if not secured:
            continue
        body = {"json": {}} if method in ("POST", "PUT") else {}
        missing = await rest.call(method, path, token=None, **body)
        # A wrong token from a fresh loopback address each time: the first failure per client is cheap.
        wrong = await rest.call(method, path, token="not-a-token", source=f"127.0.1.{n + 1}", **body)
        as_guest = await rest.call(method, path, token=guest, **body)
        for response, status in ((missing, 401), (wrong, 401), (as_guest, 403)):
            assert response.status_code == status, (method, path, response.status_code, response.text)
            assert set(response.json()) == {"error", "detail"} and "\n" not in response.json()["detail"]
        # With the host's token the route exists (whatever it then says about the made-up id).
        reached = await rest.call(method, path, **body)
        if reached.status_code >= 400:
            assert reached.json()["error"] not in ("method_not_allowed", "unauthorized", "forbidden"), (method, path, reached.text)
            assert not reached.json()["detail"].startswith("no such API route")


async def test_the_api_is_only_on_the_chat_site_and_refuses_foreign_origins(daemon: DaemonProcess, rest: Rest) -> None:
    port = rest.port
    other_host = await rest.call("GET", "/api/weblets/list", headers={"Host": f"{'a' * 32}.localhost:{port}"})
    assert other_host.status_code == 404
    foreign = await rest.call("GET", "/api/weblets/list", headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403 and foreign.json()["error"] == "forbidden"
    own = await rest.call("GET", "/api/weblets/list", headers={"Origin": f"http://localhost:{port}"})
    assert own.status_code == 200


async def test_bad_requests_get_one_line_json_errors_and_no_route_takes_a_path(rest: Rest) -> None:
    cases = [
        (await rest.call("POST", "/api/weblets/install", content=b'{"url": "x"}', headers={"Content-Type": "text/plain"}), 415),
        (await rest.call("POST", "/api/weblets/install", content=b"{" + b" " * (70 * 1024) + b"}", headers={"Content-Type": "application/json"}), 413),
        (await rest.call("POST", "/api/weblets/install", json={"file": "/etc/passwd"}), 400),
        (await rest.call("POST", "/api/weblets/install", json={"path": "/etc/passwd"}), 400),
        (await rest.call("POST", "/api/weblets/install", json={"url": "http://example.com/"}), 422),
        (await rest.call("POST", "/api/weblets/install", json=[1, 2]), 400),
        (await rest.call("DELETE", "/api/weblets/" + "0" * 32), 404),
        (await rest.call("DELETE", "/api/weblets/inventory"), 409),
        (await rest.call("PATCH", "/api/weblets/list"), 405),
        (await rest.call("GET", "/api/nothing-here"), 404),
        (await rest.call("POST", "/api/weblets/install", files={"file": ("x.zip", b"not a zip")}), 422),
    ]
    for response, status in cases:
        assert response.status_code == status, (status, response.text)
        body = response.json()
        assert set(body) == {"error", "detail"} and body["detail"] and "\n" not in body["detail"], body
        assert response.headers["content-type"] == "application/json"


# ---- lifetime --------------------------------------------------------------------------------------------
async def test_panels_survive_a_restart_with_the_same_panel_ids_and_origins(tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path / "home", port=free_port())
    d.home.mkdir()
    d.start()
    try:
        rest = Rest(d, host_token(d))
        wid = (await rest.ok("POST", "/api/weblets/install", 201, json={"store": "examples", "id": "counter"}))["weblet"]["id"]
        panel = (await rest.ok("POST", f"/api/weblets/{wid}/instances", 201, json={"config": {"n": 1}}))["instance"]
        async with panel_session(rest.port, panel["label"]) as fetched:
            assert await E(fetched["app"]).incr() == 1
        d.restart()
        rest = Rest(d, host_token(d))
        after = (await rest.ok("GET", f"/api/weblets/{wid}/instances"))["instances"]
        assert [(i["panel"], i["label"], i["url"], i["config"]) for i in after] == [(panel["panel"], panel["label"], panel["url"], {"n": 1})]
        status, headers, _ = await http(rest.port, "/", f"{panel['label']}.localhost:{rest.port}")
        assert status == 200 and f"ws://{panel['label']}.localhost:{rest.port}/_ocapd/ws" in headers["content-security-policy"]
        async with panel_session(rest.port, panel["label"]) as fetched:
            assert await E(fetched["app"]).incr() == 1  # a fresh backend (heap state is not kept), on the same origin
            assert await E(fetched["app"]).invoke("value", {}) == {"count": 1}
    finally:
        d.stop()


async def test_weblets_from_a_state_folder_older_than_the_registry_are_adopted(tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path / "home")
    d.home.mkdir()
    d.start()
    try:
        async with d.connect() as (host, _, _):
            await E(host).install_weblet(counter_zip(), "old-counter", "NONE")
        d.stop()
        # What a state folder from before the registry looks like: no registry tables at all.
        con = sqlite3.connect(d.db_path)
        with con:
            con.execute("DROP TABLE weblet_instances")
            con.execute("DROP TABLE installed_weblets")
            con.execute("DELETE FROM meta WHERE key = 'schema_version:weblets'")
        con.close()
        d.start()
        async with manager(d) as m:
            listed = {w["name"]: w for w in await E(m).list()}
        assert (listed["old-counter"]["source"], listed["old-counter"]["version"], listed["old-counter"]["enabled"]) == ("file", "1.1.0", True)
        con = sqlite3.connect(d.db_path)
        try:
            assert con.execute("SELECT value FROM meta WHERE key = 'schema_version:weblets'").fetchone() == ("1",)
        finally:
            con.close()
    finally:
        d.stop()


async def test_a_removed_weblet_takes_its_names_and_panels_but_not_what_it_was_given(daemon: DaemonProcess, rest: Rest) -> None:
    wid = (await rest.ok("POST", "/api/weblets/install", 201, files={"file": ("c.zip", counter_zip())}, data={"name": "goner"}))["weblet"]["id"]
    await rest.ok("POST", f"/api/weblets/{wid}/instances", 201)
    await rest.ok("DELETE", f"/api/weblets/{wid}")
    assert "goner" not in daemon.out("list").split()
    assert (await rest.call("GET", f"/api/weblets/{wid}/instances")).status_code == 404
    async with manager(daemon) as m:
        with pytest.raises(RemoteError, match="no installed weblet"):
            await E(m).create_instance(wid)


# ---- the shipped catalogue -------------------------------------------------------------------------------
def test_the_shipped_catalogue_pins_the_examples_as_they_are() -> None:
    catalogue = json.loads(examples_catalogue_path().read_text())
    assert {w["id"] for w in catalogue["weblets"]} == {"counter", "notes"}
    for entry in catalogue["weblets"]:
        (version,) = entry["versions"]
        bundle = read_bundle(examples_catalogue_path().parent / version["bundle"])
        assert version["digest"] == bundle.digest, f"update examples/store.json: {entry['id']} is now {bundle.digest}"
        assert (version["version"], version["powers"]) == (bundle.manifest.version, bundle.manifest.powers)
        assert bundle.manifest.interface is not None
    counter = read_bundle(EXAMPLES / "weblets" / "counter").manifest.interface
    notes = read_bundle(EXAMPLES / "weblets" / "notes").manifest.interface
    assert counter is not None and notes is not None
    assert {n: c.readOnly for n, c in counter.commands.items()} == {"increment": False, "value": True}
    assert {n: c.readOnly for n, c in notes.commands.items()} == {"append": False, "read": True}


def test_the_counter_backend_answers_its_commands() -> None:
    namespace: dict[str, Any] = {"__name__": "counter_backend"}
    exec(compile((EXAMPLES / "weblets" / "counter" / "backend.py").read_text(), "backend.py", "exec"), namespace)  # noqa: S102
    counter = namespace["make"](None, None)
    assert counter.invoke("increment", {}) == {"count": 1}
    assert counter.invoke("increment", {"by": 2}) == {"count": 3}
    assert counter.invoke("value", {}) == {"count": 3} and counter.get() == 3
    with pytest.raises(LookupError):
        counter.invoke("reset", {})


def test_versions_order_as_people_expect() -> None:
    ordered = ["0.9", "1.0.0-alpha", "1.0.0-beta.2", "1.0.0-beta.10", "1.0.0", "1.0.1", "1.2", "1.10.0"]
    assert sorted(reversed(ordered), key=version_key) == ordered
    assert version_key("1.0.0+build.7") == version_key("1.0.0")


async def test_a_local_catalogue_cannot_point_outside_its_folder(tmp_path: Path) -> None:
    from ocapd.daemon.weblet_settings import WebletSettings
    from ocapd.daemon.weblet_store import StoreError, fetch_store_bundle, load_catalogue

    folder = tmp_path / "store"
    folder.mkdir()
    secret = tmp_path / "secret.zip"
    secret.write_bytes(counter_zip())
    shutil.copytree(EXAMPLES / "weblets" / "counter", folder / "counter")
    catalogue = {"ocapdStore": 1, "weblets": [
        {"id": "escape", "title": "Escape", "versions": [{"version": "1.1.0", "bundle": "../secret.zip", "sha256": sha(secret.read_bytes())}]},
        {"id": "folder", "title": "Folder", "versions": [{"version": "1.1.0", "bundle": "counter", "sha256": "0" * 64}]},
    ]}  # fmt: skip
    (folder / "catalogue.json").write_text(json.dumps(catalogue))
    settings = WebletSettings(stores={"local": str(folder / "catalogue.json")})
    loaded = await load_catalogue("local", settings)
    with pytest.raises(StoreError, match="outside the catalogue's folder"):
        await fetch_store_bundle(loaded, "escape", None, policy=settings.fetch_policy())
    with pytest.raises(StoreError, match="only a \"digest\" can pin"):
        await fetch_store_bundle(loaded, "folder", None, policy=settings.fetch_policy())


# ---- the command line ------------------------------------------------------------------------------------
def test_the_cli_manages_weblets(daemon: DaemonProcess, tmp_path: Path) -> None:
    assert "counter" in daemon.out("weblets", "store")
    out = daemon.out("weblets", "install", "plain", "--store", "test", "--version", "1.0.0", "-n", "cli-plain")
    assert out == "installed Plain 1.0.0 as cli-plain (from store, powers NONE)"
    listed = {w["name"]: w for w in json.loads(daemon.out("weblets", "list", "--json"))}
    assert listed["cli-plain"]["update"]["version"] == "1.1.0" and listed["inventory"]["builtin"]
    assert "update: 1.1.0" in next(line for line in daemon.out("weblets", "list").splitlines() if line.startswith("cli-plain"))
    assert daemon.out("weblets", "disable", "cli-plain") == "cli-plain is disabled"
    assert daemon.out("weblets", "enable", listed["cli-plain"]["id"][:12]) == "cli-plain is enabled"
    assert daemon.out("weblets", "update", "cli-plain") == "updated cli-plain from 1.0.0 to 1.1.0"
    assert daemon.out("weblets", "update", "cli-plain") == "cli-plain is up to date (1.1.0)"
    assert daemon.out("weblets", "remove", "cli-plain") == "removed cli-plain"
    # A new power is never accepted silently.
    daemon.out("weblets", "install", "versioned", "--store", "test", "--version", "1.0.0", "-n", "cli-versioned")
    refused = daemon.cli("weblets", "update", "cli-versioned", check=False)
    assert refused.returncode == 1 and "asks for more powers: notes" in refused.stderr
    assert daemon.out("weblets", "update", "cli-versioned", "--accept-powers", "notes") == "updated cli-versioned from 1.0.0 to 2.0.0"
    # From a folder, and the digest a catalogue would pin for it.
    folder = tmp_path / "counter"
    shutil.copytree(EXAMPLES / "weblets" / "counter", folder)
    assert daemon.out("weblets", "install", str(folder), "-n", "cli-counter").startswith("installed Counter 1.1.0 as cli-counter")
    digest = json.loads(daemon.out("weblets", "digest", str(folder), "--json"))
    assert digest["digest"] == read_bundle(folder).digest and "sha256" not in digest
    unknown = daemon.cli("weblets", "enable", "no-such-weblet", check=False)
    assert unknown.returncode == 1 and "no installed weblet 'no-such-weblet'" in unknown.stderr
