"""A blocking CapTP client for the command line: the sans-IO session over a plain socket.

The CLI makes one or a few calls and exits, so it drives ``captp.Session``
with blocking socket I/O instead of starting trio: less to import, faster
commands. ``wait(promise)`` pumps frames until the promise settles.

It belongs to the composition root, not to the daemon: a command imports
this, the protocol and the socket path, and nothing of the daemon
(tests/test_cli_imports.py holds it to that).
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

from ocapd.captp import Promise, RemoteRef, Session
from ocapd.captp.session import R_DISCONNECTED
from ocapd.captp.turns import run_turns

__all__ = ["Client", "DaemonNotRunning"]

_HEADER = struct.Struct(">I")


class DaemonNotRunning(ConnectionError):
    """No daemon answers on the socket."""


class Client:
    """One CapTP session with the daemon over its Unix socket."""

    def __init__(self, sock_path: str, *, timeout: float | None = None) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._sock.connect(sock_path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            self._sock.close()
            raise DaemonNotRunning(str(e)) from None
        self._sock.settimeout(timeout)
        self.session = Session(None, name="cli")
        self._buf = bytearray()

    def bootstrap(self) -> RemoteRef:
        return self.session.bootstrap()

    def _flush(self) -> None:
        frames = self.session.data_to_send()
        if frames:
            data = b"".join(part for f in frames for part in (_HEADER.pack(len(f)), f))
            try:
                self._sock.sendall(data)
            except OSError as e:
                self.session.connection_lost(str(e))

    def _pump(self) -> None:
        """Send what is queued, then read and process at least one frame."""
        self._flush()
        try:
            chunk = self._sock.recv(65536)
        except TimeoutError:
            raise  # a deadline of wait(): the session stays up
        except OSError as e:
            chunk = b""
            detail = str(e)
        else:
            detail = "the daemon closed the connection"
        if not chunk:
            self.session.connection_lost(detail)
            return
        self._buf += chunk
        while len(self._buf) >= 4:
            (n,) = _HEADER.unpack_from(self._buf)
            if len(self._buf) < 4 + n:
                break
            frame = bytes(self._buf[4 : 4 + n])
            del self._buf[: 4 + n]
            self.session.receive_frame(frame)
        run_turns()  # the session only records work: reactions run here

    def wait(self, value: Any, timeout: float | None = None) -> Any:
        """Block until ``value`` (a promise) settles; return its value or raise its error.

        With ``timeout`` (seconds), raise ``TimeoutError`` if it has not settled by then.
        """
        if not isinstance(value, Promise):
            return value
        deadline = None if timeout is None else time.monotonic() + timeout
        default_timeout = self._sock.gettimeout()
        while not value.settled:
            if self.session.aborted is not None:
                if self.session.aborted.code == R_DISCONNECTED:
                    raise DaemonNotRunning(self.session.aborted.detail)
                raise self.session.aborted
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no answer in time")
                self._sock.settimeout(left if default_timeout is None else min(left, default_timeout))
            try:
                self._pump()
            except TimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                self.session.connection_lost("the daemon did not answer in time")
            finally:
                if deadline is not None:
                    self._sock.settimeout(default_timeout)
        self._flush()  # gc frames, so the daemon frees what we dropped
        return value.result()

    def close(self) -> None:
        if self.session.aborted is None:
            self.session.abort("closed")
            self._flush()
        self._sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
