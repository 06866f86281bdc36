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

import ocapd.captp
from ocapd.captp import E, Session, far
from ocapd.captp.ocapn_locators import PeerLocator
from ocapd.captp.ocapn_profile import OcapnProfile
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


def ocapn_profile(name: str) -> OcapnProfile:
    return OcapnProfile(PeerLocator(name, "tcp-testing-only", {"host": "127.0.0.1", "port": "1"}))


class Pair:
    """A client and a server session of the OCapN profile, joined as by two byte streams."""

    def __init__(self) -> None:
        self.server_profile, self.client_profile = ocapn_profile("server"), ocapn_profile("client")
        self.server = Session(Echo(), profile=self.server_profile, name="server")
        self.client = Session(profile=self.client_profile, name="client")
        limit = self.server.limits.max_frame_size
        self.to_server = self.server_profile.frame_splitter(limit)
        self.to_client = self.client_profile.frame_splitter(limit)
        self.pump()
        self.ref = self.client.bootstrap()

    def _move(self, src: Session, profile: OcapnProfile, dst: Session, splitter: Any) -> bool:
        frames = src.data_to_send()
        if frames:
            for frame in splitter.feed(profile.stream_bytes(frames)):
                dst.receive_frame(frame)
        run_turns()
        return bool(frames)

    def pump(self) -> None:
        while self._move(self.client, self.client_profile, self.server, self.to_server) | self._move(
            self.server, self.server_profile, self.client, self.to_client
        ):
            pass

    def call(self) -> None:
        promise = E(self.ref).echo(SMALL_ARGS)
        run_turns()
        self.pump()
        assert promise.result() == SMALL_ARGS
        del promise
        self.pump()  # the gc-answer the dropped answer causes


def test_an_ocapn_call_costs_both_sessions_few_python_calls() -> None:
    pair = Pair()
    for _ in range(3):
        pair.call()
    calls = package_calls(pair.call)
    # 319 before labels were shared symbols, records were made without their
    # __init__, values were counted and keys hashed only in large input, and
    # the writer stopped calling a helper per string.
    assert calls <= 244, calls
