"""What a new user meets at the command line: one rendering, errors that say what is wrong, all-or-nothing commands.

Each test is a defect a new user hit (issue "What a new user hit"), written
against the real command and a real daemon.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from daemon_harness import DaemonProcess

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory):
    with DaemonProcess(tmp_path_factory.mktemp("cli") / "home") as d:
        yield d


# -- one rendering, the chat's ------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "shown"),
    [
        ("'plain text'", "plain text"),
        ("None", "null"),
        ("[True, False, 1, 2.5]", "[true, false, 1, 2.5]"),
        ("b'x'", "bytes(1) 78"),
        ("{'a': b'x', 'n': None}", '{"a": bytes(1) 78, "n": null}'),
        ("Tagged('point', {'x': 1})", 'point({"x": 1})'),
        ("[Far('Thing', f=lambda: 1)]", "[<a reference>]"),
        ("2**70", str(2**70)),
    ],
)
def test_eval_renders_values_one_way_the_chats_way(daemon: DaemonProcess, source: str, shown: str) -> None:
    assert daemon.out("eval", source) == shown


def test_bytes_render_alike_at_the_top_and_inside_data(daemon: DaemonProcess) -> None:
    top = daemon.out("eval", "b'xy'")
    inside = daemon.out("eval", "[b'xy']")
    assert inside == f"[{top}]"


def test_a_named_reference_does_not_ask_to_be_named(daemon: DaemonProcess) -> None:
    anonymous = daemon.cli("eval", "Far('Thing', f=lambda: 1)")
    assert "name it with -n" in anonymous.stdout
    named = daemon.cli("eval", "Far('Thing', f=lambda: 1)", "-w", "thing-maker", "-n", "thing")
    assert "name it with -n" not in named.stdout + named.stderr
    assert "thing" in daemon.out("list").split()


def test_an_error_from_evaluated_code_keeps_its_type(daemon: DaemonProcess) -> None:
    failed = daemon.cli("eval", "1/0", check=False)
    assert failed.returncode == 1
    assert failed.stderr.strip() == "ocapd: division by zero (ZeroDivisionError)"


# -- errors that say what is wrong ------------------------------------------------


def test_install_of_a_missing_file_says_it_does_not_exist(daemon: DaemonProcess, tmp_path: Path) -> None:
    missing = tmp_path / "does" / "not" / "exist"
    result = daemon.cli("install", str(missing), "-n", "x1", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == f"ocapd: no such file or folder: {missing}"
    assert "x1" not in daemon.out("list").split()


@pytest.mark.parametrize("command", ["install", "make"])
def test_a_bogus_power_level_lists_the_levels(daemon: DaemonProcess, command: str) -> None:
    target = str(REPO / "examples" / "weblets" / "counter") if command == "install" else str(REPO / "examples" / "weblets" / "counter" / "backend.py")
    result = daemon.cli(command, target, "-n", "bogus-powers", "-p", "BOGUS", check=False)
    assert result.returncode == 1
    line = result.stderr.strip()
    assert "'BOGUS' is neither a power level nor a pet name" in line
    for level in ("NONE", "ENDO", "HOST", "pet names"):
        assert level in line
    assert "bogus-powers" not in daemon.out("list").split()


def test_open_of_something_that_is_not_a_weblet_says_what_it_is(daemon: DaemonProcess) -> None:
    daemon.cli("store", "--text", "hello", "-n", "greeting")
    result = daemon.cli("open", "greeting", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == "ocapd: greeting names a marshal, not a weblet"


def test_bare_ocapd_prints_help_and_version_is_known(daemon: DaemonProcess) -> None:
    bare = daemon.cli()
    assert bare.stdout.startswith("usage: ocapd") and bare.stderr == ""
    assert daemon.out("--version").startswith("ocapd ")


# -- all or nothing -------------------------------------------------------------------


def test_remove_of_several_names_changes_nothing_when_one_is_missing(daemon: DaemonProcess) -> None:
    daemon.cli("mkdir", "docs")
    daemon.cli("store", "--text", "kept", "-n", "kept-one")
    daemon.cli("copy", "kept-one", "docs.g3")
    result = daemon.cli("remove", "docs.g3", "nosuch", check=False)
    assert result.returncode == 1
    assert "nosuch" in result.stderr and "nothing was removed" in result.stderr
    assert daemon.out("list", "docs").split() == ["g3"]
    daemon.cli("remove", "docs.g3", "kept-one")
    assert daemon.out("list", "docs").split() == []
    assert "kept-one" not in daemon.out("list").split()
