"""Worker start-up and termination, fork server vs plain subprocess. Prints one JSON object.

    .venv/bin/python tests/bench/bench_workers.py [rounds]

cold = open_worker() until the first evaluate("1+1") is answered;
terminate = Worker.terminate() until the process has exited.
Compare with Endo on this machine kind: eval cold 261 ms, cancel worker 118 ms.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

from ocapd.captp import E  # noqa: E402
from ocapd.workers import Launcher, WorkerSpec, open_worker  # noqa: E402


def _memory(pid: int) -> dict[str, int | None]:
    out: dict[str, int | None] = {"rss": None, "pss": None}
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Rss:"):
                out["rss"] = int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                out["pss"] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


async def measure(base: Path, level: str, use_fork_server: bool, rounds: int) -> dict[str, object]:
    cold, term = [], []
    memory: dict[str, object] = {}
    async with Launcher(use_fork_server=use_fork_server) as launcher:
        for i in range(rounds):
            spec = WorkerSpec(f"bench{i}", level, base / level / str(use_fork_server) / f"w{i}", base / "logs" / f"w{i}.log")
            t0 = time.perf_counter()
            async with open_worker(spec, launcher) as worker:
                assert await E(worker.facet).evaluate("1+1", [], []) == 2
                cold.append(time.perf_counter() - t0)
                if i == rounds - 1:
                    memory["worker"] = _memory(worker.pid)
                    if launcher.fork_server_pid:
                        memory["fork_server"] = _memory(launcher.fork_server_pid)
                t1 = time.perf_counter()
                await worker.terminate()
                term.append(time.perf_counter() - t1)
                via = worker.launched_by
    ms = lambda xs: round(statistics.mean(xs) * 1000, 1)  # noqa: E731
    return {"via": via, "level": level, "cold_ms": ms(cold), "cold_median_ms": round(statistics.median(cold) * 1000, 1),
            "terminate_ms": ms(term), "memory": memory}


async def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        results = [
            await measure(base, "NONE", True, rounds),
            await measure(base, "HOST", True, rounds),
            await measure(base, "NONE", False, max(3, rounds // 4)),
        ]
    print(json.dumps({"bench": "workers", "rounds": rounds, "results": results}))


if __name__ == "__main__":
    trio.run(main)
