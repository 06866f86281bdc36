"""The chat agent in the Chat page (issue 13), in a real Chromium against a real daemon.

Plain text typed in the chat goes to the agent with the page's open panels as
the visible hint; each call shows in the transcript as the weblet's; a call
that writes waits for the Allow dialog the chat page draws (never a frame):
Allow once, Always for this weblet+command, Deny. The manager lists the
"always" grants with Revoke and the audit log. The weblets are the shipped
counter (a backend with ``invoke``) and one whose manifest strings are markup.
One daemon for the module (`ocapd start`), as in test_chat_browser.py.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from daemon_harness import DaemonProcess, example_zip, zip_bundle
from test_chat_browser import HOSTILE, Page, browser, expect, free_port, open_chat, pytestmark  # noqa: F401 (fixtures)

#: A weblet with a backend whose every manifest string is markup; `pwn` writes, `peek` reads.
HOSTILE_MANIFEST = {
    "title": f"Evil {HOSTILE}",
    "version": "1.0.0",
    "backend": "backend.py",
    "interface": {
        "description": HOSTILE,
        "commands": {
            "pwn": {"description": f"cmd {HOSTILE}", "args": {"html": "string"}},
            "peek": {"description": "<svg onload=alert(4)>", "readOnly": True},
        },
    },
}
HOSTILE_BACKEND = """from ocapd.sdk import Far

def make(powers, context):
    def invoke(name, args):
        return {"echo": args.get("html", ""), "markup": "<b>bold</b><img src=x onerror=alert(5)>"}
    return Far("Evil", invoke=invoke)
"""




@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    port = free_port()
    home = tmp_path_factory.mktemp("chat-agent")
    d = DaemonProcess(home, port=port)
    d.cli("start", "--port", str(port))
    counter = example_zip("counter")
    evil = zip_bundle({"weblet.json": json.dumps(HOSTILE_MANIFEST), "index.html": "<!doctype html><p>evil</p>", "backend.py": HOSTILE_BACKEND})
    for name, data in (("counter", counter), ("evil", evil)):
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


def open_with(chat: Page, d: DaemonProcess, name: str) -> None:
    """The chat, with the weblet `name` open (its panel is the visible hint)."""
    open_chat(chat, d)
    chat.run(f"/open {name}")
    expect(chat.page.locator(f'#weblet-tabs [data-name="{name}"], #weblet-frames [data-name="{name}"]').first).to_be_attached()


def call_line(chat: Page, status: str | None = None) -> Any:
    """The transcript's newest agent call line (with `status`, if given)."""
    selector = "#transcript .line.agent-call" + (f'[data-status="{status}"]' if status else "")
    return chat.page.locator(selector).last


def count_now(chat: Page) -> int:
    """Ask the counter for its value through the chat; the count it shows."""
    before = chat.page.locator('#transcript .line.agent-call[data-status="done"]').count()
    chat.run("value")
    expect(chat.page.locator('#transcript .line.agent-call[data-status="done"]')).to_have_count(before + 1)
    text = call_line(chat, "done").locator(".agent-result").text_content() or ""
    return int(json.loads(text)["count"])


def allow_dialog(chat: Page) -> Any:
    dialog = chat.page.locator("#agent-dialog")
    expect(dialog).to_be_visible()
    return dialog


def open_manager_agent(chat: Page) -> Any:
    chat.run("/weblets")
    section = chat.page.locator("#manager-agent")
    expect(section).to_be_visible()
    expect(section.locator("#agent-audit")).to_have_attribute("data-state", "ready")
    return section


def audit_row(chat: Page, call: str) -> Any:
    return chat.page.locator(f'#agent-audit .audit-row[data-call="{call}"]')


class Rest:
    """The REST surface, with the host token (as a script, a model or MCP would ask)."""

    def __init__(self, d: DaemonProcess) -> None:
        self.base = f"http://127.0.0.1:{d.gateway_port}"
        self.token = d.chat_url().split("#token=", 1)[1]

    def post(self, path: str, body: dict[str, Any], status: int = 200) -> Any:
        r = httpx.post(self.base + path, json=body, headers={"Authorization": f"Bearer {self.token}"}, trust_env=False, timeout=60)
        assert r.status_code == status, r.text
        return r.json()

    def no_grants(self) -> None:
        """Revoke every "always" (another test's would run a write without asking)."""
        for weblet in ("counter", "evil"):
            self.post("/api/agent/grants/revoke", {"weblet": weblet})


def screenshot(chat: Page, name: str) -> None:
    """A picture of the page in ``OCAPD_SCREENSHOTS`` (a folder), when it is set."""
    folder = os.environ.get("OCAPD_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        chat.page.screenshot(path=str(Path(folder) / name))


def panel_of(d: DaemonProcess, name: str) -> str:
    """A panel of weblet `name` (made, as /open would, if it has none yet)."""
    entry = next(w for w in json.loads(d.out("weblets", "list", "--json")) if w["name"] == name)
    if entry["instances"]:
        return str(entry["instances"][0]["panel"])
    return str(Rest(d).post(f"/api/weblets/{entry['id']}/instances", {}, status=201)["instance"]["panel"])


# ---------------------------------------------------------------------------
# scenarios


def test_a_read_command_typed_in_the_chat_shows_its_result_as_the_weblets(chat: Page, daemon: DaemonProcess) -> None:
    open_with(chat, daemon, "counter")
    chat.run("value")
    line = call_line(chat, "done")
    expect(line.locator(".agent-from")).to_have_text("Counter")
    expect(line.locator(".agent-tool")).to_have_text("value")
    expect(line.locator(".agent-result")).to_have_text(re.compile(r'^\{"count":\s*\d+\}$'))
    expect(chat.page.locator("#agent-dialog")).to_be_hidden()  # a read runs without asking
    # Words that match nothing say so, in one line, and name what the open weblets offer.
    chat.run("format the disk")
    expect(chat.page.locator("#transcript .line.agent-reply").last).to_contain_text("No open weblet has a command for that")
    # `/` commands are as they were.
    chat.run("/eval 40+2")
    expect(chat.page.locator("#transcript .line.value").last).to_have_text("42")


def test_a_write_command_asks_and_runs_after_allow_once_then_the_audit_shows_it(chat: Page, daemon: DaemonProcess) -> None:
    open_with(chat, daemon, "counter")
    before = count_now(chat)
    chat.run("increment 5")
    dialog = allow_dialog(chat)
    expect(dialog.locator("#agent-who")).to_have_text("Counter")
    expect(dialog.locator("#agent-command")).to_have_text("increment")
    expect(dialog.locator("#agent-args")).to_contain_text("by")
    expect(dialog.locator("#agent-args")).to_contain_text("5")
    expect(dialog.locator("#agent-description")).to_have_text("Add to the count (one, or 'by').")
    expect(dialog.locator("#agent-expires")).to_have_text(re.compile(r"^Unanswered, it expires in [0-9]+:[0-5][0-9]\.$"))
    screenshot(chat, "agent-allow.png")
    waiting = call_line(chat, "needs_permission")
    call = waiting.get_attribute("data-call")
    assert call
    dialog.locator("#agent-once").click()
    expect(dialog).to_be_hidden()
    done = chat.page.locator(f'#transcript .line.agent-call[data-call="{call}"]')
    expect(done).to_have_attribute("data-status", "done")
    expect(done.locator(".agent-result")).to_have_text(json.dumps({"count": before + 5}))
    assert count_now(chat) == before + 5

    section = open_manager_agent(chat)
    row = audit_row(chat, call)
    expect(row).to_have_attribute("data-decision", "once")
    expect(row).to_have_attribute("data-outcome", "done")
    expect(row.locator(".audit-command")).to_have_text("increment")
    expect(row.locator(".audit-args")).to_contain_text('"by": 5')
    expect(row.locator(".audit-asked")).to_have_text("you typed it")
    assert section.locator(".audit-row").count() >= 1
    section.scroll_into_view_if_needed()
    screenshot(chat, "agent-manager.png")


def test_deny_leaves_no_effect_and_says_so(chat: Page, daemon: DaemonProcess) -> None:
    open_with(chat, daemon, "counter")
    before = count_now(chat)
    chat.run("increment 7")
    allow_dialog(chat).locator("#agent-deny").click()
    expect(chat.page.locator("#agent-dialog")).to_be_hidden()
    line = call_line(chat)
    expect(line).to_have_attribute("data-status", "denied")
    expect(line).to_contain_text("denied")
    call = line.get_attribute("data-call")
    assert count_now(chat) == before
    open_manager_agent(chat)
    expect(audit_row(chat, str(call))).to_have_attribute("data-decision", "denied")
    expect(audit_row(chat, str(call))).to_have_attribute("data-outcome", "not_run")


def test_always_skips_the_prompt_until_it_is_revoked_in_the_manager(chat: Page, daemon: DaemonProcess) -> None:
    open_with(chat, daemon, "counter")
    chat.run("increment 2")
    allow_dialog(chat).locator("#agent-always").click()
    expect(call_line(chat)).to_have_attribute("data-status", "done")
    before = count_now(chat)

    chat.run("increment 3")  # no prompt this time
    expect(call_line(chat)).to_have_attribute("data-status", "done")
    expect(call_line(chat).locator(".agent-result")).to_have_text(json.dumps({"count": before + 3}))
    expect(chat.page.locator("#agent-dialog")).to_be_hidden()

    section = open_manager_agent(chat)
    grant = section.locator('#agent-grants .grant[data-tool="counter.increment"]')
    expect(grant).to_contain_text("Counter")
    expect(audit_row(chat, str(call_line(chat).get_attribute("data-call")))).to_have_attribute("data-decision", "granted")
    grant.locator('[data-action="revoke"]').click()
    expect(grant).to_have_count(0)
    chat.page.keyboard.press("Escape")
    expect(chat.page.locator("#manager-dialog")).to_be_hidden()

    chat.run("increment 4")  # asked again
    dialog = allow_dialog(chat)
    dialog.locator("#agent-deny").click()
    expect(call_line(chat)).to_have_attribute("data-status", "denied")


def test_calls_waiting_when_the_page_loads_are_asked_in_turn_and_later_keeps_them(chat: Page, daemon: DaemonProcess) -> None:
    rest = Rest(daemon)
    panel = panel_of(daemon, "counter")
    rest.no_grants()
    first = rest.post("/api/agent/message", {"text": "increment 11", "visible": [panel]})["calls"][0]
    second = rest.post("/api/agent/message", {"text": "increment 12", "visible": [panel]})["calls"][0]
    assert first["status"] == second["status"] == "needs_permission"
    open_chat(chat, daemon)
    dialog = allow_dialog(chat)
    expect(dialog).to_have_attribute("data-call", first["call"])
    expect(dialog.locator("#agent-args")).to_contain_text("11")
    expect(dialog.locator("#agent-queue")).to_have_text("1 more waiting (1 from this weblet).")
    # Later: the call stays waiting (a line in the transcript reopens it); the next one is asked.
    dialog.locator("#agent-later").click()
    expect(dialog).to_have_attribute("data-call", second["call"])
    dialog.locator("#agent-deny").click()
    expect(dialog).to_be_hidden()
    later = chat.page.locator(f'#transcript .line.agent-call[data-call="{first["call"]}"]')
    expect(later).to_have_attribute("data-status", "needs_permission")
    later.locator('[data-action="answer"]').click()
    expect(dialog).to_have_attribute("data-call", first["call"])
    dialog.locator("#agent-deny").click()
    expect(later).to_have_attribute("data-status", "denied")
    # The page stays usable while calls wait: a command typed meanwhile runs.
    chat.run("/eval 6*7")
    expect(chat.page.locator("#transcript .line.value").last).to_have_text("42")


def test_a_call_nobody_answers_expires_and_the_page_says_so(chat: Page, daemon: DaemonProcess) -> None:
    settings = daemon.home / "state" / "agent.json"
    settings.write_text(json.dumps({"permission_timeout": 1}))
    try:
        open_with(chat, daemon, "counter")
        chat.run("increment 9")
        line = call_line(chat)
        expect(line).to_have_attribute("data-status", "expired")
        expect(line).to_contain_text("nobody answered in time")
        expect(chat.page.locator("#agent-dialog")).to_be_hidden()
    finally:
        settings.unlink()


def test_markup_in_manifest_strings_and_arguments_renders_as_text(chat: Page, daemon: DaemonProcess) -> None:
    open_with(chat, daemon, "evil")
    chat.run(f"pwn html={HOSTILE}")
    dialog = allow_dialog(chat)
    expect(dialog.locator("#agent-who")).to_have_text(f"Evil {HOSTILE}")
    expect(dialog.locator("#agent-description")).to_have_text(f"cmd {HOSTILE}")
    expect(dialog.locator("#agent-args")).to_contain_text(HOSTILE)
    for tag in ("img", "script", "b", "svg"):
        assert dialog.locator(tag).count() == 0, tag
    dialog.locator("#agent-once").click()
    line = call_line(chat, "done")
    expect(line.locator(".agent-from")).to_have_text(f"Evil {HOSTILE}")
    expect(line.locator(".agent-result")).to_contain_text("<b>bold</b><img src=x onerror=alert(5)>")
    expect(chat.page.locator("#transcript img, #transcript script, #transcript b, #transcript svg")).to_have_count(0)
    call = str(line.get_attribute("data-call"))

    chat.run("pwn html=again")
    allow_dialog(chat).locator("#agent-always").click()
    expect(call_line(chat)).to_have_attribute("data-status", "done")
    section = open_manager_agent(chat)
    expect(audit_row(chat, call).locator(".audit-args")).to_contain_text(HOSTILE)
    expect(audit_row(chat, call).locator(".audit-detail")).to_contain_text("<img src=x onerror=alert(5)>")
    expect(section.locator('#agent-grants .grant[data-tool="evil.pwn"]')).to_contain_text(f"Evil {HOSTILE}")
    expect(section.locator("img, script, b, svg")).to_have_count(0)
    assert chat.page.evaluate("() => document.querySelectorAll('img[src=x], b, svg, script:not([src])').length") == 0


def test_help_says_plain_text_goes_to_the_agent(chat: Page, daemon: DaemonProcess) -> None:
    open_chat(chat, daemon)
    chat.run("/help")
    said = chat.page.locator("#transcript .line.info", has_text="Text without a / goes to the chat agent")
    expect(said).to_contain_text("A command that changes things asks first: Allow once, Always or Deny")


def test_a_guests_chat_has_no_agent_and_says_how_to_type_commands(chat: Page, daemon: DaemonProcess) -> None:
    daemon.cli("mkguest", "visitor")
    chat.page.goto(daemon.chat_url("--as", "visitor-agent"))
    expect(chat.page.locator("#connection")).to_have_attribute("data-state", "connected")
    chat.run("value")
    expect(chat.page.locator("#transcript .line.info").last).to_have_text(
        "Commands start with /. To message someone: /send <to> <text>. Type /help for the list."
    )
    expect(chat.page.locator("#transcript .line.error")).to_have_count(0)


#: Run in a weblet's own frame, as its script would: try to reach the agent, follow its waiting calls, answer the dialog.
CROSS_FROM_FRAME = """async () => {
  const { connect, E } = await import("/_ocapd/weblet.js");
  const { powers } = await connect();
  const out = {};
  try { await E(powers).agent(); out.agent = "reached"; } catch (e) { out.agent = "refused"; }
  try { await E(powers).follow_pending(); out.follow = "reached"; } catch (e) { out.follow = "refused"; }
  try { window.parent.document.getElementById("agent-once").click(); out.click = "clicked"; } catch (e) { out.click = e.name; }
  return out;
}"""


def test_a_weblets_frame_cannot_answer_the_allow_dialog(chat: Page, daemon: DaemonProcess) -> None:
    open_with(chat, daemon, "counter")
    live = chat.page.frame_locator('#weblet-frames iframe[data-name="counter"]')
    expect(live.locator("#incr")).to_be_enabled()
    before = count_now(chat)
    chat.run("increment 8")
    dialog = allow_dialog(chat)
    expect(dialog.locator("#agent-once")).to_be_enabled()
    frame = next(f for f in chat.page.frames if f.url.startswith("http://") and ".localhost:" in f.url)
    assert frame.evaluate(CROSS_FROM_FRAME) == {"agent": "refused", "follow": "refused", "click": "SecurityError"}
    expect(call_line(chat)).to_have_attribute("data-status", "needs_permission")
    dialog.locator("#agent-deny").click()
    expect(call_line(chat)).to_have_attribute("data-status", "denied")
    assert count_now(chat) == before


def test_later_for_a_weblet_sets_aside_all_its_waiting_calls_and_asks_the_next_weblets(chat: Page, daemon: DaemonProcess) -> None:
    rest = Rest(daemon)
    counter, evil = panel_of(daemon, "counter"), panel_of(daemon, "evil")
    rest.no_grants()
    flood = [rest.post("/api/agent/message", {"text": f"increment {n}", "visible": [counter]})["calls"][0]["call"] for n in (1, 2, 3)]
    other = rest.post("/api/agent/message", {"text": "pwn html=hi", "visible": [evil]})["calls"][0]["call"]
    open_chat(chat, daemon)
    dialog = allow_dialog(chat)
    expect(dialog).to_have_attribute("data-call", flood[0])
    expect(dialog.locator("#agent-queue")).to_have_text("3 more waiting (2 from this weblet).")
    dialog.locator("#agent-later-weblet").click()
    expect(dialog).to_have_attribute("data-call", other)  # the counter's other two are not asked
    expect(dialog.locator("#agent-queue")).to_be_hidden()
    dialog.locator("#agent-deny").click()
    expect(dialog).to_be_hidden()
    for call in flood:  # still waiting, each with its Answer… in the transcript
        line = chat.page.locator(f'#transcript .line.agent-call[data-call="{call}"]')
        expect(line).to_have_attribute("data-status", "needs_permission")
        expect(line.locator('[data-action="answer"]')).to_be_visible()
    for call in flood:
        chat.page.locator(f'#transcript .line.agent-call[data-call="{call}"] [data-action="answer"]').click()
        expect(dialog).to_have_attribute("data-call", call)
        dialog.locator("#agent-deny").click()
        expect(chat.page.locator(f'#transcript .line.agent-call[data-call="{call}"]')).to_have_attribute("data-status", "denied")


# ---------------------------------------------------------------------------
# calls asked elsewhere reach the open page as they happen (follow_pending), not by polling


def synced(chat: Page) -> None:
    """A round trip through the page's agent: what the page started with its session (following) is set up."""
    before = chat.page.locator('#transcript .line.agent-call[data-status="done"]').count()
    chat.run("inventory.list")
    expect(chat.page.locator('#transcript .line.agent-call[data-status="done"]')).to_have_count(before + 1)


def test_a_call_asked_over_rest_while_the_page_is_open_shows_at_once_and_its_end_too(chat: Page, daemon: DaemonProcess) -> None:
    """The page has no poll: the dialog and the line's end can only come from the server's push."""
    rest = Rest(daemon)
    panel = panel_of(daemon, "counter")
    rest.no_grants()
    open_chat(chat, daemon)
    synced(chat)
    asked = rest.post("/api/agent/message", {"text": "increment 13", "visible": [panel]})["calls"][0]
    dialog = allow_dialog(chat)
    expect(dialog).to_have_attribute("data-call", asked["call"])
    expect(dialog.locator("#agent-args")).to_contain_text("13")
    expect(dialog.locator("#agent-expires")).to_have_text(re.compile(r"^Unanswered, it expires in [0-9]+:[0-5][0-9]\.$"))
    line = chat.page.locator(f'#transcript .line.agent-call[data-call="{asked["call"]}"]')
    expect(line).to_have_attribute("data-status", "needs_permission")
    # Answered elsewhere (a script, another tab): the dialog closes and the line shows the result.
    ran = rest.post("/api/agent/permission", {"call": asked["call"], "decision": "once"})
    expect(dialog).to_be_hidden()
    expect(line).to_have_attribute("data-status", "done")
    expect(line.locator(".agent-result")).to_have_text(json.dumps(ran["result"]))


def test_a_write_called_over_mcp_asks_in_the_open_page_and_the_client_gets_the_result(chat: Page, daemon: DaemonProcess) -> None:
    import threading

    import trio
    from test_mcp import mcp_session

    rest = Rest(daemon)
    panel_of(daemon, "counter")
    rest.no_grants()
    open_chat(chat, daemon)
    synced(chat)
    answer: dict[str, Any] = {}

    async def call_over_mcp() -> None:
        async with mcp_session(daemon) as session:
            result = await session.call_tool("counter__increment", {"by": 2})
            answer.update(error=result.is_error, content=result.structured_content)

    client = threading.Thread(target=trio.run, args=(call_over_mcp,), daemon=True)
    client.start()
    dialog = allow_dialog(chat)
    expect(dialog.locator("#agent-command")).to_have_text("increment")
    expect(dialog.locator("#agent-args")).to_contain_text("2")
    expect(dialog.locator("#agent-asked")).to_contain_text("an MCP client called it")
    call = dialog.get_attribute("data-call")
    dialog.locator("#agent-once").click()
    expect(dialog).to_be_hidden()
    line = chat.page.locator(f'#transcript .line.agent-call[data-call="{call}"]')
    expect(line).to_have_attribute("data-status", "done")
    client.join(60)
    assert not client.is_alive() and answer["error"] is False
    expect(line.locator(".agent-result")).to_have_text(json.dumps(answer["content"]))


def test_a_guests_page_never_shows_the_hosts_waiting_calls(browser: Any, chat: Page, daemon: DaemonProcess) -> None:  # noqa: F811
    rest = Rest(daemon)
    panel = panel_of(daemon, "counter")
    rest.no_grants()
    daemon.cli("mkguest", "onlooker")
    chat.page.goto(daemon.chat_url("--as", "onlooker-agent"))
    expect(chat.page.locator("#connection")).to_have_attribute("data-state", "connected")
    asked = rest.post("/api/agent/message", {"text": "increment 21", "visible": [panel]})["calls"][0]
    host = Page(browser)
    try:
        open_chat(host, daemon)  # the host's page is asked …
        expect(allow_dialog(host)).to_have_attribute("data-call", asked["call"])
        # … the guest's never: a line typed meanwhile answers as a guest's chat does, and nothing of the call is there.
        chat.run("increment 21")
        expect(chat.page.locator("#transcript .line.info").last).to_have_text(re.compile(r"^Commands start with /"))
        expect(chat.page.locator("#agent-dialog")).to_be_hidden()
        expect(chat.page.locator("#transcript .line.agent-call")).to_have_count(0)
        host.page.locator("#agent-deny").click()
        expect(host.page.locator(f'#transcript .line.agent-call[data-call="{asked["call"]}"]')).to_have_attribute("data-status", "denied")
        assert host.errors == []
    finally:
        host.context.close()
    assert chat.page.locator("#transcript .line.agent-call").count() == 0
