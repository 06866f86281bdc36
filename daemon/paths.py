"""Where the daemon keeps its files: the state, run and cache folders, and the files in them.

``OCAPD_HOME`` puts all three folders under one directory (tests and portable
installs use it); otherwise they follow the XDG base directory spec. The run
folder holds the Unix socket, and its 0700 permission is the CLI's authority:
whoever can reach the socket is the user.

A command only needs the socket: :func:`socket_path` finds it with
``os.path`` alone, so the command line never imports ``pathlib`` (a few
milliseconds of every command); :func:`resolve_paths` gives the daemon the
same folders as ``Path`` objects.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "SUN_PATH_MAX",
    "Paths",
    "SocketPathTooLong",
    "UnsafeRunFolder",
    "check_socket_path",
    "ensure_dirs",
    "resolve_paths",
    "socket_path",
]

# sizeof(sockaddr_un.sun_path) on Linux; the path and its terminating NUL must
# fit. (macOS and the BSDs allow 104: there the check is looser than the OS.)
SUN_PATH_MAX = 108

PRIVATE_DIR_MODE = 0o700


class SocketPathTooLong(ValueError):
    """The socket path does not fit in a Unix socket address."""


class UnsafeRunFolder(PermissionError):
    """The run folder belongs to someone else, so its permission proves nothing."""


class Paths:
    """The daemon's three folders; every other location is derived from them.

    Immutable, compared and hashed by its folders. A plain class, not a
    dataclass: every CLI command imports this module, and ``dataclasses``
    would bring ``inspect`` (and ``ast``, ``dis``, ``tokenize``) into each start.
    """

    __slots__ = ("state", "run", "cache")
    state: Path  # durable: the database, logs, per-worker folders
    run: Path  # for one run of the daemon: socket and pid file
    cache: Path  # anything that can be rebuilt

    def __init__(self, state: Path, run: Path, cache: Path) -> None:
        object.__setattr__(self, "state", state)
        object.__setattr__(self, "run", run)
        object.__setattr__(self, "cache", cache)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Paths is immutable (cannot set {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Paths is immutable (cannot delete {name!r})")

    def __eq__(self, other: object) -> bool:
        if type(other) is not Paths:
            return NotImplemented
        return (self.state, self.run, self.cache) == (other.state, other.run, other.cache)

    def __hash__(self) -> int:
        return hash((self.state, self.run, self.cache))

    def __repr__(self) -> str:
        return f"Paths(state={self.state!r}, run={self.run!r}, cache={self.cache!r})"

    @property
    def db(self) -> Path:
        return self.state / "ocapd.sqlite"

    @property
    def blobs(self) -> Path:
        # Reserved: blobs live in the database today (see daemon/db.py).
        return self.state / "blobs"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def workers(self) -> Path:
        return self.state / "workers"

    @property
    def sock(self) -> Path:
        return self.run / "ocapd.sock"

    @property
    def pidfile(self) -> Path:
        return self.run / "ocapd.pid"

    @property
    def lockfile(self) -> Path:
        # In state, not run: the lock guards the database, which outlives runs.
        return self.state / "ocapd.lock"

    @property
    def daemon_log(self) -> Path:
        return self.logs / "daemon.log"


def _xdg(env: Mapping[str, str], variable: str, default: str) -> str:
    # The spec: a relative path in an XDG variable is invalid and is ignored.
    value = env.get(variable, "")
    return value if value and os.path.isabs(value) else default


def _home(env: Mapping[str, str]) -> str:
    return env.get("HOME", "") or os.path.expanduser("~")  # as Path.home()


def _folders(env: Mapping[str, str]) -> tuple[str, str, str]:
    """The state, run and cache folders (see :func:`resolve_paths`), as strings."""
    home_override = env.get("OCAPD_HOME", "")
    if home_override:
        root = os.path.expanduser(home_override)
        if not os.path.isabs(root):  # as Path.absolute(): no ".." is collapsed
            root = os.path.join(os.getcwd(), root)
        return os.path.join(root, "state"), os.path.join(root, "run"), os.path.join(root, "cache")
    home = _home(env)
    state = os.path.join(_xdg(env, "XDG_STATE_HOME", os.path.join(home, ".local", "state")), "ocapd")
    runtime = env.get("XDG_RUNTIME_DIR", "")
    run = os.path.join(runtime, "ocapd") if runtime and os.path.isabs(runtime) else os.path.join(state, "run")
    cache = os.path.join(_xdg(env, "XDG_CACHE_HOME", os.path.join(home, ".cache")), "ocapd")
    return state, run, cache


def socket_path(env: Mapping[str, str] = os.environ) -> str:
    """The daemon's socket for this environment (``resolve_paths(env).sock``), without ``pathlib``."""
    sock = os.path.join(_folders(env)[1], "ocapd.sock")
    check_socket_path(sock)
    return sock


def check_socket_path(sock: str | Path) -> None:
    """Raise :class:`SocketPathTooLong` if ``sock`` cannot be bound as a Unix socket."""
    length = len(os.fsencode(sock))
    if length + 1 > SUN_PATH_MAX:
        raise SocketPathTooLong(
            f"socket path {str(sock)!r} is {length} bytes; a Unix socket path must be "
            f"under {SUN_PATH_MAX} bytes: set OCAPD_HOME or XDG_RUNTIME_DIR to a shorter folder"
        )


def resolve_paths(env: Mapping[str, str] = os.environ) -> Paths:
    """The folders for this environment; raises :class:`SocketPathTooLong` if the socket won't fit.

    With ``OCAPD_HOME``: ``$OCAPD_HOME/{state,run,cache}``. Otherwise
    ``$XDG_STATE_HOME/ocapd`` (default ``~/.local/state/ocapd``),
    ``$XDG_RUNTIME_DIR/ocapd`` (if unset: ``<state>/run``, inside the user's
    home rather than a guessable ``/tmp`` name another user could create
    first) and ``$XDG_CACHE_HOME/ocapd`` (default ``~/.cache/ocapd``).
    Nothing is created; see :func:`ensure_dirs`.
    """
    from pathlib import Path

    state, run, cache = _folders(env)
    paths = Paths(state=Path(state), run=Path(run), cache=Path(cache))
    check_socket_path(paths.sock)
    return paths


def _make_private_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, mode=PRIVATE_DIR_MODE)
    except FileExistsError:
        return
    # mkdir's mode is filtered by the umask; say it exactly.
    os.chmod(path, PRIVATE_DIR_MODE)


def ensure_dirs(paths: Paths) -> None:
    """Create the folders (mode 0700) if missing, and make sure the run folder is private.

    The run folder is re-chmodded to 0700 every time, and must belong to this
    user (:class:`UnsafeRunFolder` otherwise): its permission is what keeps
    other users away from the socket.
    """
    for folder in (paths.state, paths.logs, paths.workers, paths.run, paths.cache):
        _make_private_dir(folder)
    info = os.stat(paths.run, follow_symlinks=False)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise UnsafeRunFolder(
            f"run folder {str(paths.run)!r} is not a directory owned by this user "
            f"(uid {os.getuid()}); remove it or set OCAPD_HOME"
        )
    os.chmod(paths.run, PRIVATE_DIR_MODE)
