"""CapTP call latency and pipelining against the raw transport, as one JSON line.

    python tests/bench/captp_rtt.py [--quick | --smoke] [--only ocapn]

For each transport (subprocess pipe, TCP loopback, WebSocket) this starts two
peers in child processes (tests/bench/rtt_peer.py): a raw echo of frames in
the framing CapTP uses there, and a CapTP session whose bootstrap echoes its
argument. Both baselines and CapTP thus cross the same process boundary.
It measures:

- ``raw_rtt_us``: median round trip of one frame as large as a small CapTP
  call, echoed back;
- ``call_rtt_us``: median of ``await E(ref).echo(SMALL_ARGS)``;
- ``sequential_calls_per_s`` and ``pipelined_calls_per_s`` (a batch of
  calls issued before any is awaited);
- ``floor_rtt_us``: the same call through the least an RPC over that
  transport can do (tests/bench/rtt_peer.py, ``FLOOR``): a call id, a method
  name and the arguments in msgpack, one reader task and a table of waiting
  callers, with no references, promises, pipelining, turns, garbage
  collection or checks. ``floor_over_raw`` is what any such RPC costs here
  beyond the echo; ``call_over_floor`` is what CapTP's semantics cost.

The ``ocapn`` row compares the two wire profiles over TCP loopback: the same
call (``E(ref).echo(SMALL_ARGS)``, the same echo object in a child process)
through the OCapN profile (Syrup records, tcp-testing-only) and through the
msgpack profile, in alternating blocks: ``ocapn_over_msgpack`` is the ratio
of their median round trips (budget: at most 1.3).

Over TCP it also calls the same ``echo`` served by Pyro5 in a child process
(Pyro5's defaults, a blocking proxy) and reports ``pyro5.call_rtt_us`` and
``call_over_pyro5``, the CapTP call's median over Pyro5's.

With two CPUs or more, the benchmark runs on one and every peer on another
(``pinned_cpus``), so that all of them are measured in the same placement.

The design budgets (docs: DESIGN section 7) are ratios measured in one run,
so they hold on a busy machine: call/raw <= 1.5, pipelined/sequential >= 5,
call/Pyro5 <= 0.7. Raw, CapTP and Pyro5 samples are taken in alternating
blocks so that load from elsewhere falls on both sides of each ratio alike.

``--only ocapn`` measures the ``ocapn`` row alone (a few seconds, where
the whole run takes a minute); its JSON then has no transport rows.

Only the JSON goes to stdout; progress goes to stderr. The test suite runs
this with ``--smoke`` to keep it working, never to assert timings.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import msgpack
import trio  # noqa: E402

from ocapd.captp import (  # noqa: E402
    WEBSOCKET_BATCH_SUBPROTOCOL,
    E,
    FramedStream,
    Session,
    WebSocketTransport,
    open_stream_connection,
    open_websocket_connection,
)

PEER = Path(__file__).with_name("rtt_peer.py")
#: The CPUs the benchmark and its peers run on (``pin_cpus``), or None when not pinned.
PINNED: dict[str, int] | None = None
TRANSPORTS = ("pipe", "tcp", "ws")
TARGETS = {"call_over_raw_max": 1.5, "pipelined_over_sequential_min": 5, "ocapn_over_msgpack_max": 1.3, "call_over_pyro5_max": 0.7}
#: The transport the Pyro5 baseline runs over (Pyro5 speaks TCP).
PYRO5_TRANSPORT = "tcp"

#: The argument of every measured call: a small record, like most daemon calls.
SMALL_ARGS = {"op": "ping", "seq": 12345, "tags": ["a", "b"]}


@dataclass(frozen=True)
class Iterations:
    warmup: int
    #: Round trips are taken in this many alternating raw/CapTP blocks ...
    blocks: int
    #: ... of this many round trips each.
    block_size: int
    #: Throughput rounds; each times this many sequential calls, then one
    #: pipelined batch of ``pipelined_batch`` calls.
    rounds: int
    sequential_calls: int
    pipelined_batch: int


PROFILES = {
    "full": Iterations(warmup=1000, blocks=20, block_size=500, rounds=10, sequential_calls=1000, pipelined_batch=1000),
    "quick": Iterations(warmup=300, blocks=8, block_size=250, rounds=4, sequential_calls=500, pipelined_batch=1000),
    "smoke": Iterations(warmup=5, blocks=2, block_size=10, rounds=1, sequential_calls=10, pipelined_batch=20),
}


def pin_cpus() -> dict[str, int] | None:
    """Run this process on one CPU and every peer on another, if there are two.

    Left to the scheduler, a peer sometimes shares the benchmark's CPU and
    sometimes not, and a pipe's round trip differs by nearly 2x between the
    two; raw, floor and CapTP peers would then be compared in different
    placements. Pinned, they all cross the same pair of CPUs.
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return None
    if len(cpus) < 2:
        return None
    os.sched_setaffinity(0, {cpus[0]})
    return {"bench": cpus[0], "peers": cpus[1]}


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def call_frame_size() -> int:
    """The size of the deliver frame that ``E(ref).echo(SMALL_ARGS)`` sends."""
    session = Session()
    session.send(session.bootstrap(), "echo", [SMALL_ARGS])
    _start, deliver = session.data_to_send()
    return len(deliver)


# -- peers -----------------------------------------------------------------------


def _peer_env() -> dict[str, str]:
    env = dict(os.environ)
    return env


@asynccontextmanager
async def _peer_process(mode: str, transport: str) -> AsyncIterator[trio.Process]:
    proc = await trio.lowlevel.open_process(
        [sys.executable, str(PEER), mode, transport],
        stdin=-1,  # subprocess.PIPE
        stdout=-1,
        env=_peer_env(),
    )
    if PINNED is not None:
        os.sched_setaffinity(proc.pid, {PINNED["peers"]})
    try:
        yield proc
    finally:
        await proc.stdin.aclose()  # type: ignore[union-attr]  # the Pyro5 peer's signal to end
        with trio.move_on_after(5) as scope:
            scope.shield = True
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _read_line(proc: trio.Process) -> str:
    line = b""
    with trio.fail_after(30):
        while not line.endswith(b"\n"):
            chunk = await proc.stdout.receive_some(64)  # type: ignore[union-attr]
            if not chunk:
                raise RuntimeError("benchmark peer exited before announcing where it listens")
            line += chunk
    return line.decode().strip()


async def _read_port(proc: trio.Process) -> int:
    return int(await _read_line(proc))


@asynccontextmanager
async def open_pyro5() -> AsyncIterator[Any]:
    """A Pyro5 proxy for the echo object of a new Pyro5 peer, connected."""
    import Pyro5.api

    async with _peer_process("pyro5", PYRO5_TRANSPORT) as proc:
        proxy = Pyro5.api.Proxy(await _read_line(proc))
        try:
            proxy._pyroBind()
            yield proxy
        finally:
            proxy._pyroRelease()


@asynccontextmanager
async def open_link(mode: str, transport: str) -> AsyncIterator[Any]:
    """A raw framed transport (``mode="raw"``) or a CapTP connection to a new peer."""
    async with _peer_process(mode, transport) as proc:
        if transport == "ws":
            from trio_websocket import open_websocket_url

            port = await _read_port(proc)
            # CapTP offers the batch subprotocol (several frames a message), as captp.js does.
            subprotocols = [WEBSOCKET_BATCH_SUBPROTOCOL] if mode == "captp" else []
            async with open_websocket_url(f"ws://127.0.0.1:{port}/", subprotocols=subprotocols) as ws:
                if mode in ("raw", "floor"):
                    yield WebSocketTransport(ws)
                else:
                    async with open_websocket_connection(ws, name="bench") as conn:
                        yield conn
            return
        if mode == "ocapn":
            stream = await trio.open_tcp_stream("127.0.0.1", await _read_port(proc))
            async with stream:
                yield await _ocapn_echo(stream)
            return
        if transport == "pipe":
            stream: trio.abc.Stream = trio.StapledStream(proc.stdin, proc.stdout)  # type: ignore[arg-type]
        else:
            stream = await trio.open_tcp_stream("127.0.0.1", await _read_port(proc))
        async with stream:
            if mode in ("raw", "floor"):
                yield FramedStream(stream)
            else:
                async with open_stream_connection(stream, name="bench") as conn:
                    yield conn


async def _ocapn_echo(stream: trio.abc.Stream) -> Any:
    """The peer's echo object, fetched over an OCapN session on ``stream``."""
    from rtt_peer import OCAPN_SWISS

    from ocapd.captp.ocapn_locators import PeerLocator, SturdyRef
    from ocapd.captp.ocapn_node import OcapnNode

    async def dial(location: PeerLocator) -> trio.abc.Stream:
        return stream

    node = OcapnNode(PeerLocator("bench", "tcp-testing-only"), dial)
    nursery = _NURSERY[-1]
    await nursery.start(node.run)
    return await node.enliven(SturdyRef(PeerLocator("bench-peer", "tcp-testing-only"), OCAPN_SWISS))


#: The nursery of the running benchmark (OCapN nodes run their sessions in it).
_NURSERY: list[trio.Nursery] = []


class FloorClient:
    """The calling half of the ``floor`` RPC (tests/bench/rtt_peer.py): a reader task and a table of waiting callers."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        #: call id -> [the waiting task, or None before it waits; then the result]
        self._waiting: dict[int, list[Any]] = {}
        self._last_id = 0
        self._nowait = transport.send_frames_nowait if getattr(transport, "can_send_nowait", False) else None

    async def read(self) -> None:
        """Hand each answer to its caller; run in a nursery for as long as the client is used."""
        unpackb = msgpack.unpackb
        while True:
            for frame in await self.transport.receive_frames():
                call_id, result = unpackb(frame)
                entry = self._waiting.pop(call_id)
                entry.append(result)
                if entry[0] is not None:
                    trio.lowlevel.reschedule(entry[0])

    async def call(self, method: str, *args: Any) -> Any:
        self._last_id += 1
        entry: list[Any] = [None]
        self._waiting[self._last_id] = entry
        frames = [msgpack.packb([self._last_id, method, list(args)])]
        if self._nowait is None:
            await self.transport.send_frames(frames)
        elif not self._nowait(frames):
            await self.transport.send_frames([])  # what the kernel did not take at once
        if len(entry) == 1:  # not answered while sending: wait for the reader
            entry[0] = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
        return entry[1]


# -- measurements ------------------------------------------------------------------


async def raw_round_trips(link: Any, payload: bytes, count: int) -> list[int]:
    clock = time.perf_counter_ns
    send, receive = link.send_frames, link.receive_frame
    frames = [payload]
    samples = []
    for _ in range(count):
        t0 = clock()
        await send(frames)
        await receive()
        samples.append(clock() - t0)
    return samples


async def floor_round_trips(client: FloorClient, count: int) -> list[int]:
    clock = time.perf_counter_ns
    call = client.call
    samples = []
    for _ in range(count):
        t0 = clock()
        await call("echo", SMALL_ARGS)
        samples.append(clock() - t0)
    return samples


async def call_round_trips(ref: Any, count: int) -> list[int]:
    clock = time.perf_counter_ns
    samples = []
    for _ in range(count):
        t0 = clock()
        await E(ref).echo(SMALL_ARGS)
        samples.append(clock() - t0)
    return samples


async def sequential_seconds(ref: Any, count: int) -> float:
    t0 = time.perf_counter()
    for _ in range(count):
        await E(ref).echo(SMALL_ARGS)
    return time.perf_counter() - t0


async def pipelined_seconds(ref: Any, count: int) -> float:
    t0 = time.perf_counter()
    answers = [E(ref).echo(SMALL_ARGS) for _ in range(count)]
    for answer in answers:
        await answer
    return time.perf_counter() - t0


def pyro5_round_trips(proxy: Any, count: int) -> list[int]:
    """Blocking calls, as Pyro5 makes them: nothing else runs in this process meanwhile."""
    clock = time.perf_counter_ns
    echo = proxy.echo
    samples = []
    for _ in range(count):
        t0 = clock()
        echo(SMALL_ARGS)
        samples.append(clock() - t0)
    return samples


def _us(ns: float) -> float:
    return round(ns / 1000, 1)


async def measure_transport(
    transport: str, it: Iterations, payload: bytes, pyro5_ns: list[int] | None = None
) -> dict[str, Any]:
    """The figures of one transport; with ``pyro5_ns``, also Pyro5 calls, in the same alternating blocks."""
    async with AsyncExitStack() as stack:
        raw = await stack.enter_async_context(open_link("raw", transport))
        floor = FloorClient(await stack.enter_async_context(open_link("floor", transport)))
        conn = await stack.enter_async_context(open_link("captp", transport))
        pyro5 = await stack.enter_async_context(open_pyro5()) if pyro5_ns is not None else None
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        nursery.start_soon(floor.read)
        ref = conn.bootstrap()
        await raw_round_trips(raw, payload, it.warmup)
        await floor_round_trips(floor, it.warmup)
        await call_round_trips(ref, it.warmup)
        if pyro5 is not None:
            pyro5_round_trips(pyro5, it.warmup)
        raw_ns: list[int] = []
        floor_ns: list[int] = []
        call_ns: list[int] = []
        for _ in range(it.blocks):
            raw_ns += await raw_round_trips(raw, payload, it.block_size)
            floor_ns += await floor_round_trips(floor, it.block_size)
            call_ns += await call_round_trips(ref, it.block_size)
            if pyro5 is not None:
                pyro5_ns += pyro5_round_trips(pyro5, it.block_size)  # type: ignore[operator]
        seq_s = pipe_s = 0.0
        for _ in range(it.rounds):
            seq_s += await sequential_seconds(ref, it.sequential_calls)
            pipe_s += await pipelined_seconds(ref, it.pipelined_batch)
        assert await E(ref).echo(SMALL_ARGS) == SMALL_ARGS
        assert await floor.call("echo", SMALL_ARGS) == SMALL_ARGS
    raw_med = statistics.median(raw_ns)
    floor_med = statistics.median(floor_ns)
    call_med = statistics.median(call_ns)
    seq_rate = it.rounds * it.sequential_calls / seq_s
    pipe_rate = it.rounds * it.pipelined_batch / pipe_s
    call_over_raw = call_med / raw_med
    pipelined_over_sequential = pipe_rate / seq_rate
    return {
        "raw_rtt_us": _us(raw_med),
        "call_rtt_us": _us(call_med),
        "call_rtt_ns": call_med,
        "raw_rtt_p90_us": _us(statistics.quantiles(raw_ns, n=10)[-1]),
        "call_rtt_p90_us": _us(statistics.quantiles(call_ns, n=10)[-1]),
        "call_over_raw": round(call_over_raw, 3),
        "floor_rtt_us": _us(floor_med),
        "floor_over_raw": round(floor_med / raw_med, 3),
        "call_over_floor": round(call_med / floor_med, 3),
        "sequential_calls_per_s": round(seq_rate),
        "pipelined_calls_per_s": round(pipe_rate),
        "pipelined_over_sequential": round(pipelined_over_sequential, 2),
        "meets_call_over_raw": call_over_raw <= TARGETS["call_over_raw_max"],
        "meets_pipelined_over_sequential": pipelined_over_sequential >= TARGETS["pipelined_over_sequential_min"],
    }


async def measure_ocapn(it: Iterations) -> dict[str, Any]:
    """One call's round trip over TCP with the OCapN profile against the msgpack profile."""
    async with open_link("captp", "tcp") as conn, open_link("ocapn", "tcp") as echo:
        ref = conn.bootstrap()
        await call_round_trips(ref, it.warmup)
        await call_round_trips(echo, it.warmup)
        msgpack_ns: list[int] = []
        ocapn_ns: list[int] = []
        for _ in range(it.blocks):
            msgpack_ns += await call_round_trips(ref, it.block_size)
            ocapn_ns += await call_round_trips(echo, it.block_size)
        assert await E(echo).echo(SMALL_ARGS) == SMALL_ARGS
    ratio = statistics.median(ocapn_ns) / statistics.median(msgpack_ns)
    return {
        "msgpack_call_rtt_us": _us(statistics.median(msgpack_ns)),
        "ocapn_call_rtt_us": _us(statistics.median(ocapn_ns)),
        "ocapn_over_msgpack": round(ratio, 3),
        "meets_ocapn_over_msgpack": ratio <= TARGETS["ocapn_over_msgpack_max"],
    }


async def run(profile: str, only: str | None = None) -> dict[str, Any]:
    async with trio.open_nursery() as nursery:
        _NURSERY.append(nursery)
        try:
            return await (_run_ocapn(profile) if only == "ocapn" else _run(profile))
        finally:
            nursery.cancel_scope.cancel()


def _header(profile: str, it: Iterations) -> dict[str, Any]:
    return {
        "benchmark": "captp_rtt",
        "profile": profile,
        "python": sys.version.split()[0],
        "trio": trio.__version__,
        "iterations": asdict(it),
        "pinned_cpus": PINNED,
    }


async def _run_ocapn(profile: str) -> dict[str, Any]:
    it = PROFILES[profile]
    progress("captp_rtt: ocapn ...")
    return {**_header(profile, it), "ocapn": await measure_ocapn(it)}


async def _run(profile: str) -> dict[str, Any]:
    it = PROFILES[profile]
    size = call_frame_size()
    payload = (bytes(range(256)) * (size // 256 + 1))[:size]
    results = {}
    pyro5_ns: list[int] = []
    for transport in TRANSPORTS:
        progress(f"captp_rtt: {transport} ...")
        with_pyro5 = pyro5_ns if transport == PYRO5_TRANSPORT else None
        results[transport] = await measure_transport(transport, it, payload, with_pyro5)
        progress(f"captp_rtt: {transport}: {json.dumps(results[transport])}")
    pyro5_med = statistics.median(pyro5_ns)
    call_over_pyro5 = results[PYRO5_TRANSPORT]["call_rtt_ns"] / pyro5_med
    for figures in results.values():
        del figures["call_rtt_ns"]
    progress(f"captp_rtt: pyro5 over {PYRO5_TRANSPORT}: {_us(pyro5_med)} us")
    progress("captp_rtt: ocapn ...")
    ocapn = await measure_ocapn(it)
    progress(f"captp_rtt: ocapn: {json.dumps(ocapn)}")
    return {
        **_header(profile, it),
        "frame_bytes": len(payload),
        "targets": TARGETS,
        "transports": results,
        "ocapn": ocapn,
        "pyro5": {
            "transport": PYRO5_TRANSPORT,
            "call_rtt_us": _us(pyro5_med),
            "call_rtt_p90_us": _us(statistics.quantiles(pyro5_ns, n=10)[-1]),
        },
        "call_over_pyro5": round(call_over_pyro5, 3),
        "meets_call_over_pyro5": call_over_pyro5 <= TARGETS["call_over_pyro5_max"],
        "all_targets_met": call_over_pyro5 <= TARGETS["call_over_pyro5_max"]
        and ocapn["meets_ocapn_over_msgpack"]
        and all(r["meets_call_over_raw"] and r["meets_pipelined_over_sequential"] for r in results.values()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="fewer iterations: under 20 s")
    group.add_argument("--smoke", action="store_true", help="a handful of iterations: checks that it runs")
    parser.add_argument("--only", choices=["ocapn"], help="measure this row alone")
    args = parser.parse_args(argv)
    profile = "smoke" if args.smoke else "quick" if args.quick else "full"
    global PINNED
    PINNED = pin_cpus()
    result = trio.run(run, profile, args.only)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
