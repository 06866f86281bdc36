"""The gateway as a browser and a local program see it: a real daemon, real sockets on 127.0.0.1."""

from __future__ import annotations

import os
import posixpath
import re
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from daemon_harness import DaemonProcess
from gateway_clients import http, websocket
from trio_websocket import ConnectionClosed, ConnectionRejected

from ocapd.captp import (
    WEBSOCKET_BATCH_SUBPROTOCOL,
    E,
    RemoteError,
    WebSocketTransport,
    open_connection,
    open_websocket_connection,
)
from ocapd.gateway import INVALID_TOKEN_MESSAGE, FailureThrottle, InvalidToken, build_table, chat_csp
from ocapd.gateway.static import DEFAULT_STATIC_DIR, split_runtime
from ocapd.gateway.tokens import FIRST_PENALTY, MAX_PENALTY

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")



@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory):
    with DaemonProcess(tmp_path_factory.mktemp("gw") / "home", port=0) as d:
        yield d


@pytest.fixture
def own_daemon(tmp_path: Path):
    with DaemonProcess(tmp_path / "home", port=0) as d:
        yield d


def token_of(url: str) -> str:
    return url.split("#token=", 1)[1]


@asynccontextmanager
async def captp_session(port: int, **kwargs: Any) -> AsyncIterator[Any]:
    """A CapTP session through the gateway; yields the Gateway bootstrap."""
    async with websocket(port, **kwargs) as ws:
        async with open_websocket_connection(ws, None, name="browser") as conn:
            yield conn.bootstrap()


# -- HTTP -------------------------------------------------------------------------------------


async def test_the_chat_page_is_served_with_the_security_headers(daemon: DaemonProcess) -> None:
    port = daemon.gateway_port
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"LOCALHOST:{port}"):
        status, headers, body = await http(port, "/", host=host)
        assert status == 200
        assert headers["content-type"] == "text/html; charset=utf-8"
        assert headers["content-security-policy"] == chat_csp(port)
        assert "script-src 'self';" in headers["content-security-policy"]
        assert "'unsafe-inline'" not in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert body.lstrip().lower().startswith(b"<!doctype html>")
    status, headers, body = await http(port, "/_ocapd/captp.js")
    assert status == 200
    assert headers["content-type"] == "text/javascript; charset=utf-8"
    assert headers["x-content-type-options"] == "nosniff"


async def test_unknown_paths_hosts_and_methods_are_refused(daemon: DaemonProcess) -> None:
    port = daemon.gateway_port
    assert (await http(port, "/no-such-file.js"))[0] == 404
    assert (await http(port, "/_ocapd/no-such.js"))[0] == 404
    for host in ("evil.example", f"evil.example:{port}", f"localhost:{port + 1}", "localhost",
                 f"0123456789abcdef0123456789abcdef.localhost:{port}", f"localhost:{port}.evil.example"):
        status, headers, _ = await http(port, "/", host=host)
        assert status == 404, host
        assert headers["x-content-type-options"] == "nosniff"
    assert (await http(port, "/", host=None))[0] in (400, 404)
    assert (await http(port, "/", method="POST"))[0] == 405
    assert (await http(port, "/", method="DELETE"))[0] == 405


@pytest.mark.parametrize(
    "target",
    [
        "/../index.html",
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        "/..%2f..%2fgateway/app.py",
        "/vendor/../../gateway/app.py",
        "/_ocapd/../index.html",
        "//etc/passwd",
        "/etc/passwd",
        "/..\\..\\etc\\passwd",
        "/%00index.html",
        "/index.html%00",
        "/.%2e/index.html",
    ],
)
async def test_path_traversal_attempts_get_404(daemon: DaemonProcess, target: str) -> None:
    status, _, body = await http(daemon.gateway_port, target)
    assert status in (400, 404), target
    assert b"root:" not in body


async def test_an_absolute_form_request_target_is_not_a_path(daemon: DaemonProcess) -> None:
    port = daemon.gateway_port
    status, _, body = await http(port, f"http://localhost:{port}/../../etc/passwd")
    assert status in (400, 404)
    assert b"root:" not in body


def test_the_file_table_never_holds_symlinks_hidden_files_or_unknown_types(tmp_path: Path) -> None:
    static = tmp_path / "static"
    (static / "vendor").mkdir(parents=True)
    (static / "index.html").write_text("<!doctype html>")
    (static / "vendor" / "lib.mjs").write_text("export {}")
    (static / ".secret.js").write_text("x")
    (static / "notes.py").write_text("x")
    (static / "link.js").symlink_to(tmp_path / "outside.js")
    (tmp_path / "outside.js").write_text("outside")
    table = build_table(static)
    assert sorted(table) == ["/", "/index.html", "/vendor/lib.mjs"]
    assert build_table(tmp_path / "missing") == {}


#: A static ES module import or re-export of a relative URL ("./x.js", "../y.mjs").
RELATIVE_IMPORT = re.compile(r"""^\s*(?:import|export)\b[^;]*?\bfrom\s+"(\.{1,2}/[^"]+)";""", re.MULTILINE)


def test_the_runtime_serves_every_module_captp_js_and_weblet_js_import() -> None:
    # captp.js is an entry point that imports its parts by relative URL, so
    # each one must be reachable under /_ocapd/ on every virtual host.
    if not (DEFAULT_STATIC_DIR / "vendor").is_dir():
        pytest.fail("chat_host/static/vendor/ is missing (captp.js needs it): run `node chat_host/build_vendor.mjs`")
    _, runtime = split_runtime(build_table(DEFAULT_STATIC_DIR))
    seen: set[str] = set()
    todo = ["/_ocapd/captp.js", "/_ocapd/weblet.js"]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        assert path in runtime, f"{path} is imported but not served"
        for url in RELATIVE_IMPORT.findall(runtime[path].body.decode()):
            todo.append(posixpath.normpath(posixpath.join(posixpath.dirname(path), url)))
    assert {"/_ocapd/captp/session.js", "/_ocapd/captp/codec.js", "/_ocapd/vendor/msgpack.mjs"} <= seen
    assert all(p.startswith("/_ocapd/") for p in seen)


# -- WebSocket upgrades ------------------------------------------------------------------------


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "http://localhost:1", "https://localhost:{port}",
                                    "http://abc.localhost:{port}"])
async def test_a_websocket_from_a_foreign_origin_is_refused(daemon: DaemonProcess, origin: str) -> None:
    port = daemon.gateway_port
    with pytest.raises(ConnectionRejected) as info:
        async with websocket(port, origin=origin.format(port=port)):
            pass
    assert info.value.status_code == 403


async def test_the_pages_own_origins_and_origin_less_clients_may_connect(daemon: DaemonProcess) -> None:
    port = daemon.gateway_port
    for origin in (f"http://localhost:{port}", f"http://127.0.0.1:{port}", None):
        async with captp_session(port, origin=origin) as gateway:
            assert await E(gateway).ping() == "pong"


async def test_websocket_upgrades_to_unknown_hosts_or_paths_get_404(daemon: DaemonProcess) -> None:
    port = daemon.gateway_port
    for kwargs in ({"host": "evil.example"}, {"host": f"abc.localhost:{port}"}, {"path": "/_ocapd/echo"}, {"path": "/ws"}):
        with pytest.raises(ConnectionRejected) as info:
            async with websocket(port, **kwargs):
                pass
        assert info.value.status_code == 404, kwargs


# -- tokens -------------------------------------------------------------------------------------


async def test_a_wrong_token_gets_nothing_but_a_clear_error(daemon: DaemonProcess) -> None:
    port = daemon.gateway_port
    real = token_of(daemon.chat_url())
    async with captp_session(port) as gateway:
        for wrong in ("wrong", real[:-1], 42, "x" * 100_000):
            with pytest.raises(RemoteError) as info:
                await E(gateway).fetch(wrong)
            assert info.value.message == INVALID_TOKEN_MESSAGE
        # ... and the session still works: the right token gets the agent.
        assert "SELF" in await E(await E(gateway).fetch(real)).list()


async def test_failed_fetches_are_slowed_more_with_each_failure(autojump_clock) -> None:
    # Virtual time throughout: the penalties are checked exactly, without waiting them out.
    throttle = FailureThrottle(clock=trio.current_time)

    def bad() -> None:
        raise InvalidToken(INVALID_TOKEN_MESSAGE)

    for n in range(1, 5):
        start = trio.current_time()
        with pytest.raises(InvalidToken):
            await throttle.guard("127.0.0.1", bad)
        assert trio.current_time() - start == pytest.approx(FailureThrottle.penalty_for(n))
        assert FailureThrottle.penalty_for(n) >= FIRST_PENALTY
    assert throttle.failures("127.0.0.1") == 4 and throttle.failures("10.0.0.1") == 0
    assert FailureThrottle.penalty_for(2) == 2 * FailureThrottle.penalty_for(1)
    assert FailureThrottle.penalty_for(1000) == MAX_PENALTY
    assert await throttle.guard("10.0.0.1", lambda: "ok") == "ok"  # other clients pay nothing


async def test_a_host_token_fetches_the_host_which_works(daemon: DaemonProcess) -> None:
    token = token_of(daemon.chat_url())
    async with captp_session(daemon.gateway_port) as gateway:
        host = await E(gateway).fetch(token)
        names = await E(host).list()
        assert {"SELF", "AGENT", "ENDO"} <= set(names)
        await E(host).store_value({"from": "the browser"}, "from-browser")
        assert "from-browser" in await E(host).list()
    assert "the browser" in daemon.out("show", "from-browser")


async def test_the_gateway_takes_the_batch_subprotocol_when_offered_and_answers_a_burst_in_few_messages(
    daemon: DaemonProcess,
) -> None:
    # Several frames per message (docs/protocol.md §2): a page that offers
    # it gets it, ahead of the plain one; a page that does not is unchanged.
    token = token_of(daemon.chat_url())
    offer = [WEBSOCKET_BATCH_SUBPROTOCOL, "ocapd-captp", f"ocapd-token.{token}"]
    async with websocket(daemon.gateway_port, subprotocols=offer) as ws:
        assert ws.subprotocol == WEBSOCKET_BATCH_SUBPROTOCOL
        transport = WebSocketTransport(ws)
        takes: list[int] = []
        receive_frames = transport.receive_frames

        async def counted() -> list[bytes]:
            frames = await receive_frames()
            takes.append(len(frames))
            return frames

        transport.receive_frames = counted  # type: ignore[method-assign]
        async with open_connection(transport, None, name="browser") as conn:
            host = await E(conn.bootstrap()).fetch(token)
            takes.clear()
            answers = [E(host).has(f"name-{i}") for i in range(100)]
            assert [await a for a in answers] == [False] * 100
            assert sum(takes) >= 100 and len(takes) < 20
    async with websocket(daemon.gateway_port, subprotocols=["ocapd-captp"]) as ws:
        assert ws.subprotocol == "ocapd-captp"
        assert WebSocketTransport(ws).batching is False


async def test_a_guest_token_fetches_the_guest_without_host_powers(daemon: DaemonProcess) -> None:
    daemon.out("mkguest", "visitor", "visitor-agent")
    minted = daemon.cli("tokens", "mint", "--as", "visitor-agent", "--json").stdout
    token = re.search(r'"token": "([^"]+)"', minted).group(1)
    async with captp_session(daemon.gateway_port) as gateway:
        guest = await E(gateway).fetch(token)
        names = await E(guest).list()
        assert "HOST" in names and "ENDO" not in names
        with pytest.raises(RemoteError):
            await E(guest).store_value("x", "forbidden")
        with pytest.raises(RemoteError):
            await E(guest).provide_host("h", "h-agent")
        host_handle = await E(guest).lookup("HOST")
        with pytest.raises(RemoteError):
            await E(host_handle).list()


async def test_a_revoked_token_stops_working_for_new_sessions_only(daemon: DaemonProcess) -> None:
    port = daemon.gateway_port
    minted = daemon.cli("tokens", "mint", "--label", "to-revoke", "--json").stdout
    token = re.search(r'"token": "([^"]+)"', minted).group(1)
    token_id = re.search(r'"id": "([0-9a-f]+)"', minted).group(1)
    assert "to-revoke" in daemon.out("tokens", "list")
    async with captp_session(port) as gateway:
        host = await E(gateway).fetch(token)
        daemon.out("tokens", "revoke", token_id[:10])
        assert "to-revoke" not in daemon.out("tokens", "list")
        assert "SELF" in await E(host).list()  # the session that fetched it keeps its agent
        with pytest.raises(RemoteError, match=INVALID_TOKEN_MESSAGE):
            await E(gateway).fetch(token)
    async with captp_session(port) as gateway:
        with pytest.raises(RemoteError, match=INVALID_TOKEN_MESSAGE):
            await E(gateway).fetch(token)
    result = daemon.cli("tokens", "revoke", token_id, check=False)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "no token" in result.stderr


def test_ocapd_chat_prints_a_stable_url_and_where_shows_the_gateway(daemon: DaemonProcess) -> None:
    url = daemon.chat_url()
    assert re.fullmatch(rf"http://localhost:{daemon.gateway_port}/#token=[A-Za-z0-9_-]{{43}}", url)
    assert daemon.chat_url() == url
    assert daemon.out("where", "gateway") == f"http://localhost:{daemon.gateway_port}/"


# -- load and lifecycle -------------------------------------------------------------------------


async def test_200_concurrent_sessions_are_held_and_each_answers_a_ping(daemon: DaemonProcess) -> None:
    # The owner's sessions: each offers its token with the upgrade, as the chat page does
    # (sessions without one have a cap of their own, 64 by default: tests/test_gateway_limits.py).
    port = daemon.gateway_port
    protocols = ["ocapd-captp", f"ocapd-token.{token_of(daemon.chat_url())}"]
    n = 200
    opened = 0
    all_open = trio.Event()
    answers: list[str] = []

    async def one() -> None:
        nonlocal opened
        async with captp_session(port, subprotocols=protocols) as gateway:
            opened += 1
            if opened == n:
                all_open.set()
            await all_open.wait()
            answers.append(await E(gateway).ping())

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(one)
    assert answers == ["pong"] * n


async def test_stopping_the_daemon_closes_websockets_with_1001_and_tokens_survive(own_daemon: DaemonProcess) -> None:
    url = own_daemon.chat_url()
    port = own_daemon.gateway_port
    async with websocket(port) as ws:
        async with open_websocket_connection(ws, None, name="browser") as conn:
            assert "SELF" in await E(E(conn.bootstrap()).fetch(token_of(url))).list()
            assert own_daemon.proc is not None
            own_daemon.proc.send_signal(signal.SIGTERM)
            with trio.fail_after(10):
                await conn.wait_closed()
        with trio.fail_after(10):
            with pytest.raises(ConnectionClosed):
                while True:
                    await ws.get_message()
        assert ws.closed is not None and ws.closed.code == 1001
    own_daemon.proc.wait(timeout=15)
    assert not os.path.exists(own_daemon.home / "run" / "gateway.port")
    own_daemon.start()
    async with captp_session(own_daemon.gateway_port) as gateway:
        assert "SELF" in await E(E(gateway).fetch(token_of(url))).list()
