"""The Chat UI in a real headless Chromium, against a real daemon.

The browser is Debian's ``chromium`` driven by Playwright for Python (its
bundled driver only: no browser is ever downloaded). Each test opens the
chat link `ocapd chat` prints and checks what a user would see; the CLI plays
the other agents. Expectations auto-wait (no sleeps).
"""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import expect, launch_chromium, requires_chromium
from daemon_harness import PYTHON, DaemonProcess

#: Markup that would run script if it ever reached the page as HTML.
HOSTILE = '<img src=x onerror=alert(1)><script>alert(2)</script><b>bold</b>'

pytestmark = requires_chromium


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------
# fixtures


STATIC = Path(__file__).resolve().parent.parent / "chat_host" / "static"


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not (STATIC / "vendor").is_dir():
        pytest.fail("chat_host/static/vendor/ is missing (captp.js needs it): run `node chat_host/build_vendor.mjs`")
    with launch_chromium(tmp_path_factory.mktemp("chromium-home")) as b:
        yield b


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    """One daemon for the module, started as users start it (`ocapd start`), on a
    fixed port so that `ocapd restart` brings the gateway back where the page is."""
    port = free_port()
    d = DaemonProcess(tmp_path_factory.mktemp("chat"), port=port)
    d.cli("start", "--port", str(port))
    yield d
    d.cli("stop", check=False)


class Page:
    """A fresh browser context and page, recording dialogs and page errors."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 860})
        self.page = self.context.new_page()
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("dialog", self._on_dialog)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("console", self._on_console)

    def _on_console(self, message: Any) -> None:
        # The page must work under its CSP (no inline script or style).
        if "Content Security Policy" in message.text:
            self.errors.append(message.text)

    def _on_dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def run(self, line: str) -> None:
        """Type a line in the chat input and press Enter."""
        self.page.locator("#input").fill(line)
        self.page.locator("#input").press("Enter")

    def entry(self, name: str) -> Any:
        return self.page.locator(f'#inventory .entry[data-name="{name}"]')


@pytest.fixture
def chat(browser: Any) -> Iterator[Page]:
    page = Page(browser)
    yield page
    assert page.errors == [], f"uncaught errors or CSP violations in the page: {page.errors}"
    page.context.close()


def open_chat(chat: Page, d: DaemonProcess) -> None:
    chat.page.goto(d.chat_url())
    expect(chat.page.locator("#connection")).to_have_attribute("data-state", "connected")
    expect(chat.page.locator("#inventory")).to_have_attribute("data-state", "ready")


# ---------------------------------------------------------------------------
# scenarios


def test_a_value_named_from_the_cli_appears_in_the_inventory_without_reload(chat: Page, daemon: DaemonProcess) -> None:
    open_chat(chat, daemon)
    assert "token" not in chat.page.url, "the token must leave the URL bar"
    expect(chat.entry("MAIN")).to_be_visible()
    expect(chat.entry("fresh-value")).to_have_count(0)

    daemon.cli("store", "--text", "hello", "-n", "fresh-value")

    entry = chat.entry("fresh-value")
    expect(entry).to_be_visible()
    expect(entry).to_have_attribute("data-type", "marshal")
    expect(chat.page.locator('#inventory .group[data-group="values"] .entry[data-name="fresh-value"]')).to_be_visible()
    # The header counts the user's own names, and says so: the lists also show the built-in ones.
    count = chat.page.locator("#inventory-count")
    own = int(count.inner_text())
    assert own >= 1 and own < chat.page.locator("#inventory .entry").count()
    expect(count).to_have_attribute("title", re.compile(rf"^{own} names? of yours, and \d+ built-in \(SELF, HOST, …\) not counted$"))

    daemon.cli("remove", "fresh-value")
    expect(entry).to_have_count(0)
    expect(count).to_have_text(str(own - 1))


def test_a_guests_request_is_resolved_from_the_inbox(chat: Page, daemon: DaemonProcess) -> None:
    daemon.cli("mkguest", "alice")
    daemon.cli("store", "--text", "hello from the host", "-n", "greeting")
    open_chat(chat, daemon)
    expect(chat.entry("alice")).to_have_attribute("data-type", "handle")
    expect(chat.entry("alice-agent")).to_have_attribute("data-type", "guest")

    request = subprocess.Popen(
        [PYTHON, "-m", "ocapd", "request", "HOST", "a greeting, please", "--as", "alice-agent"],
        env=daemon.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        card = chat.page.locator("#inbox .message.request", has_text="a greeting, please")
        expect(card).to_have_attribute("data-state", "pending")
        expect(card.locator(".from")).to_have_text("alice")
        card.get_by_label(re.compile("Name to answer request")).fill("greeting")
        card.locator('[data-action="resolve"]').click()

        out, err = request.communicate(timeout=30)
    finally:
        if request.poll() is None:
            request.kill()
            request.wait()
    assert request.returncode == 0, err
    assert out.strip() == "hello from the host"
    expect(card).to_have_attribute("data-state", "fulfilled")
    expect(chat.page.locator("#transcript .line.ok", has_text="Answered request")).to_be_visible()

    # a package: adopt what it carries, then dismiss it
    daemon.cli("send", "HOST", "my card: @card:SELF", "--as", "alice-agent")
    package = chat.page.locator("#inbox .message.package", has_text="my card")
    package.get_by_label("Name for @card").fill("alice-card")
    package.locator('[data-action="adopt"]').click()
    expect(chat.entry("alice-card")).to_have_attribute("data-type", "handle")
    package.locator("button.dismiss").click()
    expect(package).to_have_count(0)


def test_eval_shows_its_result_and_errors_read_as_messages(chat: Page, daemon: DaemonProcess) -> None:
    open_chat(chat, daemon)
    chat.run("/eval 1+2")
    expect(chat.page.locator("#transcript .line.value").last).to_have_text("3")
    expect(chat.page.locator("#input")).to_be_focused()
    expect(chat.page.locator("#input")).to_have_value("")

    chat.run("/eval 1/0")
    expect(chat.page.locator("#transcript .line.error").last).to_contain_text("ZeroDivisionError")

    chat.run("/remove no-such-name")
    expect(chat.page.locator("#transcript .line.error").last).to_contain_text("unknown name 'no-such-name'")

    # ↑ recalls the previous line
    chat.page.locator("#input").press("ArrowUp")
    expect(chat.page.locator("#input")).to_have_value("/remove no-such-name")


def test_the_eval_dialog_and_the_entry_actions(chat: Page, daemon: DaemonProcess) -> None:
    daemon.cli("store", "--json", "21", "-n", "half")
    open_chat(chat, daemon)
    page = chat.page
    page.locator("#eval-button").click()
    dialog = page.locator("#eval-dialog")
    expect(dialog).to_be_visible()
    page.locator("#eval-source").fill("x * 2")
    page.locator("#eval-add-endowment").click()
    page.locator(".endowment .code-name").fill("x")
    page.locator(".endowment .pet-name").fill("half")
    page.locator("#eval-result-name").fill("answer")
    page.locator("#eval-submit").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#transcript .line.value").last).to_contain_text("42")
    expect(page.locator("#input")).to_be_focused()

    # the named result is live; Cancel stops it, Remove forgets it
    answer = chat.entry("answer")
    expect(answer).to_have_attribute("data-live", "true")
    answer.hover()
    answer.locator('[data-action="cancel"]').click()
    expect(answer).to_have_attribute("data-live", "false")
    answer.hover()
    answer.locator('[data-action="remove"]').click()
    expect(answer).to_have_count(0)

    # Escape closes the dialog
    page.locator("#eval-button").click()
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(page.locator("#input")).to_be_focused()


def test_markup_in_names_messages_and_errors_is_shown_as_text(chat: Page, daemon: DaemonProcess) -> None:
    daemon.cli("mkguest", "mallory")
    open_chat(chat, daemon)
    daemon.cli("send", "HOST", f"hi {HOSTILE}", "--as", "mallory-agent")
    chat.run(f"/eval {HOSTILE!r}")
    chat.run(f"/eval int({HOSTILE!r})")
    chat.run(f"/send mallory {HOSTILE}")

    message = chat.page.locator("#inbox .message.package", has_text="bold")
    expect(message.locator(".message-body")).to_have_text(f"hi {HOSTILE}")
    expect(chat.page.locator("#transcript .line.value").last).to_have_text(HOSTILE)
    expect(chat.page.locator("#transcript .line.error").last).to_contain_text(HOSTILE)
    expect(chat.page.locator("#transcript .line.ok", has_text="Sent to mallory")).to_be_visible()
    inbox_of_mallory = daemon.out("inbox", "--as", "mallory-agent")
    assert HOSTILE in inbox_of_mallory

    # a request's description too; then Reject answers it with an error
    request = subprocess.Popen(
        [PYTHON, "-m", "ocapd", "request", "HOST", f"mallory asks {HOSTILE}", "--as", "mallory-agent"],
        env=daemon.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        card = chat.page.locator("#inbox .message.request", has_text="mallory asks")
        expect(card.locator(".message-body")).to_have_text(f"mallory asks {HOSTILE}")
        card.locator('[data-action="reject"]').click()
        _, err = request.communicate(timeout=30)
    finally:
        if request.poll() is None:
            request.kill()
            request.wait()
    assert request.returncode != 0 and "declined" in err
    expect(card).to_have_attribute("data-state", "rejected")

    for place in ("#inbox", "#transcript", "#inventory"):
        expect(chat.page.locator(f"{place} img, {place} script, {place} b")).to_have_count(0)
    assert chat.dialogs == []


def test_a_wrong_token_shows_a_clear_error(chat: Page, daemon: DaemonProcess) -> None:
    url = daemon.chat_url()
    wrong = re.sub(r"#token=.*$", "#token=" + "A" * 43, url)
    chat.page.goto(wrong)
    fatal = chat.page.locator("#fatal")
    expect(fatal).to_be_visible()
    expect(fatal).to_contain_text("not accepted")
    expect(chat.page.locator("#connection")).to_have_attribute("data-state", "refused")
    expect(chat.page.locator("#layout")).to_be_hidden()


def test_the_page_reconnects_after_ocapd_restart(chat: Page, daemon: DaemonProcess) -> None:
    # Last in the module: it restarts the shared daemon.
    daemon.cli("store", "--text", "before", "-n", "before-restart")
    open_chat(chat, daemon)
    expect(chat.entry("before-restart")).to_be_visible()

    daemon.cli("restart", "--port", str(daemon.port))

    expect(chat.page.locator("#transcript .line.ok", has_text="Reconnected")).to_be_visible()
    expect(chat.page.locator("#connection")).to_have_attribute("data-state", "connected")
    expect(chat.page.locator("#inventory")).to_have_attribute("data-state", "ready")
    expect(chat.entry("before-restart")).to_be_visible()
    daemon.cli("store", "--text", "after", "-n", "after-restart")
    expect(chat.entry("after-restart")).to_be_visible()


# ---------------------------------------------------------------------------
# a pending eval: its Cancel, its printed output, naming over a name (issue 10, items 1 and 6)


def chat_worker_pids(d: DaemonProcess) -> set[int]:
    """The daemon's worker processes, from the process table (the daemon was started by `ocapd start`)."""
    from types import SimpleNamespace

    from test_stopping import worker_pids

    daemon_pid = int((d.home / "run" / "ocapd.pid").read_text().strip())
    return worker_pids(SimpleNamespace(proc=SimpleNamespace(pid=daemon_pid)))  # type: ignore[arg-type]


def new_chat_worker(d: DaemonProcess, before: set[int]) -> int:
    from test_stopping import wait_until

    found: list[int] = []

    def appeared() -> bool:
        found[:] = sorted(chat_worker_pids(d) - before)
        return bool(found)

    wait_until("a new worker process", appeared)
    return found[0]


def test_a_pending_eval_shows_a_cancel_button_that_stops_its_worker(chat: Page, daemon: DaemonProcess) -> None:
    from test_stopping import alive, wait_until

    open_chat(chat, daemon)
    page = chat.page
    before = chat_worker_pids(daemon)
    chat.run("/eval while True: pass")
    block = page.locator("#transcript .block").last
    pending = block.locator(".line.pending")
    expect(pending).to_be_visible()
    expect(pending).to_contain_text("Evaluating")
    pid = new_chat_worker(daemon, before)
    assert alive(pid)
    pending.get_by_role("button", name="Cancel").click()
    expect(block.locator(".line.warn")).to_contain_text("Cancelled")
    expect(pending).to_have_count(0)
    wait_until("the worker's process is gone", lambda: not alive(pid))


def test_closing_the_tab_cancels_a_pending_eval(browser: Any, daemon: DaemonProcess) -> None:
    from test_stopping import alive, wait_until

    chat = Page(browser)
    try:
        open_chat(chat, daemon)
        before = chat_worker_pids(daemon)
        chat.run("/eval while True: pass")
        expect(chat.page.locator("#transcript .line.pending")).to_be_visible()
        pid = new_chat_worker(daemon, before)
    finally:
        chat.context.close()
    wait_until("the worker's process is gone", lambda: not alive(pid))


def test_what_an_eval_prints_shows_before_its_result(chat: Page, daemon: DaemonProcess) -> None:
    open_chat(chat, daemon)
    page = chat.page
    chat.run("/eval (print('hello'), __import__('sys').stderr.write('careful\\n'), 42)[2]")
    block = page.locator("#transcript .block").last
    expect(block.locator(".line.value")).to_have_text("42")
    lines = block.locator(".line")
    expect(lines).to_have_count(4)
    assert [line.get_attribute("data-kind") for line in lines.all()] == ["command", "stdout", "stderr", "value"]
    expect(lines.nth(1)).to_have_text("hello")
    expect(lines.nth(2)).to_have_text("careful")


def test_the_eval_dialog_offers_to_replace_a_name_in_use(chat: Page, daemon: DaemonProcess) -> None:
    daemon.cli("store", "--json", "1", "-n", "taken")
    open_chat(chat, daemon)
    page = chat.page
    page.locator("#eval-button").click()
    dialog = page.locator("#eval-dialog")
    page.locator("#eval-source").fill("2 + 2")
    page.locator("#eval-result-name").fill("taken")
    page.locator("#eval-submit").click()
    expect(page.locator("#eval-error")).to_contain_text("already names something")
    replace = page.locator("#eval-replace")
    expect(replace).to_be_visible()
    expect(replace).not_to_be_checked()
    assert daemon.out("show", "taken") == "1"
    replace.check()
    page.locator("#eval-submit").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#transcript .line.value").last).to_contain_text("4")
    assert daemon.out("show", "taken") == "4"

    # typed, the same choice is --replace
    chat.run("/eval 5 -n taken")
    expect(page.locator("#transcript .line.error").last).to_contain_text("--replace")
    chat.run("/eval 6 -n taken --replace")
    expect(page.locator("#transcript .line.value").last).to_contain_text("6")
    assert daemon.out("show", "taken") == "6"
