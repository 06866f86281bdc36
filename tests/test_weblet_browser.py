"""Weblet instances in a real headless Chromium: the isolation a page of a weblet actually gets.

The host page is the Chat UI's own origin (http://localhost:PORT/); each test
puts instances in iframes there the way a weblet panel does
(``sandbox="allow-scripts allow-same-origin allow-forms"``, src = the URL
``open()`` returned), then acts from inside a frame. The browser is Debian's
``chromium`` driven by Playwright for Python (no browser is ever downloaded).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import expect, launch_chromium, requires_chromium
from daemon_harness import DaemonProcess

SANDBOX = "allow-scripts allow-same-origin allow-forms"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "weblets"

pytestmark = requires_chromium


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with launch_chromium(tmp_path_factory.mktemp("chromium-home")) as b:
        yield b


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    d = DaemonProcess(tmp_path_factory.mktemp("weblet-browser") / "home", port=0)
    d.home.mkdir()
    d.start()
    try:
        d.out("install", str(EXAMPLES / "counter"), "-n", "counter")
        yield d
    finally:
        d.stop()


class HostPage:
    """A fresh context with a page on the Chat UI's origin, and weblet frames added to it."""

    def __init__(self, browser: Any, d: DaemonProcess) -> None:
        self.port = d.gateway_port
        self.daemon = d
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.console: list[str] = []
        self.page.on("console", lambda m: self.console.append(m.text))
        self.url = f"http://localhost:{self.port}/"
        self.page.goto(self.url)

    def open_frame(self, frame_id: str) -> tuple[Any, str]:
        """Open a new instance of the counter and show it in an iframe; (its frame, its URL)."""
        url = self.daemon.out("open", "counter")
        assert url.startswith("http://") and url.endswith(f".localhost:{self.port}/"), url
        self.page.evaluate(
            """([id, url, sandbox]) => new Promise((resolve, reject) => {
                const frame = document.createElement("iframe");
                frame.id = id;
                frame.setAttribute("sandbox", sandbox);
                frame.addEventListener("load", resolve, { once: true });
                frame.addEventListener("error", reject, { once: true });
                frame.src = url;
                document.body.append(frame);
            })""",
            [frame_id, url, SANDBOX],
        )
        frame = next(f for f in self.page.frames if f.url == url)
        return frame, url

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def host(browser: Any, daemon: DaemonProcess) -> Iterator[HostPage]:
    page = HostPage(browser, daemon)
    yield page
    page.close()


#: Run inside a frame: record CSP violations from now on.
WATCH_VIOLATIONS = """() => {
    window.__violations = [];
    document.addEventListener("securitypolicyviolation",
        (e) => window.__violations.push(e.effectiveDirective + " " + e.blockedURI));
}"""


def test_a_weblet_frame_cannot_reach_or_navigate_its_host_page(host: HostPage) -> None:
    frame, url = host.open_frame("w0")
    seen = frame.evaluate(
        """() => {
            const out = {};
            try { out.parent = typeof parent.document; } catch (e) { out.parent = e.name; }
            try { out.top = typeof top.document.body; } catch (e) { out.top = e.name; }
            out.frameElement = frameElement === null ? "null" : "visible";
            try { out.storage = String(parent.localStorage); } catch (e) { out.storage = e.name; }
            try { out.popup = window.open("http://example.com/") === null ? "blocked" : "opened"; }
            catch (e) { out.popup = e.name; }
            try { top.location = "http://example.com/"; out.navigate = "no error"; }
            catch (e) { out.navigate = e.name; }
            out.origin = location.origin;
            return out;
        }"""
    )
    assert seen["parent"] == "SecurityError" and seen["top"] == "SecurityError"
    assert seen["frameElement"] == "null"
    assert seen["storage"] == "SecurityError"
    assert seen["popup"] == "blocked"
    assert seen["origin"] + "/" == url
    host.page.wait_for_timeout(300)  # a top navigation, had it been allowed, would have started by now
    assert host.page.url == host.url
    assert host.page.main_frame.evaluate("location.href") == host.url
    assert len(host.context.pages) == 1


def test_a_weblet_cannot_open_the_chat_websocket_or_fetch_undeclared_hosts(host: HostPage) -> None:
    frame, _ = host.open_frame("w0")
    frame.evaluate(WATCH_VIOLATIONS)
    port = host.port
    ws = frame.evaluate(
        """(url) => new Promise((resolve) => {
            let ws;
            try { ws = new WebSocket(url); } catch (e) { resolve("threw " + e.name); return; }
            ws.onopen = () => resolve("opened");
            ws.onerror = () => resolve("error");
            ws.onclose = (e) => resolve("closed " + e.code);
            setTimeout(() => resolve("still connecting: state " + ws.readyState), 5000);
        })""",
        f"ws://localhost:{port}/_ocapd/ws",
    )
    assert ws == "error" or ws.startswith("closed") or ws.startswith("threw"), ws
    for target in ("https://example.com/", f"http://localhost:{port}/", f"http://127.0.0.1:{port + 1}/"):
        result = frame.evaluate(
            """(url) => Promise.race([
                fetch(url).then((r) => "fetched " + r.status, (e) => "failed " + e.name),
                new Promise((resolve) => setTimeout(() => resolve("no answer"), 5000)),
            ])""",
            target,
        )
        assert result == "failed TypeError", (target, result)
    frame.wait_for_function("window.__violations.length >= 4")
    violations = frame.evaluate("window.__violations")
    assert all(v.startswith("connect-src ") for v in violations), violations
    blocked = " ".join(violations)
    assert f"ws://localhost:{port}/_ocapd/ws" in blocked
    assert "https://example.com/" in blocked and f"http://localhost:{port}/" in blocked


def test_two_instances_cannot_script_each_other(host: HostPage) -> None:
    first, _ = host.open_frame("w0")
    second, second_url = host.open_frame("w1")
    assert first.url != second.url
    seen = first.evaluate(
        """() => {
            const other = parent.frames[1];
            const out = {};
            try { out.document = typeof other.document; } catch (e) { out.document = e.name; }
            try { out.href = other.location.href; } catch (e) { out.href = e.name; }
            try { out.storage = String(other.localStorage); } catch (e) { out.storage = e.name; }
            try { other.location = "about:blank"; out.navigate = "no error"; } catch (e) { out.navigate = e.name; }
            return out;
        }"""
    )
    assert {k: seen[k] for k in ("document", "href", "storage")} == dict.fromkeys(("document", "href", "storage"), "SecurityError")
    host.page.wait_for_timeout(300)
    assert second.evaluate("location.href") == second_url  # a sibling may not navigate it either


def test_the_counter_renders_and_counts_through_its_backend(host: HostPage) -> None:
    host.open_frame("w0")
    counter = host.page.frame_locator("#w0")
    button = counter.locator("#incr")
    expect(button).to_be_enabled()  # connected, fetched its app, read the count
    start = int(counter.locator("#count").inner_text())
    button.click()
    expect(counter.locator("#count")).to_have_text(str(start + 1))
    expect(button).to_be_enabled()
    button.click()
    expect(counter.locator("#count")).to_have_text(str(start + 2))
    expect(counter.locator("#status")).to_have_text("")
    # The example runs under its CSP without a single violation.
    assert not [m for m in host.console if "Content Security Policy" in m], host.console


def test_the_sdk_hands_commands_to_the_host_and_records_events(host: HostPage) -> None:
    import trio

    from ocapd.captp import E

    frame, url = host.open_frame("w0")
    label = url.split("//", 1)[1].split(".", 1)[0]
    expect(host.page.frame_locator("#w0").locator("#incr")).to_be_enabled()  # the page is connected
    frame.evaluate(
        """async () => {
            const sdk = await import("/_ocapd/weblet.js");
            await sdk.commands.handle("value", (args) => ({ handled: "value", args }));
            await sdk.events.emit("counted", { n: 1 });
        }"""
    )

    async def as_host() -> tuple[Any, list[dict[str, Any]]]:
        async with host.daemon.connect() as (_, facet, _):
            gateway = await E(facet).gateway()
            answer = await E(gateway).invoke_command(label, "value", {"x": 1})
            return answer, await E(gateway).instance_events(label)

    answer, events = trio.run(as_host)
    assert answer == {"handled": "value", "args": {"x": 1}}
    assert [(e["event"], e["payload"]) for e in events] == [("counted", {"n": 1})]
