"""Bad input never hurts more than its session.

Whatever bytes a peer sends, the sans-IO ``Session`` either processes them or
aborts with one of its reason codes; it never raises, never hangs, never
reaches an object that was not given to that peer on that session, and the
sessions beside it keep working. Most tests drive ``captp.Session`` directly
(frames in with ``receive_frame``, frames out with ``data_to_send``); a few run
the trio drivers to show a second connection is unaffected.
"""

from __future__ import annotations

import gc
import logging
import os
import random
import signal
import socket
import struct
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any

import msgpack
import pytest
import trio
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from msgpack import ExtType
from sessions import feed_frame

from ocapd.captp import (
    PROTOCOL_VERSION,
    E,
    FramedStream,
    Limits,
    ProtocolError,
    RemoteError,
    Session,
    Tagged,
    TransportClosed,
    far,
    make_promise_kit,
    memory_transport_pair,
    open_connection,
    open_memory_pair,
    open_stream_connection,
)
from ocapd.captp import session as session_module
from ocapd.captp.codec import (
    EXT_ANSWER,
    EXT_BIGINT,
    EXT_EXPORT,
    EXT_IMPORT_OBJECT,
    EXT_IMPORT_PROMISE,
    EXT_TAGGED,
    MAX_DEPTH,
    unpack,
)
from ocapd.captp.eventual import local_call
from ocapd.captp.turns import run_turns

#: Every reason code the session may abort with (its R_* constants).
REASON_CODES = frozenset(
    getattr(session_module, name) for name in dir(session_module) if name.startswith("R_")
)
OPS = ["start-session", "deliver", "deliver-only", "listen", "gc-exports", "gc-answers", "abort"]
ARITY = {"start-session": 2, "deliver": 6, "deliver-only": 4, "listen": 4, "gc-exports": 3, "gc-answers": 2, "abort": 2}

FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

# ---------------------------------------------------------------------------
# building frames by hand


def pos_bytes(pos: int) -> bytes:
    return pos.to_bytes(max(1, (pos.bit_length() + 7) // 8), "big")


def export(pos: int) -> ExtType:
    """Names the receiver's export ``pos`` (a deliver target)."""
    return ExtType(EXT_EXPORT, pos_bytes(pos))


def answer(pos: int) -> ExtType:
    return ExtType(EXT_ANSWER, pos_bytes(pos))


def import_object(pos: int) -> ExtType:
    """Names an object the sender exports at ``pos`` (e.g. a resolver)."""
    return ExtType(EXT_IMPORT_OBJECT, pos_bytes(pos))


def bigint(n: int) -> ExtType:
    return ExtType(EXT_BIGINT, n.to_bytes((n + (n < 0)).bit_length() // 8 + 1, "big", signed=True))


def frame(*fields: Any) -> bytes:
    return msgpack.packb(list(fields), use_bin_type=True)


START = frame("start-session", PROTOCOL_VERSION)
#: An integer whose decimal form is longer than Python's default int-to-str limit.
HUGE_INT = bigint(10**5000)


def deep_bytes(kind: str, depth: int) -> bytes:
    """``depth`` levels of one container kind around nil, as msgpack bytes (linear time)."""
    if kind == "list":
        return b"\x91" * depth + b"\xc0"
    if kind == "dict":
        return b"\x81\xa1k" * depth + b"\xc0"
    headers = []
    size = 1
    for _ in range(depth):
        header = b"\xc9" + struct.pack(">Ib", 3 + size, EXT_TAGGED) + b"\x92\xa1t"
        headers.append(header)
        size += len(header)
    return b"".join(reversed(headers)) + b"\xc0"


def raw_frame(*parts: bytes) -> bytes:
    """A msgpack array whose elements are given as already-encoded bytes."""
    assert len(parts) < 16
    return bytes([0x90 | len(parts)]) + b"".join(parts)


def p(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


# ---------------------------------------------------------------------------
# objects that count every method run on them


@far("Probe")
class Probe:
    """A remotable that counts its method invocations in a shared Counter."""

    def __init__(self, calls: Counter, name: str = "boot") -> None:
        self.calls = calls
        self.name = name
        self.children: list[Probe] = []
        self._resolvers: list[Any] = []

    def _count(self, method: str) -> None:
        self.calls[(self.name, method)] += 1

    def ping(self) -> str:
        self._count("ping")
        return "pong"

    def echo(self, value: Any) -> Any:
        self._count("echo")
        return value

    def make(self) -> Probe:
        self._count("make")
        child = Probe(self.calls, f"{self.name}.{len(self.children)}")
        self.children.append(child)
        return child

    def later(self) -> dict[str, Any]:
        """A record holding a promise (passed by reference) that ``settle`` settles."""
        self._count("later")
        promise, resolver = make_promise_kit()
        self._resolvers.append(resolver)
        return {"promise": promise}

    def settle(self, value: Any) -> None:
        self._count("settle")
        for resolver in self._resolvers:
            resolver.resolve(value)
        self._resolvers.clear()

    def _private(self) -> str:
        self._count("_private")
        return "secret"

    def __secret(self) -> str:  # name-mangled: _Probe__secret
        self._count("__secret")
        return "secret"


# ---------------------------------------------------------------------------
# session helpers


def started(bootstrap: Any = None, limits: Limits | None = None) -> Session:
    """A session that has received the peer's start-session, outbox drained."""
    s = Session(bootstrap if bootstrap is not None else Probe(Counter()), limits=limits or Limits(), name="victim")
    feed_frame(s, START)
    s.data_to_send()
    return s


def pump(*pairs: tuple[Session, Session]) -> None:
    """Move frames between each pair of sessions until all are quiet."""
    moved = True
    while moved:
        moved = False
        for a, b in pairs:
            for f in a.data_to_send():
                feed_frame(b, f)
                moved = True
            for f in b.data_to_send():
                feed_frame(a, f)
                moved = True


def assert_aborted(s: Session, *codes: str) -> str:
    """The session aborted itself with one of ``codes`` and told the peer, last thing."""
    assert s.aborted is not None, "session should have aborted"
    assert not s.aborted.by_peer
    assert s.aborted.code in REASON_CODES
    if codes:
        assert s.aborted.code in codes, s.aborted.reason
    out = s.data_to_send()
    assert out, "an abort frame must be queued"
    last = msgpack.unpackb(out[-1], raw=False)
    assert last[0] == "abort" and last[1].partition(": ")[0] == s.aborted.code
    # From now on nothing the peer sends is read or answered.
    frames_in = s.frames_in
    feed_frame(s, frame("deliver", export(0), "ping", [], 999, import_object(1)))
    assert s.data_to_send() == [] and s.frames_in == frames_in
    return s.aborted.code


def feed(s: Session, data: bytes) -> None:
    feed_frame(s, data)


class Hang(BaseException):
    """Raised by the watchdog: a BaseException so no ``except Exception`` swallows it."""


@contextmanager
def watchdog(seconds: float = 10.0) -> Iterator[None]:
    """Fail (rather than hang the suite) if the body runs longer than ``seconds``."""

    def on_alarm(signum: int, frame: Any) -> None:
        raise Hang(f"no answer within {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def internal_errors() -> Iterator[list[logging.LogRecord]]:
    """Collect errors the captp package logs: an exception it caught in its own code.

    The session turns an internal error into an abort rather than raising; that
    keeps the damage to one session, but it is still a bug the fuzzer should report.
    """
    handler = _Records()
    logger = logging.getLogger("captp")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


class Neighbour:
    """An honest session pair beside the one under attack, sharing its bootstrap object."""

    def __init__(self, bootstrap: Any) -> None:
        self.bootstrap = bootstrap
        self.client = Session(None, name="neighbour-client")
        self.server = Session(bootstrap, name="neighbour-server")
        pump((self.client, self.server))
        self.answered = 0

    def check_still_answers(self) -> None:
        answer = E(self.client.bootstrap()).ping()
        pump((self.client, self.server))
        assert answer.result() == "pong"
        assert self.client.aborted is None and self.server.aborted is None
        self.answered += 1


# ---------------------------------------------------------------------------
# a corpus of real frames: what an honest caller sends in a session that uses
# every operation


@cache
def honest_frames() -> tuple[bytes, ...]:
    """The frames a caller sent to a ``Probe`` bootstrap during a session using every op."""
    caller = Session(None, name="caller")
    callee = Session(Probe(Counter()), name="callee")
    sent: list[bytes] = []

    def run() -> None:
        moved = True
        while moved:
            moved = False
            for f in caller.data_to_send():
                sent.append(f)
                feed_frame(callee, f)
                moved = True
            for f in callee.data_to_send():
                feed_frame(caller, f)
                moved = True

    boot = caller.bootstrap()
    answers = [
        E(boot).ping(),
        E(boot).echo([1, "two", b"3", 2**70, -(2**80), 1.5, None, True, {"k": Tagged("t", [RemoteError("E", "m")])}]),
    ]
    child = E(boot).make()
    answers.append(E(child).ping())  # pipelined on an answer
    run()
    E.send_only(boot).ping()  # deliver-only
    E.send_only(child).echo("x")  # deliver-only to an answer, now settled: straight to the import
    box = E(boot).later()
    run()
    later = box.result()["promise"]  # a promise the callee exports
    later.when_settled(lambda _: None)  # waiting on it: the caller listens
    answers.append(E(boot).echo(child.result()))  # an export passed back to its owner
    run()
    answers.append(E(boot).settle("done"))
    run()
    assert later.result() == "done"
    assert all(a.fulfilled for a in answers)
    del answers, child, later, box
    gc.collect()
    run()  # gc-exports and gc-answers
    caller.abort("closed: bye")
    sent.extend(caller.data_to_send())
    ops = {msgpack.unpackb(f, raw=False, ext_hook=ExtType)[0] for f in sent}
    assert ops >= set(OPS), ops
    return tuple(sent)


def run_case(frames: list[bytes], neighbour: Neighbour | None = None, calls: Counter | None = None) -> None:
    """Feed ``frames`` to a fresh callee and check the session's promises about bad input.

    Each frame ends in normal processing or an abort whose code is one of the
    session's; an abort queues an abort frame last and ends all processing;
    nothing raises and nothing hangs.
    """
    bootstrap = neighbour.bootstrap if neighbour is not None else Probe(calls or Counter())
    s = Session(bootstrap, name="victim")
    s.data_to_send()  # our own start-session
    with watchdog(), internal_errors() as errors:
        for data in frames:
            feed_frame(s, data)
            if s.aborted is not None:
                if s.aborted.by_peer:
                    # The peer sent an abort: nothing to answer, nothing more read.
                    msg = unpack(data)
                    assert type(msg) is list and msg[0] == "abort"
                    assert s.data_to_send() == []
                    feed_frame(s, START)
                    assert s.data_to_send() == []
                else:
                    assert_aborted(s)
                break
            for out in s.data_to_send():
                msg = unpack(out)
                assert type(msg) is list and msg[0] in OPS
    assert not errors, [r.getMessage() + "\n" + str(r.exc_info and r.exc_info[1]) for r in errors]
    if neighbour is not None:
        neighbour.check_still_answers()


# ---------------------------------------------------------------------------
# mutations of real frames


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 16), st.integers(0, 7)),
    st.tuples(
        st.just("set"),
        st.integers(0, 1 << 16),
        st.sampled_from([0x00, 0x7F, 0x80, 0xC0, 0xC1, 0xC7, 0xC9, 0xCF, 0xD3, 0xD4, 0xDC, 0xDD, 0xDF, 0xFF]) | st.integers(0, 255),
    ),
    st.tuples(st.just("insert"), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=9)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 16), st.integers(1, 9)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 16)),
)


def mutate(data: bytes, mutations: list[tuple[Any, ...]]) -> bytes:
    buf = bytearray(data)
    for m in mutations:
        where = m[1] % (len(buf) + 1)
        if m[0] == "flip" and where < len(buf):
            buf[where] ^= 1 << m[2]
        elif m[0] == "set" and where < len(buf):
            buf[where] = m[2]
        elif m[0] == "insert":
            buf[where:where] = m[2]
        elif m[0] == "delete":
            del buf[where : where + m[2]]
        elif m[0] == "truncate":
            del buf[where:]
    return bytes(buf)


def random_mutations(rng: random.Random) -> list[tuple[Any, ...]]:
    """The same kinds of mutation as ``mutation``, from a seeded generator."""
    out: list[tuple[Any, ...]] = []
    for _ in range(rng.randint(1, 4)):
        kind = rng.choice(["flip", "set", "insert", "delete", "truncate"])
        where = rng.randrange(1 << 16)
        arg: Any = {
            "flip": rng.randrange(8),
            "set": rng.randrange(256),
            "insert": rng.randbytes(rng.randint(1, 9)),
            "delete": rng.randint(1, 9),
            "truncate": None,
        }[kind]
        out.append((kind, where, arg) if arg is not None else (kind, where))
    return out


# Random msgpack values, biased towards what the session looks at: ops, method
# names, positions near the real ones, descriptors, edge integers. Drawn from a
# seeded generator (one hypothesis draw per case) because building them from
# hypothesis strategies costs ten times more than running the case.
EDGE_INTS = [-1, 0, 2**31, 2**32, 2**53 - 1, 2**53, 2**63, 2**64 - 1, -(2**63)]
NAMES = OPS + ["ping", "echo", "make", "later", "settle", "fulfill", "break", "__class__", "_private", PROTOCOL_VERSION]
TEXTS = ["", "t", "k", "é", "\u2603", "\U0001f600", "a" * 200, "\x00"]
SCALAR_MAKERS = [
    lambda r: None,
    lambda r: r.random() < 0.5,
    lambda r: r.randint(-3, 40),
    lambda r: r.randint(-(2**63), 2**64 - 1),
    lambda r: r.choice(EDGE_INTS),
    lambda r: r.choice([0.0, -0.0, 1.5, float("nan"), float("inf")]),
    lambda r: r.choice(TEXTS),
    lambda r: r.randbytes(r.randint(0, 12)),
    lambda r: r.choice(NAMES),
    lambda r: ExtType(r.choice([10, 11, 12, 13]), pos_bytes(r.randint(0, 12))),
    lambda r: ExtType(r.choice([1, 2, 3, 10, 11, 12, 13]), r.randbytes(r.randint(0, 10))),
    lambda r: ExtType(r.randrange(128), r.randbytes(r.randint(0, 4))),
    lambda r: r.choice([bigint(2**64), bigint(-(2**70)), HUGE_INT]),
]


def random_wire_value(rng: random.Random, depth: int = 0) -> Any:
    """A random msgpack value: scalars, arrays, maps with any keys, tagged exts."""
    if depth < 3 and rng.random() < 0.25:
        kind = rng.randrange(3)
        if kind == 0:
            return [random_wire_value(rng, depth + 1) for _ in range(rng.randint(0, 5))]
        if kind == 1:
            return {random_key(rng): random_wire_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
        return ExtType(EXT_TAGGED, p([rng.choice(["t", "", 1]), random_wire_value(rng, depth + 1)]))
    return rng.choice(SCALAR_MAKERS)(rng)


def random_key(rng: random.Random) -> Any:
    return rng.choice([lambda r: r.choice(TEXTS), lambda r: r.randint(-5, 5), lambda r: None,
                       lambda r: r.randbytes(2), lambda r: ExtType(12, b"\x00")])(rng)


def random_message(rng: random.Random) -> Any:
    """Mostly a known op with the right number of random fields, so every handler is reached."""
    r = rng.random()
    if r < 0.7:
        op = rng.choice(OPS)
        return [op, *(random_wire_value(rng) for _ in range(ARITY[op] - 1))]
    if r < 0.9:
        return [random_wire_value(rng) for _ in range(rng.randint(0, 7))]
    return random_wire_value(rng)


def _paths(value: Any, path: tuple[int | str, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if type(value) is list:
        for i, v in enumerate(value):
            yield from _paths(v, path + (i,))
    elif type(value) is dict:
        for k, v in value.items():
            if type(k) is str:
                yield from _paths(v, path + (k,))


def swap_field(data: bytes, which: int, replacement: Any) -> bytes:
    """Replace one value inside the frame (chosen by ``which``) with ``replacement``."""
    tree = msgpack.unpackb(data, raw=False, ext_hook=ExtType, strict_map_key=False)
    paths = list(_paths(tree))[1:]  # never the frame itself
    path = paths[which % len(paths)]
    node = tree
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = replacement
    return p(tree)


# ---------------------------------------------------------------------------
# fuzzing the sans-IO session

#: Examples per fuzz test: 6,300 sans-IO cases, plus 300 through the trio drivers below.
N_BYTE_MUTATIONS = 1500
N_FIELD_SWAPS = 2000
N_RANDOM_MESSAGES = 2000
N_RANDOM_BYTES = 800


def test_the_honest_corpus_uses_every_op_and_replays_cleanly() -> None:
    frames = honest_frames()
    s = Session(Probe(Counter()), name="callee")
    for f in frames:
        feed_frame(s, f)
    assert s.aborted is not None and s.aborted.by_peer and s.aborted.code == "closed"


def test_mutated_real_frames_are_processed_or_abort_cleanly() -> None:
    frames = honest_frames()
    neighbour = Neighbour(Probe(Counter()))

    @settings(FUZZ, max_examples=N_BYTE_MUTATIONS)
    @given(st.integers(0, len(frames) - 1), st.lists(mutation, min_size=1, max_size=4))
    def case(index: int, mutations: list[tuple[Any, ...]]) -> None:
        bad = mutate(frames[index], mutations)
        note(f"frame: {bad!r}")
        run_case([*frames[:index], bad, *frames[index + 1 :]], neighbour)

    case()
    assert neighbour.answered == N_BYTE_MUTATIONS


def test_real_frames_with_a_field_swapped_are_processed_or_abort_cleanly() -> None:
    frames = honest_frames()
    neighbour = Neighbour(Probe(Counter()))

    @settings(FUZZ, max_examples=N_FIELD_SWAPS)
    @given(st.integers(0, len(frames) - 1), st.integers(0, 1 << 10), st.integers(0, 2**32))
    def case(index: int, which: int, seed: int) -> None:
        bad = swap_field(frames[index], which, random_wire_value(random.Random(seed)))
        note(f"frame: {bad!r}")
        run_case([*frames[:index], bad, *frames[index + 1 :]], neighbour)

    case()
    assert neighbour.answered == N_FIELD_SWAPS


def test_random_messages_of_every_op_are_processed_or_abort_cleanly() -> None:
    frames = honest_frames()
    neighbour = Neighbour(Probe(Counter()))

    @settings(FUZZ, max_examples=N_RANDOM_MESSAGES)
    @given(st.integers(1, len(frames) - 1), st.integers(0, 2**32))
    def case(index: int, seed: int) -> None:
        rng = random.Random(seed)
        messages = [p(random_message(rng)) for _ in range(rng.randint(1, 3))]
        note(f"frames: {messages!r}")
        run_case([*frames[:index], *messages, *frames[index:]], neighbour)

    case()
    assert neighbour.answered == N_RANDOM_MESSAGES


def test_random_bytes_are_processed_or_abort_cleanly() -> None:
    frames = honest_frames()
    neighbour = Neighbour(Probe(Counter()))

    @settings(FUZZ, max_examples=N_RANDOM_BYTES)
    @given(st.integers(0, len(frames) - 1), st.binary(max_size=200))
    def case(index: int, data: bytes) -> None:
        run_case([*frames[:index], data, *frames[index:]], neighbour)

    case()
    assert neighbour.answered == N_RANDOM_BYTES


# ---------------------------------------------------------------------------
# fuzzed frames through the real trio drivers

PROBE_RESOLVER = 7_777_777
PROBE_CALL = frame("deliver", export(0), "ping", [], None, import_object(PROBE_RESOLVER))


def fuzzed_frame_sets(n: int, seed: int = 20240611) -> list[list[bytes]]:
    """Deterministic fuzz cases: real frames mutated, fields swapped, random bytes."""
    rng = random.Random(seed)
    frames = honest_frames()
    cases = []
    for i in range(n):
        index = rng.randrange(len(frames))
        kind = i % 3
        if kind == 0:
            bad = mutate(frames[index], random_mutations(rng))
        elif kind == 1:
            bad = swap_field(frames[index], rng.randrange(1 << 10), random_wire_value(rng))
        else:
            bad = rng.randbytes(rng.randint(0, 64))
        cases.append([*frames[:index], bad])
    return cases


async def read_outcome(transport: Any) -> str:
    """Read the victim's frames until it answers the probe call or aborts."""
    while True:
        try:
            data = await transport.receive_frame()
        except TransportClosed:
            return "closed"
        msg = msgpack.unpackb(data, raw=False, ext_hook=ExtType, strict_map_key=False)
        if msg[0] == "abort":
            return "abort: " + msg[1]
        if msg[0] == "deliver-only" and msg[1] == export(PROBE_RESOLVER):
            return "answered"


async def test_fuzzed_connection_aborts_alone_while_a_neighbour_connection_keeps_answering() -> None:
    calls: Counter = Counter()
    shared = Probe(calls)
    outcomes: Counter = Counter()
    async with open_memory_pair(None, shared) as (client, server):
        boot = client.bootstrap()
        for frames in fuzzed_frame_sets(240):
            attacker, victim_end = memory_transport_pair()
            with trio.fail_after(10):
                async with open_connection(victim_end, shared, name="victim") as victim:
                    try:  # the frames begin with the corpus's own start-session
                        await attacker.send_frames([*frames, PROBE_CALL])
                    except TransportClosed:
                        pass  # the victim aborted and closed while we were still sending
                    outcome = await read_outcome(attacker)
                    outcomes[outcome.partition(":")[0]] += 1
                    if outcome.startswith("abort"):
                        assert victim.aborted is not None
                        assert victim.aborted.code in REASON_CODES
                        assert outcome[len("abort: "):].partition(": ")[0] == victim.aborted.code
                    elif outcome == "closed":
                        assert victim.aborted is not None and victim.aborted.by_peer
                    else:
                        assert victim.aborted is None
                assert await E(boot).ping() == "pong"
                assert client.aborted is None and server.aborted is None
    assert outcomes["abort"] > 0 and outcomes["answered"] > 0, outcomes


async def test_garbage_on_a_framed_stream_ends_that_connection_only() -> None:
    calls: Counter = Counter()
    shared = Probe(calls)
    rng = random.Random(7)
    limits = Limits(max_frame_size=4096)
    codes: Counter = Counter()
    async with open_memory_pair(None, shared) as (client, server):
        for i in range(60):
            a, b = socket.socketpair()
            raw = trio.SocketStream(trio.socket.from_stdlib_socket(a))
            garbage = rng.randbytes(rng.randint(1, 300))
            if i % 2:  # a plausible length prefix followed by too few or wrong bytes
                garbage = struct.pack(">I", rng.choice([0, 1, 5, 4096, 4097, 2**31, 2**32 - 1])) + garbage
            with trio.fail_after(10):
                async with open_stream_connection(
                    trio.SocketStream(trio.socket.from_stdlib_socket(b)), shared, limits=limits, name="victim"
                ) as victim:
                    await raw.send_all(struct.pack(">I", len(START)) + START + garbage)
                    await raw.send_eof()
                    reason = await victim.wait_closed()
                    assert reason.code in REASON_CODES
                    codes[reason.code] += 1
            await raw.aclose()
            assert await E(client.bootstrap()).ping() == "pong"
    assert codes["frame-too-large"] > 0, codes


# ---------------------------------------------------------------------------
# named cases


def test_a_frame_over_the_session_limit_aborts_with_frame_too_large() -> None:
    limits = Limits(max_frame_size=1024)
    body = frame("deliver", export(0), "echo", ["x" * 2000], None, None)
    s = started(limits=limits)
    feed_frame(s, body)
    assert_aborted(s, "frame-too-large")
    # exactly at the limit is fine
    ok = frame("deliver", export(0), "echo", ["x"], 1, import_object(1))
    ok = frame("deliver", export(0), "echo", ["x" * (1024 - len(ok) - 1)], 1, import_object(1))
    assert len(ok) == 1024
    s = started(limits=limits)
    feed_frame(s, ok)
    assert s.aborted is None


async def test_a_framed_stream_announcing_a_huge_length_aborts_with_frame_too_large() -> None:
    a, b = socket.socketpair()
    raw = trio.SocketStream(trio.socket.from_stdlib_socket(a))
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(b))
    # The transport refuses before reading (or buffering) the body.
    framed = FramedStream(stream, max_frame_size=1 << 20)
    await raw.send_all(struct.pack(">I", 2**32 - 1) + b"\x00" * 16)
    with pytest.raises(ProtocolError) as info:
        await framed.receive_frame()
    assert info.value.code == "frame-too-large"
    # Through the driver: the connection aborts and says why.
    await raw.send_all(struct.pack(">I", len(START)) + START + struct.pack(">I", (1 << 20) + 1))
    with trio.fail_after(5):
        async with open_stream_connection(stream, None, limits=Limits(max_frame_size=1 << 20)) as conn:
            reason = await conn.wait_closed()
    assert reason.code == "frame-too-large"
    received = b""
    with trio.fail_after(5):
        while chunk := await raw.receive_some():
            received += chunk
    frames, rest = [], received
    while rest:
        (n,) = struct.unpack(">I", rest[:4])
        frames.append(msgpack.unpackb(rest[4 : 4 + n], raw=False))
        rest = rest[4 + n :]
    assert frames[-1][0] == "abort" and frames[-1][1].startswith("frame-too-large")
    await raw.aclose()


@pytest.mark.parametrize("op", ["fly", "", "Deliver", "deliver ", 1, None, b"deliver", [], {}, True, 1.5])
def test_an_unknown_op_aborts_with_unknown_op(op: Any) -> None:
    s = started()
    feed_frame(s, frame(op, 1, 2))
    assert_aborted(s, "unknown-op")


@pytest.mark.parametrize(
    "message",
    [
        ["deliver", export(1), "ping", [], 0, import_object(1)],
        ["deliver", export(12345), "ping", [], None, None],
        ["deliver-only", export(1), "ping", []],
        ["listen", export(1), import_object(1), False],
        ["deliver", answer(0), "ping", [], None, None],
        ["listen", answer(3), import_object(1), False],
        ["deliver", export(0), "echo", [export(1)], 0, None],
        ["deliver", export(0), "echo", [{"deep": [answer(9)]}], 0, None],
        ["gc-exports", [1], [1]],
        ["gc-answers", [0]],
    ],
    ids=["deliver", "deliver-far", "deliver-only", "listen", "answer", "listen-answer", "arg", "nested-arg", "gc-exports", "gc-answers"],
)
def test_naming_a_position_never_given_aborts_with_unknown_position(message: list[Any]) -> None:
    calls: Counter = Counter()
    s = started(Probe(calls))
    feed_frame(s, p(message))
    assert_aborted(s, "unknown-position")
    assert calls == Counter()


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x00\x00", b"\x00\x05", (2**53).to_bytes(7, "big"), (2**56 - 1).to_bytes(7, "big"), (2**64).to_bytes(9, "big"), b"\xff" * 8],
    ids=["empty", "zero-padded", "padded", "2**53", "2**56-1", "2**64", "8-bytes"],
)
@pytest.mark.parametrize("code", [EXT_EXPORT, EXT_ANSWER, EXT_IMPORT_OBJECT, EXT_IMPORT_PROMISE])
@pytest.mark.parametrize("where", ["target", "arg", "resolver"])
def test_malformed_descriptor_positions_abort(where: str, code: int, payload: bytes) -> None:
    desc = ExtType(code, payload)
    message = {
        "target": ["deliver", desc, "ping", [], None, None],
        "arg": ["deliver", export(0), "echo", [desc], None, None],
        "resolver": ["deliver", export(0), "ping", [], 0, desc],
    }[where]
    calls: Counter = Counter()
    s = started(Probe(calls))
    feed_frame(s, p(message))
    assert_aborted(s, "malformed-frame", "bad-field")
    assert calls == Counter()


@pytest.mark.parametrize(
    "answer_pos",
    [-1, -(2**63), 2**53, 2**64 - 1, bigint(2**64), bigint(-(2**64)), 1.0, "1", True, b"\x01", [1], export(1)],
    ids=["-1", "-2**63", "2**53", "2**64-1", "big", "-big", "float", "str", "bool", "bytes", "list", "desc"],
)
def test_bad_answer_positions_abort_with_bad_field(answer_pos: Any) -> None:
    calls: Counter = Counter()
    s = started(Probe(calls))
    feed_frame(s, frame("deliver", export(0), "ping", [], answer_pos, None))
    assert_aborted(s, "bad-field")
    assert calls == Counter()


@pytest.mark.parametrize(
    "message",
    [
        ["gc-exports", [-1], [1]],
        ["gc-exports", [2**53], [1]],
        ["gc-exports", [2**64 - 1], [1]],
        ["gc-exports", [1], [-1]],
        ["gc-exports", [1], [0]],
        ["gc-answers", [-1]],
        ["gc-answers", [2**53]],
        ["gc-answers", [2**64 - 1]],
        ["gc-answers", ["0"]],
    ],
    ids=["export--1", "export-2**53", "export-2**64-1", "delta--1", "delta-0", "answer--1", "answer-2**53", "answer-2**64-1", "answer-str"],
)
def test_gc_of_negative_or_out_of_range_positions_aborts_with_bad_field(message: list[Any]) -> None:
    # A negative or out-of-range number is not a position at all (bad-field),
    # unlike a well-formed position that was never given (unknown-position).
    s = started()
    feed_frame(s, p(message))
    assert_aborted(s, "bad-field", "malformed-frame")


@pytest.mark.parametrize(
    "message",
    [
        ["start-session", HUGE_INT],
        [HUGE_INT, 1],
        ["gc-answers", [HUGE_INT]],
        ["gc-exports", [HUGE_INT], [1]],
        ["deliver", export(0), "ping", [], HUGE_INT, None],
        ["deliver", export(0), HUGE_INT, [], None, None],
        ["abort", HUGE_INT],
    ],
    ids=["version", "op", "gc-answers", "gc-exports", "answer-pos", "method", "abort-reason"],
)
def test_integers_too_long_to_print_abort_cleanly(message: list[Any]) -> None:
    # 10**5000 is a legal bigint, but longer than Python's int-to-str limit:
    # describing it in an abort reason must not raise.
    s = Session(Probe(Counter()), name="victim")
    if message[0] != "start-session":
        feed_frame(s, START)
    s.data_to_send()
    feed_frame(s, p(message))
    assert s.aborted is not None
    if message[0] != "abort":
        assert_aborted(s)


@pytest.mark.parametrize(
    "op,fields",
    [
        ("deliver", [export(0), "ping", [], None, None]),
        ("deliver-only", [export(0), "ping", []]),
        ("listen", [export(0), import_object(1), False]),
        ("gc-exports", [[], []]),
        ("gc-answers", [[]]),
        ("abort", ["closed"]),
        ("start-session", [PROTOCOL_VERSION]),
    ],
)
@pytest.mark.parametrize("change", ["too-few", "too-many", "none", "double"])
def test_wrong_arity_for_every_op_aborts_with_bad_arity(op: str, fields: list[Any], change: str) -> None:
    changed = {
        "too-few": fields[:-1],
        "too-many": [*fields, None],
        "none": [],
        "double": fields + fields,
    }[change]
    calls: Counter = Counter()
    s = Session(Probe(calls), name="victim")
    if op != "start-session":
        feed_frame(s, START)
    s.data_to_send()
    feed_frame(s, frame(op, *changed))
    assert_aborted(s, "bad-arity")
    assert calls == Counter()


def test_well_formed_empty_ops_do_not_abort() -> None:
    s = started()
    for message in (frame("gc-exports", [], []), frame("gc-answers", [])):
        feed_frame(s, message)
    assert s.aborted is None


def deliver_with(arg: bytes) -> bytes:
    return raw_frame(p("deliver"), p(export(0)), p("echo"), b"\x91" + arg, p(1), p(import_object(1)))


@pytest.mark.parametrize("kind", ["list", "dict", "tagged"])
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1000, 100_000])
def test_deep_nesting_in_args_aborts_with_malformed_frame(kind: str, depth: int) -> None:
    calls: Counter = Counter()
    s = started(Probe(calls))
    feed_frame(s, deliver_with(deep_bytes(kind, depth)))
    assert_aborted(s, "malformed-frame")
    assert calls == Counter()


@pytest.mark.parametrize("kind", ["list", "dict", "tagged"])
@pytest.mark.parametrize("field", ["op", "version", "method", "answer-pos", "target", "gc-answers", "gc-exports", "abort-reason"])
def test_deep_nesting_in_any_field_aborts_without_recursion_error(kind: str, field: str) -> None:
    # 100,000 levels is refused by the decoder in any field.
    deep = deep_bytes(kind, 100_000)
    s = Session(Probe(Counter()), name="victim")
    if field != "version":
        feed_frame(s, START)
    s.data_to_send()
    feed_frame(s, _with_field(field, deep))
    assert_aborted(s, "malformed-frame")


@pytest.mark.parametrize("kind", ["list", "dict"])
@pytest.mark.parametrize("field", ["op", "version", "method", "answer-pos", "target", "gc-answers", "gc-exports", "abort-reason"])
def test_nesting_as_deep_as_msgpack_allows_aborts_in_any_field(kind: str, field: str) -> None:
    # msgpack itself unpacks about 1,000 levels; the session must not trip
    # over such a value in a field it only inspects or describes.
    deep = deep_bytes(kind, 1000)
    s = Session(Probe(Counter()), name="victim")
    if field != "version":
        feed_frame(s, START)
    s.data_to_send()
    feed_frame(s, _with_field(field, deep))
    assert_aborted(s)


def _with_field(field: str, value: bytes) -> bytes:
    return {
        "op": raw_frame(value, p(1)),
        "version": raw_frame(p("start-session"), value),
        "method": raw_frame(p("deliver"), p(export(0)), value, p([]), p(None), p(None)),
        "answer-pos": raw_frame(p("deliver"), p(export(0)), p("ping"), p([]), value, p(None)),
        "target": raw_frame(p("deliver"), value, p("ping"), p([]), p(None), p(None)),
        "gc-answers": raw_frame(p("gc-answers"), b"\x91" + value),
        "gc-exports": raw_frame(p("gc-exports"), b"\x91" + value, p([1])),
        "abort-reason": raw_frame(p("abort"), b"\x91" + value, p(1)),  # wrong arity, deep field
    }[field]


@pytest.mark.parametrize(
    "arg",
    [{1: "x"}, {b"k": "x"}, {None: "x"}, {"ok": {2: "x"}}, [[{3: "x"}]], ExtType(EXT_TAGGED, p(["t", {4: "x"}])), {export(0): 1}],
    ids=["int", "bytes", "none", "nested", "in-list", "in-tagged", "desc"],
)
def test_non_str_record_keys_in_args_abort(arg: Any) -> None:
    calls: Counter = Counter()
    s = started(Probe(calls))
    feed_frame(s, frame("deliver", export(0), "echo", [arg], 0, import_object(1)))
    assert_aborted(s, "malformed-frame")
    assert calls == Counter()


@pytest.mark.parametrize(
    "message",
    [
        ["deliver", export(0), "ping", [], 0, import_object(1)],
        ["deliver-only", export(0), "ping", []],
        ["listen", export(0), import_object(1), False],
        ["gc-exports", [], []],
        ["gc-answers", []],
        ["fly"],
        [],
    ],
    ids=["deliver", "deliver-only", "listen", "gc-exports", "gc-answers", "unknown", "empty"],
)
def test_messages_before_start_session_abort_with_not_started(message: list[Any]) -> None:
    calls: Counter = Counter()
    s = Session(Probe(calls), name="victim")
    s.data_to_send()
    feed_frame(s, p(message))
    assert_aborted(s, "not-started", "malformed-frame")
    if message:
        assert s.aborted.code == "not-started"
    assert calls == Counter()


@pytest.mark.parametrize(
    "version",
    ["ocapd-captp/2", "ocapd-captp/0", "", "OCAPD-CAPTP/1", PROTOCOL_VERSION + "\x00", None, 1, b"ocapd-captp/1", [PROTOCOL_VERSION]],
)
def test_a_wrong_protocol_version_aborts_with_version_mismatch(version: Any) -> None:
    s = Session(Probe(Counter()), name="victim")
    s.data_to_send()
    feed_frame(s, frame("start-session", version))
    assert_aborted(s, "version-mismatch")


def test_a_second_start_session_aborts() -> None:
    s = started()
    feed_frame(s, START)
    assert_aborted(s, "bad-field")


def test_reusing_a_live_answer_position_aborts_with_position_in_use() -> None:
    calls: Counter = Counter()
    s = started(Probe(calls))
    feed_frame(s, frame("deliver", export(0), "ping", [], 5, None))
    assert s.aborted is None
    feed_frame(s, frame("deliver", export(0), "ping", [], 5, None))
    assert_aborted(s, "position-in-use")
    assert calls[("boot", "ping")] == 1


def test_an_answer_position_is_free_again_after_gc_answers() -> None:
    s = started()
    feed_frame(s, frame("deliver", export(0), "ping", [], 5, None))
    feed_frame(s, frame("gc-answers", [5]))
    feed_frame(s, frame("deliver", export(0), "ping", [], 5, None))
    assert s.aborted is None


def _session_with_one_export(calls: Counter) -> Session:
    """A session that has sent the peer one object (export 1) exactly once."""
    s = started(Probe(calls))
    feed_frame(s, frame("deliver", export(0), "make", [], 0, import_object(1)))
    out = [msgpack.unpackb(f, raw=False, ext_hook=ExtType) for f in s.data_to_send()]
    assert ["deliver-only", export(1), "fulfill", [import_object(1)]] in out
    return s


@pytest.mark.parametrize(
    "message",
    [["gc-exports", [1], [2]], ["gc-exports", [1, 1], [1, 1]], ["gc-exports", [0], [1]], ["gc-exports", [2], [1]]],
    ids=["delta-2", "twice", "bootstrap", "never-sent"],
)
def test_gc_exports_of_more_than_was_sent_aborts(message: list[Any]) -> None:
    calls: Counter = Counter()
    s = _session_with_one_export(calls)
    feed_frame(s, p(message))
    assert_aborted(s, "bad-field", "unknown-position")


def test_a_released_export_is_unreachable() -> None:
    calls: Counter = Counter()
    s = _session_with_one_export(calls)
    feed_frame(s, frame("deliver", export(1), "ping", [], 1, None))
    assert calls[("boot.0", "ping")] == 1
    feed_frame(s, frame("gc-exports", [1], [1]))
    assert s.aborted is None
    feed_frame(s, frame("deliver", export(1), "ping", [], 2, None))
    assert_aborted(s, "unknown-position")
    assert calls[("boot.0", "ping")] == 1


def test_more_pending_answers_than_max_answers_aborts_with_limit_exceeded() -> None:
    calls: Counter = Counter()
    s = started(Probe(calls), limits=Limits(max_answers=8))
    for pos in range(8):
        feed_frame(s, frame("deliver", export(0), "ping", [], pos, None))
    assert s.aborted is None
    feed_frame(s, frame("deliver", export(0), "ping", [], 8, None))
    assert_aborted(s, "limit-exceeded")
    assert calls[("boot", "ping")] == 8


def test_more_imports_than_max_imports_aborts_with_limit_exceeded() -> None:
    s = started(limits=Limits(max_imports=4))
    feed_frame(s, frame("deliver", export(0), "echo", [[import_object(i) for i in range(1, 5)]], 0, None))
    assert s.aborted is None
    feed_frame(s, frame("deliver", export(0), "echo", [[import_object(5)]], 1, None))
    assert_aborted(s, "limit-exceeded")


def test_an_abort_from_the_peer_ends_the_session_without_an_answer() -> None:
    s = started()
    feed_frame(s, frame("abort", "closed: bye"))
    assert s.aborted is not None and s.aborted.by_peer and s.aborted.code == "closed"
    assert s.data_to_send() == []
    feed_frame(s, frame("deliver", export(0), "ping", [], 0, import_object(1)))
    assert s.data_to_send() == []


# ---------------------------------------------------------------------------
# results that cannot be encoded, and calls forwarded to another session


@far("Files")
class Files:
    """Turns raw names into str the way the OS does (lone surrogates for bad bytes)."""

    def name_of(self, raw: bytes) -> str:
        return os.fsdecode(raw)

    def open(self, raw: bytes) -> None:
        raise FileNotFoundError(f"no such file: {os.fsdecode(raw)}")


@pytest.mark.parametrize("method", ["name_of", "open"])
def test_a_result_that_cannot_be_encoded_breaks_the_answer_not_the_session(method: str) -> None:
    caller = Session(None, name="caller")
    callee = Session(Files(), name="callee")
    pump((caller, callee))
    answer = E(caller.bootstrap()).__getattr__(method)(b"\xff\xfe")
    with internal_errors() as errors:
        pump((caller, callee))
    # The peer did nothing wrong: the call fails, the session goes on.
    assert callee.aborted is None, callee.aborted
    assert not errors
    assert isinstance(answer.exception(), RemoteError)


@far("Leaf")
class Leaf:
    def __init__(self, calls: Counter) -> None:
        self.calls = calls

    def take(self, value: Any) -> str:
        self.calls["take"] += 1
        return "taken"


@far("Hub")
class Hub:
    """Hands out a reference it holds to an object on another session."""

    def __init__(self, ref: Any) -> None:
        self.ref = ref

    def get(self) -> Any:
        return self.ref


def test_args_too_deep_to_forward_break_the_answer_not_the_session() -> None:
    # The hub forwards calls on the leaf to the leaf's session. Args that were
    # acceptable on arrival (MAX_DEPTH - 1 levels inside the args array) are
    # one level too deep inside the forwarded message.
    calls: Counter = Counter()
    leaf_side = Session(Leaf(calls), name="leaf")
    hub_to_leaf = Session(None, name="hub-to-leaf")
    pump((leaf_side, hub_to_leaf))
    hub_to_peer = started(Hub(hub_to_leaf.bootstrap()))
    feed_frame(hub_to_peer, frame("deliver", export(0), "get", [], 0, import_object(1)))
    out = [msgpack.unpackb(f, raw=False, ext_hook=ExtType) for f in hub_to_peer.data_to_send()]
    assert ["deliver-only", export(1), "fulfill", [import_object(1)]] in out
    deep: Any = None
    for _ in range(MAX_DEPTH - 1):
        deep = [deep]
    with internal_errors() as errors:
        feed_frame(hub_to_peer, frame("deliver", export(1), "take", [deep], 1, import_object(2)))
    # The peer did nothing wrong: its call fails, its session goes on.
    assert hub_to_peer.aborted is None, hub_to_peer.aborted
    assert not errors
    hub_to_peer.data_to_send()
    feed_frame(hub_to_peer, frame("deliver", export(1), "take", [[1]], 2, import_object(2)))
    pump((leaf_side, hub_to_leaf))
    assert calls["take"] == 1


# ---------------------------------------------------------------------------
# unforgeability: a peer reaches only what it was given on its own session


def test_ten_thousand_guessed_positions_reach_nothing() -> None:
    calls: Counter = Counter()
    shared = Probe(calls)
    # Another peer, on another session, is given real objects and holds answers.
    honest = Session(None, name="honest")
    owner = Session(shared, name="owner")
    pump((honest, owner))
    given_to_honest = [E(honest.bootstrap()).make() for _ in range(20)]
    pump((honest, owner))
    refs = [a.result() for a in given_to_honest]
    kept_answers = [E(honest.bootstrap()).later() for _ in range(5)]  # answers pending on owner
    pump((honest, owner))
    assert owner.stats()["exports"] >= 21 and owner.stats()["answers"] >= 5
    baseline = Counter(calls)

    guesses: list[tuple[bytes, tuple[str, ...]]] = []
    unknown = ("unknown-position",)
    for pos in range(1, 4001):
        guesses.append((frame("deliver", export(pos), "ping", [], 0, import_object(1)), unknown))
    for pos in range(1, 1001):
        guesses.append((frame("deliver-only", export(pos), "make", []), unknown))
    for pos in range(0, 2000):
        guesses.append((frame("deliver", answer(pos), "ping", [], None, None), unknown))
    for pos in range(0, 500):
        guesses.append((frame("listen", answer(pos), import_object(1), False), unknown))
        guesses.append((frame("listen", export(pos + 1), import_object(1), False), unknown))
    for pos in range(1, 1001):  # descriptors smuggled in as arguments to the bootstrap
        guesses.append((frame("deliver", export(0), "echo", [export(pos)], 0, import_object(1)), unknown))
    for pos in range(0, 500):  # answer positions that exist, but on the owner's other session
        guesses.append((frame("deliver", export(0), "echo", [{"a": answer(pos % 5)}], 1, None), unknown))
    for pos in range(1, 501):  # naming an import as a target is not a way in either
        guesses.append((frame("deliver", import_object(pos), "ping", [], None, None), ("bad-field",)))
    assert len(guesses) == 10_000

    for data, codes in guesses:
        s = Session(shared, name="attacker")
        feed_frame(s, START)
        feed_frame(s, data)
        assert s.aborted is not None and s.aborted.code in codes, (data, s.aborted)
    assert calls == baseline, calls - baseline

    # The honest peer's references still work, and only through its own session.
    assert all(E(ref).ping() for ref in refs[:3])
    pump((honest, owner))
    assert calls - baseline == Counter({("boot.0", "ping"): 1, ("boot.1", "ping"): 1, ("boot.2", "ping"): 1})
    del kept_answers


@pytest.mark.parametrize(
    "method",
    ["__class__", "__init__", "__getattribute__", "__reduce_ex__", "__dict__", "__del__", "__captp_interface__",
     "_private", "_count", "_resolvers", "_Probe__secret", "calls", "children", "name", "nope", "", "x" * 200, "ping\x00"],
)
def test_private_and_dunder_attributes_are_unreachable(method: str) -> None:
    calls: Counter = Counter()
    caller = Session(None, name="caller")
    callee = Session(Probe(calls), name="callee")
    pump((caller, callee))
    answer = caller.send(caller.bootstrap(), method, [])
    caller.send_only(caller.bootstrap(), method, [])
    pump((caller, callee))
    if len(method) > Limits().max_method_length:
        assert callee.aborted is not None and callee.aborted.code == "bad-field"
    else:
        assert callee.aborted is None
        assert isinstance(answer.exception(), RemoteError)
    assert calls == Counter()


def test_far_records_expose_only_their_methods() -> None:
    from ocapd.captp import Far

    ran: list[str] = []
    greeter = Far("Greeter", hello=lambda: ran.append("hello") or "hi")
    caller = Session(None, name="caller")
    callee = Session(greeter, name="callee")
    pump((caller, callee))
    answers = {m: caller.send(caller.bootstrap(), m, []) for m in ["_methods", "_interface", "__getattr__", "__slots__", "hello"]}
    pump((caller, callee))
    assert answers["hello"].result() == "hi" and ran == ["hello"]
    for name, a in answers.items():
        if name != "hello":
            assert isinstance(a.exception(), RemoteError), name


@far("Later")
class Later:
    async def later(self) -> int:
        return 1


def test_an_async_method_with_no_task_to_run_in_rejects_its_promise_instead_of_hanging() -> None:
    # Outside any trio run (the blocking client, sans-IO use) an async method cannot get a
    # task: its promise is rejected, and its coroutine closed rather than left un-awaited.
    promise = local_call(Later(), "later", [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_turns()
        gc.collect()
    assert promise.rejected and isinstance(promise.exception(), RuntimeError)
    assert not [w for w in caught if "never awaited" in str(w.message)]


async def test_an_async_method_called_after_its_sessions_nursery_closed_rejects_its_promise() -> None:
    async with trio.open_nursery() as nursery:
        pass
    with trio.fail_after(5), pytest.raises(RuntimeError, match="closed"):  # not pending forever
        await local_call(Later(), "later", [], nursery.start_soon)
