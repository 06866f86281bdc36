"""The CPU cost of one CapTP call per wire profile, in one process, as one JSON line.

    python tests/bench/captp_sansio.py [--quick | --smoke]

Two sans-IO sessions (captp.session) are pumped by hand: each side's frames
go through its profile's ``stream_bytes`` and the other side's frame
splitter, as on a byte stream, then ``receive_frame``. One round trip is
``E(ref).echo(SMALL_ARGS)`` until it settles, with the gc frames it causes.
No sockets and no scheduler: what is measured is the work the profiles and
the session do, which is what differs between msgpack and OCapN. The two
profiles run in alternating blocks in the same process, so load from
elsewhere falls on both; ``ocapn_over_msgpack`` is the ratio of the
medians of the per-block means.

It also times the OCapN side's reading, on the bytes of one call's frames:
``read_us`` is what the profile does (``SyrupReader``: cut and parse in one
pass), against the two passes it replaced — finding where each frame ends
(``split_us``, ``SyrupSplitter``) and then parsing it (``decode_us``); and
``revive_us``, turning parsed arguments into passable values.

Only the JSON goes to stdout. The test suite runs ``--smoke`` to keep it
working, never to assert timings.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared session helpers

from sessions import StreamPair, msgpack_profile, ocapn_profile  # noqa: E402

from ocapd.captp.syrup import SyrupReader, SyrupSplitter, decode  # noqa: E402


def block_mean_us(pair: StreamPair, calls: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(calls):
        pair.call()
    return (time.perf_counter_ns() - start) / calls / 1000


def reading_steps(calls: int) -> dict[str, float]:
    """The OCapN frames one call reads, and what each reading step costs on them."""
    pair = StreamPair(ocapn_profile)
    frames: list[bytes] = []
    original = pair.server.receive_frame, pair.client.receive_frame

    def recording(receive: Any) -> Any:
        def receive_frame(frame: bytes) -> None:
            frames.append(frame)
            receive(frame)

        return receive_frame

    pair.server.receive_frame, pair.client.receive_frame = recording(original[0]), recording(original[1])  # type: ignore[method-assign]
    pair.call()
    stream = b"".join(frames)
    profile = ocapn_profile("reader")
    decoded = [profile.decode_message(frame, pair.server.limits) for frame in frames]

    def timed(fn: Any) -> float:
        start = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        return (time.perf_counter_ns() - start) / calls / 1000

    def split() -> None:
        splitter = SyrupSplitter()
        splitter.feed(stream)
        while splitter.next_value() is not None:
            pass

    def read() -> None:
        reader = SyrupReader()
        reader.feed(stream)
        while reader.next_frame() is not None:
            pass

    def parse() -> None:
        for frame in frames:
            decode(frame)

    def revive() -> None:
        for message in decoded:
            args = getattr(message, "args", None)
            if args is not None:
                profile.decode_args(args, lambda d: d)

    return {
        "frames_per_call": len(frames),
        "bytes_per_call": len(stream),
        "read_us": round(timed(read), 2),
        "split_us": round(timed(split), 2),
        "decode_us": round(timed(parse), 2),
        "revive_us": round(timed(revive), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer blocks (a minute's less patience)")
    parser.add_argument("--smoke", action="store_true", help="a few calls: checks that it runs, measures nothing")
    options = parser.parse_args()
    blocks, calls = (2, 5) if options.smoke else (10, 500) if options.quick else (30, 1000)
    pairs = {"msgpack": StreamPair(msgpack_profile), "ocapn": StreamPair(ocapn_profile)}
    for pair in pairs.values():  # warm up
        block_mean_us(pair, calls // 5 + 1)
    means: dict[str, list[float]] = {name: [] for name in pairs}
    gc.collect()
    for _ in range(blocks):
        for name, pair in pairs.items():
            means[name].append(block_mean_us(pair, calls))
    medians = {name: statistics.median(values) for name, values in means.items()}
    result = {
        "benchmark": "captp_sansio",
        "python": platform.python_version(),
        "blocks": blocks,
        "calls_per_block": calls,
        "call_us": {name: round(value, 2) for name, value in medians.items()},
        "call_us_spread": {name: [round(min(v), 2), round(max(v), 2)] for name, v in means.items()},
        "ocapn_over_msgpack": round(medians["ocapn"] / medians["msgpack"], 3),
        "ocapn_reading": reading_steps(calls),
    }
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
