"""captp.js (node) against the Python implementation over a real WebSocket.

A trio-websocket server runs ``open_websocket_connection`` with the service
below as its bootstrap; ``tests/js/interop_client.mjs`` connects with
captp.js and prints one JSON line per step. Both sides' observations are
checked here. Needs node and the npm packages (``npm ci && npm run vendor``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import serve_websocket

from ocapd import captp
from ocapd.captp import E, Far, Rejected, Symbol, Tagged, far, make_promise_kit

ROOT = Path(__file__).resolve().parent.parent
CLIENT = ROOT / "tests" / "js" / "interop_client.mjs"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed (captp.js interop needs node >= 20)")


@far("Car")
class Car:
    def __init__(self, color: str) -> None:
        self._color = color

    def drive(self) -> str:
        return f"{self._color} car drives"


@far("InteropService")
class Service:
    """The bootstrap the node client talks to; records what Python observed."""

    def __init__(self) -> None:
        self.conn: Any = None
        self.observed: dict[str, Any] = {}
        self._given: Any = None

    def describe(self, values: list[Any]) -> list[list[str]]:
        return [[type(v).__name__, repr(v)] for v in values]

    def echo(self, value: Any) -> Any:
        return value

    def make(self, color: str) -> Car:
        return Car(color)

    def fail(self, message: str) -> None:
        raise ValueError(message)

    async def await_it(self, promise: Any) -> str:
        value = await promise
        self.observed["js_promise"] = value
        return f"got {value!r}"

    def give_promise(self) -> dict[str, Any]:
        promise, self._given = make_promise_kit()
        return {"p": promise}

    def resolve_given(self, value: Any) -> None:
        self._given.resolve(value)

    async def call_back(self, ref: Any, name: str) -> str:
        result = await E(ref).hello(name)
        self.observed["callback"] = result
        return result

    def adder(self) -> Any:
        return Far("Add", lambda a, b: a + b)

    async def call_fn(self, fn: Any, arg: Any) -> Any:
        try:
            return await E(fn)(arg)
        except Exception as e:
            return [type(e).__name__, getattr(e, "name", None), getattr(e, "message", str(e))]

    def call_fn_only(self, fn: Any, arg: Any) -> None:
        E.send_only(fn)(arg)

    def reject_with(self, value: Any) -> None:
        raise Rejected(value)

    def reject_with_car(self, color: str) -> None:
        raise Rejected(Car(color))

    async def await_rejection(self, promise: Any) -> Any:
        try:
            await promise
        except Rejected as r:
            self.observed.setdefault("rejections", []).append(r.value)
            if isinstance(r.value, captp.RemoteRef):
                return ["Rejected", "ref", await E(r.value).hello("rejecter")]
            return ["Rejected", type(r.value).__name__, r.value]
        return ["fulfilled"]

    def give_symbols(self) -> list[Any]:
        return [Symbol("op:deliver"), "op:deliver", Symbol("")]

    async def never(self) -> None:
        await trio.sleep_forever()

    def abort_me(self, reason: str) -> None:
        self.conn.close(reason)


@pytest.mark.parametrize("batch", [False, True], ids=["one-frame-a-message", "batch-subprotocol"])
async def test_captp_js_talks_to_python_over_websocket(batch: bool) -> None:
    if not (ROOT / "node_modules" / "ws").is_dir() or not (ROOT / "chat_host" / "static" / "vendor" / "msgpack.mjs").is_file():
        pytest.fail("npm packages missing: run `npm ci && npm run vendor` (scripts/setup does)")
    service = Service()
    ended: list[captp.SessionAborted] = []

    chosen: list[str | None] = []

    async def handler(request: Any) -> None:
        offered = captp.WEBSOCKET_BATCH_SUBPROTOCOL in request.proposed_subprotocols
        ws = await request.accept(subprotocol=captp.WEBSOCKET_BATCH_SUBPROTOCOL if offered else None)
        chosen.append(ws.subprotocol)
        async with captp.open_websocket_connection(ws, service, name="interop") as conn:
            service.conn = conn
            ended.append(await conn.wait_closed())

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: serve_websocket(
                handler, "127.0.0.1", 0, None, max_message_size=16 * 1024 * 1024, task_status=task_status
            )
        )
        url = f"ws://127.0.0.1:{server.port}/"
        with trio.fail_after(60):
            proc = await trio.run_process(
                [NODE, str(CLIENT), url, captp.WEBSOCKET_BATCH_SUBPROTOCOL if batch else ""],
                capture_stdout=True, capture_stderr=True, check=False, cwd=ROOT
            )
        with trio.fail_after(10):
            while not ended:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()

    assert proc.returncode == 0, proc.stderr.decode()
    assert chosen == [captp.WEBSOCKET_BATCH_SUBPROTOCOL if batch else None]
    steps = {line["step"]: line for line in map(json.loads, proc.stdout.decode().splitlines())}

    # Python saw each JS value as the type the protocol maps it to.
    assert steps["types"]["seen"] == [
        ["NoneType", "None"],
        ["bool", "True"],
        ["int", "7"],
        ["int", "-3"],
        ["int", str(2**53 - 1)],
        ["int", str(2**64)],
        ["int", str(-(2**80))],
        ["float", "1.5"],
        ["float", "2.0"],
        ["str", repr("héllo 🦊")],
        ["bytes", repr(b"\x00\x01\xff")],
        ["list", "[1, [2, 'x']]"],
        ["dict", "{'a': 1, 'b': [True]}"],
        ["Tagged", repr(Tagged("point", {"x": 1, "y": -2}))],
    ]
    assert steps["echo"]["same"] is True
    assert steps["pipeline"]["result"] == "red car drives"
    assert steps["pipeline"]["frames"] == [  # one round trip
        "out deliver make",
        "out deliver drive",
        "in deliver-only fulfill",
        "in deliver-only fulfill",
    ]
    assert steps["error"] == {"step": "error", "rejected": True, "name": "ValueError", "message": "boom"}
    assert service.observed["js_promise"] == Tagged("late", 42)
    assert steps["js-promise"]["result"] == "got Tagged(tag='late', payload=42)"
    assert steps["py-promise"]["result"] == "from python"
    assert service.observed["callback"] == "hello py from js"
    assert steps["callback"] == {"step": "callback", "result": "hello py from js", "identity": True}
    # Calls without a method (docs/protocol.md §5.2), both ways.
    assert steps["py-far-function"] == {
        "step": "py-far-function",
        "result": 42,
        "frames": ["out deliver adder", "out deliver null"],
    }
    assert steps["py-not-a-function"] == {
        "step": "py-not-a-function",
        "ok": False,
        "isRemoteError": True,
        "name": "TypeError",
        "message": "InteropService is not a function",
        "reason": None,
    }
    assert steps["js-far-function"]["result"] == 42
    assert steps["js-not-a-function"]["result"] == ["RemoteError", "TypeError", "Greeter is not a function"]
    assert steps["js-far-function-only"]["heard"] == "told without a method"
    # Break values that are not errors (§6.3), both ways: the value itself, references included.
    assert steps["py-rejects-string"] == {
        "step": "py-rejects-string",
        "ok": False,
        "isRemoteError": False,
        "reason": "not found",
    }
    assert steps["py-rejects-record"]["reason"] == {"code": 404}
    assert steps["py-rejects-ref"] == {"step": "py-rejects-ref", "isRef": True, "drives": "blue car drives"}
    assert steps["js-rejects-string"]["result"] == ["Rejected", "str", "why not"]
    assert steps["js-rejects-ref"]["result"] == ["Rejected", "ref", "hello rejecter from js"]
    assert service.observed["rejections"][0] == "why not"
    # Symbols (Python) and Selectors (captp.js) over the msgpack profile (§3.2).
    assert steps["selectors-to-py"]["seen"] == [
        ["Symbol", repr(Symbol("fetch"))],
        ["str", repr("fetch")],
        ["Symbol", repr(Symbol("héllo 🦊"))],
    ]
    assert steps["selectors-from-py"]["kinds"] == ["selector op:deliver", "string op:deliver", "selector "]
    assert steps["aborted"] == {
        "step": "aborted",
        "code": "closed",
        "detail": "interop done",
        "byPeer": True,
        "pending": "closed: interop done",
    }
    (reason,) = ended
    assert (reason.code, reason.detail, reason.by_peer) == ("closed", "interop done", False)
