"""The chat page with a model set (issue 13): typed text goes to an OpenAI-compatible endpoint, in a real Chromium.

The endpoint is the scripted chat-completions server of the model tests
(`scripted_model.py`: a real HTTP server on 127.0.0.1 whose answers each test
queues); the daemon is a real one (`ocapd start`) with the shipped counter and
a weblet whose manifest strings are markup, and the host's model set to that
server with `ocapd agent set`. What holds: the model's read call runs and its
words show after the call line; its write call asks in the page's Allow dialog,
saying the model asked; a model that fails is one warning line and the router's
answer; the model's words are text, never markup.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from daemon_harness import DaemonProcess
from scripted_model import ScriptedModel, text_answer, tool_answer
from test_chat_agent_browser import allow_dialog, call_line, chat, daemon, open_with  # noqa: F401 (fixtures)
from test_chat_browser import HOSTILE, Page, browser, expect, pytestmark  # noqa: F401 (fixtures)


@pytest.fixture(scope="module")
def model(daemon: DaemonProcess) -> Iterator[ScriptedModel]:  # noqa: F811 (the imported fixture)
    """The scripted endpoint, set as the host's model for the whole module."""
    m = ScriptedModel()
    daemon.out("agent", "set", "--url", m.url, "--model", "test-model")
    try:
        yield m
    finally:
        daemon.cli("agent", "unset", check=False)
        m.close()


@pytest.fixture(autouse=True)
def _fresh_script(model: ScriptedModel) -> Iterator[None]:
    model.script.clear()
    model.bodies.clear()
    yield
    assert model.script == [], f"answers scripted but never asked for: {model.script}"


def last_block(tab: Page) -> Any:
    """The transcript's block of the newest typed line."""
    return tab.page.locator("#transcript .block").last


def kinds(block: Any) -> list[str]:
    """The kinds of a block's lines, in order (command, agent-call, agent-reply, warn, …)."""
    return list(block.locator(".line").evaluate_all("lines => lines.map(l => l.dataset.kind)"))


def count_through_the_model(tab: Page, model: ScriptedModel) -> int:
    """The counter's value, asked the way this page asks now: the model calls counter.value."""
    model.script += [tool_answer("counter__value", {}), text_answer("Here it is.")]
    tab.run("what is the count?")
    block = last_block(tab)
    expect(block.locator(".line.agent-reply")).to_have_text("Here it is.")
    return int(json.loads(block.locator(".line.agent-call .agent-result").text_content() or "")["count"])


def test_the_models_read_call_runs_and_its_words_show_after_the_call_line(chat: Page, daemon: DaemonProcess,  # noqa: F811
                                                                         model: ScriptedModel) -> None:  # fmt: skip
    open_with(chat, daemon, "counter")
    model.script += [tool_answer("counter__value", {}), text_answer("The count is shown above.")]
    chat.run("how far have we counted?")
    block = last_block(chat)
    expect(block.locator(".line.agent-reply")).to_have_text("The count is shown above.")
    line = block.locator(".line.agent-call")
    expect(line).to_have_attribute("data-status", "done")
    expect(line.locator(".agent-from")).to_have_text("Counter")
    expect(line.locator(".agent-tool")).to_have_text("value")
    assert kinds(block) == ["command", "agent-call", "agent-reply"]
    expect(chat.page.locator("#agent-dialog")).to_be_hidden()  # a read runs without asking
    # The page sent its open panel as the visible hint: the model was offered the counter's tools.
    offered = {t["function"]["name"] for t in model.bodies[0]["tools"]}
    assert {"counter__value", "counter__increment"} <= offered and "evil__pwn" not in offered
    assert model.bodies[0]["messages"][-1] == {"role": "user", "content": "how far have we counted?"}


def test_a_write_call_of_the_model_asks_in_the_allow_dialog_and_runs_after_allow_once(chat: Page, daemon: DaemonProcess,  # noqa: F811
                                                                                     model: ScriptedModel) -> None:  # fmt: skip
    open_with(chat, daemon, "counter")
    before = count_through_the_model(chat, model)
    model.script += [tool_answer("counter__increment", {"by": 3}), text_answer("I asked to add 3.")]
    chat.run("add three, please")
    dialog = allow_dialog(chat)
    expect(dialog.locator("#agent-who")).to_have_text("Counter")
    expect(dialog.locator("#agent-command")).to_have_text("increment")
    expect(dialog.locator("#agent-args dt")).to_have_text("by")
    expect(dialog.locator("#agent-args dd")).to_have_text("3")
    expect(dialog.locator("#agent-asked")).to_contain_text("the model chose it")
    expect(dialog.locator("#agent-asked")).to_contain_text("counter.increment")
    block = last_block(chat)
    # The model's words come after the call's line, and cannot hide that it waits for the user.
    expect(block.locator(".line.agent-reply")).to_have_text("I asked to add 3.\ncounter.increment changes things in Counter: allow it?")
    assert kinds(block) == ["command", "agent-call", "agent-reply"]
    line = block.locator(".line.agent-call")
    expect(line).to_have_attribute("data-status", "needs_permission")
    dialog.locator("#agent-once").click()
    expect(dialog).to_be_hidden()
    expect(line).to_have_attribute("data-status", "done")
    expect(line.locator(".agent-result")).to_have_text(json.dumps({"count": before + 3}))
    assert count_through_the_model(chat, model) == before + 3


@pytest.mark.parametrize(
    ("scripted", "says"),
    [
        ((500, {"error": {"message": "overloaded"}}), "Model error: the model answered HTTP 500: overloaded"),
        ("this is not JSON", "Model error: the model's answer was malformed (not JSON)"),
        ("hang", "Model error: the model did not answer within 0.5 s"),
    ],
    ids=["http-500", "malformed", "timeout"],
)
def test_a_model_that_fails_is_one_warning_line_and_the_routers_answer(chat: Page, daemon: DaemonProcess, model: ScriptedModel,  # noqa: F811
                                                                      scripted: Any, says: str) -> None:  # fmt: skip
    open_with(chat, daemon, "counter")
    daemon.out("agent", "set", "--url", model.url, "--model", "test-model", "--timeout", "0.5")
    try:
        model.script.append(scripted)
        chat.run("value")
        block = last_block(chat)
        call = block.locator(".line.agent-call")
        expect(call).to_have_attribute("data-status", "done")  # the router ran it, as typed
        warning = block.locator(".line.warn")
        expect(warning).to_have_text(f"{says}; the built-in router answered instead.")
        assert kinds(block) == ["command", "warn", "agent-call"]  # one line, then the router's answer (its call)
        # Words the router does not know: the warning, then its one-line answer.
        model.script.append(scripted)
        chat.run("format the disk")
        block = last_block(chat)
        expect(block.locator(".line.agent-reply")).to_contain_text("No open weblet has a command for that")
        expect(block.locator(".line.warn")).to_have_text(f"{says}; the built-in router answered instead.")
        assert kinds(block) == ["command", "warn", "agent-reply"]
    finally:
        daemon.out("agent", "set", "--url", model.url, "--model", "test-model")


def test_markup_in_the_models_words_and_errors_renders_as_text(chat: Page, daemon: DaemonProcess, model: ScriptedModel) -> None:  # noqa: F811
    open_with(chat, daemon, "counter")
    model.script += [text_answer(f"Sure! {HOSTILE}")]
    chat.run("say something")
    expect(last_block(chat).locator(".line.agent-reply")).to_have_text(f"Sure! {HOSTILE}")
    model.script += [(500, {"error": {"message": f"bad {HOSTILE}"}})]
    chat.run("format the disk")
    expect(last_block(chat).locator(".line.warn")).to_contain_text(f"bad {HOSTILE}")
    model.script += [tool_answer("counter__increment", {"by": 1}), text_answer(f"<i>asked</i> {HOSTILE}")]
    chat.run("add one")
    dialog = allow_dialog(chat)
    expect(last_block(chat).locator(".line.agent-reply")).to_contain_text(f"<i>asked</i> {HOSTILE}")
    expect(chat.page.locator("#transcript img, #transcript script, #transcript b, #transcript i")).to_have_count(0)
    assert chat.page.evaluate("() => document.querySelectorAll('img[src=x], b, i, script:not([src])').length") == 0
    dialog.locator("#agent-deny").click()
    expect(call_line(chat)).to_have_attribute("data-status", "denied")


def test_a_long_answer_of_the_model_shows_whole_and_still_ends_with_the_calls_that_wait(chat: Page, daemon: DaemonProcess,  # noqa: F811
                                                                                       model: ScriptedModel) -> None:  # fmt: skip
    """The server keeps 4000 characters of the model's words and adds a line per waiting call; the page cuts neither."""
    open_with(chat, daemon, "counter")
    words = ("All done, nothing to allow here. " * 200)[:3990]
    model.script += [tool_answer("counter__increment", {"by": 2}), text_answer(words)]
    chat.run("add two")
    dialog = allow_dialog(chat)
    reply = last_block(chat).locator(".line.agent-reply")
    expect(reply).to_have_text(f"{words}\ncounter.increment changes things in Counter: allow it?")
    dialog.locator("#agent-deny").click()
    expect(call_line(chat)).to_have_attribute("data-status", "denied")
