"""The storage encoding: how a passable value is kept on disk, apart from any wire profile.

A wire profile (msgpack today, OCapN/Syrup next) may change or be negotiated
per peer; a value the daemon stored (a marshal formula) must read back the
same years later. So stored values have an encoding of their own: UTF-8 JSON
after a one-line header, every value a small tagged node, readable with the
sqlite3 shell and any JSON library.

    ocapd-stored/1\\n<node>

Nodes: ``null``, ``true``/``false`` and strings are themselves; an array is a
copy array of nodes; every other value is a one-key object:
``{"int": "<decimal>"}`` (exact at any size), ``{"float": "<repr>"}``
(``nan``, ``inf`` and ``-inf`` included), ``{"bytes": "<base64>"}``,
``{"record": [[key, node], ...]}`` (order kept), ``{"tagged": [tag, node]}``,
``{"symbol": name}``, ``{"error": [name, message]}`` and ``{"slot": n}``, the
n-th capability of the value, which the owner keeps beside it (a marshal
formula's ``slots``).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from typing import Any

from .passable import RemoteError, Symbol, Tagged

__all__ = ["MAGIC", "StorageError", "decode_stored", "encode_stored", "is_stored"]

MAGIC = b"ocapd-stored/1\n"

#: Nesting a stored value may have: the wire codec's own bound (codec.MAX_DEPTH),
#: so anything that could be sent can be stored and read back.
MAX_DEPTH = 64


class StorageError(ValueError):
    """Bytes that are not a stored value of this version."""


def is_stored(data: bytes) -> bool:
    """Whether ``data`` is in the storage encoding (rather than some older form)."""
    return bytes(data[: len(MAGIC)]) == MAGIC


def encode_stored(value: Any, on_ref: Callable[[Any], int]) -> bytes:
    """Encode ``value``; ``on_ref(obj)`` gives the slot number of each capability in it.

    Raises ``TypeError`` for what cannot be stored (``on_ref`` may raise it too).
    """
    try:
        text = json.dumps(_node(value, on_ref, 0), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return MAGIC + text.encode("utf-8")
    except (UnicodeEncodeError, ValueError) as e:
        raise TypeError(f"cannot store: {e}") from None


def _node(value: Any, on_ref: Callable[[Any], int], depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise TypeError(f"value nested deeper than {MAX_DEPTH}")
    t = type(value)
    if value is None or t is bool or t is str:
        return value
    if t is int:
        return {"int": str(value)}
    if t is float:
        return {"float": repr(value)}
    if t is bytes or t is bytearray or t is memoryview:
        return {"bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if t is list or t is tuple:
        return [_node(v, on_ref, depth + 1) for v in value]
    if t is dict:
        items = []
        for k, v in value.items():
            if type(k) is not str:
                raise TypeError(f"record keys must be str, not {type(k).__name__}")
            items.append([k, _node(v, on_ref, depth + 1)])
        return {"record": items}
    if t is Tagged:
        return {"tagged": [value.tag, _node(value.payload, on_ref, depth + 1)]}
    if t is Symbol:
        return {"symbol": value.name}
    if isinstance(value, BaseException):
        err = RemoteError.from_exception(value)
        return {"error": [err.name, err.message]}
    slot = on_ref(value)
    if type(slot) is not int or slot < 0:
        raise TypeError("on_ref must give a slot number")
    return {"slot": slot}


def decode_stored(data: bytes, on_slot: Callable[[int], Any]) -> Any:
    """Decode a stored value; ``on_slot(n)`` gives the capability for slot ``n``."""
    if not is_stored(data):
        raise StorageError("not a stored value (no ocapd-stored/1 header)")
    try:
        tree = json.loads(bytes(data[len(MAGIC) :]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise StorageError(f"stored value is not JSON: {e}") from None
    return _value(tree, on_slot, 0)


def _value(node: Any, on_slot: Callable[[int], Any], depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise StorageError(f"stored value nested deeper than {MAX_DEPTH}")
    if node is None or type(node) in (bool, str):
        return node
    if type(node) is list:
        return [_value(n, on_slot, depth + 1) for n in node]
    if type(node) is not dict or len(node) != 1:
        raise StorageError(f"not a stored node: {str(node)[:40]}")
    ((kind, body),) = node.items()
    try:
        if kind == "int":
            return int(body)
        if kind == "float":
            value = float(body)
            if not math.isfinite(value) and body not in ("nan", "inf", "-inf"):
                raise ValueError(body)
            return value
        if kind == "bytes":
            return base64.b64decode(body, validate=True)
        if kind == "record":
            record = {}
            for k, v in body:
                if type(k) is not str or k in record:
                    raise ValueError("record keys must be distinct strings")
                record[k] = _value(v, on_slot, depth + 1)
            return record
        if kind == "tagged":
            tag, payload = body
            return Tagged(tag, _value(payload, on_slot, depth + 1))
        if kind == "symbol":
            return Symbol(body)
        if kind == "error":
            name, message = body
            return RemoteError(str(name), str(message))
        if kind == "slot" and type(body) is int and body >= 0:
            return on_slot(body)
    except (TypeError, ValueError) as e:
        raise StorageError(f"bad {kind} node: {e}") from None
    raise StorageError(f"unknown stored node {kind!r}")
