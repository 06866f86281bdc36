"""What one call costs two sans-IO sessions in Python function calls, counted rather than timed.

tests/bench/captp_sansio.py times a call between two sessions pumped by
hand; this counts the Python functions of the package the same call enters
(both sides, with the gc frames it causes), for each wire profile: msgpack
frames handed over as they are, OCapN ones through the profile's
``stream_bytes`` and frame splitter, as on a stream. The count is exact for
a code path, so it pins the per-call work — a helper called per value read
or written, a ``Symbol`` made per label — without depending on the machine.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from typing import Any

from sessions import SMALL_ARGS, Echo, StreamPair, ocapn_profile, transfer

import ocapd.captp
from ocapd.captp import E, Session
from ocapd.captp.turns import run_turns

PACKAGE = os.path.dirname(ocapd.captp.__file__) + os.sep


def pump(a: Session, b: Session) -> None:
    """Frames both ways until both are quiet (``settle`` without its collection: finalizers here run by refcount)."""
    while transfer(a, b) + transfer(b, a):
        pass


def one_call(client: Session, server: Session, ref: Any) -> None:
    promise = E(ref).echo(SMALL_ARGS)
    run_turns()
    pump(client, server)
    assert promise.result() == SMALL_ARGS
    del promise
    pump(client, server)


def package_calls(call: Callable[[], None]) -> int:
    """The package's Python functions that ``call()`` enters."""
    count = 0

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal count
        if event == "call" and frame.f_code.co_filename.startswith(PACKAGE):
            count += 1

    gc.collect()
    gc.disable()  # a collection's finalizers would run at a random point
    sys.setprofile(profile)
    try:
        call()
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
    calls = package_calls(lambda: one_call(client, server, ref))
    assert calls <= 108, calls  # 112 before the session inlined its per-call helpers


# -- the OCapN profile ------------------------------------------------------------------


def test_an_ocapn_call_costs_both_sessions_few_python_calls() -> None:
    pair = StreamPair(ocapn_profile)
    for _ in range(3):
        pair.call()
    calls = package_calls(pair.call)
    # 319 before labels were shared symbols, records were made without their
    # __init__, values were counted and keys hashed only in large input, and
    # the writer stopped calling a helper per string.
    assert calls <= 244, calls
