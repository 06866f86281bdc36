"""The storage encoding (ocapd.captp.storage): stored values read back exactly, apart from any wire profile."""

from __future__ import annotations

import math
from typing import Any

import pytest

from ocapd.captp import Far, RemoteError, Symbol, Tagged, codec
from ocapd.captp.storage import MAGIC, StorageError, decode_stored, encode_stored, is_stored

VALUES: list[Any] = [
    None, True, False, 0, -1, 2**64, -(2**200), 1.5, -0.0, math.inf, "", "héllo ☃", b"", b"\x00\xff",
    [], [1, [2, [3]]], {}, {"b": 1, "a": [None]}, Tagged("point", {"x": 1}), Symbol("op:deliver"),
    RemoteError("TypeError", "no"),
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_a_stored_value_reads_back_equal(value: Any) -> None:
    data = encode_stored(value, lambda _obj: pytest.fail("no capabilities here"))
    assert is_stored(data)
    back = decode_stored(data, lambda _n: pytest.fail("no slots here"))
    assert back == value and type(back) is type(value)


def test_nan_reads_back_as_nan() -> None:
    assert math.isnan(decode_stored(encode_stored(math.nan, lambda _o: 0), lambda _n: None))


def test_record_order_is_kept() -> None:
    back = decode_stored(encode_stored({"z": 1, "a": 2}, lambda _o: 0), lambda _n: None)
    assert list(back) == ["z", "a"]


def test_capabilities_become_slots_and_come_back_from_them() -> None:
    a, b = Far("A"), Far("B")
    refs: list[Any] = []
    data = encode_stored({"first": a, "again": [b, a]}, lambda obj: refs.append(obj) or len(refs) - 1)
    assert refs == [a, b, a]
    assert decode_stored(data, lambda n: f"cap{n}") == {"first": "cap0", "again": ["cap1", "cap2"]}


def test_the_encoding_is_not_the_wire_codecs() -> None:
    data = encode_stored([1, "x"], lambda _o: 0)
    assert data == MAGIC + b'[{"int":"1"},"x"]'
    assert data != codec.encode([1, "x"])


@pytest.mark.parametrize("bad", [b"", b"\x92\x01\xa1x", MAGIC + b"{", MAGIC + b'{"what":1}', MAGIC + b'{"int":"x"}',
                                 MAGIC + b'{"record":[[1,2]]}', MAGIC + b'{"slot":-1}', MAGIC + b'{"a":1,"b":2}'])
def test_what_is_not_a_stored_value_is_refused(bad: bytes) -> None:
    with pytest.raises(StorageError):
        decode_stored(bad, lambda _n: None)


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("value", [{1: "x"}, object(), "\ud800", _nested(100)], ids=["int-key", "object", "surrogate", "deep"])
def test_what_cannot_be_stored_is_a_type_error(value: Any) -> None:
    def refuse(_obj: Any) -> int:
        raise TypeError("not a capability")

    with pytest.raises(TypeError):
        encode_stored(value, refuse)
