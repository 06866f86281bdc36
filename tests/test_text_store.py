"""Text stores: text a holder reads and replaces, kept in the database across restarts.

The notes example asks its host for "a place to keep notes"; a text store is
what the product ships for that answer, made in one command (`ocapd mktext`,
or `/mktext` in the chat).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from daemon_harness import DaemonProcess

from ocapd.daemon.values import MAX_TEXT_BYTES


@pytest.fixture
def daemon(tmp_path: Path):
    with DaemonProcess(tmp_path / "home") as d:
        yield d


def test_a_text_store_keeps_its_text_across_a_restart_and_a_kill(daemon: DaemonProcess) -> None:
    daemon.cli("mktext", "notes-store", "first line")
    assert daemon.out("eval", "E(s).get()", "s:notes-store") == "first line"
    daemon.cli("eval", "E(s).set('written before the restart')", "s:notes-store")
    daemon.restart()
    assert daemon.out("eval", "E(s).get()", "s:notes-store") == "written before the restart"
    assert daemon.out("eval", "E(s).append(' and after')", "s:notes-store") == "written before the restart and after"
    daemon.kill9()  # an acknowledged write survives kill -9
    daemon.start()
    assert daemon.out("eval", "E(s).get()", "s:notes-store") == "written before the restart and after"


def test_two_text_stores_keep_their_own_text(daemon: DaemonProcess) -> None:
    daemon.cli("mktext", "one", "uno")
    daemon.cli("mktext", "two")
    assert daemon.out("eval", "E(s).get()", "s:two") == ""
    daemon.cli("eval", "E(s).set('dos')", "s:two")
    assert daemon.out("eval", "[await E(a).get(), await E(b).get()]", "a:one", "b:two") == '["uno", "dos"]'
    assert daemon.out("list", "-l").count("text-store") == 2


def test_a_text_store_refuses_what_is_not_text_or_too_much(daemon: DaemonProcess) -> None:
    daemon.cli("mktext", "small")
    not_text = daemon.cli("eval", "E(s).set(b'bytes')", "s:small", check=False)
    assert not_text.returncode == 1 and "a text store keeps text, not bytes" in not_text.stderr
    too_much = daemon.cli("eval", f"E(s).set('x' * {MAX_TEXT_BYTES + 1})", "s:small", check=False)
    assert too_much.returncode == 1 and f"at most {MAX_TEXT_BYTES}" in too_much.stderr
    assert daemon.out("eval", "E(s).get()", "s:small") == ""


def test_mktext_takes_a_pet_name_only(daemon: DaemonProcess) -> None:
    bad = daemon.cli("mktext", "Not A Name", check=False)
    assert bad.returncode == 1 and "Not A Name" in bad.stderr
    assert "Not A Name" not in daemon.out("list")
