"""The chat agent: the tool list and a read command's round trip. Prints one JSON object (one line).

    .venv/bin/python tests/bench/agent.py [--quick]

Starts a real daemon (gateway on a free port, fresh OCAPD_HOME), installs 50
weblets (49 page-only ones declaring commands, and the counter example with
its Python backend), opens a panel of each, and reports:

- ``tool_list``: 50 installed / 10 visible (the counter among them): the
  server's own work per message — the page's hint cleaned, the registry's
  ``manifests_for`` (its per-host table cached) and ``build_tools`` —
  measured in process on the daemon's state (``cached_ms``, budget 2 ms),
  and ``GET /api/agent/tools`` / ``E(agent).tools()`` as clients see them;
- ``read_command``: ``message("value", visible)`` -> the deterministic router
  -> ``counter.value`` on the backend (``invoke``) -> the result, over CapTP
  (the chat page's path) and REST (budget 10 ms round trip), beside a ping;
  and the same command as an MCP client calls it: ``tools/call
  counter__value`` over stdio to ``ocapd mcp`` (the mcp package's client),
  which calls the daemon over its socket (``mcp_ms``, ``mcp_over_captp``).

Only the JSON goes to stdout; progress goes to stderr.
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
from daemon_harness import DaemonProcess, example_zip, zip_bundle  # noqa: E402

from ocapd.captp import E  # noqa: E402

TOOL_LIST_CACHED_BUDGET_MS = 2.0
READ_COMMAND_BUDGET_MS = 10.0


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def ms(seconds: float) -> float:
    return round(seconds * 1000, 4)


def stats(samples: list[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    return {"median": ms(statistics.median(samples)), "p99": ms(ordered[int(len(ordered) * 0.99)]), "n": len(samples)}


def page_zip(n: int) -> bytes:
    manifest = {
        "title": f"Page {n}", "version": "1.0.0",
        "interface": {"commands": {
            "show": {"description": "Show something.", "readOnly": True, "examples": [f"show page {n}"]},
            "change": {"description": "Change something.", "args": {"what": "string"}}}},
    }  # fmt: skip
    return zip_bundle({"weblet.json": json.dumps(manifest), "index.html": f"<!doctype html><title>page {n}</title>"})


async def run(quick: bool) -> dict[str, Any]:
    import httpx

    installed, visible_n = 50, 10
    rounds = 50 if quick else 300
    out: dict[str, Any] = {"benchmark": "agent", "installed": installed, "visible": visible_n}
    with tempfile.TemporaryDirectory() as tmp:
        d = DaemonProcess(Path(tmp) / "home")
        d.home.mkdir()
        d.start()
        try:
            token = d.chat_url().split("#token=", 1)[1]
            async with d.connect() as (host, facet, _):
                manager = await E(host).weblets()
                log("installing 50 weblets ...")
                counter = await E(manager).install({"name": "counter", "filename": "counter.zip"}, example_zip("counter"))
                panels = [(await E(manager).create_instance(counter["id"]))["panel"]]
                for n in range(installed - 1):
                    w = await E(manager).install({"name": f"page-{n}", "filename": f"page-{n}.zip"}, page_zip(n))
                    panels.append((await E(manager).create_instance(w["id"]))["panel"])
                visible = panels[:: len(panels) // visible_n][:visible_n]
                agent = await E(host).agent()
                tools = await E(agent).tools(visible)
                assert len(tools) == 2 * visible_n + 2, len(tools)

                log("over CapTP ...")
                tool_calls, reads, pings = [], [], []
                for _ in range(rounds):
                    t0 = time.perf_counter()
                    await E(agent).tools(visible)
                    tool_calls.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    answer = await E(agent).message("value", visible)
                    reads.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    await E(facet).ping()
                    pings.append(time.perf_counter() - t0)
                assert answer["calls"][0]["status"] == "done", answer

            log("through MCP ...")
            mcp_reads = await _mcp_reads(d, rounds)

            log("over REST ...")
            rest_tools, rest_reads = [], []
            headers = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{d.gateway_port}", trust_env=False, headers=headers) as client:
                for _ in range(rounds):
                    t0 = time.perf_counter()
                    r = await client.get("/api/agent/tools", params={"visible": ",".join(visible)})
                    rest_tools.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    m = await client.post("/api/agent/message", json={"text": "value", "visible": visible})
                    rest_reads.append(time.perf_counter() - t0)
            assert r.status_code == 200 and m.json()["calls"][0]["status"] == "done", m.text
        finally:
            d.stop()

        log("tool list in process ...")
        from ocapd.chat_host.agent.tools import build_tools, clean_visible
        from ocapd.daemon.catalogue import MAKERS
        from ocapd.daemon.db import Database
        from ocapd.daemon.kernel import Kernel
        from ocapd.daemon.registry import BUILTINS, registry_of

        db = await Database.open(d.db_path)
        try:
            async with trio.open_nursery() as nursery:
                kernel = Kernel(db, nursery, MAKERS)
                kernel.load()
                registry = await registry_of(kernel)
                (host_id,) = {r.host for r in registry._weblets.values()}
                builtin_panels = [b.panel for b in BUILTINS]
                cached, rebuilt = [], []
                for i in range(rounds * 10 + rounds // 5):
                    if i >= rounds * 10:
                        registry.invalidate(host_id)
                    t0 = time.perf_counter()
                    listed = build_tools(registry.manifests_for(host_id, [*clean_visible(visible), *builtin_panels]))
                    (cached if i < rounds * 10 else rebuilt).append(time.perf_counter() - t0)
                assert len(listed) == len(tools)
                nursery.cancel_scope.cancel()
        finally:
            await db.aclose()

    c, r50 = statistics.median(cached), statistics.median(reads)
    out["tool_list"] = {
        "tools": len(tools),
        "cached_ms": stats(cached),
        "after_invalidation_ms": stats(rebuilt),
        "captp_ms": stats(tool_calls),
        "rest_ms": stats(rest_tools),
        "budget_cached_ms": TOOL_LIST_CACHED_BUDGET_MS,
        "meets_cached": c * 1000 <= TOOL_LIST_CACHED_BUDGET_MS,
    }
    out["read_command"] = {
        "path": "message('value') -> router -> counter.value -> backend invoke",
        "captp_ms": stats(reads),
        "rest_ms": stats(rest_reads),
        "captp_ping_ms": stats(pings),
        "mcp_ms": stats(mcp_reads),
        "mcp_over_captp": round(statistics.median(mcp_reads) / r50, 2),
        "budget_ms": READ_COMMAND_BUDGET_MS,
        "meets": r50 * 1000 <= READ_COMMAND_BUDGET_MS,
        "meets_mcp": statistics.median(mcp_reads) * 1000 <= READ_COMMAND_BUDGET_MS,
    }
    return out


async def _mcp_reads(d: DaemonProcess, rounds: int) -> list[float]:
    """``counter__value`` called ``rounds`` times by an MCP client over stdio (``ocapd mcp`` as a child process)."""
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(command=sys.executable, args=["-m", "ocapd", "mcp"], env={"OCAPD_HOME": str(d.home)})
    samples = []
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        assert "counter__value" in {t.name for t in (await session.list_tools()).tools}
        for _ in range(rounds):
            t0 = time.perf_counter()
            result = await session.call_tool("counter__value", {})
            samples.append(time.perf_counter() - t0)
        assert not result.is_error and "count" in result.structured_content, result
    return samples


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(json.dumps(trio.run(run, args.quick), separators=(",", ":")))


if __name__ == "__main__":
    main()
