"""The CapTP round-trip benchmark still runs and reports what it promises.

Timings are never asserted here (DESIGN section 7): only the shape of the
JSON, so the benchmark cannot silently rot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent / "bench" / "captp_rtt.py"

TRANSPORT_KEYS = {
    "raw_rtt_us",
    "call_rtt_us",
    "call_over_raw",
    "floor_rtt_us",
    "floor_over_raw",
    "call_over_floor",
    "sequential_calls_per_s",
    "pipelined_calls_per_s",
    "pipelined_over_sequential",
    "meets_call_over_raw",
    "meets_pipelined_over_sequential",
}


def test_captp_rtt_smoke_run_prints_one_json_object_with_every_figure() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--smoke"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    result = json.loads(lines[0])
    assert result["benchmark"] == "captp_rtt"
    assert {"python", "trio", "iterations", "targets", "transports", "pinned_cpus"} <= result.keys()
    if len(os.sched_getaffinity(0)) >= 2:  # the benchmark and its peers each on a CPU of their own
        assert result["pinned_cpus"]["bench"] != result["pinned_cpus"]["peers"]
    assert result["targets"] == {"call_over_raw_max": 1.5, "pipelined_over_sequential_min": 5, "ocapn_over_msgpack_max": 1.3, "call_over_pyro5_max": 0.7}
    assert set(result["transports"]) == {"pipe", "tcp", "ws"}
    for figures in result["transports"].values():
        assert TRANSPORT_KEYS <= figures.keys()
        assert figures["raw_rtt_us"] > 0 and figures["call_rtt_us"] > 0
        # The floor RPC answered through the same transport, and its ratios are of the same medians.
        assert figures["floor_rtt_us"] > 0
        assert figures["call_over_floor"] == pytest.approx(figures["call_rtt_us"] / figures["floor_rtt_us"], rel=0.02)
        assert isinstance(figures["meets_call_over_raw"], bool)
        assert isinstance(figures["meets_pipelined_over_sequential"], bool)
    ocapn = result["ocapn"]
    assert ocapn["msgpack_call_rtt_us"] > 0 and ocapn["ocapn_call_rtt_us"] > 0
    assert ocapn["ocapn_over_msgpack"] > 0
    assert isinstance(ocapn["meets_ocapn_over_msgpack"], bool)
    # The Pyro5 baseline: a Pyro5 echo call over TCP, measured in the same run.
    pyro5 = result["pyro5"]
    assert pyro5["transport"] == "tcp" and pyro5["call_rtt_us"] > 0
    assert result["call_over_pyro5"] == pytest.approx(result["transports"]["tcp"]["call_rtt_us"] / pyro5["call_rtt_us"], rel=0.01)
    assert isinstance(result["meets_call_over_pyro5"], bool)
