"""The gateway under load, as one JSON line.

    python tests/bench/gateway.py [--quick]

Starts a real daemon in a child process (this file with ``--serve``: the
daemon with its gateway on a free port and the benchmark-only raw echo route
``/_ocapd/echo`` enabled), then measures from this process:

- ``echo_rtt_us``: median round trip of one small binary WebSocket message
  through the raw echo route - hypercorn, quart and the socket, no CapTP;
- ``call_rtt_us``: median of ``await E(gateway).ping()`` over ``/_ocapd/ws``,
  the same server in the same run; ``call_over_echo`` is their ratio;
- ``fetch_rtt_us``: median of ``fetch(token)`` then ``list()`` on the agent;
- ``hold_seconds``: time to open N sessions concurrently and have each answer
  a ping; ``idle_session_bytes``: the daemon's RSS growth per held session.

Raw and CapTP samples alternate in blocks so background load falls on both.
Only the JSON goes to stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio  # noqa: E402
from trio_websocket import wrap_client_stream  # noqa: E402

from ocapd.captp import E, open_stream_connection, open_websocket_connection  # noqa: E402

MAX_MESSAGE = 16 * 1024 * 1024
PAYLOAD = b"\x93\xa5deliver" + bytes(40)  # about the size of a small CapTP call


def log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


# -- the server side -----------------------------------------------------------------------------


def serve() -> None:
    raise_nofile()
    from ocapd.daemon.paths import ensure_dirs, resolve_paths
    from ocapd.daemon.service import configure_logging, run_daemon
    from ocapd.gateway import gateway_hook

    paths = resolve_paths()
    ensure_dirs(paths)
    configure_logging(paths, to_stderr=False)
    trio.run(lambda: run_daemon(paths, gateway=gateway_hook(0, enable_echo=True)))


# -- the client side -----------------------------------------------------------------------------


@asynccontextmanager
async def websocket(port: int, path: str, token: str | None = None) -> AsyncIterator[Any]:
    """A WebSocket; with ``token``, it rides in the upgrade as the chat page sends it (an authenticated session)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    protocols = ["ocapd-captp", f"ocapd-token.{token}"] if token else []
    try:
        async with trio.open_nursery() as nursery:
            ws = await wrap_client_stream(
                nursery, stream, f"localhost:{port}", path, subprotocols=protocols, max_message_size=MAX_MESSAGE
            )
            try:
                yield ws
            finally:
                with trio.move_on_after(2) as scope:
                    scope.shield = True
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await stream.aclose()


async def timed(n: int, step: Any) -> list[float]:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        await step()
        samples.append(time.perf_counter() - t)
    return samples


async def bench(home: Path, proc: subprocess.Popen[bytes], quick: bool) -> dict[str, Any]:
    run = home / "run"
    deadline = time.monotonic() + 60
    while not (run / "gateway.port").exists() or not (run / "ocapd.sock").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the daemon did not start")
        await trio.sleep(0.05)
    await trio.sleep(0.2)
    port = int((run / "gateway.port").read_text())
    for attempt in range(20):  # the socket file appears a moment before the daemon answers on it
        try:
            stream = await trio.open_unix_socket(str(run / "ocapd.sock"))
            async with open_stream_connection(stream, None, name="bench") as cli:
                facet = cli.bootstrap()
                minted = await E(E(facet).gateway()).mint(E(facet).host(), "bench")
            break
        except (OSError, ConnectionError):
            if proc.poll() is not None or attempt == 19:
                raise
            await trio.sleep(0.2)
    token = minted["token"]

    blocks, per_block = (5, 100) if quick else (10, 400)
    echo: list[float] = []
    calls: list[float] = []
    fetches: list[float] = []
    async with websocket(port, "/_ocapd/echo") as raw, websocket(port, "/_ocapd/ws", token) as ws:
        async with open_websocket_connection(ws, None, name="bench") as conn:
            gateway = conn.bootstrap()

            async def echo_once() -> None:
                await raw.send_message(PAYLOAD)
                await raw.get_message()

            async def call_once() -> None:
                await E(gateway).ping()

            async def fetch_once() -> None:
                await E(E(gateway).fetch(token)).list()

            await timed(50, echo_once)
            await timed(50, call_once)
            for _ in range(blocks):
                echo += await timed(per_block, echo_once)
                calls += await timed(per_block, call_once)
            fetches = await timed(50 if quick else 200, fetch_once)

    sessions = 200 if quick else 1000
    before = rss(proc.pid)
    opened = 0
    all_open = trio.Event()
    release = trio.Event()
    answered = 0

    async def hold() -> None:
        nonlocal opened, answered
        # Held sessions carry the token: sessions without one have a small cap of their own.
        async with websocket(port, "/_ocapd/ws", token) as ws:
            async with open_websocket_connection(ws, None, name="held") as conn:
                opened += 1
                if opened == sessions:
                    all_open.set()
                await all_open.wait()
                assert await E(conn.bootstrap()).ping() == "pong"
                answered += 1
                await release.wait()

    t = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(sessions):
            nursery.start_soon(hold)
        with trio.fail_after(120):
            while answered < sessions:
                await trio.sleep(0.01)
        hold_seconds = time.perf_counter() - t
        await trio.sleep(0.5)
        after = rss(proc.pid)
        release.set()

    med = statistics.median
    return {
        "benchmark": "gateway",
        "quick": quick,
        "echo_rtt_us": round(med(echo) * 1e6, 1),
        "call_rtt_us": round(med(calls) * 1e6, 1),
        "call_over_echo": round(med(calls) / med(echo), 2),
        "fetch_and_list_rtt_us": round(med(fetches) * 1e6, 1),
        "samples": len(echo),
        "sessions_held": sessions,
        "hold_seconds": round(hold_seconds, 3),
        "sessions_per_second": round(sessions / hold_seconds, 1),
        "idle_session_bytes": int((after - before) / sessions),
        "daemon_rss_bytes_held": after,
        "nofile_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer samples, 200 sessions instead of 1,000")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    raise_nofile()
    with tempfile.TemporaryDirectory(prefix="ocapd-gw-bench-") as tmp:
        home = Path(tmp) / "home"
        env = {**os.environ, "OCAPD_HOME": str(home)}
        proc = subprocess.Popen([sys.executable, __file__, "--serve"], env=env, stdin=subprocess.DEVNULL)
        try:
            result = trio.run(bench, home, proc, args.quick)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
