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

The widget manager (``manager``), in a second daemon with a store of its own:

- ``install_from_store_ms``: ``weblets().install({store, id})`` of the
  counter example from the shipped catalogue (load the catalogue, read the
  folder, check its digest, install, start the backend), median and samples;
- ``install_page_only_from_store_ms``: the same for a page-only weblet (no
  backend): mostly the registry's own cost, and how the 50 below get there;
- ``list_ms``: ``GET /api/weblets/list`` (REST, JSON of every manifest) and
  ``weblets().list()`` (CapTP) with ``installed`` weblets, each with a panel;
- ``read_api``: ``manifests_for`` with ``installed`` weblets and ``visible``
  panels, measured in process on the daemon's own state (what the chat's
  server side calls): ``cached_ms`` (the per-host table reused) and
  ``after_invalidation_ms`` (the table rebuilt, as after an install, enable,
  disable, update or uninstall), against the budgets (2 ms, 20 ms); and the
  same call over CapTP from a client (``captp_ms``) beside a ping's round trip.

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
from daemon_harness import DaemonProcess, example_zip  # noqa: E402
from trio_websocket import wrap_client_stream  # noqa: E402

from ocapd.captp import E, open_websocket_connection  # noqa: E402

MIB = 1024 * 1024
PROFILES = {
    "quick": {"installs": 3, "opens": 5, "cap": 8, "budget_mib": 2048, "store_installs": 3, "installed": 50, "visible": 10, "reads": 200},
    "full": {"installs": 7, "opens": 20, "cap": 256, "budget_mib": 2048, "store_installs": 7, "installed": 50, "visible": 10, "reads": 2000},
}
#: The read API's budgets (issue 12): the chat asks it on every message.
READ_API_CACHED_BUDGET_MS = 2.0
READ_API_INVALIDATED_BUDGET_MS = 20.0


def log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


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
    bundle = example_zip("counter")
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


def page_zip(n: int) -> bytes:
    manifest = {
        "title": f"Page {n}", "version": "1.0.0",
        "interface": {"description": "A page with commands.", "commands": {
            "show": {"description": "Show something.", "readOnly": True},
            "change": {"description": "Change something.", "args": {"what": "string"}}}},
    }  # fmt: skip
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("weblet.json", json.dumps(manifest))
        z.writestr("index.html", f"<!doctype html><title>page {n}</title>")
    return out.getvalue()


def median_ms(samples: list[float]) -> dict[str, Any]:
    return {"median": ms(statistics.median(samples)), "min": ms(min(samples)), "max": ms(max(samples)), "n": len(samples)}


async def run_manager(profile: dict[str, int], d: DaemonProcess) -> dict[str, Any]:
    import httpx

    out: dict[str, Any] = {"installed": profile["installed"], "visible": profile["visible"]}
    token = d.chat_url().split("#token=", 1)[1]
    async with d.connect() as (host, facet, _):
        manager = await E(host).weblets()
        log("manager: install from the store ...")
        samples = []
        for i in range(profile["store_installs"]):
            t0 = time.perf_counter()
            await E(manager).install({"store": "examples", "id": "counter", "name": f"store-counter-{i}"})
            samples.append(time.perf_counter() - t0)
        out["install_from_store_ms"] = {"median": ms(statistics.median(samples)), "samples": [ms(s) for s in samples]}
        samples, panels = [], []
        for i in range(profile["installed"] - profile["store_installs"]):
            t0 = time.perf_counter()
            weblet = await E(manager).install({"store": "bench", "id": f"page-{i}"})
            samples.append(time.perf_counter() - t0)
            panels.append((await E(manager).create_instance(weblet["id"]))["panel"])
        out["install_page_only_from_store_ms"] = median_ms(samples)
        for w in await E(manager).list():
            if w["name"].startswith("store-counter-"):
                panels.append((await E(manager).create_instance(w["id"]))["panel"])
        visible = panels[:: max(1, len(panels) // profile["visible"])][: profile["visible"]]

        log("manager: list ...")
        rest, captp = [], []
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{d.gateway_port}", trust_env=False) as client:
            for _ in range(20):
                t0 = time.perf_counter()
                r = await client.get("/api/weblets/list", headers={"Authorization": f"Bearer {token}"})
                rest.append(time.perf_counter() - t0)
                assert r.status_code == 200 and len(r.json()["weblets"]) == profile["installed"] + 2
        for _ in range(20):
            t0 = time.perf_counter()
            await E(manager).list()
            captp.append(time.perf_counter() - t0)
        out["list_ms"] = {"rest": median_ms(rest), "captp": median_ms(captp), "bytes": len(r.content)}

        log("manager: read API over CapTP ...")
        calls, pings = [], []
        for _ in range(100):
            t0 = time.perf_counter()
            seen = await E(manager).manifests_for(visible)
            calls.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await E(facet).ping()
            pings.append(time.perf_counter() - t0)
        assert len(seen) == profile["visible"], seen
    d.stop()

    log("manager: read API in process ...")
    from ocapd.daemon.catalogue import MAKERS
    from ocapd.daemon.db import Database
    from ocapd.daemon.kernel import Kernel
    from ocapd.daemon.registry import registry_of

    db = await Database.open(d.db_path)
    try:
        async with trio.open_nursery() as nursery:
            kernel = Kernel(db, nursery, MAKERS)
            kernel.load()
            registry = await registry_of(kernel)
            (host_id,) = {r.host for r in registry._weblets.values()}
            assert len(registry.manifests_for(host_id, visible)) == profile["visible"]
            cached, invalidated = [], []
            for _ in range(profile["reads"]):
                t0 = time.perf_counter()
                registry.manifests_for(host_id, visible)
                cached.append(time.perf_counter() - t0)
            for _ in range(max(20, profile["reads"] // 10)):
                registry.invalidate(host_id)
                t0 = time.perf_counter()
                registry.manifests_for(host_id, visible)
                invalidated.append(time.perf_counter() - t0)
            nursery.cancel_scope.cancel()
    finally:
        await db.aclose()
    c, i = statistics.median(cached), statistics.median(invalidated)
    out["read_api"] = {
        "cached_ms": {"median": round(c * 1000, 4), "p99": round(sorted(cached)[int(len(cached) * 0.99)] * 1000, 4), "n": len(cached)},
        "after_invalidation_ms": {"median": round(i * 1000, 4), "max": round(max(invalidated) * 1000, 4), "n": len(invalidated)},
        "budget_cached_ms": READ_API_CACHED_BUDGET_MS,
        "budget_after_invalidation_ms": READ_API_INVALIDATED_BUDGET_MS,
        "meets_cached": c * 1000 <= READ_API_CACHED_BUDGET_MS,
        "meets_after_invalidation": i * 1000 <= READ_API_INVALIDATED_BUDGET_MS,
        "captp_ms": median_ms(calls),
        "captp_ping_ms": median_ms(pings),
    }
    return out


def manager_daemon(tmp: Path, profile: dict[str, int]) -> DaemonProcess:
    """A daemon whose weblets.json adds a store of page-only weblets (one per install)."""
    import hashlib

    store = tmp / "store"
    store.mkdir()
    entries = []
    for i in range(profile["installed"]):
        data = page_zip(i)
        (store / f"page-{i}.zip").write_bytes(data)
        entries.append({"id": f"page-{i}", "title": f"Page {i}", "versions": [
            {"version": "1.0.0", "bundle": f"page-{i}.zip", "sha256": hashlib.sha256(data).hexdigest()}]})  # fmt: skip
    (store / "catalogue.json").write_text(json.dumps({"ocapdStore": 1, "title": "bench", "weblets": entries}))
    d = DaemonProcess(tmp / "home", port=0)
    (d.home / "state").mkdir(parents=True)
    (d.home / "state" / "weblets.json").write_text(json.dumps({"stores": {"bench": str(store / "catalogue.json")}}))
    return d


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
    with tempfile.TemporaryDirectory(prefix="ocapd-bench-manager-") as tmp:
        d = manager_daemon(Path(tmp), PROFILES[profile_name])
        d.start()
        try:
            result["manager"] = trio.run(run_manager, PROFILES[profile_name], d)
        finally:
            d.stop()
    print(json.dumps({"bench": "weblets", "profile": profile_name, **result}))


if __name__ == "__main__":
    main()
