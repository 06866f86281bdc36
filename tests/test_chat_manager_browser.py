"""The widget manager in the Chat page (`/weblets`), and the kinds beyond `iframe`, in a real Chromium.

A real daemon (`ocapd start`) and Debian's chromium driven by Playwright, as
in test_chat_browser.py. What a user does: open the manager, install from the
shipped store with a progress line, see the weblet's chat commands, open it,
disable it (its panel closes and the agent's read API drops it), enable it
(the same panel comes back), reload the page (the same panel, same origin).
Manifest and projection strings that would be markup render as text. A
projection-only weblet is drawn from its backend's projection; an
iframe-external one is framed through its wrapper page with the stricter
sandbox. Screenshots of the manager at 1280 and 800 px land in
``OCAPD_SCREENSHOTS`` (a folder) when it is set.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from daemon_harness import EXAMPLES, DaemonProcess, zip_bundle
from test_chat_browser import HOSTILE, Page, browser, expect, free_port, open_chat, pytestmark  # noqa: F401 (fixtures)

from ocapd.captp import E

INSTANCE_URL = r"^http://[0-9a-f]{32}\.localhost:{port}/$"

#: Markup in every manifest string the manager shows (the schema allows '<' and '>').
HOSTILE_MANIFEST = {
    "title": HOSTILE,
    "description": f"desc {HOSTILE} <iframe src=javascript:alert(3)></iframe>",
    "version": "1.0.0",
    "interface": {
        "description": HOSTILE,
        "commands": {
            "pwn": {"description": f"cmd {HOSTILE}", "args": {"html": "string"}},
            "peek": {"description": "<svg onload=alert(4)>", "readOnly": True},
        },
    },
}

#: A projection-only weblet whose backend returns markup everywhere a string goes.
HOSTILE_PROJECTION_BACKEND = '''
from ocapd.sdk import Far

H = HOSTILE_REPR

def make(powers, context):
    state = {"n": 0}

    def projection():
        state["n"] += 1
        return {"title": "Card " + H, "nodes": [
            {"type": "text", "text": "count " + str(state["n"]), "style": "heading"},
            {"type": "text", "text": H},
            {"type": "list", "items": [H, "plain item"]},
            {"type": "table", "columns": ["col " + H, "n"], "rows": [[H, 1], ["b", 2.5]]},
            {"type": "kv", "items": [[H, H], ["flag", True]]},
            {"type": "image", "src": "dot.png", "alt": "alt " + H},
        ]}

    return Far("Card", projection=projection)
'''.replace("HOSTILE_REPR", repr(HOSTILE))




def hostile_zip() -> bytes:
    return zip_bundle({"weblet.json": json.dumps(HOSTILE_MANIFEST), "index.html": "<!doctype html><p>x</p>"})


def projection_zip() -> bytes:
    manifest = {"title": "Card", "kind": "projection-only", "backend": "backend.py", "size": {"width": 360, "height": 300}}
    png = (EXAMPLES / "tally" / "tally.png").read_bytes()
    return zip_bundle({"weblet.json": json.dumps(manifest), "backend.py": HOSTILE_PROJECTION_BACKEND, "dot.png": png})


def external_zip() -> bytes:
    return zip_bundle({"weblet.json": (EXAMPLES / "external-docs" / "weblet.json").read_text()})


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    port = free_port()
    home = tmp_path_factory.mktemp("chat-manager")
    d = DaemonProcess(home, port=port)
    d.cli("start", "--port", str(port))
    for name, data in (("hostile", hostile_zip()), ("card", projection_zip()), ("docs", external_zip())):
        path = home / f"{name}.zip"
        path.write_bytes(data)
        d.cli("install", str(path), "-n", name)
    yield d
    d.cli("stop", check=False)


@pytest.fixture
def chat(browser: Any) -> Iterator[Page]:  # noqa: F811 (the imported fixture)
    page = Page(browser)
    yield page
    assert page.errors == [], f"uncaught errors or CSP violations in the page: {page.errors}"
    assert page.dialogs == [], f"a dialog fired: {page.dialogs}"
    page.context.close()


def read_api(d: DaemonProcess, panels: list[str]) -> list[str]:
    """The agent's read API (manifests_for): the names of the weblets it sees among ``panels``."""

    async def ask() -> list[str]:
        async with d.connect() as (host, _, _):
            m = await E(host).weblets()
            return [e["name"] for e in await E(m).manifests_for(panels)]

    return trio.run(ask)


def open_manager(chat: Page) -> Any:
    chat.run("/weblets")
    dialog = chat.page.locator("#manager-dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("#manager-list")).to_have_attribute("data-state", "ready")
    return dialog


def row(chat: Page, name: str) -> Any:
    return chat.page.locator(f'#manager-list .mw[data-name="{name}"]')


def screenshot(chat: Page, name: str) -> None:
    folder = os.environ.get("OCAPD_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        chat.page.screenshot(path=str(Path(folder) / name))


# ---------------------------------------------------------------------------
# scenarios


def test_manifest_markup_renders_as_text_in_the_manager(chat: Page, daemon: DaemonProcess) -> None:
    open_chat(chat, daemon)
    dialog = open_manager(chat)
    hostile = row(chat, "hostile")
    expect(hostile.locator(".mw-title")).to_have_text(HOSTILE)
    expect(hostile.locator(".mw-description")).to_contain_text("<iframe src=javascript:alert(3)></iframe>")
    expect(hostile.locator('.mw-command[data-command="pwn"]')).to_contain_text(f"cmd {HOSTILE}")
    expect(hostile.locator('.mw-command[data-command="pwn"] .tag')).to_have_text("writes")
    expect(hostile.locator('.mw-command[data-command="pwn"] code')).to_have_text("pwn(html: string)")
    expect(hostile.locator('.mw-command[data-command="peek"]')).to_contain_text("<svg onload=alert(4)>")
    expect(hostile.locator('.mw-command[data-command="peek"] .tag')).to_have_text("read-only")
    # Nothing was made from the strings: no element of theirs exists anywhere in the page.
    for tag in ("img", "script", "b", "svg", "iframe"):
        assert dialog.locator(tag).count() == 0, tag
    assert chat.page.evaluate("() => document.querySelectorAll('img[src=x], b, svg').length") == 0
    hostile.locator('[data-action="settings"]').click()
    expect(hostile.locator(".mw-detail")).to_contain_text("No panels yet")
    screenshot(chat, "manager-hostile.png")
    assert chat.dialogs == []


def test_install_from_the_store_then_disable_enable_open_and_reload(chat: Page, daemon: DaemonProcess) -> None:
    page = chat.page
    page.set_viewport_size({"width": 1280, "height": 860})
    open_chat(chat, daemon)
    dialog = open_manager(chat)
    # built-ins first, marked, always on
    builtin = row(chat, "inventory")
    expect(builtin.locator(".tag-builtin")).to_have_text("built-in")
    expect(builtin.locator(".mw-enabled")).to_be_disabled()
    expect(builtin.locator('.mw-command[data-command="list"] .tag')).to_have_text("read-only")

    store_item = dialog.locator('#manager-store .store-item[data-id="counter"]')
    expect(store_item).to_be_visible()
    expect(store_item.locator("select option").first).to_contain_text("1.1.0")
    store_item.locator('[data-action="install"]').click()
    progress = dialog.locator("#manager-progress")
    expect(progress).to_have_attribute("data-state", "done")
    expect(progress).to_contain_text("Installed Counter as counter")
    expect(store_item.locator(".tag-installed")).to_have_text("installed 1.1.0")

    counter = row(chat, "counter")
    expect(counter.locator(".mw-meta")).to_contain_text("from the store examples")
    expect(counter.locator('.mw-command[data-command="increment"]')).to_contain_text("increment(by: number)")
    expect(counter.locator('.mw-command[data-command="increment"] .tag')).to_have_text("writes")
    expect(counter.locator('.mw-command[data-command="value"] .tag')).to_have_text("read-only")
    screenshot(chat, "manager-1280.png")

    counter.locator('[data-action="open"]').click()
    expect(dialog).to_be_hidden()
    frame = page.locator('#weblet-frames iframe[data-name="counter"]')
    expect(frame).to_have_count(1)
    src = frame.get_attribute("src")
    assert re.match(INSTANCE_URL.replace("{port}", str(daemon.port)), src)
    live = page.frame_locator('#weblet-frames iframe[data-name="counter"]')
    expect(live.locator("#incr")).to_be_enabled()
    listed = json.loads(daemon.out("weblets", "list", "--json"))
    entry = next(w for w in listed if w["name"] == "counter")
    panels = [i["panel"] for i in entry["instances"]]
    assert len(panels) == 1 and entry["instances"][0]["url"] == src
    assert read_api(daemon, panels) == ["counter"]

    # disable: the panel closes, the agent stops seeing it; the panel's row stays
    open_manager(chat)
    counter.locator(".switch").click()
    expect(counter).to_have_attribute("data-enabled", "false")
    expect(frame).to_have_count(0)
    assert read_api(daemon, panels) == []
    expect(counter.locator('[data-action="open"]')).to_be_disabled()

    # enable: the same panel comes back, on the same origin
    counter.locator(".switch").click()
    expect(counter).to_have_attribute("data-enabled", "true")
    expect(frame).to_have_attribute("src", src)
    assert read_api(daemon, panels) == ["counter"]
    page.keyboard.press("Escape")
    expect(live.locator("#incr")).to_be_enabled()

    # a reload brings the same panel back on the same origin
    page.reload()
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    expect(frame).to_have_attribute("src", src)
    expect(live.locator("#incr")).to_be_enabled()

    # Close removes the panel for good: a reload does not bring it back
    chat.run("/close counter")
    expect(frame).to_have_count(0)
    page.reload()
    expect(page.locator("#inventory")).to_have_attribute("data-state", "ready")
    expect(page.locator("#weblets")).to_have_attribute("data-state", "empty")
    listed = json.loads(daemon.out("weblets", "list", "--json"))
    assert next(w for w in listed if w["name"] == "counter")["instances"] == []

    # uninstall from the manager
    open_manager(chat)
    counter.locator('[data-action="uninstall"]').click()
    counter.locator('[data-action="confirm-uninstall"]').click()
    expect(counter).to_have_count(0)
    assert "counter" not in daemon.out("list").split()


def test_the_manager_at_800_px(chat: Page, daemon: DaemonProcess) -> None:
    chat.page.set_viewport_size({"width": 800, "height": 760})
    open_chat(chat, daemon)
    dialog = open_manager(chat)
    box = dialog.bounding_box()
    assert box is not None and box["width"] <= 800
    overflow = chat.page.evaluate(
        "() => [...document.querySelectorAll('#manager-dialog .mw, #manager-dialog .store-item')]"
        ".filter(e => e.scrollWidth > e.clientWidth + 1).length"
    )
    assert overflow == 0
    screenshot(chat, "manager-800.png")


def test_a_projection_only_weblet_is_drawn_from_its_backend_as_text(chat: Page, daemon: DaemonProcess) -> None:
    open_chat(chat, daemon)
    page = chat.page
    chat.run("/open card")
    card = page.locator('#weblet-frames .weblet-projection[data-name="card"]')
    expect(card).to_have_attribute("data-state", "ready")
    assert page.locator('#weblet-frames iframe[data-name="card"]').count() == 0  # no frame at all
    expect(card.locator(".pj-title")).to_have_text(f"Card {HOSTILE}")
    expect(card.locator("p.pj-text").first).to_have_text(HOSTILE)
    expect(card.locator(".pj-list li")).to_have_text([HOSTILE, "plain item"])
    expect(card.locator(".pj-table th")).to_have_text([f"col {HOSTILE}", "n"])
    expect(card.locator(".pj-table td")).to_have_text([HOSTILE, "1", "b", "2.5"])
    expect(card.locator(".pj-kv dt")).to_have_text([HOSTILE, "flag"])
    expect(card.locator(".pj-kv dd")).to_have_text([HOSTILE, "true"])
    image = card.locator("img.pj-image")
    expect(image).to_have_attribute("alt", f"alt {HOSTILE}")
    expect(image).to_have_attribute("src", re.compile(r"^blob:"))
    page.wait_for_function("() => document.querySelector('img.pj-image').naturalWidth === 32")
    assert card.locator("img").count() == 1 and card.locator("script, b, svg, iframe").count() == 0

    # the backend's projection changes (it counts the times it was asked); the open panel follows
    expect(card.locator("h4.pj-text")).to_have_text(re.compile(r"^count ([2-9]|[1-9][0-9]+)$"))
    screenshot(chat, "projection.png")

    # a reload brings it back (its panel is a row)
    page.reload()
    expect(card).to_have_attribute("data-state", "ready")
    chat.run("/close card")
    expect(card).to_have_count(0)


def test_an_external_weblet_is_framed_by_its_wrapper_with_the_stricter_sandbox(chat: Page, daemon: DaemonProcess) -> None:
    open_chat(chat, daemon)
    page = chat.page
    chat.run("/open docs")
    frame = page.locator('#weblet-frames iframe[data-name="docs"]')
    expect(frame).to_have_count(1)
    assert set(frame.get_attribute("sandbox").split()) == {"allow-scripts", "allow-forms"}
    src = frame.get_attribute("src")
    assert re.match(INSTANCE_URL.replace("{port}", str(daemon.port)), src)
    assert "?" not in src and "docs.python.org" not in src
    # the wrapper page inside: one frame of the entry, stricter sandbox, the entry never in a query string
    inner = page.frame_locator('#weblet-frames iframe[data-name="docs"]').locator("iframe")
    expect(inner).to_have_count(1)
    assert inner.get_attribute("src") == "https://docs.python.org/3/"
    assert set(inner.get_attribute("sandbox").split()) == {"allow-scripts", "allow-forms"}
    assert inner.get_attribute("referrerpolicy") == "no-referrer"
    chat.run("/close docs")
    expect(frame).to_have_count(0)
