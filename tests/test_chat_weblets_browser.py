"""Weblets in the Chat UI, in a real headless Chromium against a real daemon.

What a user does: install a weblet through the install dialog (a stored
bundle, or a file uploaded from the computer), open it in the weblet panel,
use it, answer its permission request in the Allow/Deny prompt the chat page
draws, and stop or forget it from the panel. The browser and harness are the
ones of test_chat_browser.py (Debian's chromium driven by Playwright for
Python; nothing is downloaded). Expectations auto-wait (no sleeps).
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import EXAMPLES, DaemonProcess
from test_chat_browser import Page, browser, expect, free_port, open_chat, pytestmark  # noqa: F401 (fixtures)

#: The sandbox every weblet frame gets: exactly these tokens.
SANDBOX_TOKENS = {"allow-scripts", "allow-same-origin", "allow-forms"}
#: A frame's URL: its own origin, http://<32 hex>.localhost:PORT/.
INSTANCE_URL = r"^http://[0-9a-f]{32}\.localhost:{port}/$"

#: A weblet in one HTML file (its manifest in meta tags; no script needed to show this).
HELLO_HTML = b"""<!doctype html>
<html><head>
<meta charset="utf-8">
<meta name="ocapd:weblet:title" content="Hello">
<meta name="ocapd:weblet:size" content="300x160">
<title>Hello</title>
</head><body><p id="greeting">Hello from one file</p></body></html>
"""

#: A notes store as the notes weblet wants one: get() and set(text), kept in the worker.
NOTES_STORE = '(lambda box: Far("Notes", get=lambda: box[0], set=lambda text: box.__setitem__(0, text)))([""])'


def zip_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for path in sorted(folder.iterdir()):
            z.write(path, path.name)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One daemon for the module, with the example bundles stored as blobs."""
    port = free_port()
    home = tmp_path_factory.mktemp("chat-weblets")
    d = DaemonProcess(home, port=port)
    d.cli("start", "--port", str(port))
    for example in ("counter", "notes"):
        bundle = home / f"{example}.zip"
        bundle.write_bytes(zip_folder(EXAMPLES / example))
        d.cli("store", "--path", str(bundle), "-n", f"{example}-bundle")
    yield d
    d.cli("stop", check=False)


@pytest.fixture
def chat(browser: Any) -> Iterator[Page]:  # noqa: F811 (the imported fixture)
    page = Page(browser)
    yield page
    assert page.errors == [], f"uncaught errors or CSP violations in the page: {page.errors}"
    page.context.close()


def names(d: DaemonProcess) -> list[str]:
    return d.out("list").split()


def weblet_frame(chat: Page, name: str) -> Any:
    return chat.page.locator(f'#weblet-frames iframe[data-name="{name}"]')


def install_from_dialog(chat: Page, *, bundle: str | None = None, name: str | None = None) -> None:
    """Open the install dialog and fill the bundle (a stored one) and the name."""
    page = chat.page
    page.locator("#install-button").click()
    expect(page.locator("#install-dialog")).to_be_visible()
    if bundle is not None:
        page.locator("#install-blob").select_option(bundle)
    if name is not None:
        page.locator("#install-name").fill(name)


def expect_counter_ready(counter: Any, when: str) -> None:
    """The counter's page reached its backend (its button is enabled); if not, say what the page says."""
    try:
        expect(counter.locator("#incr")).to_be_enabled()
    except AssertionError as e:
        status = counter.locator("#status").inner_text(timeout=2000)
        raise AssertionError(f"the counter {when} did not get ready; its page says {status!r}") from e


def answer_prompt(chat: Page, *, allow_with: str | None) -> None:
    prompt = chat.page.locator("#permission-dialog")
    expect(prompt).to_be_visible()
    expect(prompt.locator("#permission-who")).to_have_text("Notes asks:")
    expect(prompt.locator("#permission-description")).to_have_text("a place to keep notes")
    if allow_with is None:
        prompt.locator("#permission-deny").click()
    else:
        prompt.locator("#permission-name").select_option(allow_with)
        prompt.locator("#permission-allow").click()
    expect(prompt).to_be_hidden()


# ---------------------------------------------------------------------------
# scenarios


def test_a_stored_bundle_installs_through_the_dialog_and_counts_in_its_frame(chat: Page, daemon: DaemonProcess) -> None:
    open_chat(chat, daemon)
    page = chat.page
    install_from_dialog(chat, bundle="counter-bundle")
    expect(page.locator("#install-name")).to_have_value("counter")  # suggested from the bundle's name
    expect(page.locator('#install-powers input[value="NONE"]')).to_be_checked()  # the safe default
    page.locator("#install-submit").click()
    expect(page.locator("#install-dialog")).to_be_hidden()

    entry = page.locator('#inventory .group[data-group="weblets"] .entry[data-name="counter"]')
    expect(entry).to_have_attribute("data-live", "true")
    expect(weblet_frame(chat, "counter")).to_have_count(1)  # an installed weblet opens

    chat.run("/close")
    expect(weblet_frame(chat, "counter")).to_have_count(0)
    expect(page.locator("#weblets")).to_have_attribute("data-state", "empty")

    chat.run("/open counter")
    frame = weblet_frame(chat, "counter")
    expect(frame).to_have_count(1)
    assert set(frame.get_attribute("sandbox").split()) == SANDBOX_TOKENS
    assert "allow-top-navigation" not in frame.get_attribute("sandbox")
    assert frame.get_attribute("referrerpolicy") == "no-referrer"
    assert frame.get_attribute("allow") is None  # the counter asks for no permissions
    assert (frame.get_attribute("width"), frame.get_attribute("height")) == ("320", "240")
    assert re.match(INSTANCE_URL.replace("{port}", str(daemon.port)), frame.get_attribute("src"))

    bar = page.locator("#weblet-bar")
    expect(bar.locator(".weblet-title")).to_have_text("Counter")
    expect(bar.locator(".level-badge")).to_have_text("NONE")
    expect(bar.locator(".weblet-heading")).to_have_attribute("data-live", "true")

    counter = page.frame_locator('#weblet-frames iframe[data-name="counter"]')
    expect_counter_ready(counter, "opened with /open")
    before = int(counter.locator("#count").inner_text())
    counter.locator("#incr").click()
    expect(counter.locator("#count")).to_have_text(str(before + 1))
    assert page.url.startswith(f"http://localhost:{daemon.port}/")  # the weblet moved nothing of ours

    chat.run("/close")
    expect(weblet_frame(chat, "counter")).to_have_count(0)
    expect(page.locator("#transcript .line.ok", has_text="Closed counter").last).to_be_visible()


def test_host_powers_need_an_extra_confirmation(chat: Page, daemon: DaemonProcess) -> None:
    open_chat(chat, daemon)
    page = chat.page
    install_from_dialog(chat, bundle="counter-bundle", name="trusted-counter")
    host = page.locator('.power-choice[data-level="HOST"]')
    expect(host.locator(".danger-tag")).to_have_text("dangerous")
    expect(host).to_contain_text("full control of your agent")
    host.click()
    confirm = page.locator("#install-host-confirm")
    expect(confirm).to_be_visible()
    page.locator("#install-submit").click()
    expect(page.locator("#install-error")).to_contain_text("tick the confirmation")
    assert "trusted-counter" not in names(daemon)
    page.locator("#install-cancel").click()
    expect(page.locator("#install-dialog")).to_be_hidden()

    # typed, HOST is never granted at once: the dialog opens for the confirmation
    chat.run("/install counter-bundle --as trusted-counter --powers HOST")
    expect(page.locator("#install-dialog")).to_be_visible()
    expect(page.locator('#install-powers input[value="HOST"]')).to_be_checked()
    expect(page.locator("#install-name")).to_have_value("trusted-counter")
    expect(confirm.locator("input")).not_to_be_checked()
    page.keyboard.press("Escape")
    expect(page.locator("#install-dialog")).to_be_hidden()
    assert "trusted-counter" not in names(daemon)


def test_an_uploaded_html_file_installs_and_a_bad_bundle_says_why(chat: Page, daemon: DaemonProcess) -> None:
    open_chat(chat, daemon)
    page = chat.page
    install_from_dialog(chat)
    page.locator('input[name="install-source"][value="file"]').check()
    page.locator("#install-file").set_input_files({"name": "Hello.html", "mimeType": "text/html", "buffer": HELLO_HTML})
    expect(page.locator("#install-name")).to_have_value("hello")
    page.locator("#install-submit").click()
    expect(page.locator("#install-dialog")).to_be_hidden()
    expect(chat.entry("hello")).to_have_attribute("data-type", "weblet")
    hello = page.frame_locator('#weblet-frames iframe[data-name="hello"]')
    expect(hello.locator("#greeting")).to_have_text("Hello from one file")
    assert weblet_frame(chat, "hello").get_attribute("height") == "160"

    before = names(daemon)
    install_from_dialog(chat)
    page.locator('input[name="install-source"][value="file"]').check()
    page.locator("#install-file").set_input_files(
        {"name": "broken.zip", "mimeType": "application/zip", "buffer": b"PK\x03\x04 this is not a zip"}
    )
    page.locator("#install-submit").click()
    error = page.locator("#install-error")
    expect(error).to_be_visible()
    text = error.inner_text()
    assert "\n" not in text.strip() and len(text) < 300, text
    expect(page.locator("#transcript .line.error").last).to_be_visible()
    assert names(daemon) == before  # nothing was installed
    expect(chat.entry("broken")).to_have_count(0)
    page.locator("#install-cancel").click()

    # a manifest that is not one: a readable line too
    install_from_dialog(chat)
    page.locator('input[name="install-source"][value="file"]').check()
    page.locator("#install-file").set_input_files(
        {"name": "untitled.html", "mimeType": "text/html", "buffer": b"<!doctype html><p>no manifest</p>"}
    )
    page.locator("#install-submit").click()
    expect(error).to_contain_text("title")
    assert names(daemon) == before
    page.locator("#install-cancel").click()


def test_a_weblets_request_is_an_allow_deny_prompt_drawn_by_the_chat_page(chat: Page, daemon: DaemonProcess) -> None:
    open_chat(chat, daemon)
    page = chat.page
    chat.run(f"/eval {NOTES_STORE} -n notes-store")
    expect(chat.entry("notes-store")).to_be_visible()

    chat.run("/install notes-bundle --as notes")
    frame = weblet_frame(chat, "notes")
    expect(frame).to_have_attribute("allow", "clipboard-write")  # from its manifest's permissions
    prompt = page.locator("#permission-dialog")
    expect(prompt).to_be_visible()
    expect(prompt.locator("#permission-detail")).to_contain_text("notes")  # its pet name, not only its title
    answer_prompt(chat, allow_with="notes-store")

    notes = page.frame_locator('#weblet-frames iframe[data-name="notes"]')
    expect(notes.locator("#text")).to_be_enabled()
    expect(notes.locator("#text")).to_have_attribute("placeholder", "Write here.")
    notes.locator("#text").fill("kept by the host")
    expect(notes.locator("#saved")).to_have_text("Saved")
    card = page.locator("#inbox .message.request", has_text="a place to keep notes")
    expect(card).to_have_attribute("data-state", "fulfilled")
    expect(card.locator(".from")).to_have_text("notes")
    assert daemon.out("eval", "E(s).get()", "s:notes-store") == "kept by the host"

    # a second notes weblet is denied: it keeps notes in memory only
    chat.run("/install notes-bundle --as scratch")
    answer_prompt(chat, allow_with=None)
    scratch = page.frame_locator('#weblet-frames iframe[data-name="scratch"]')
    expect(scratch.locator("#status")).to_contain_text("declined")
    expect(scratch.locator("#text")).to_have_attribute("placeholder", re.compile("lost when the page closes"))
    expect(page.locator("#inbox .message.request.rejected")).to_have_count(1)


def test_cancel_stops_the_worker_and_remove_forgets_the_name(chat: Page, daemon: DaemonProcess) -> None:
    daemon.out("install", "counter-bundle", "-n", "ticker")
    open_chat(chat, daemon)
    page = chat.page
    entry = chat.entry("ticker")
    entry.locator(".entry-name").click()  # a weblet's name opens it
    expect(weblet_frame(chat, "ticker")).to_have_count(1)
    ticker = page.frame_locator('#weblet-frames iframe[data-name="ticker"]')
    expect_counter_ready(ticker, "opened from the inventory")
    expect(entry).to_have_attribute("data-live", "true")

    page.locator('#weblet-bar [data-action="cancel"]').click()
    expect(weblet_frame(chat, "ticker")).to_have_count(0)
    expect(entry).to_have_attribute("data-live", "false")

    chat.run("/open ticker")  # opening starts it again
    expect_counter_ready(ticker, "reopened after Cancel")
    expect(entry).to_have_attribute("data-live", "true")
    page.locator('#weblet-bar [data-action="remove"]').click()
    expect(weblet_frame(chat, "ticker")).to_have_count(0)
    expect(entry).to_have_count(0)
    assert "ticker" not in names(daemon)


def test_with_a_weblet_open_at_1280_px_the_chat_keeps_room_for_its_input(browser: Any, daemon: DaemonProcess) -> None:  # noqa: F811
    """A new user saw the chat column shrink to ~350 px and its placeholder cut."""
    daemon.cli("install", "counter-bundle", "-n", "wide-counter")
    chat = Page(browser)
    try:
        chat.page.set_viewport_size({"width": 1280, "height": 800})
        open_chat(chat, daemon)
        chat.run("/open wide-counter")
        expect(weblet_frame(chat, "wide-counter")).to_have_count(1)
        expect(chat.page.locator("#weblets")).not_to_have_attribute("data-state", "empty")
        fits = chat.page.evaluate(
            """() => {
                const input = document.getElementById("input");
                const style = getComputedStyle(input);
                const canvas = document.createElement("canvas").getContext("2d");
                canvas.font = `${style.fontSize} ${style.fontFamily}`;
                const room = input.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
                return {room, needed: canvas.measureText(input.placeholder).width,
                        chat: document.querySelector(".chat").getBoundingClientRect().width};
            }"""
        )
        assert fits["chat"] >= 420, fits
        assert fits["needed"] <= fits["room"], f"the placeholder is cut: {fits}"
        # The example's button is styled, not the browser's default grey.
        counter = chat.page.frame_locator('#weblet-frames iframe[data-name="wide-counter"]')
        expect_counter_ready(counter, "at 1280 px")
        background = counter.locator("#incr").evaluate("b => getComputedStyle(b).backgroundColor")
        assert background not in ("rgb(239, 239, 239)", "rgba(0, 0, 0, 0)", "buttonface"), background
        chat.run("/close")
    finally:
        assert chat.errors == [], chat.errors
        chat.context.close()
        daemon.cli("remove", "wide-counter")


def test_help_lists_show_store_and_mkhost_and_they_work(chat: Page, daemon: DaemonProcess) -> None:
    open_chat(chat, daemon)
    page = chat.page
    chat.run("/help")
    for usage in ("/show <name>", "/store <name> <text>", "/mkhost <handle> [agent]"):
        expect(page.locator("#transcript", has_text=usage)).to_be_visible()
    chat.run("/store chat-note remember the milk")
    expect(page.locator("#transcript .line.ok", has_text="Stored chat-note.")).to_be_visible()
    assert daemon.out("show", "chat-note") == "remember the milk"
    chat.run("/show chat-note")
    expect(page.locator("#transcript", has_text="remember the milk").last).to_be_visible()
    chat.run("/mkhost second-host")
    expect(page.locator("#transcript .line.ok", has_text="Host ready: handle second-host, powers second-host-agent.")).to_be_visible()
    assert {"second-host", "second-host-agent"} <= set(names(daemon))


def test_the_notes_flow_of_the_docs_keeps_notes_across_a_restart(chat: Page, daemon: DaemonProcess) -> None:
    """docs/weblets.md, step by step: make a text store, install notes, allow with it, write, restart."""
    open_chat(chat, daemon)
    page = chat.page
    chat.run("/mktext kept-notes")
    expect(page.locator("#transcript .line.ok", has_text="Made the text store kept-notes.")).to_be_visible()
    chat.run("/install notes-bundle --as diary")
    answer_prompt(chat, allow_with="kept-notes")
    diary = page.frame_locator('#weblet-frames iframe[data-name="diary"]')
    expect(diary.locator("#text")).to_be_enabled()
    diary.locator("#text").fill("outlives the daemon")
    expect(diary.locator("#saved")).to_have_text("Saved")

    daemon.cli("restart", "--port", str(daemon.port))
    assert daemon.out("eval", "E(s).get()", "s:kept-notes") == "outlives the daemon"
    open_chat(chat, daemon)
    chat.run("/open diary")  # the answer is named in the weblet's store: no second prompt
    expect(diary.locator("#text")).to_have_value("outlives the daemon")
    expect(page.locator("#permission-dialog")).to_be_hidden()


def test_a_weblets_prompts_can_be_blocked_as_a_whole_and_others_still_ask(chat: Page, daemon: DaemonProcess) -> None:
    """Prompt spam (issue 9, item 13): "Block requests from this weblet" closes its queue; its requests stay in the inbox."""
    open_chat(chat, daemon)
    page = chat.page
    chat.run("/install notes-bundle --as pesky")
    prompt = page.locator("#permission-dialog")
    expect(prompt).to_be_visible()
    expect(prompt.locator("#permission-detail")).to_contain_text("pesky")
    prompt.locator("#permission-block").click()
    expect(prompt).to_be_hidden()
    card = page.locator("#inbox .message.request").filter(has=page.locator(".from", has_text="pesky"))
    expect(card).to_have_count(1)  # still there, to answer or dismiss in the inbox
    # Another weblet still gets its prompt.
    chat.run("/install notes-bundle --as other")
    expect(prompt).to_be_visible()
    expect(prompt.locator("#permission-detail")).to_contain_text("other")
    prompt.locator("#permission-deny").click()
    expect(prompt).to_be_hidden()


def reject_pending_requests(d: DaemonProcess) -> None:
    """Earlier tests' weblets may still be waiting: their prompts would come first."""
    for m in json.loads(d.out("inbox", "--json")):
        if m["type"] == "request" and m.get("settled") is None:
            d.cli("reject", str(m["number"]))


def give_it_options(chat: Page) -> list[tuple[str, str]]:
    """The Allow prompt's "Give it" list: (name, group) in the order shown."""
    return chat.page.locator("#permission-name option[value]:not([value=''])").evaluate_all(
        "options => options.map(o => [o.value, o.parentElement.dataset.group])"
    )


def test_the_give_it_list_leads_with_values_and_marks_agent_powers_dangerous(chat: Page, daemon: DaemonProcess) -> None:
    """Issue 10, item 8: one click handed a NONE weblet host powers, with no warning."""
    reject_pending_requests(daemon)
    daemon.cli("mkguest", "bob")
    daemon.cli("store", "--text", "hello", "-n", "a-greeting")
    daemon.cli("mkdir", "shelf")
    open_chat(chat, daemon)
    page = chat.page
    chat.run("/install notes-bundle --as picky")
    prompt = page.locator("#permission-dialog")
    expect(prompt).to_be_visible()
    options = give_it_options(chat)
    group_of = dict(options)
    assert group_of["a-greeting"] == "values"
    assert group_of["shelf"] == "directories"
    assert group_of["bob"] == "other"  # a handle: mail only, nothing dangerous
    assert group_of["bob-agent"] == "agents" and group_of["AGENT"] == "agents"
    order = ["values", "directories", "other", "agents"]
    groups = [group for _, group in options]
    assert groups == sorted(groups, key=order.index), options  # values first, then directories, the rest, agents last
    agents = prompt.locator('#permission-name optgroup[data-group="agents"]')
    expect(agents).to_have_attribute("label", re.compile("dangerous", re.I))

    confirm = prompt.locator("#permission-danger-confirm")
    prompt.locator("#permission-name").select_option("a-greeting")
    expect(confirm).to_be_hidden()
    prompt.locator("#permission-name").select_option("bob-agent")
    expect(confirm).to_be_visible()
    expect(confirm).to_contain_text("bob-agent")
    expect(prompt.locator("#permission-allow")).to_be_enabled()
    prompt.locator("#permission-allow").click()  # not ticked: refused, and nothing is given
    expect(prompt.locator("#permission-error")).to_contain_text("tick the confirmation")
    expect(prompt).to_be_visible()
    card = page.locator("#inbox .message.request").filter(has=page.locator(".from", has_text="picky"))
    expect(card).to_have_attribute("data-state", "pending")

    prompt.locator("#permission-name").select_option("AGENT")  # your own powers: the same
    expect(confirm).to_contain_text("every name I have")
    expect(confirm.locator("input")).not_to_be_checked()  # a new choice asks again
    confirm.locator("input").check()
    prompt.locator("#permission-allow").click()
    expect(prompt).to_be_hidden()
    expect(card).to_have_attribute("data-state", "fulfilled")
    chat.run("/remove picky")
    expect(chat.entry("picky")).to_have_count(0)


def test_a_weblets_request_shows_the_weblets_name_in_the_inbox_after_a_reload(chat: Page, daemon: DaemonProcess) -> None:
    """Issue 10, item 9: after a reload the inbox said "unknown sender 5ae7b45a…"."""
    reject_pending_requests(daemon)
    open_chat(chat, daemon)
    page = chat.page
    chat.run("/install notes-bundle --as jotter")
    prompt = page.locator("#permission-dialog")
    expect(prompt).to_be_visible()
    page.locator("#permission-later").click()
    chat.run("/close jotter")
    chat.run("/cancel jotter")  # not running: the page cannot ask its guest who it is
    expect(chat.entry("jotter")).to_have_attribute("data-live", "false")
    page.reload()
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    card = page.locator("#inbox .message.request", has_text="a place to keep notes").filter(
        has=page.locator('.from:text-is("jotter")'))
    expect(card).to_have_count(1)
    expect(page.locator("#inbox .from", has_text="unknown sender")).to_have_count(0)
    daemon.cli("move", "jotter", "journal")  # a rename follows
    renamed = page.locator("#inbox .message.request", has_text="a place to keep notes").filter(
        has=page.locator('.from:text-is("journal")'))
    expect(renamed).to_have_count(1)
    expect(page.locator("#inbox .from", has_text="unknown sender")).to_have_count(0)
