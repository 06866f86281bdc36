"""Eventual send orders effects as captp.js does: the shared cases of tests/vectors/ordering.json.

The same file is interpreted by tests/js/ordering.test.mjs against captp.js;
both must produce each case's log exactly. A case runs its ``main`` steps in
one step, then lets the turn queue drain, as a driver would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from ocapd.captp import E, Far, Promise, far, make_promise_kit, open_memory_pair
from ocapd.captp.turns import pending_turns, run_turns

CASES = json.loads((Path(__file__).resolve().parent / "vectors" / "ordering.json").read_text(encoding="utf-8"))["cases"]


class Scenario:
    """One case's world: its objects, promises, shared variables and log."""

    def __init__(self, case: dict[str, Any]) -> None:
        self.log: list[str] = []
        self.vars: dict[str, str] = {}
        self.promises: dict[str, tuple[Promise, Any]] = {}
        self.objects: dict[str, Any] = {name: self._make(name, methods) for name, methods in case["objects"].items()}

    def _make(self, name: str, methods: dict[str, list[list[str]]]) -> Any:
        holder: dict[str, Any] = {}

        def method(steps: list[list[str]]) -> Any:
            return lambda: self.run(steps, holder["self"])

        obj = Far(f"Case-{name}", **{m: method(steps) for m, steps in methods.items()})
        holder["self"] = obj
        return obj

    def target(self, name: str, me: Any) -> Any:
        if name == "self":
            return me
        if name in self.promises:
            return self.promises[name][0]
        return self.objects[name]

    def run(self, steps: list[list[str]], me: Any = None) -> None:
        for op, *args in steps:
            if op == "log":
                self.log.append(args[0])
            elif op == "set":
                self.vars[args[0]] = args[1]
            elif op == "read":
                self.log.append(f"{args[0]}={self.vars.get(args[0])}")
            elif op == "send":
                getattr(E(self.target(args[0], me)), args[1])()
            elif op == "send_then":
                label = args[2]
                getattr(E(self.target(args[0], me)), args[1])().then(lambda _v, label=label: self.log.append(label))
            elif op == "promise":
                self.promises[args[0]] = make_promise_kit()
            elif op == "resolve":
                self.promises[args[0]][1].resolve(None)
            elif op == "resolve_to":
                self.promises[args[0]][1].resolve(self.objects[args[1]])
            elif op == "then":
                label = args[1]
                self.promises[args[0]][0].then(lambda _v, label=label: self.log.append(label))
            else:  # pragma: no cover - a case this interpreter does not know
                raise AssertionError(f"unknown step {op!r}")


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_shared_ordering_case_without_an_event_loop(case: dict[str, Any]) -> None:
    world = Scenario(case)
    world.run(case["main"])
    run_turns()
    assert world.log == case["log"]
    assert pending_turns() == 0


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
async def test_shared_ordering_case_inside_trio(case: dict[str, Any]) -> None:
    # No driver drains here: trio does, once the test's step ends.
    world = Scenario(case)
    world.run(case["main"])
    await trio.testing.wait_all_tasks_blocked()
    assert world.log == case["log"]


def test_e_on_a_local_object_never_runs_the_method_in_the_callers_step() -> None:
    calls: list[str] = []
    obj = Far("Probe", m=lambda: calls.append("m"))
    p = E(obj).m()
    assert calls == [] and not p.settled
    run_turns()
    assert calls == ["m"] and p.settled


class Account:
    """Would pay out twice if a method could be re-entered in the middle of another."""

    def __init__(self) -> None:
        self.balance = 10
        self.watcher: Any = None

    def withdraw(self, amount: int) -> int:
        if self.balance < amount:
            raise ValueError("insufficient funds")
        E(self.watcher).notify()  # the watcher reacts by withdrawing again
        self.balance -= amount
        return self.balance


def test_an_object_is_not_reentered_in_the_middle_of_a_method() -> None:
    # With synchronous delivery notify, and the second withdraw inside it,
    # would run before the first had debited: both would pass the check.
    account = Account()
    outcomes: list[str] = []

    def notify() -> None:
        if not outcomes:
            outcomes.append("notified")
            E(account).withdraw(10).then(
                lambda v: outcomes.append(f"second paid, {v} left"),
                lambda e: outcomes.append(f"second refused: {e}"),
            )

    account.watcher = Far("Watcher", notify=notify)
    first = E(Far("Acct", withdraw=account.withdraw)).withdraw(10)
    run_turns()
    assert first.result() == 0
    assert outcomes == ["notified", "second refused: insufficient funds"]
    assert account.balance == 0


async def test_a_peers_calls_run_after_receive_frame_returns_in_their_own_turns() -> None:
    log: list[str] = []

    @far("Node")
    class Node:
        def m(self) -> None:
            log.append("m begins")
            E(self).n()
            log.append("m ends")

        def n(self) -> None:
            log.append("n")

    node_obj = Node()
    async with open_memory_pair(None, Far("Root", node=lambda: node_obj)) as (a, _b):
        node = await E(a.bootstrap()).node()
        await E(node).m()
        await E(node).m()
        await trio.testing.wait_all_tasks_blocked()
    assert log == ["m begins", "m ends", "n"] * 2


def test_a_settled_resolver_releases_its_promise_even_if_the_peer_keeps_the_resolver() -> None:
    # OCapN hook: answers can be collected although the peer never sends gc-exports for the resolver.
    import gc
    import weakref

    from ocapd.captp.session import _ResultResolver

    p = Promise()
    resolver = _ResultResolver(p)
    seen = weakref.ref(p)
    resolver.fulfill("done")
    resolver.fulfill("again")  # settling twice is a no-op, not an error
    del p
    gc.collect()
    assert seen() is None
