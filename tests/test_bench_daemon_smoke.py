"""The daemon-operations benchmark still runs and reports what it promises.

Timings are never asserted here (DESIGN section 7): only the shape of the
JSON, so the benchmark cannot silently rot.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent / "bench" / "daemon_ops.py"

OPS = {
    "ping",
    "list",
    "store_value+lookup",
    "eval_warm",
    "provide_worker",
    "eval_cold",
    "cancel_worker",
    "cancel_reprovision",
}
ROWS = OPS | {"cli", "daemon_start", "rss_daemon", "rss_worker"}


def test_daemon_ops_smoke_run_prints_one_json_object_with_every_figure() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--smoke"],
        capture_output=True,
        text=True,
        timeout=180,  # generous: a loaded machine is slow to start processes
        check=True,
    )
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    result = json.loads(lines[0])
    assert result["benchmark"] == "daemon_ops"
    assert result["profile"] == "smoke"
    assert set(result["ops"]) == OPS
    for figures in [*result["ops"].values(), result["cli_ms"], result["daemon_start_ms"]]:
        assert {"mean_ms", "median_ms", "n"} <= figures.keys()
        assert figures["mean_ms"] > 0 and figures["median_ms"] > 0 and figures["n"] >= 1
    assert {"rss_daemon_mib", "pss_daemon_mib", "rss_worker_mib", "pss_worker_mib"} <= result["memory"].keys()
    assert result["memory"]["rss_daemon_mib"] > 0 and result["memory"]["pss_worker_mib"] > 0
    assert result["cancel_just_started_failures"] == 0
    assert set(result["baseline_endo"]) == ROWS
    assert set(result["comparison"]) == ROWS
    for row in result["comparison"].values():
        assert isinstance(row["meets"], bool)
        assert row["ratio"] is None or row["ratio"] > 0
    assert set(result["misses"]) <= ROWS
