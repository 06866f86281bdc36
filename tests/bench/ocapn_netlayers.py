"""What the secure OCapN netlayer costs over the testing one, as one JSON line.

    python tests/bench/ocapn_netlayers.py [--quick | --smoke]

A child process (this file with ``--serve NETLAYER``) listens on 127.0.0.1
with each netlayer and echoes what it receives; this process dials it. For
``tcp-testing-only`` (plain TCP) and ``tls-ed25519`` (TLS 1.3 and the
dialler's proof of its key) it measures:

- ``connect_ms``: median time from ``connect(locator)`` to a usable,
  authenticated stream (a TCP connect, or that plus the TLS handshake, the
  certificate check and the proof);
- ``rtt_us``: median round trip of a 200-byte message (a small OCapN call);
- ``throughput_mib_s``: 8 MiB sent and echoed back, in 64 KiB writes.

Both netlayers cross the same process boundary on the same machine, and
their samples alternate in blocks, so the ratios (``tls_over_tcp``) hold on
a busy machine while the absolute numbers do not. No targets: this reports.
Only the JSON goes to stdout; the test suite runs ``--smoke`` to keep it
working, never to assert timings.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import trio

from ocapd.captp.ocapn_keys import generate_key
from ocapd.captp.ocapn_locators import PeerLocator
from ocapd.captp.ocapn_netlayers import PeerConnection, TcpTestingOnlyNetlayer
from ocapd.captp.ocapn_tls import TlsNetlayer

NETLAYERS = ("tcp-testing-only", "tls-ed25519")
MESSAGE = b"<10'op:deliver" + b"x" * 185 + b">"
CHUNK = 64 * 1024


def make_netlayer(name: str) -> TcpTestingOnlyNetlayer | TlsNetlayer:
    return TcpTestingOnlyNetlayer() if name == "tcp-testing-only" else TlsNetlayer(generate_key())


# --- the child: an echo peer ----------------------------------------------------------------


async def echo(connection: PeerConnection) -> None:
    while data := await connection.stream.receive_some(CHUNK):
        await connection.stream.send_all(data)


async def serve(name: str) -> None:
    async with trio.open_nursery() as nursery:
        location = await nursery.start(make_netlayer(name).serve, echo)
        print(location.to_uri(), flush=True)


# --- the parent: measurements ------------------------------------------------------------------


async def receive_exactly(connection: PeerConnection, size: int) -> None:
    got = 0
    while got < size:
        data = await connection.stream.receive_some(min(CHUNK, size - got))
        if not data:
            raise RuntimeError("the echo peer closed the stream")
        got += len(data)


async def connect_once(netlayer: Any, locator: PeerLocator) -> float:
    start = time.perf_counter()
    connection = await netlayer.connect(locator)
    elapsed = time.perf_counter() - start
    await connection.aclose()
    return elapsed


async def rtts(netlayer: Any, locator: PeerLocator, count: int) -> list[float]:
    samples = []
    async with await netlayer.connect(locator) as connection:
        for _ in range(count):
            start = time.perf_counter()
            await connection.stream.send_all(MESSAGE)
            await receive_exactly(connection, len(MESSAGE))
            samples.append(time.perf_counter() - start)
    return samples


async def throughput(netlayer: Any, locator: PeerLocator, total: int) -> float:
    block = os.urandom(CHUNK)
    async with await netlayer.connect(locator) as connection:
        start = time.perf_counter()
        async with trio.open_nursery() as nursery:

            async def send() -> None:
                for _ in range(total // CHUNK):
                    await connection.stream.send_all(block)

            nursery.start_soon(send)
            await receive_exactly(connection, total // CHUNK * CHUNK)
        return total / (time.perf_counter() - start) / (1024 * 1024)


async def measure(sizes: dict[str, int]) -> dict[str, Any]:
    peers = {name: subprocess.Popen([sys.executable, __file__, "--serve", name], stdout=subprocess.PIPE, text=True) for name in NETLAYERS}
    try:
        locators = {name: PeerLocator.from_uri((peer.stdout.readline() if peer.stdout else "").strip()) for name, peer in peers.items()}
        dialers = {name: make_netlayer(name) for name in NETLAYERS}
        connects: dict[str, list[float]] = {name: [] for name in NETLAYERS}
        round_trips: dict[str, list[float]] = {name: [] for name in NETLAYERS}
        rates: dict[str, list[float]] = {name: [] for name in NETLAYERS}
        for block in range(sizes["blocks"]):
            print(f"block {block + 1}/{sizes['blocks']}", file=sys.stderr)
            for name in NETLAYERS if block % 2 == 0 else reversed(NETLAYERS):
                for _ in range(sizes["connects"]):
                    connects[name].append(await connect_once(dialers[name], locators[name]))
                round_trips[name] += await rtts(dialers[name], locators[name], sizes["rtts"])
                rates[name].append(await throughput(dialers[name], locators[name], sizes["bytes"]))
    finally:
        for peer in peers.values():
            peer.kill()
            peer.wait()
    figures = {
        name: {
            "connect_ms": round(statistics.median(connects[name]) * 1000, 3),
            "rtt_us": round(statistics.median(round_trips[name]) * 1e6, 1),
            "throughput_mib_s": round(statistics.median(rates[name]), 1),
        }
        for name in NETLAYERS
    }
    tcp, tls = figures["tcp-testing-only"], figures["tls-ed25519"]
    return {
        "netlayers": figures,
        "tls_over_tcp": {
            "connect": round(tls["connect_ms"] / tcp["connect_ms"], 2),
            "rtt": round(tls["rtt_us"] / tcp["rtt_us"], 2),
            "throughput": round(tls["throughput_mib_s"] / tcp["throughput_mib_s"], 2),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples")
    parser.add_argument("--smoke", action="store_true", help="a handful of samples, to check the benchmark runs")
    parser.add_argument("--serve", choices=NETLAYERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        trio.run(serve, args.serve)
        return
    if args.smoke:
        sizes = {"blocks": 2, "connects": 2, "rtts": 5, "bytes": 256 * 1024}
    elif args.quick:
        sizes = {"blocks": 4, "connects": 10, "rtts": 200, "bytes": 2 * 1024 * 1024}
    else:
        sizes = {"blocks": 10, "connects": 20, "rtts": 1000, "bytes": 8 * 1024 * 1024}
    result = {
        "benchmark": "ocapn_netlayers",
        "python": sys.version.split()[0],
        "trio": trio.__version__,
        "iterations": sizes,
        **trio.run(measure, sizes),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
