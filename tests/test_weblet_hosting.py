"""Weblet instances on their own origins: what the gateway serves them, and who may talk to them.

A real daemon with a gateway on a free port; clients connect to 127.0.0.1 and
name the virtual host in the Host header (and, for WebSockets, the page's
Origin), exactly as a browser at http://<label>.localhost:PORT/ would.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from daemon_harness import DaemonProcess, zip_bundle
from gateway_clients import http, websocket
from trio_websocket import ConnectionRejected

from ocapd.captp import E, RemoteError, SessionAborted, open_websocket_connection
from ocapd.workers.confine import probe

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "weblets"
LABEL = re.compile(r"[0-9a-f]{32}")

#: A counter-like weblet whose backend also tries to reach the network.
PROBER_BACKEND = '''
import socket
from ocapd.captp import Far

def make(powers, context):
    count = 0

    def incr():
        nonlocal count
        count += 1
        return count

    def dial(port):
        """Try a TCP connection to 127.0.0.1:port; say how it went."""
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=3)
        except OSError as e:
            return f"refused: {type(e).__name__}: {e}"
        s.close()
        return "connected"

    return Far("Prober", incr=incr, dial=dial)
'''




def counter_zip() -> bytes:
    return zip_bundle({p.name: p.read_bytes() for p in (EXAMPLES / "counter").iterdir() if p.is_file()})


def prober_zip() -> bytes:
    return zip_bundle(
        {
            "weblet.json": json.dumps({"title": "Prober", "backend": "backend.py"}),
            "index.html": "<!doctype html><title>prober</title><p>prober</p>",
            "backend.py": PROBER_BACKEND,
        }
    )


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory):
    with DaemonProcess(tmp_path_factory.mktemp("weblets") / "home", port=0) as d:
        yield d


@pytest.fixture(scope="module")
def installed(daemon: DaemonProcess) -> DaemonProcess:
    """The daemon with `counter` (the example) and `prober` installed, both NONE."""

    async def install() -> None:
        async with daemon.connect() as (host, _, _):
            await E(host).install_weblet(counter_zip(), "counter", "NONE")
            await E(host).install_weblet(prober_zip(), "prober", "NONE")

    trio.run(install)
    return daemon


async def open_weblet(d: DaemonProcess, name: str) -> dict[str, str]:
    async with d.connect() as (host, _, _):
        return await E(E(host).lookup(name)).open()


def vhost(label: str, port: int) -> str:
    return f"{label}.localhost:{port}"


@asynccontextmanager
async def weblet_session(port: int, label: str) -> AsyncIterator[dict[str, Any]]:
    """A CapTP session as the instance's own page opens it; yields ``fetch()``'s answer."""
    origin = f"http://{vhost(label, port)}"
    async with websocket(port, vhost(label, port), origin) as ws:
        async with open_websocket_connection(ws, None, name="weblet-page") as conn:
            yield await E(conn.bootstrap()).fetch()


async def refused_status(port: int, host: str, origin: str | None) -> int:
    with pytest.raises(ConnectionRejected) as info:
        async with websocket(port, host, origin):
            pass
    return info.value.status_code


# -- serving -----------------------------------------------------------------------------------


async def test_an_instance_is_served_on_its_own_origin_with_the_weblets_csp(installed: DaemonProcess) -> None:
    port = installed.gateway_port
    opened = await open_weblet(installed, "counter")
    label = opened["label"]
    assert LABEL.fullmatch(label)
    assert opened["url"] == f"http://{label}.localhost:{port}/"

    status, headers, body = await http(port, "/", vhost(label, port))
    assert status == 200
    assert body == (EXAMPLES / "counter" / "index.html").read_bytes()
    assert headers["content-type"] == "text/html; charset=utf-8"
    parts = [p.strip() for p in headers["content-security-policy"].split(";")]
    assert "default-src 'none'" in parts
    assert f"connect-src ws://{label}.localhost:{port}/_ocapd/ws" in parts
    assert [p for p in parts if p.startswith("connect-src")] == [f"connect-src ws://{label}.localhost:{port}/_ocapd/ws"]
    assert f"frame-ancestors http://localhost:{port}" in parts
    assert "object-src 'none'" in parts and "base-uri 'none'" in parts
    assert "script-src 'self'" in parts
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cross-origin-resource-policy"] == "same-origin"

    status, headers, body = await http(port, "/app.js", vhost(label, port))
    assert status == 200 and headers["content-type"] == "text/javascript; charset=utf-8"
    assert body == (EXAMPLES / "counter" / "app.js").read_bytes()
    for runtime in ("/_ocapd/weblet.js", "/_ocapd/captp.js", "/_ocapd/vendor/msgpack.mjs"):
        status, headers, _ = await http(port, runtime, vhost(label, port))
        assert status == 200, runtime
        assert headers["content-security-policy"].startswith("default-src 'none'")


@pytest.mark.parametrize(
    "target",
    [
        "/no-such-file.js", "/backend.py", "/weblet.json", "/index.html/", "/../index.html",
        "/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2fgateway/app.py", "/_ocapd/../app.js", "//etc/passwd",
        "/style.css%00", "/STYLE.CSS", "/_ocapd/../../daemon/kernel.py", "/index.html?x=/../../etc/passwd",
    ],
)  # fmt: skip
async def test_files_not_in_the_bundle_and_traversal_attempts_are_404(installed: DaemonProcess, target: str) -> None:
    port = installed.gateway_port
    label = (await open_weblet(installed, "counter"))["label"]
    status, headers, body = await http(port, target, vhost(label, port))
    if target.startswith("/index.html?"):  # a query string is not part of the path
        assert status == 200
        return
    assert status in (400, 404), target
    assert b"root:" not in body and b"import" not in body and b"def make" not in body


async def test_unknown_labels_are_404(installed: DaemonProcess) -> None:
    port = installed.gateway_port
    label = (await open_weblet(installed, "counter"))["label"]
    for host in (vhost("0" * 32, port), vhost(label.upper()[:-1] + "g", port), vhost(label[:-1], port),
                 vhost("x." + label, port), f"{label}.localhost:{port + 1}", f"{label}.localhost"):  # fmt: skip
        status, _, _ = await http(port, "/", host)
        assert status == 404, host
        status = await refused_status(port, host, f"http://{host}")
        assert status == 404, host


async def test_two_instances_of_one_weblet_get_different_origins(installed: DaemonProcess) -> None:
    first = await open_weblet(installed, "counter")
    second = await open_weblet(installed, "counter")
    assert first["label"] != second["label"] and first["url"] != second["url"]
    port = installed.gateway_port
    for opened in (first, second):
        assert (await http(port, "/", vhost(opened["label"], port)))[0] == 200


# -- the weblet's CapTP endpoint ---------------------------------------------------------------


async def test_the_weblets_page_gets_its_guest_and_its_backend(installed: DaemonProcess) -> None:
    port = installed.gateway_port
    label = (await open_weblet(installed, "counter"))["label"]
    async with weblet_session(port, label) as fetched:
        powers, app, instance = fetched["powers"], fetched["app"], fetched["instance"]
        assert await E(app).incr() == 1
        assert await E(app).incr() == 2
        assert await E(app).get() == 2
        # A NONE guest: its special names and nothing else (HOST is only the host's handle).
        assert sorted(await E(powers).list()) == ["AGENT", "HOST", "MAIN", "NONE", "SELF"]
        for method, args in (("store_value", ("x", "x")), ("install_weblet", (b"", "w")), ("provide_guest", ("a",)),
                             ("evaluate", (None, "1", [], [])), ("cancel", ("x",))):  # fmt: skip
            with pytest.raises(RemoteError, match="no method"):
                await getattr(E(powers), method)(*args)
        with pytest.raises(RemoteError):
            await E(E(powers).lookup("HOST")).list()  # the host's handle has no methods
        assert await E(instance).label() == label
        assert (await E(instance).manifest())["title"] == "Counter"
        await E(instance).emit("clicked", {"times": 2})
        with pytest.raises(RemoteError):
            await E(instance).emit("", None)
    async with installed.connect() as (_, facet, _):
        gateway = await E(facet).gateway()
        events = await E(gateway).instance_events(label)
        assert [(e["event"], e["payload"]) for e in events] == [("clicked", {"times": 2})]
        assert any(i["label"] == label for i in await E(gateway).list_instances())


async def test_a_page_may_register_commands_the_host_invokes(installed: DaemonProcess) -> None:
    from ocapd.captp import Far

    port = installed.gateway_port
    label = (await open_weblet(installed, "counter"))["label"]
    calls: list[tuple[str, Any]] = []

    def invoke(name: str, args: dict[str, Any]) -> str:
        calls.append((name, args))
        return f"ran {name}"

    async with weblet_session(port, label) as fetched:
        await E(fetched["instance"]).register_commands(Far("WebletCommands", invoke=invoke))
        async with installed.connect() as (_, facet, _):
            gateway = await E(facet).gateway()
            assert await E(gateway).invoke_command(label, "increment", {}) == "ran increment"
            with pytest.raises(RemoteError, match="declares no command"):
                await E(gateway).invoke_command(label, "format_disk", {})
    assert calls == [("increment", {})]


async def test_only_the_instances_own_origin_may_open_its_endpoint(installed: DaemonProcess) -> None:
    port = installed.gateway_port
    a = (await open_weblet(installed, "counter"))["label"]
    b = (await open_weblet(installed, "counter"))["label"]
    c = (await open_weblet(installed, "prober"))["label"]
    chat = f"http://localhost:{port}"
    for host, origin in (
        (vhost(b, port), f"http://{vhost(a, port)}"),  # weblet A on weblet B (same weblet)
        (vhost(c, port), f"http://{vhost(a, port)}"),  # ... and on another weblet
        (vhost(a, port), chat),  # the Chat UI on a weblet
        (vhost(a, port), f"http://127.0.0.1:{port}"),
        (vhost(a, port), None),  # no Origin: not a page of this instance
        (vhost(a, port), "null"),
        (vhost(a, port), f"https://{vhost(a, port)}"),
        (vhost(a, port), f"http://{a}.localhost:{port + 1}"),
        (vhost(a, port), "http://evil.example"),
    ):
        assert await refused_status(port, host, origin) == 403, (host, origin)
    # A weblet's page on the Chat UI's endpoint.
    for origin in (f"http://{vhost(a, port)}", f"http://{vhost(c, port)}"):
        assert await refused_status(port, f"localhost:{port}", origin) == 403
        assert await refused_status(port, f"127.0.0.1:{port}", origin) == 403
    # ... while its own origin gets in.
    async with weblet_session(port, a) as fetched:
        assert await E(fetched["instance"]).label() == a


async def test_closing_or_cancelling_ends_instances(installed: DaemonProcess) -> None:
    port = installed.gateway_port
    first = (await open_weblet(installed, "prober"))["label"]
    second = (await open_weblet(installed, "prober"))["label"]
    async with installed.connect() as (host, facet, _):
        gateway = await E(facet).gateway()
        assert await E(gateway).close_instance(first) is True
        assert await E(gateway).close_instance(first) is False
        assert (await http(port, "/", vhost(first, port)))[0] == 404
        async with weblet_session(port, second) as fetched:
            assert await E(fetched["app"]).incr() >= 1
            await E(host).cancel("prober")
            with pytest.raises(SessionAborted, match="closed: prober was cancelled"):  # the session ended with its instance
                with trio.fail_after(10):
                    await E(fetched["instance"]).label()
        assert (await http(port, "/", vhost(second, port)))[0] == 404
        assert await refused_status(port, vhost(second, port), f"http://{vhost(second, port)}") == 404
    # Opening again reincarnates the weblet, on a new origin.
    third = (await open_weblet(installed, "prober"))["label"]
    assert third not in (first, second)
    async with weblet_session(port, third) as fetched:
        # The weblet owns its backend: cancelling it stopped the worker, so the count starts anew.
        assert await E(fetched["app"]).incr() == 1


async def test_a_weblet_closes_only_its_own_instances(installed: DaemonProcess) -> None:
    port = installed.gateway_port
    mine = (await open_weblet(installed, "counter"))["label"]
    theirs = (await open_weblet(installed, "prober"))["label"]
    async with installed.connect() as (host, _, _):
        counter = await E(host).lookup("counter")
        with pytest.raises(RemoteError, match="no open instance"):
            await E(counter).close(theirs)
        assert (await http(port, "/", vhost(theirs, port)))[0] == 200
        assert await E(counter).close(mine) is True
        assert (await http(port, "/", vhost(mine, port)))[0] == 404


# -- CSP violation reports -----------------------------------------------------------------------

REPORT_TYPE = "application/csp-report"


def csp_report(directive: str = "script-src-elem", blocked: str = "inline", **extra: str) -> bytes:
    """A report as Chromium posts it to ``report-uri``."""
    return json.dumps(
        {"csp-report": {"document-uri": "http://x.localhost/", "effective-directive": directive,
                        "violated-directive": directive, "blocked-uri": blocked, "disposition": "enforce", **extra}}
    ).encode()  # fmt: skip


async def post_report(port: int, label: str, body: bytes, content_type: str = REPORT_TYPE) -> int:
    return (await http(port, "/_ocapd/csp-report", vhost(label, port), method="POST", body=body, content_type=content_type))[0]


async def notices_of(d: DaemonProcess, label: str) -> int:
    async with d.connect() as (_, facet, _):
        (instance,) = [i for i in await E(E(facet).gateway()).list_instances() if i["label"] == label]
        return instance["notices"]


async def test_the_weblets_csp_sends_violation_reports_to_its_own_origin(installed: DaemonProcess) -> None:
    port = installed.gateway_port
    label = (await open_weblet(installed, "counter"))["label"]
    _, headers, _ = await http(port, "/", vhost(label, port))
    parts = [p.strip() for p in headers["content-security-policy"].split(";")]
    # report-uri, not report-to: Chromium posts report-uri at once, and ignores it when report-to is present.
    assert "report-uri /_ocapd/csp-report" in parts
    assert not [p for p in parts if p.startswith("report-to")]


async def test_a_csp_report_becomes_one_notice_for_the_holder_of_that_weblet(installed: DaemonProcess) -> None:
    port = installed.gateway_port
    mine = (await open_weblet(installed, "counter"))["label"]
    other = (await open_weblet(installed, "counter"))["label"]
    async with installed.connect() as (host, _, _):
        counter = await E(host).lookup("counter")
        prober = await E(host).lookup("prober")
        with pytest.raises(RemoteError, match="no open instance"):
            await E(prober).follow_notices(mine)  # only the weblet's own instances
        stream = await E(counter).follow_notices(mine)
        assert await post_report(port, mine, csp_report()) == 204
        with trio.fail_after(10):
            first = await E(stream).next()
        assert first["value"] == {"label": mine, "seq": 1, "directive": "script-src", "blocked": "inline"}
        # The same violation again, and one on another instance: nothing new here.
        assert await post_report(port, mine, csp_report("script-src-elem", "inline")) == 204
        assert await post_report(port, other, csp_report("style-src-attr", "inline")) == 204
        # Only what the browser says, reduced to known words: a URL to its origin, unknown directives dropped.
        assert await post_report(port, mine, csp_report("<img src=x onerror=alert(1)>", "inline")) == 204
        assert await post_report(port, mine, csp_report("connect-src", "http://evil.example:81/a?b=<script>")) == 204
        with trio.fail_after(10):
            second = await E(stream).next()
        assert second["value"] == {"label": mine, "seq": 2, "directive": "connect-src", "blocked": "http://evil.example:81"}
        assert await post_report(port, mine, csp_report("img-src", "<b>x</b>")) == 204
        with trio.fail_after(10):
            third = await E(stream).next()
        assert third["value"]["blocked"] == "other"
    assert await notices_of(installed, mine) == 3
    assert await notices_of(installed, other) == 1


async def test_csp_reports_are_bounded_in_size_kind_rate_and_number(installed: DaemonProcess) -> None:
    port = installed.gateway_port
    label = (await open_weblet(installed, "counter"))["label"]
    assert await post_report(port, label, csp_report(), content_type="text/plain") == 415  # a page's own form or fetch
    assert await post_report(port, label, b"not json") == 400
    assert await post_report(port, label, csp_report(extra="x" * (64 * 1024))) == 413
    assert await post_report(port, "0" * 32, csp_report()) == 404
    assert (await http(port, "/_ocapd/csp-report", method="POST", body=csp_report(), content_type=REPORT_TYPE))[0] == 405
    # A flood of different violations: refused once the instance's allowance is spent, and few are kept.
    statuses = [await post_report(port, label, csp_report("connect-src", f"http://h{i}.example")) for i in range(100)]
    assert statuses.count(429) > 0 and set(statuses) == {204, 429}
    assert 0 < await notices_of(installed, label) <= 8


# -- confinement ---------------------------------------------------------------------------------


async def test_a_none_weblets_backend_cannot_open_a_socket(installed: DaemonProcess) -> None:
    netns = probe()["netns"]
    if not netns["supported"]:
        pytest.skip(f"no network namespaces here: {netns.get('reason')}")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.setblocking(False)
    try:
        port = installed.gateway_port
        label = (await open_weblet(installed, "prober"))["label"]
        async with weblet_session(port, label) as fetched:
            answer = await E(fetched["app"]).dial(listener.getsockname()[1])
        assert answer.startswith("refused:"), answer
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever arrived
    finally:
        listener.close()


# -- lifetime ------------------------------------------------------------------------------------


async def test_installed_weblets_survive_a_restart_and_open_on_a_new_origin(tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path / "home", port=0)
    d.home.mkdir()
    d.start()
    try:
        async with d.connect() as (host, _, _):
            await E(host).install_weblet(counter_zip(), "counter", "NONE")
        before = await open_weblet(d, "counter")
        d.restart()
        port = d.gateway_port
        assert (await http(port, "/", vhost(before["label"], port)))[0] == 404  # instances end with the daemon
        async with d.connect() as (host, _, _):
            assert "counter" in await E(host).list()
        after = await open_weblet(d, "counter")
        assert after["label"] != before["label"]
        assert (await http(port, "/", vhost(after["label"], port)))[0] == 200
        async with weblet_session(port, after["label"]) as fetched:
            assert await E(fetched["app"]).incr() == 1
    finally:
        d.stop()
