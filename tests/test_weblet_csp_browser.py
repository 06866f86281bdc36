"""What the browser's CSP blocks in a weblet's page is shown in the Chat, once, as text (issue 10, item 11).

A real single-HTML bundle with an inline script, opened in the Chat in
Debian's Chromium: the weblet CSP does not run the script, Chromium posts its
violation report to the instance's origin (``report-uri``), and the chat
transcript gets one line saying what happened and what to do. Then a
hostile poster (anyone on this machine can reach the port) floods the same
endpoint with reports and markup: the chat shows a few lines, as text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import trio
from daemon_harness import DaemonProcess
from gateway_clients import http
from test_chat_browser import Page, browser, expect, free_port, open_chat, pytestmark  # noqa: F401 (fixtures)

from ocapd.captp import E
from ocapd.gateway.csp_reports import MAX_NOTICES

#: One HTML file whose only script is inline; the title carries markup that must stay text.
INLINE_HTML = b"""<!doctype html>
<html><head>
<meta charset="utf-8">
<meta name="ocapd:weblet:title" content="Inline &lt;img src=x onerror=alert(1)&gt;">
<title>inline</title>
</head><body><p id="status">script did not run</p>
<script>document.getElementById("status").textContent = "script ran";</script>
</body></html>
"""
TITLE = "Inline <img src=x onerror=alert(1)>"
LINE = (
    f"{TITLE}: the browser blocked an inline script (Content-Security-Policy script-src); "
    "bundle scripts as files — see docs/weblets.md"
)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    port = free_port()
    home = tmp_path_factory.mktemp("weblet-csp")
    d = DaemonProcess(home, port=port)
    d.cli("start", "--port", str(port))
    page = home / "inline.html"
    page.write_bytes(INLINE_HTML)
    d.cli("install", str(page), "-n", "inline")
    yield d
    d.cli("stop", check=False)


@pytest.fixture
def chat(browser: Any) -> Iterator[Page]:  # noqa: F811 (the imported fixture)
    page = Page(browser)
    # The weblet's frame reports its own violation to the console; the chat page itself must have none.
    page.page.remove_listener("console", page._on_console)

    def on_console(message: Any) -> None:
        if "Content Security Policy" in message.text and ".localhost:" not in message.location.get("url", ""):
            page.errors.append(message.text)

    page.page.on("console", on_console)
    yield page
    assert page.errors == [], f"uncaught errors or CSP violations in the chat page: {page.errors}"
    page.context.close()


def post_reports(port: int, label: str, reports: list[dict[str, str]]) -> list[int]:
    async def post() -> list[int]:
        out = []
        for report in reports:
            body = json.dumps({"csp-report": report}).encode()
            host = f"{label}.localhost:{port}"
            status, _, _ = await http(port, "/_ocapd/csp-report", host, method="POST", body=body, content_type="application/csp-report")
            out.append(status)
        return out

    return trio.run(post)


def notices_kept(d: DaemonProcess, label: str) -> int:
    async def count() -> int:
        async with d.connect() as (_, facet, _):
            (instance,) = [i for i in await E(E(facet).gateway()).list_instances() if i["label"] == label]
            return instance["notices"]

    return trio.run(count)


def test_an_inline_script_blocked_in_a_weblet_shows_one_line_in_the_chat(chat: Page, daemon: DaemonProcess) -> None:
    open_chat(chat, daemon)
    page = chat.page
    chat.run("/open inline")
    frame = page.frame_locator('#weblet-frames iframe[data-name="inline"]')
    expect(frame.locator("#status")).to_have_text("script did not run")
    lines = page.locator("#transcript .line", has_text="the browser blocked")
    expect(lines).to_have_count(1)
    expect(lines).to_have_text(LINE)
    expect(page.locator("#transcript img")).to_have_count(0)  # the title's markup is text

    # Someone else posts to the same endpoint: many different violations, the same one again, markup.
    label = page.locator('#weblet-frames iframe[data-name="inline"]').get_attribute("data-label")
    assert label
    hostile = [
        {"effective-directive": "script-src-elem", "blocked-uri": "inline"},
        {"effective-directive": "<b>script-src</b>", "blocked-uri": "inline"},
        {"effective-directive": "connect-src", "blocked-uri": "http://a.example/<img src=x onerror=alert(2)>"},
        *({"effective-directive": "img-src", "blocked-uri": f"http://h{i}.example/x.png"} for i in range(60)),
    ]
    statuses = post_reports(daemon.gateway_port, label, hostile)
    assert 429 in statuses  # the instance's allowance ran out
    kept = notices_kept(daemon, label)
    assert kept == MAX_NOTICES
    expect(lines).to_have_count(kept)  # one line per kept notice, however many were posted
    expect(page.locator("#transcript .line", has_text="a request to http://a.example (Content-Security-Policy connect-src)")).to_have_count(1)
    expect(page.locator("#transcript img, #transcript b")).to_have_count(0)
    # The chat still answers.
    chat.run("/eval 1 + 1")
    expect(page.locator("#transcript .line", has_text="2").last).to_be_visible()
