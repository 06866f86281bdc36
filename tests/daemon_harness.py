"""A real ocapd daemon process for tests: start, stop, kill, restart, CLI and CapTP access.

Each harness owns a fresh OCAPD_HOME. Nothing is mocked: the daemon is the
`python -m ocapd run-daemon` process users run, the CLI is the real command,
and `connect()` opens a CapTP session over the daemon's Unix socket.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from ocapd.captp import E, open_stream_connection

PYTHON = sys.executable
#: The example weblets shipped in the package (``ocapd.examples``).
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "weblets"
#: Generous: a loaded CI machine may be slow to start Python; tests never assert it.
READY_TIMEOUT = 30.0


class DaemonProcess:
    def __init__(self, home: Path, port: int | None = 0) -> None:
        """``port``: the gateway's port (``--port``); 0 (the default) picks a free one, so
        tests never take the port a real daemon on this machine may use."""
        self.home = home
        self.port = port
        self.env = {**os.environ, "OCAPD_HOME": str(home)}
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> DaemonProcess:
        """``with DaemonProcess(home) as d:`` — a fresh home made, the daemon started; stopped at the end."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def sock(self) -> Path:
        return self.home / "run" / "ocapd.sock"

    @property
    def db_path(self) -> Path:
        return self.home / "state" / "ocapd.sqlite"

    def start(self) -> None:
        """Start the daemon in the foreground (as a child); wait until it answers and,
        when it has a gateway, until the gateway listens too (it comes up just after)."""
        port_file = self.home / "run" / "gateway.port"
        port_file.unlink(missing_ok=True)  # a daemon killed with -9 leaves its old one
        log = open(self.home / "daemon-stderr.log", "ab")
        port_args = ["--port", str(self.port)] if self.port is not None else []
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "ocapd", "run-daemon", "--quiet", *port_args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}: {self.stderr()}")
            if self.cli("ping", check=False).returncode == 0:
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("daemon did not become ready")
        while self.port is not None and not port_file.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"the gateway did not come up: {self.stderr()}")
            time.sleep(0.02)

    def stderr(self) -> str:
        try:
            return (self.home / "daemon-stderr.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def cli(self, *args: str, check: bool = True, input: bytes | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [PYTHON, "-m", "ocapd", *args],
            env=self.env,
            input=input.decode() if input is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"ocapd {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def out(self, *args: str) -> str:
        return self.cli(*args).stdout.strip()

    @property
    def gateway_port(self) -> int:
        """The port the gateway bound (written by the daemon to ``run/gateway.port``)."""
        return int((self.home / "run" / "gateway.port").read_text().strip())

    def chat_url(self, *args: str) -> str:
        """The Chat link ``ocapd chat`` prints (``http://localhost:PORT/#token=…``)."""
        import re

        out = self.out("chat", *args)
        m = re.search(r"https?://\S+#token=\S+", out)
        if m is None:
            raise AssertionError(f"`ocapd chat` printed no chat link: {out!r}")
        return m.group(0)

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[Any]:
        """A CapTP session with the daemon; yields the root host agent."""
        stream = await trio.open_unix_socket(str(self.sock))
        async with open_stream_connection(stream, None, name="test") as conn:
            facet = conn.bootstrap()
            yield await E(facet).host(), facet, conn


def zip_bundle(files: dict[str, str | bytes]) -> bytes:
    """A zip archive of ``files`` (member name -> content), as a weblet bundle or a backend is passed around."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def example_zip(name: str) -> bytes:
    """The example weblet ``name`` zipped from its files only: running its backend
    leaves a __pycache__ beside them, which ``ocapd install FOLDER`` leaves out too."""
    return zip_bundle({p.name: p.read_bytes() for p in (EXAMPLES / name).iterdir() if p.is_file()})
