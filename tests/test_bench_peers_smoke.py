"""The peers benchmark still runs and reports what it promises (never its timings: DESIGN section 7)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent / "bench" / "peers.py"


def test_peers_smoke_run_prints_one_json_object_with_every_figure() -> None:
    proc = subprocess.run([sys.executable, str(BENCH), "--smoke"], capture_output=True, text=True, timeout=300, check=True)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    result = json.loads(lines[0])
    assert result["benchmark"] == "peers" and result["profile"] == "smoke"
    for row in ("local", "remote", "enliven", "reconnect"):
        assert result[row]["median_ms"] > 0 and result[row]["n"] >= 1
    assert result["ratio_remote_to_local"] > 0
