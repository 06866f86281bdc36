"""Sans-IO CapTP sessions driven by hand in tests, as the trio driver drives them.

``feed_frame`` gives a session one frame and runs the turns it queued;
``transfer`` and ``settle`` move frames between two sessions until both are
quiet (dropped proxies collected on the way, so gc frames move too).
"""

from __future__ import annotations

import gc

from ocapd.captp import Session
from ocapd.captp.turns import run_turns


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
