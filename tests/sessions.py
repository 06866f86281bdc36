"""Sans-IO CapTP sessions driven by hand in tests, as the trio driver drives them.

``feed_frame`` gives a session one frame and runs the turns it queued;
``transfer`` and ``settle`` move frames between two sessions until both are
quiet (dropped proxies collected on the way, so gc frames move too).
``StreamPair`` joins a client and an echo server of one wire profile as by
two byte streams (tests/test_captp_call_cost.py, tests/bench/captp_sansio.py).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

from ocapd.captp import E, Session, far
from ocapd.captp.msgpack_profile import MSGPACK
from ocapd.captp.ocapn_locators import PeerLocator
from ocapd.captp.ocapn_profile import OcapnProfile
from ocapd.captp.profile import WireProfile
from ocapd.captp.turns import run_turns

#: The argument of a measured call: a small record, like most daemon calls.
SMALL_ARGS = {"op": "ping", "seq": 12345, "tags": ["a", "b"]}


@far("Echo")
class Echo:
    def echo(self, value: Any) -> Any:
        return value


def feed_frame(session: Session, frame: bytes) -> None:
    """Feed one frame as a driver does: the session only records the work, then the turns run."""
    session.receive_frame(frame)
    run_turns()


def transfer(src: Session, dst: Session) -> list[bytes]:
    """Move what ``src`` has queued to ``dst``; return those frames."""
    frames = src.data_to_send()
    for frame in frames:
        dst.receive_frame(frame)
    run_turns()
    return frames


def settle(a: Session, b: Session) -> list[bytes]:
    """Exchange frames until both sides are quiet; return every frame that moved."""
    moved: list[bytes] = []
    while True:
        batch = transfer(a, b) + transfer(b, a)
        if not batch:
            gc.collect()
            batch = transfer(a, b) + transfer(b, a)
            if not batch:
                return moved
        moved += batch


def ocapn_profile(name: str) -> OcapnProfile:
    """An OCapN profile for a test peer named ``name``."""
    return OcapnProfile(PeerLocator(name, "tcp-testing-only", {"host": "127.0.0.1", "port": "1"}))


def msgpack_profile(name: str) -> WireProfile:
    """The msgpack profile (one for every peer)."""
    return MSGPACK


class StreamPair:
    """A client and an ``Echo`` server session of one profile kind, joined as by two byte streams:
    each side's frames go through its profile's ``stream_bytes`` and the other side's frame splitter."""

    def __init__(self, make_profile: Callable[[str], WireProfile]) -> None:
        self.server_profile = make_profile("server")
        self.client_profile = make_profile("client")
        self.server = Session(Echo(), profile=self.server_profile, name="server")
        self.client = Session(profile=self.client_profile, name="client")
        limit = self.server.limits.max_frame_size
        self.to_server = self.server_profile.frame_splitter(limit)
        self.to_client = self.client_profile.frame_splitter(limit)
        self.pump()
        self.ref = self.client.bootstrap()

    def _move(self, src: Session, profile: WireProfile, dst: Session, splitter: Any) -> bool:
        frames = src.data_to_send()
        if not frames:
            return False
        for frame in splitter.feed(profile.stream_bytes(frames)):
            dst.receive_frame(frame)
        run_turns()
        return True

    def pump(self) -> None:
        while self._move(self.client, self.client_profile, self.server, self.to_server) | self._move(
            self.server, self.server_profile, self.client, self.to_client
        ):
            pass

    def call(self) -> None:
        """``E(ref).echo(SMALL_ARGS)`` until it settles, and the gc-answer its dropped answer causes."""
        promise = E(self.ref).echo(SMALL_ARGS)
        run_turns()
        self.pump()
        assert promise.settled and promise.result() == SMALL_ARGS
        del promise
        self.pump()
