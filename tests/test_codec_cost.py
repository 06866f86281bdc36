"""What encoding a call's message costs in Python function calls, counted rather than timed.

Most of a CapTP call's CPU time is Python work, and encoding is a large part
of it (tests/bench/captp_sansio.py times it). The number of Python-level
function calls one encode makes is exact for a given code path, so these
tests pin it without depending on the machine's speed or load.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from ocapd.captp import codec
from ocapd.captp.messages import Deliver, DeliverOnly, DescKind, Descriptor
from ocapd.captp.msgpack_profile import MSGPACK
from ocapd.captp.session import DEFAULT_LIMITS

SMALL_ARGS = {"op": "ping", "seq": 12345, "tags": ["a", "b"]}


def python_calls(fn: Callable[[], Any]) -> int:
    """How many Python functions ``fn()`` enters (C functions are not counted)."""
    count = 0

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal count
        if event == "call":
            count += 1

    fn()  # warm: first calls may import or build caches
    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return count - 1  # fn itself


def describe(obj: Any) -> Descriptor:
    return Descriptor(DescKind.IMPORT_OBJECT, 7)


def test_a_deliver_of_plain_data_is_encoded_with_few_python_calls() -> None:
    target = Descriptor(DescKind.EXPORT, 0)
    message = Deliver(target, "echo", (SMALL_ARGS,), 12, object())
    frame = MSGPACK.encode_message(message, describe, DEFAULT_LIMITS)
    calls = python_calls(lambda: MSGPACK.encode_message(message, describe, DEFAULT_LIMITS))
    # encode_message, codec.encode, one walk per container (4), the target's
    # descriptor, and the resolver's (walk, describe, descriptor): ints and
    # strings inside a container cost no call of their own (24 calls before).
    assert calls <= 11, calls
    assert codec.decode(frame) == ["deliver", target, "echo", [SMALL_ARGS], 12, Descriptor(DescKind.IMPORT_OBJECT, 7)]


def test_an_answer_of_plain_data_is_encoded_with_few_python_calls() -> None:
    message = DeliverOnly(Descriptor(DescKind.EXPORT, 3), "fulfill", [SMALL_ARGS])
    calls = python_calls(lambda: MSGPACK.encode_message(message, describe, DEFAULT_LIMITS))
    assert calls <= 7, calls  # 16 before


def test_a_short_frame_is_decoded_with_a_call_per_descriptor_and_little_else() -> None:
    target = Descriptor(DescKind.EXPORT, 0)
    frame = MSGPACK.encode_message(Deliver(target, "echo", (SMALL_ARGS,), 12, object()), describe, DEFAULT_LIMITS)
    calls = python_calls(lambda: MSGPACK.decode_message(frame, DEFAULT_LIMITS))
    # decode_message, unpack, and the ext hook for each of the two descriptors (6 before).
    assert calls <= 4, calls
