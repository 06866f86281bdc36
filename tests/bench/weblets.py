"""Weblets: install, open-to-first-call, backend memory and how many fit at once. One JSON object.

    .venv/bin/python tests/bench/weblets.py [--quick]

Starts a real daemon (``python -m ocapd run-daemon``, gateway on a free
port) in a fresh OCAPD_HOME and measures, with the counter example (a NONE
weblet with a Python backend):

- ``install_ms``: ``install_weblet`` from bytes to the answer (validate,
  stage, start the backend worker, commit), median and all samples;
- ``open_to_first_call_ms``: ``open()`` on the weblet, then what its page
  does — a WebSocket to ``<label>.localhost:PORT/_ocapd/ws`` with that
  Origin, ``fetch()``, ``E(app).get()`` — until that call is answered.
  ``open_path`` says how: a Python client doing the page's WebSocket steps
  (not a browser: no HTML, script loading or renderer start-up is counted);
- ``backend_worker``: RSS and PSS of one running backend worker (PSS shares
  out the pages a fork-server child shares with its siblings);
- ``capacity``: install weblets and open one instance each, every instance
  holding its session, until ``cap`` (256; 8 with --quick) or until the backends' PSS plus the
  daemon's growth reaches ``budget_mib``: how many, and the cost of each.

Only the JSON goes to stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import statistics
import sys
import tempfile
import time
import zipfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

import trio  # noqa: E402
from daemon_harness import DaemonProcess  # noqa: E402
from trio_websocket import wrap_client_stream  # noqa: E402

from ocapd.captp import E, open_websocket_connection  # noqa: E402

EXAMPLE = ROOT / "examples" / "weblets" / "counter"
MIB = 1024 * 1024
PROFILES = {
    "quick": {"installs": 3, "opens": 5, "cap": 8, "budget_mib": 2048},
    "full": {"installs": 7, "opens": 20, "cap": 256, "budget_mib": 2048},
}


def log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


def counter_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted(EXAMPLE.iterdir()):
            z.writestr(p.name, p.read_bytes())
    return buf.getvalue()


def memory(pid: int) -> dict[str, int | None]:
    out: dict[str, int | None] = {"rss": None, "pss": None}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    out["rss"] = int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    out["pss"] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


def leaf(error: BaseException) -> str:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return f"{type(error).__name__}: {error}"


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def mib(n: int | float | None) -> float | None:
    return None if n is None else round(n / MIB, 1)


@asynccontextmanager
async def page_session(port: int, label: str) -> AsyncIterator[Any]:
    """What a weblet page does: its own endpoint, with its own Origin; yields fetch()'s answer."""
    host = f"{label}.localhost:{port}"
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        async with trio.open_nursery() as nursery:
            ws = await wrap_client_stream(nursery, stream, host, "/_ocapd/ws", extra_headers=[(b"Origin", f"http://{host}".encode())])
            try:
                async with open_websocket_connection(ws, None, name="page") as conn:
                    yield await E(conn.bootstrap()).fetch()
            finally:
                with trio.move_on_after(2) as scope:
                    scope.shield = True
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await stream.aclose()


async def backend_workers(facet: Any, known: set[str]) -> list[dict[str, Any]]:
    """Workers started since ``known`` was taken (each install starts its backend's)."""
    report = await E(facet).inspect()
    return [w for w in report["workers"] if w["id"] not in known]


async def run(profile: dict[str, int], d: DaemonProcess) -> dict[str, Any]:
    bundle = counter_zip()
    port = d.gateway_port
    out: dict[str, Any] = {}
    async with d.connect() as (host, facet, _):
        report = await E(facet).inspect()
        daemon_pid = report["daemon"]["pid"]
        known = {w["id"] for w in report["workers"]}

        log("install ...")
        installs = []
        for i in range(profile["installs"]):
            t0 = time.perf_counter()
            await E(host).install_weblet(bundle, f"counter-{i}", "NONE")
            installs.append(time.perf_counter() - t0)
        out["install_ms"] = {"median": ms(statistics.median(installs)), "samples": [ms(s) for s in installs]}

        log("open -> first call ...")
        weblet = await E(host).lookup("counter-0")
        opens = []
        for _ in range(profile["opens"]):
            t0 = time.perf_counter()
            label = (await E(weblet).open())["label"]
            async with page_session(port, label) as fetched:
                await E(fetched["app"]).get()
                opens.append(time.perf_counter() - t0)
        out["open_path"] = "python client doing the page's WebSocket steps (no browser)"
        out["open_to_first_call_ms"] = {
            "median": ms(statistics.median(opens)),
            "min": ms(min(opens)),
            "max": ms(max(opens)),
            "n": len(opens),
        }

        workers = await backend_workers(facet, known)
        one = memory(workers[0]["pid"]) if workers else {"rss": None, "pss": None}
        out["backend_worker"] = {"rss_mib": mib(one["rss"]), "pss_mib": mib(one["pss"]), "level": workers[0]["level"] if workers else None}

        log("capacity ...")
        budget = profile["budget_mib"] * MIB
        daemon_before = memory(daemon_pid)["rss"] or 0
        held = 0
        reason = "cap"
        cost = 0
        t_start = time.perf_counter()
        async with AsyncExitStack() as stack:
            # The weblets installed above count: each has a backend; give each one open instance.
            names = [f"counter-{i}" for i in range(profile["installs"])]
            while held < profile["cap"]:
                try:
                    if held >= len(names):
                        name = f"cap-{held}"
                        await E(host).install_weblet(bundle, name, "NONE")
                        names.append(name)
                    label = (await E(E(host).lookup(names[held])).open())["label"]
                    fetched = await stack.enter_async_context(page_session(port, label))
                    await E(fetched["app"]).incr()
                except Exception as e:  # the first thing to give out ends the run: say what it was
                    reason = f"failure: {leaf(e)}"
                    break
                held += 1
                workers = await backend_workers(facet, known)
                pss = sum(memory(w["pid"])["pss"] or 0 for w in workers)
                cost = pss + max(0, (memory(daemon_pid)["rss"] or 0) - daemon_before)
                if cost >= budget:
                    reason = "memory budget"
                    break
            elapsed = time.perf_counter() - t_start
            workers = await backend_workers(facet, known)
            gateway = await E(facet).gateway()
            open_instances = len(await E(gateway).list_instances())
            out["capacity"] = {
                "open_instances_with_backends": held,
                "stopped_by": reason,
                "cap": profile["cap"],
                "budget_mib": profile["budget_mib"],
                "backend_workers": len(workers),
                "instances_registered_total": open_instances,
                "total_cost_mib": mib(cost),
                "per_instance_mib": mib(cost / held) if held else None,
                "daemon_rss_mib": mib(memory(daemon_pid)["rss"]),
                "daemon_rss_growth_per_instance_kib": round(((memory(daemon_pid)["rss"] or 0) - daemon_before) / 1024 / held, 1) if held else None,
                "seconds": round(elapsed, 2),
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples, a cap of 8 (smoke runs)")
    args = parser.parse_args()
    profile_name = "quick" if args.quick else "full"
    raise_nofile()
    with tempfile.TemporaryDirectory(prefix="ocapd-bench-weblets-") as tmp:
        d = DaemonProcess(Path(tmp) / "home", port=0)
        d.home.mkdir()
        t0 = time.perf_counter()
        d.start()
        log(f"daemon up in {time.perf_counter() - t0:.2f} s")
        try:
            result = trio.run(run, PROFILES[profile_name], d)
        finally:
            d.stop()
    print(json.dumps({"bench": "weblets", "profile": profile_name, **result}))


if __name__ == "__main__":
    main()
