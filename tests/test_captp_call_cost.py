"""What one call costs two sans-IO sessions in Python function calls, counted rather than timed.

tests/bench/captp_sansio.py times a call between two sessions pumped by
hand; this counts the Python functions of the package the same call enters
(both sides, with the gc frames it causes). The count is exact for a code
path, so it pins the per-call work without depending on the machine.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Any

import ocapd.captp
from ocapd.captp import E, Session, far
from ocapd.captp.turns import run_turns

SMALL_ARGS = {"op": "ping", "seq": 12345, "tags": ["a", "b"]}
PACKAGE = os.path.dirname(ocapd.captp.__file__) + os.sep


@far("Echo")
class Echo:
    def echo(self, value: Any) -> Any:
        return value


def pump(a: Session, b: Session) -> None:
    moved = True
    while moved:
        moved = False
        for src, dst in ((a, b), (b, a)):
            frames = src.data_to_send()
            for frame in frames:
                dst.receive_frame(frame)
            run_turns()
            moved = moved or bool(frames)


def one_call(client: Session, server: Session, ref: Any) -> None:
    promise = E(ref).echo(SMALL_ARGS)
    run_turns()
    pump(client, server)
    assert promise.result() == SMALL_ARGS
    del promise
    pump(client, server)


def package_calls(client: Session, server: Session, ref: Any) -> int:
    count = 0

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal count
        if event == "call" and frame.f_code.co_filename.startswith(PACKAGE):
            count += 1

    gc.collect()
    gc.disable()  # a collection's finalizers would run at a random point
    sys.setprofile(profile)
    try:
        one_call(client, server, ref)
    finally:
        sys.setprofile(None)
        gc.enable()
    return count


def test_a_call_costs_both_sessions_few_python_calls() -> None:
    server = Session(Echo(), name="server")
    client = Session(name="client")
    pump(client, server)
    ref = client.bootstrap()
    for _ in range(3):
        one_call(client, server, ref)
    calls = package_calls(client, server, ref)
    assert calls <= 108, calls  # 112 before the session inlined its per-call helpers
