"""Tagged, Symbol and Limits behave as the frozen records they are.

They were dataclasses; they are plain classes now (dataclasses imports
inspect, which the blocking CLI client should not pay for). These tests pin
what callers rely on, whichever way the classes are written.
"""

from __future__ import annotations

import copy
import pickle

import pytest

from ocapd.captp import Limits, Symbol, Tagged


def test_tagged_is_a_frozen_record() -> None:
    t = Tagged("point", {"x": 1})
    assert (t.tag, t.payload) == ("point", {"x": 1})
    assert t == Tagged("point", {"x": 1}) and t != Tagged("point", {"x": 2}) and t != ("point", {"x": 1})
    assert repr(t) == "Tagged(tag='point', payload={'x': 1})"
    assert Tagged(tag="a", payload=1) == Tagged("a", 1)
    assert hash(Tagged("a", (1, 2))) == hash(Tagged("a", (1, 2)))
    with pytest.raises(TypeError):
        hash(t)  # an unhashable payload makes the record unhashable
    with pytest.raises(AttributeError):
        t.tag = "other"  # type: ignore[misc]
    with pytest.raises((AttributeError, TypeError)):  # the dataclass raised TypeError here (a CPython quirk)
        t.extra = 1  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        Tagged(1, "x")  # type: ignore[arg-type]
    for clone in (copy.copy(t), copy.deepcopy(t), pickle.loads(pickle.dumps(t))):
        assert clone == t and type(clone) is Tagged
    match t:
        case Tagged(tag, payload):
            assert (tag, payload) == ("point", {"x": 1})


def test_symbol_is_a_frozen_name() -> None:
    s = Symbol("op:deliver")
    assert s.name == "op:deliver" and str(s) == "op:deliver" and repr(s) == "Symbol('op:deliver')"
    assert s == Symbol("op:deliver") and s != "op:deliver" and s != Symbol("op:abort")
    assert hash(s) == hash(Symbol("op:deliver")) and len({s, Symbol("op:deliver")}) == 1
    assert Symbol(name="x") == Symbol("x")
    with pytest.raises(AttributeError):
        s.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Symbol(b"x")  # type: ignore[arg-type]
    for clone in (copy.copy(s), copy.deepcopy(s), pickle.loads(pickle.dumps(s))):
        assert clone == s and type(clone) is Symbol
    match s:
        case Symbol(name):
            assert name == "op:deliver"


def test_limits_are_frozen_settings_with_defaults() -> None:
    default = Limits()
    assert default.max_frame_size == Limits.max_frame_size == 16 * 1024 * 1024
    assert default == Limits() and hash(default) == hash(Limits())
    small = Limits(max_frame_size=1024, max_answers=8)
    assert (small.max_frame_size, small.max_answers, small.max_exports) == (1024, 8, default.max_exports)
    assert small != default
    assert Limits(1024) == Limits(max_frame_size=1024)
    assert repr(small).startswith("Limits(max_frame_size=1024, max_answers=8, max_exports=1000000,")
    with pytest.raises(AttributeError):
        small.max_answers = 9  # type: ignore[misc]
    with pytest.raises(TypeError):
        Limits(max_fram_size=1)  # type: ignore[call-arg]
    for clone in (copy.copy(small), copy.deepcopy(small), pickle.loads(pickle.dumps(small))):
        assert clone == small


def test_limits_replace_changes_only_what_it_is_given() -> None:
    base = Limits(max_answers=8)
    changed = base.replace(stall_timeout=1.5, drain_bytes=10)
    assert changed == Limits(max_answers=8, stall_timeout=1.5, drain_bytes=10)
    assert base == Limits(max_answers=8)
    with pytest.raises(TypeError):
        base.replace(no_such_limit=1)
