"""Where ocapd keeps its files, and that the folders guard the CLI's authority."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ocapd.daemon.paths import Paths, SocketPathTooLong, ensure_dirs, resolve_paths, socket_path


def test_ocapd_home_puts_everything_under_one_folder(tmp_path: Path) -> None:
    p = resolve_paths({"OCAPD_HOME": str(tmp_path)})
    assert (p.state, p.run, p.cache) == (tmp_path / "state", tmp_path / "run", tmp_path / "cache")
    assert p.sock == tmp_path / "run" / "ocapd.sock"
    assert p.db.parent == p.state


def test_xdg_folders_are_used_without_ocapd_home(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path / "s"), "XDG_RUNTIME_DIR": str(tmp_path / "r"), "XDG_CACHE_HOME": str(tmp_path / "c"), "HOME": str(tmp_path)}
    p = resolve_paths(env)
    assert p.state == tmp_path / "s" / "ocapd"
    assert p.run == tmp_path / "r" / "ocapd"
    assert p.cache == tmp_path / "c" / "ocapd"


def test_folders_are_private_even_when_they_existed_with_wider_modes(tmp_path: Path) -> None:
    p = resolve_paths({"OCAPD_HOME": str(tmp_path)})
    p.run.mkdir(parents=True, mode=0o755)
    os.chmod(p.run, 0o755)
    ensure_dirs(p)
    for folder in (p.state, p.run, p.cache):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_a_socket_path_too_long_for_unix_sockets_is_refused_clearly(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 120)
    with pytest.raises(SocketPathTooLong, match="ocapd.sock"):
        resolve_paths({"OCAPD_HOME": str(deep)})


@pytest.mark.parametrize(
    "env",
    [
        {"OCAPD_HOME": "/tmp/some-home"},
        {"OCAPD_HOME": "relative/home"},
        {"HOME": "/home/u"},
        {"HOME": "/home/u", "XDG_RUNTIME_DIR": "/run/user/1000", "XDG_STATE_HOME": "/s"},
        {"HOME": "/home/u", "XDG_RUNTIME_DIR": "relative", "XDG_STATE_HOME": "also-relative"},
    ],
)
def test_the_commands_socket_path_is_the_daemons(env: dict[str, str]) -> None:
    # Commands find the socket without pathlib; it must be the very file the daemon binds.
    assert socket_path(env) == str(resolve_paths(env).sock)


def test_paths_are_immutable_values() -> None:
    a = Paths(Path("/s"), Path("/r"), Path("/c"))
    assert a == Paths(Path("/s"), Path("/r"), Path("/c")) and hash(a) == hash(Paths(Path("/s"), Path("/r"), Path("/c")))
    assert a != Paths(Path("/s"), Path("/r"), Path("/other")) and a != (Path("/s"), Path("/r"), Path("/c"))
    assert a.sock == Path("/r/ocapd.sock") and a.db == Path("/s/ocapd.sqlite")
    assert repr(a) == "Paths(state=PosixPath('/s'), run=PosixPath('/r'), cache=PosixPath('/c'))"
    for attempt in (lambda: setattr(a, "state", Path("/x")), lambda: delattr(a, "run"), lambda: setattr(a, "new", 1)):
        with pytest.raises(AttributeError):
            attempt()
    assert a.state == Path("/s")
