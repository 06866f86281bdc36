"""The daemon under attack from its guests and anonymous peers (issue 9): a real daemon, real sockets.

Limits are scaled down through ``OCAPD_LIMITS`` so each attack proves its
property quickly; throughout, the owner's ``ocapd ping`` still answers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import DaemonProcess

from ocapd.captp import E

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def make_daemon(tmp_path: Path, **limits: Any) -> DaemonProcess:
    d = DaemonProcess(tmp_path / "home", port=0)
    d.home.mkdir()
    if limits:
        d.env["OCAPD_LIMITS"] = json.dumps(limits)
    return d


@pytest.fixture
def daemon(tmp_path: Path):
    d = make_daemon(tmp_path)
    d.start()
    try:
        yield d
    finally:
        d.stop()


# -- item 16 ------------------------------------------------------------------------------------


def test_a_guest_sees_the_names_it_was_introduced_to_at_once(daemon: DaemonProcess) -> None:
    daemon.out("store", "--text", "a present", "-n", "gift")
    daemon.out("mkguest", "g1", "--introduce", "gift:gift")
    assert "gift" in daemon.out("list", "--as", "g1-agent").split()
    daemon.restart()
    assert "gift" in daemon.out("list", "--as", "g1-agent").split()


def test_a_bad_limits_override_stops_the_daemon_with_a_clear_message(tmp_path: Path) -> None:
    d = make_daemon(tmp_path, no_such_limit=3)
    with pytest.raises(RuntimeError, match="unknown limit 'no_such_limit'"):
        d.start()


async def test_the_daemon_reports_its_shared_budget(daemon: DaemonProcess) -> None:
    async with daemon.connect() as (_, facet, _):
        budget = (await E(facet).inspect())["daemon"]["budget"]
        assert budget["max_answers"] == 262_144
