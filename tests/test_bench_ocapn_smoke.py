"""The OCapN netlayer benchmark still runs and reports what it promises.

Timings are never asserted here (DESIGN section 7): only the shape of the
JSON, so the benchmark cannot silently rot.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent / "bench" / "ocapn_netlayers.py"


def test_ocapn_netlayers_smoke_run_prints_one_json_object_with_every_figure() -> None:
    proc = subprocess.run([sys.executable, str(BENCH), "--smoke"], capture_output=True, text=True, timeout=120, check=True)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    result = json.loads(lines[0])
    assert result["benchmark"] == "ocapn_netlayers"
    assert {"python", "trio", "iterations", "netlayers", "tls_over_tcp"} <= result.keys()
    assert set(result["netlayers"]) == {"tcp-testing-only", "tls-ed25519"}
    for figures in result["netlayers"].values():
        assert set(figures) == {"connect_ms", "rtt_us", "throughput_mib_s"}
        assert all(value > 0 for value in figures.values())
    assert set(result["tls_over_tcp"]) == {"connect", "rtt", "throughput"}


def test_captp_sansio_smoke_run_prints_one_json_object_with_every_figure() -> None:
    bench = Path(__file__).resolve().parent / "bench" / "captp_sansio.py"
    proc = subprocess.run([sys.executable, str(bench), "--smoke"], capture_output=True, text=True, timeout=120, check=True)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    result = json.loads(lines[0])
    assert result["benchmark"] == "captp_sansio"
    assert set(result["call_us"]) == {"msgpack", "ocapn"} and all(v > 0 for v in result["call_us"].values())
    assert result["ocapn_over_msgpack"] > 0
    assert set(result["ocapn_reading"]) == {"frames_per_call", "bytes_per_call", "read_us", "split_us", "decode_us", "revive_us"}
