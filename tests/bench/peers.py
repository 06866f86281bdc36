"""The cost of calling an object on another daemon, as one JSON line.

    python tests/bench/peers.py [--quick | --smoke]

Starts two real daemons (two fresh ``OCAPD_HOME``s, ``tests/daemon_harness.py``).
Daemon A listens on ``tls-ed25519``, runs a greeter in a named worker and
shares it; daemon B enlivens the sturdyref. Then, in this process, over one
CapTP connection to each daemon's Unix socket:

- ``local``: ``E(greeter).greet("x")`` through A (client -> A -> A's worker);
- ``remote``: the same call through B (client -> B -> OCapN over TLS -> A ->
  A's worker): one OCapN round trip more;
- ``enliven``: ``ocapd enliven`` of a fresh share on B while the session is
  open (a CLI command: includes starting Python);
- ``reconnect``: the first call through B after A restarted (``kill -9``,
  start; B dials again from the recipe).

``ratio_remote_to_local`` is the medians' ratio, measured in the same run.
Only the JSON goes to stdout. The test suite runs this with ``--smoke`` to
keep it working, never to assert timings.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

import trio  # noqa: E402
from daemon_harness import DaemonProcess  # noqa: E402

from ocapd.captp import E  # noqa: E402

PROFILES = {"smoke": (20, 1), "quick": (300, 3), "full": (2000, 10)}


def figures(samples: list[float]) -> dict[str, Any]:
    return {
        "mean_ms": round(statistics.fmean(samples) * 1000, 3),
        "median_ms": round(statistics.median(samples) * 1000, 3),
        "n": len(samples),
    }


async def calls(daemon: DaemonProcess, name: str, n: int) -> list[float]:
    async with daemon.connect() as (host, _facet, _conn):
        greeter = await E(host).lookup(name)
        await E(greeter).greet("warm")
        samples = []
        for _ in range(n):
            start = time.perf_counter()
            await E(greeter).greet("x")
            samples.append(time.perf_counter() - start)
        return samples


async def first_call(daemon: DaemonProcess, name: str) -> float:
    async with daemon.connect() as (host, _facet, _conn):
        start = time.perf_counter()
        await E(await E(host).lookup(name)).greet("x")
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    profile = "smoke" if args.smoke else "quick" if args.quick else "full"
    n, rounds = PROFILES[profile]
    with tempfile.TemporaryDirectory(prefix="ocapd-bench-peers-") as tmp:
        a, b = DaemonProcess(Path(tmp) / "a"), DaemonProcess(Path(tmp) / "b")
        try:
            for d in (a, b):
                d.home.mkdir()
                d.start()
            a.out("network", "listen", "--netlayer", "tls-ed25519")
            a.out("eval", "Far('Greeter', greet=lambda who: 'hello ' + who)", "-w", "w1", "-n", "greeter")
            b.out("enliven", a.out("share", "greeter"), "-n", "greeter-at-a")
            local = trio.run(calls, a, "greeter", n)
            remote = trio.run(calls, b, "greeter-at-a", n)
            enliven, reconnect = [], []
            for i in range(rounds):
                uri = a.out("share", "greeter")
                start = time.perf_counter()
                b.out("enliven", uri, "-n", f"again-{i}")
                enliven.append(time.perf_counter() - start)
                a.kill9()
                a.start()
                while not json.loads(a.out("network", "show", "--json"))["listening"]:
                    time.sleep(0.02)
                reconnect.append(trio.run(first_call, b, "greeter-at-a"))
        finally:
            for d in (a, b):
                if d.proc is not None:
                    d.stop()
    result = {
        "benchmark": "peers",
        "profile": profile,
        "netlayer": "tls-ed25519",
        "local": figures(local),
        "remote": figures(remote),
        "enliven": figures(enliven),
        "reconnect": figures(reconnect),
        "ratio_remote_to_local": round(statistics.median(remote) / statistics.median(local), 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
