"""The Chat UI says which weblets declare WebRTC: in the install dialog before installing, and in the weblet's header.

A weblet that declares ``"webrtc": true`` is served without the
Connection-Allowlist block (tests/test_weblet_webrtc_browser.py shows what
its page can then send), so the user must see it before choosing to install.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from daemon_harness import DaemonProcess
from test_chat_browser import Page, browser, expect, free_port, open_chat, pytestmark  # noqa: F401 (fixtures)


def _html(title: str, *, webrtc: bool) -> bytes:
    meta = '<meta name="ocapd:weblet:webrtc" content="true">' if webrtc else ""
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><meta name="ocapd:weblet:title" content="{title}">'
        f"{meta}<title>{title}</title></head><body><p id=\"here\">{title}</p></body></html>"
    ).encode()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    port = free_port()
    home = tmp_path_factory.mktemp("chat-webrtc")
    d = DaemonProcess(home, port=port)
    d.cli("start", "--port", str(port))
    for name, webrtc in (("caller", True), ("plain", False)):
        path = home / f"{name}.html"
        path.write_bytes(_html(name.title(), webrtc=webrtc))
        d.cli("store", "--path", str(path), "-n", f"{name}-bundle")
    yield d
    d.cli("stop", check=False)


@pytest.fixture
def chat(browser: Any) -> Iterator[Page]:  # noqa: F811 (the imported fixture)
    page = Page(browser)
    yield page
    assert page.errors == [], f"uncaught errors or CSP violations in the page: {page.errors}"
    page.context.close()


def test_the_install_dialog_warns_before_installing_a_weblet_that_declares_webrtc(chat: Page, daemon: DaemonProcess) -> None:
    open_chat(chat, daemon)
    page = chat.page
    warning = page.locator("#install-webrtc")
    page.locator("#install-button").click()
    expect(page.locator("#install-dialog")).to_be_visible()

    page.locator("#install-blob").select_option("caller-bundle")
    expect(warning).to_be_visible()
    expect(warning).to_contain_text("WebRTC")
    expect(warning).to_contain_text("any address")
    page.locator("#install-blob").select_option("plain-bundle")
    expect(warning).to_be_hidden()
    # an upload is read the same way
    page.locator('input[name="install-source"][value="file"]').check()
    page.locator("#install-file").set_input_files({"name": "c.html", "mimeType": "text/html", "buffer": _html("C", webrtc=True)})
    expect(warning).to_be_visible()
    page.locator('input[name="install-source"][value="inventory"]').check()
    page.locator("#install-blob").select_option("caller-bundle")
    expect(warning).to_be_visible()
    page.locator("#install-name").fill("caller")
    page.locator("#install-submit").click()
    expect(page.locator("#install-dialog")).to_be_hidden()

    # Once installed and open, its header says so too; a plain weblet's does not.
    badge = page.locator('#weblet-bar [data-declares="webrtc"]')
    expect(badge).to_have_text("WebRTC")
    expect(page.locator("#transcript")).to_contain_text("caller declares WebRTC")
    page.locator("#install-button").click()
    page.locator("#install-blob").select_option("plain-bundle")
    expect(warning).to_be_hidden()
    page.locator("#install-name").fill("plain")
    page.locator("#install-submit").click()
    expect(page.locator("#install-dialog")).to_be_hidden()
    expect(page.locator('#weblet-bar .weblet-name')).to_have_text("plain")
    expect(badge).to_have_count(0)
