"""What every command shares: the connection to the daemon, the agent it acts as, and argument parsing helpers.

A command talks to the daemon through a ``Conversation``: one blocking CapTP
client over the daemon's Unix socket (``ocapd.client``), and the agent
named by ``--as`` (the host by default). Nothing here imports trio or the
daemon: a command costs little more than starting Python.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

__all__ = [
    "CliError",
    "Conversation",
    "agent_command",
    "bundle_bytes",
    "connect",
    "parse_message",
    "parse_pairs",
    "POWER_LEVELS",
    "looks_like_a_path",
    "parse_powers",
    "ping_ok",
    "socket_path",
    "state_paths",
]


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


def state_paths() -> Any:
    from ocapd.daemon.paths import resolve_paths

    return resolve_paths()


def socket_path() -> str:
    """The daemon's socket: all a command needs of the state folders (no ``pathlib``)."""
    from ocapd.daemon.paths import socket_path

    return socket_path()


def connect() -> Any:
    from ocapd.client import Client, DaemonNotRunning

    try:
        return Client(socket_path())
    except DaemonNotRunning:
        raise CliError("the daemon is not running; start it with `ocapd start`") from None


class Conversation:
    """A connected client plus the agent the command acts as (``--as``)."""

    def __init__(self, args: argparse.Namespace) -> None:
        from ocapd.captp import E

        self.E = E
        self.client = connect()
        self.facet = self.client.bootstrap()
        self._as = getattr(args, "as_agent", None)
        self._agent: Any = None

    @property
    def agent(self) -> Any:
        if self._agent is None:
            if self._as:
                self._agent = self.call(self.E(self.facet).agent(self._as))
            else:
                self._agent = self.call(self.E(self.facet).host())
        return self._agent

    def call(self, promise: Any, timeout: float | None = None) -> Any:
        return self.client.wait(promise, timeout)

    def on_agent(self, method: str, *args: Any) -> Any:
        return self.call(getattr(self.E(self.agent), method)(*args))

    def follow(self, stream: Any, show: Callable[[dict[str, Any]], None]) -> None:
        while True:
            event = self.call(self.E(stream).next())
            if event.get("done"):
                return
            show(event["value"])

    def close(self) -> None:
        self.client.close()


def agent_command(fn: Callable[[Conversation, argparse.Namespace], None]) -> Callable[[argparse.Namespace], None]:
    def run(args: argparse.Namespace) -> None:
        conv = Conversation(args)
        try:
            fn(conv, args)
        finally:
            conv.close()

    return run


def ping_ok() -> bool:
    sock = socket_path()
    if not os.path.exists(sock):  # nothing to ask: spare `ocapd start` the client's imports
        return False
    from ocapd.client import Client

    try:
        with Client(sock, timeout=5) as c:
            from ocapd.captp import E

            return bool(c.wait(E(c.bootstrap()).ping()) == "pong")
    except Exception:  # not running, a stale socket, or a daemon on its way down: no
        return False


#: The power levels, as every command and the chat name them (DESIGN §4).
POWER_LEVELS = ("NONE", "ENDO", "HOST")


def parse_powers(text: str) -> Any:
    """``-p``: a power level, or comma-separated pet names (custom powers)."""
    import re

    if text in POWER_LEVELS:
        return text
    names = [n for n in text.split(",") if n]
    bad = [n for n in names if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,127}(\.[a-z0-9][a-z0-9-]{0,127})*", n)]
    if not names or bad:
        what = f"{bad[0]!r} is neither a power level nor a pet name" if bad else "no powers given"
        raise CliError(
            f"powers: {what}; give NONE (no endowments), ENDO, HOST (the host's own powers: trusted code only), "
            "or the pet names to introduce, comma-separated (e.g. -p notes-store,greeting)"
        )
    return names


def parse_pairs(pairs: list[str], what: str) -> tuple[list[str], list[str]]:
    left, right = [], []
    for pair in pairs:
        a, sep, b = pair.partition(":")
        if not sep or not a or not b:
            raise CliError(f"{what}: expected name:petname, got {pair!r}")
        left.append(a)
        right.append(b)
    return left, right


def parse_message(text: str) -> tuple[list[str], list[str], list[str]]:
    """Split "see @doc:report now" into strings, edge names and pet names."""
    import re

    strings, edges, pets = [], [], []
    pos = 0
    for m in re.finditer(r"@([a-z0-9][a-z0-9-]*)(?::([A-Za-z0-9][A-Za-z0-9.-]*))?", text):
        strings.append(text[pos : m.start()])
        edges.append(m.group(1))
        pets.append(m.group(2) or m.group(1))
        pos = m.end()
    strings.append(text[pos:])
    return strings, edges, pets


def looks_like_a_path(text: str) -> bool:
    """Whether a command argument names a file rather than a pet name (which has no ``/`` and no extension)."""
    return os.sep in text or text.startswith(".") or text.lower().endswith((".zip", ".html", ".htm", ".py"))


def bundle_bytes(path: str) -> bytes:
    """A weblet bundle from a zip, a single HTML file or a folder (zipped here)."""
    if not os.path.exists(path):
        raise CliError(f"no such file or folder: {path}")
    if os.path.isdir(path):
        from ocapd.daemon.weblet import read_bundle

        return read_bundle(path).to_zip()
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror}") from None
