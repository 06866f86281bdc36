"""A peer for the OCapN test suite: ``python -m ocapd.captp.ocapn_test_peer --port N``.

Listens on 127.0.0.1 over the ``tcp-testing-only`` netlayer (raw Syrup over
TCP: no encryption, no authentication — for the suite and tests only, never
for real peers), prints its ``ocapn://…tcp-testing-only?host=…&port=…`` URI
as one line on stdout, and serves until killed, offering the objects the
suite's README names at their swiss numbers:

=================================  ==================================================
swiss number                       object
=================================  ==================================================
``JadQ0++RzsD4M+40uLxTWVaVqM10DcBJ``  car factory builder: ``()`` -> a car factory
``IO58l1laTyhcrgDKbEzFOO32MDd6zE5w``  echo: returns its arguments, keeps none of them
``VMDDd1voKWarCe2GvgLbxbVFysNzRPzx``  greeter: ``(ref)`` -> sends ``"Hello"`` to ref
``IokCxYmMj04nos2JN1TDoY1bT8dXh6Lr``  promise resolver: ``()`` -> ``[promise, resolver]``
``gi02I1qghIwPiKGKleCQAOhpy3ZtYRpB``  sturdyref enlivener: ``(sturdyref)`` -> the object
=================================  ==================================================

A car factory takes ``[color, model]`` (two symbols) and returns a car; a car,
called, answers ``"Vroom! I am a <color> <model> car!"`` (the suite's wording).
"""

from __future__ import annotations

import argparse
import gc
import sys
from typing import Any

import trio

from .eventual import E
from .ocapn_locators import PeerLocator, SturdyRef
from .ocapn_netlayers import NetlayerError, PeerConnection, TcpTestingOnlyNetlayer, is_loopback
from .ocapn_node import OcapnNode
from .passable import Far, Rejected, Symbol
from .promise import make_promise_kit

__all__ = ["SWISS_NUMBERS", "make_objects", "main"]

SWISS_NUMBERS = {
    "car_factory_builder": b"JadQ0++RzsD4M+40uLxTWVaVqM10DcBJ",
    "echo": b"IO58l1laTyhcrgDKbEzFOO32MDd6zE5w",
    "greeter": b"VMDDd1voKWarCe2GvgLbxbVFysNzRPzx",
    "promise_resolver": b"IokCxYmMj04nos2JN1TDoY1bT8dXh6Lr",
    "sturdyref_enlivener": b"gi02I1qghIwPiKGKleCQAOhpy3ZtYRpB",
}


def _car_factory(spec: Any) -> Any:
    if type(spec) is not list or len(spec) != 2 or not all(type(part) is Symbol for part in spec):
        raise TypeError("a car is made from [color, model], two symbols")
    color, model = spec[0].name, spec[1].name
    return Far("Car", lambda: f"Vroom! I am a {color} {model} car!")


def _echo(*args: Any) -> list[Any]:
    # The suite checks that references passed here are released (op:gc-export):
    # collect now, so that none waits in a reference cycle.
    result = list(args)
    del args
    gc.collect()
    return result


def _greet(ref: Any) -> None:
    # A deliver (not deliver-only) whose answer is dropped: the suite then
    # expects op:gc-answer for it once it has been fulfilled.
    E(ref)("Hello")


def _promise_resolver() -> list[Any]:
    promise, resolver = make_promise_kit()

    def fulfill(value: Any = None) -> None:
        resolver.resolve(value)

    def break_(reason: Any = None) -> None:
        resolver.reject(reason if isinstance(reason, BaseException) else Rejected(reason))

    return [promise, Far("Resolver", fulfill=fulfill, **{"break": break_})]


def make_objects(node: OcapnNode) -> dict[bytes, Any]:
    """The suite's objects, by swiss number, for ``node``."""

    def enliven(sturdyref: Any) -> Any:
        if type(sturdyref) is not SturdyRef:
            raise TypeError("the enlivener takes an ocapn-sturdyref")
        return node.enliven(sturdyref)

    return {
        SWISS_NUMBERS["car_factory_builder"]: Far("CarFactoryBuilder", lambda: Far("CarFactory", _car_factory)),
        SWISS_NUMBERS["echo"]: Far("EchoGc", _echo),
        SWISS_NUMBERS["greeter"]: Far("Greeter", _greet),
        SWISS_NUMBERS["promise_resolver"]: Far("PromiseResolver", _promise_resolver),
        SWISS_NUMBERS["sturdyref_enlivener"]: Far("SturdyrefEnlivener", enliven),
    }


async def serve(host: str, port: int, *, task_status: trio.TaskStatus[PeerLocator] = trio.TASK_STATUS_IGNORED) -> None:
    """Listen on ``host:port`` (loopback only) and serve the suite's objects until cancelled."""
    netlayer = TcpTestingOnlyNetlayer()
    nodes: list[OcapnNode] = []

    async def handle(connection: PeerConnection) -> None:
        await nodes[0].serve_connection(connection)

    async def dial(location: PeerLocator) -> PeerConnection:
        try:
            return await netlayer.connect(location)
        except NetlayerError as e:
            raise ConnectionError(str(e)) from None

    async with trio.open_nursery() as nursery:
        location = await nursery.start(netlayer.serve, handle, host, port)
        node = OcapnNode(location, dial, name="ocapn-test-peer")
        node.swiss.update(make_objects(node))
        await nursery.start(node.run)
        nodes.append(node)
        task_status.started(location)


def _cause(error: BaseException) -> BaseException | None:
    """The one OSError or NetlayerError ``error`` is or (in trio's exception groups) holds, else None."""
    while isinstance(error, BaseExceptionGroup):
        if len(error.exceptions) != 1:
            return None
        error = error.exceptions[0]
    return error if isinstance(error, OSError | NetlayerError) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ocapd.captp.ocapn_test_peer", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on (default 127.0.0.1)")
    args = parser.parse_args(argv)
    if not is_loopback(args.host):
        parser.error(f"tcp-testing-only listens on loopback addresses only, not {args.host!r}")

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            location = await nursery.start(serve, args.host, args.port)
            print(location.to_uri(), flush=True)

    try:
        trio.run(run)
    except KeyboardInterrupt:
        return 0
    except (OSError, NetlayerError, BaseExceptionGroup) as e:
        cause = _cause(e)
        if cause is None:
            raise
        print(f"ocapn_test_peer: cannot listen on {args.host}:{args.port}: {getattr(cause, 'strerror', None) or cause}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
