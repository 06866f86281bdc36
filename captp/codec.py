"""The msgpack codec: passable values to bytes and back, with references left to the caller.

docs/protocol.md is the normative description; this module is its Python
implementation. Plain data maps onto msgpack's own types. Everything else is a
msgpack *ext* value:

=====  =====================  =================================================
code   meaning                payload
=====  =====================  =================================================
1      bigint                 two's complement, big-endian, minimal length;
                              only for ints outside [-2**63, 2**64)
2      tagged                 msgpack array ``[tag: str, payload]``
3      error                  msgpack array ``[name: str, message: str]`` or
                              ``[name, message, traceback: str]``
6      symbol                 the name's UTF-8 bytes (``Symbol``), at most
                              MAX_SYMBOL_BYTES
10     desc:import-object     position, unsigned big-endian, minimal length
11     desc:import-promise    position
12     desc:export            position
13     desc:answer            position
=====  =====================  =================================================

Descriptors name positions in a session's tables; the codec does not interpret
them. ``encode`` asks ``on_ref(obj)`` for the descriptor of each remotable or
promise it meets; ``decode`` hands each descriptor to ``on_desc`` (or returns
``Desc`` values when none is given). ``Desc`` is ``messages.Descriptor``: a
``DescKind``, whose numbers are the ext codes above, and a position.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import msgpack

from .messages import DescKind
from .messages import Descriptor as Desc
from .passable import RemoteError, Symbol, Tagged, is_remotable
from .promise import Promise

__all__ = [
    "Desc",
    "CodecError",
    "encode",
    "encode_plain",
    "decode",
    "unpack",
    "revive",
    "EXT_BIGINT",
    "EXT_TAGGED",
    "EXT_ERROR",
    "EXT_SYMBOL",
    "EXT_IMPORT_OBJECT",
    "EXT_IMPORT_PROMISE",
    "EXT_EXPORT",
    "EXT_ANSWER",
    "MAX_DEPTH",
    "MAX_POSITION",
    "MAX_BIGINT_BYTES",
    "MAX_SYMBOL_BYTES",
    "MAX_ELEMENTS",
    "MAX_DESCRIPTORS",
    "BudgetExceeded",
    "count_within_budget",
]

EXT_BIGINT = 1
EXT_TAGGED = 2
EXT_ERROR = 3
#: Not 4 or 5: earlier vectors use those as examples of unassigned codes.
EXT_SYMBOL = 6
EXT_IMPORT_OBJECT = 10
EXT_IMPORT_PROMISE = 11
EXT_EXPORT = 12
EXT_ANSWER = 13
_DESC_CODES = frozenset({EXT_IMPORT_OBJECT, EXT_IMPORT_PROMISE, EXT_EXPORT, EXT_ANSWER})
#: The ``DescKind`` of each descriptor ext code (the kinds' numbers are these codes).
_KIND_OF_CODE = {kind.value: kind for kind in DescKind}
_new_tuple = tuple.__new__
_ExtType = msgpack.ExtType

#: Deepest nesting of lists, records and tagged values. Real data rarely goes
#: past a few dozen levels; 128 keeps recursive walks far from Python's
#: recursion limit even on a worker thread's smaller stack.
MAX_DEPTH = 128

#: Largest table position: 2**53 - 1, the largest integer JavaScript numbers
#: hold exactly, so the browser implementation can use plain numbers.
MAX_POSITION = 2**53 - 1

#: Largest bigint payload (4 KiB = 32768 bits). Bounds the cost of decoding
#: and printing one number; cryptographic sizes fit comfortably.
MAX_BIGINT_BYTES = 4096

#: Longest symbol name, in UTF-8 bytes. Symbols name methods, operations and
#: record labels (OCapN's longest is ``op:deliver-only``, 15 bytes; a method
#: name is at most 128 characters): 1 KiB leaves room for any honest name and
#: keeps a symbol the small value it is meant to be.
MAX_SYMBOL_BYTES = 1024

#: Values (containers, scalars, map keys) one frame may hold, counted while
#: decoding. The worst case per element is a frame of empty arrays: measured
#: at about 0.15 µs per element to build and as much to check, so decoding a
#: frame at this budget holds the event loop for ~10-20 ms at most (one
#: million elements took 0.25-0.35 s, and 15 MiB of empty arrays 10 s with
#: the garbage collector's help). msgpack holds the GIL while it decodes, so a
#: thread would not give that time back to other sessions: the budget is the
#: bound. Honest frames are far below it (a bundle is one ``bytes`` element).
MAX_ELEMENTS = 65_536

#: Descriptors one frame may hold. Each new import costs a proxy, a weak
#: reference and a table entry (~4 µs and ~250 bytes; a frame of one million
#: imports took 4 s and 253 MiB), so 4096 bounds a frame to ~16 ms and ~1 MiB.
#: Real messages carry a handful.
MAX_DESCRIPTORS = 4096

#: The smallest encodings: every value takes at least one byte and every
#: descriptor three (fixext 1). A frame shorter than the budget allows cannot
#: exceed it, so only longer frames pay for counting.
_MIN_DESCRIPTOR_BYTES = 3

_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


class CodecError(ValueError):
    """Bytes that are not a well-formed encoding, or a value that cannot be encoded."""


class BudgetExceeded(CodecError):
    """The value holds more elements (``what == "elements"``) or descriptors than allowed."""

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"more than {limit} {what} in one frame")
        self.what = what
        self.limit = limit


OnRef = Callable[[Any], Desc]
OnDesc = Callable[[Desc], Any]

# ---------------------------------------------------------------------------
# encoding


def _bigint_bytes(n: int) -> bytes:
    length = (n + (n < 0)).bit_length() // 8 + 1
    return n.to_bytes(length, "big", signed=True)


#: Encoded positions below 256, prebuilt: nearly every descriptor sent names one.
_ONE_BYTE_POSITIONS = [bytes((i,)) for i in range(256)]


def _ext(code: int, data: bytes) -> msgpack.ExtType:
    """``msgpack.ExtType(code, data)`` without its Python ``__new__``, whose checks every caller here meets."""
    return _new_tuple(_ExtType, (code, data))


def _position_bytes(pos: int) -> bytes:
    if 0 <= pos < 256:
        return _ONE_BYTE_POSITIONS[pos]
    return pos.to_bytes(max(1, (pos.bit_length() + 7) // 8), "big")


def _no_refs(obj: Any) -> Desc:
    if is_remotable(obj) or isinstance(obj, Promise):
        raise TypeError(f"cannot encode {type(obj).__name__}: no session to pass references through")
    raise TypeError(f"cannot encode {type(obj).__name__}: not passable")


def _symbol_ext(symbol: Symbol) -> msgpack.ExtType:
    data = symbol.name.encode("utf-8")  # a lone surrogate: UnicodeEncodeError, a TypeError in encode()
    if len(data) > MAX_SYMBOL_BYTES:
        raise TypeError(f"symbol name too long to pass ({len(data)} bytes > {MAX_SYMBOL_BYTES})")
    return _ext(EXT_SYMBOL, data)


#: Types whose every value goes on the wire unchanged (``int`` needs a range check).
_AS_IS = frozenset({str, bool, float, bytes, type(None)})


def _to_wire(value: Any, on_ref: OnRef, depth: int) -> Any:
    t = type(value)
    if t in _AS_IS:
        return value
    if t is int:
        if _INT_MIN <= value <= _INT_MAX:
            return value
        data = _bigint_bytes(value)
        if len(data) > MAX_BIGINT_BYTES:
            raise TypeError(f"int too large to pass ({len(data)} bytes > {MAX_BIGINT_BYTES})")
        return _ext(EXT_BIGINT, data)
    if t is Symbol:  # a leaf, like a string: not counted in the nesting
        return _symbol_ext(value)
    if depth >= MAX_DEPTH:
        raise TypeError(f"value nested deeper than {MAX_DEPTH} levels")
    # Containers handle the commonest elements inline: most values are flat
    # data, and a call per string, int or descriptor would cost more than the
    # rest of the walk. Each inline test is the one ``_to_wire`` would make for
    # that element at its depth, so skipping the call changes nothing else.
    if t is list or t is tuple:
        depth += 1
        out: list[Any] = []
        append = out.append
        for v in value:
            tv = type(v)
            if tv in _AS_IS or (tv is int and _INT_MIN <= v <= _INT_MAX):
                append(v)
            elif tv is Desc and depth < MAX_DEPTH:
                append(_desc_ext(v))
            else:
                append(_to_wire(v, on_ref, depth))
        return out
    if t is dict:
        depth += 1
        record = {}
        for k, v in value.items():
            if type(k) is not str:
                raise TypeError(f"record keys must be str, not {type(k).__name__}")
            tv = type(v)
            record[k] = v if tv in _AS_IS or (tv is int and _INT_MIN <= v <= _INT_MAX) else _to_wire(v, on_ref, depth)
        return record
    if t is Desc:
        return _desc_ext(value)
    if t is Tagged:
        inner = [value.tag, _to_wire(value.payload, on_ref, depth + 1)]
        return _ext(EXT_TAGGED, _pack(inner))
    if isinstance(value, BaseException):
        err = RemoteError.from_exception(value)
        fields = [err.name, err.message]
        if err.remote_traceback is not None:
            fields.append(err.remote_traceback)
        return _ext(EXT_ERROR, _pack(fields))
    if t is bytearray or t is memoryview:
        return bytes(value)
    return _desc_ext(on_ref(value))


def _desc_ext(desc: Desc) -> msgpack.ExtType:
    # The encoder refuses exactly what decoders refuse: never write bytes a peer must reject.
    kind, pos = desc
    if kind not in _DESC_CODES or type(pos) is not int or not 0 <= pos <= MAX_POSITION:
        raise TypeError(f"not a valid descriptor: {desc!r}")
    return _new_tuple(_ExtType, (kind, _ONE_BYTE_POSITIONS[pos] if pos < 256 else _position_bytes(pos)))  # _ext, inline


# ``msgpack.packb`` builds a Packer (and its buffer) per call, which costs about
# as much as packing a small message; CapTP encodes several small frames per
# call, so packers are kept, one per thread. A packer is taken out while in
# use, so a finalizer that runs mid-pack and encodes gets a fresh one.
_packers = threading.local()


def _pack(wire: Any) -> bytes:
    packer = _packers.__dict__.pop("packer", None)
    if packer is None:
        packer = msgpack.Packer(use_bin_type=True)
    data: bytes = packer.pack(wire)
    _packers.packer = packer
    return data


def encode(value: Any, on_ref: OnRef | None = None) -> bytes:
    """Encode a passable value. Raises ``TypeError`` for anything not passable.

    That includes strings that are not valid Unicode (lone surrogates, as
    ``os.fsdecode`` makes for undecodable file names): UTF-8 cannot carry them.
    """
    try:
        wire = _to_wire(value, on_ref or _no_refs, 0)
        # _pack, inline (one call less per frame)
        packer = _packers.__dict__.pop("packer", None)
        if packer is None:
            packer = msgpack.Packer(use_bin_type=True)
        data: bytes = packer.pack(wire)
        _packers.packer = packer
        return data
    except (UnicodeEncodeError, OverflowError, ValueError) as e:
        raise TypeError(f"cannot encode: {e}") from None


def encode_plain(value: Any) -> bytes:
    """Encode data already in wire form, unchecked: for protocol data the
    session builds from its own tables (strs, ints in 64-bit range, lists).
    """
    packer = _packers.__dict__.pop("packer", None)  # _pack, inline
    if packer is None:
        packer = msgpack.Packer(use_bin_type=True)
    data: bytes = packer.pack(value)
    _packers.packer = packer
    return data


# ---------------------------------------------------------------------------
# decoding: ``unpack`` turns bytes into plain data with markers for the ext
# values; ``revive`` walks that data, checks it, and turns markers into values.


class _RawTagged(NamedTuple):
    tag: str
    payload: Any


def _unpackb(data: bytes, depth: int) -> Any:
    return msgpack.unpackb(
        data,
        raw=False,
        use_list=True,
        strict_map_key=False,  # checked in revive, with a clearer message
        ext_hook=_EXT_HOOKS[depth] if depth < len(_EXT_HOOKS) else _too_deep,
    )


def _too_deep(code: int, data: bytes) -> Any:
    raise CodecError(f"value nested deeper than {MAX_DEPTH} levels")


def _make_ext_hook(depth: int) -> Callable[[int, bytes], Any]:
    def hook(code: int, data: bytes) -> Any:
        if code in _DESC_CODES:
            n = len(data)
            if n == 0 or n > 7 or (data[0] == 0 and n > 1):
                raise CodecError("malformed position")
            pos = int.from_bytes(data, "big")
            if pos > MAX_POSITION:
                raise CodecError("position out of range")
            return _new_tuple(Desc, (_KIND_OF_CODE[code], pos))  # Desc(...) without its Python __new__
        if code == EXT_BIGINT:
            if not 0 < len(data) <= MAX_BIGINT_BYTES:
                raise CodecError("bigint payload has a bad length")
            n = int.from_bytes(data, "big", signed=True)
            if _INT_MIN <= n <= _INT_MAX or len(data) != len(_bigint_bytes(n)):
                raise CodecError("bigint is not in canonical form")
            return n
        if code == EXT_SYMBOL:
            if len(data) > MAX_SYMBOL_BYTES:
                raise CodecError("symbol name too long")
            try:
                return Symbol(data.decode("utf-8"))  # strict: no surrogates, no overlong forms
            except UnicodeDecodeError:
                raise CodecError("symbol name is not valid UTF-8") from None
        if (code == EXT_TAGGED or code == EXT_ERROR) and depth >= MAX_DEPTH:
            # At the limit only leaves (bigints, descriptors) may still appear.
            raise CodecError(f"value nested deeper than {MAX_DEPTH} levels")
        if code == EXT_TAGGED or code == EXT_ERROR:
            return _decode_nested(code, _unpackb(data, depth + 1))
        raise CodecError(f"unknown ext type {code}")

    return hook


def _decode_nested(code: int, inner: Any) -> Any:
    """A tagged value or an error from its decoded payload array."""
    if code == EXT_TAGGED:
        if type(inner) is not list or len(inner) != 2 or type(inner[0]) is not str:
            raise CodecError("tagged value must be [tag: str, payload]")
        return _RawTagged(inner[0], inner[1])
    if type(inner) is not list or len(inner) not in (2, 3) or not all(type(x) is str for x in inner):
        raise CodecError("error must be [name: str, message: str, traceback?: str]")
    return RemoteError(*inner)


_EXT_HOOKS = [_make_ext_hook(d) for d in range(MAX_DEPTH + 1)]  # deeper: _too_deep refuses everything
_EXT_HOOK_0 = _EXT_HOOKS[0]


def unpack(data: bytes, max_elements: int | None = None, max_descriptors: int | None = None) -> Any:
    """First decoding step: msgpack bytes to plain data with ext markers. Raises CodecError.

    With budgets, a value holding more than ``max_elements`` values or
    ``max_descriptors`` descriptors raises ``BudgetExceeded``, found while
    decoding: the work done before refusing is proportional to the budget,
    not to the size of the input.
    """
    try:
        # _cannot_exceed and _unpackb, inline: nearly every frame is short.
        size = len(data)
        if (max_elements is None or size <= max_elements) and (
            max_descriptors is None or size < _MIN_DESCRIPTOR_BYTES * (max_descriptors + 1)
        ):
            return msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=False, ext_hook=_EXT_HOOK_0)
        budget = _Budget(
            MAX_POSITION if max_elements is None else max_elements,
            MAX_POSITION if max_descriptors is None else max_descriptors,
        )
        return budget.unpack(data, 0)
    except CodecError:
        raise
    except RecursionError:
        raise CodecError("value nested too deeply") from None
    except Exception as e:  # msgpack's ValueError/StackError/ExtraData, bad UTF-8, ...
        raise CodecError(f"not valid msgpack: {type(e).__name__}: {e}") from None


def count_within_budget(data: bytes, max_elements: int, max_descriptors: int) -> bool:
    """Whether encoded ``data`` stays within both budgets (what a receiver's ``unpack`` checks)."""
    try:
        unpack(data, max_elements, max_descriptors)
    except BudgetExceeded:
        return False
    return True


def _cannot_exceed(size: int, max_elements: int | None, max_descriptors: int | None) -> bool:
    return (max_elements is None or size <= max_elements) and (
        max_descriptors is None or size < _MIN_DESCRIPTOR_BYTES * (max_descriptors + 1)
    )


class _Budget:
    """What is left of one frame's budgets while it is decoded (the slow path, for long frames).

    msgpack calls ``list_hook``/``object_hook`` as each array/map is finished
    and ``ext_hook`` for each ext value; each charges what it was given and
    raises ``BudgetExceeded`` once the budget is spent. ``max_array_len`` and
    ``max_map_len`` refuse a single over-long container from its header,
    before building it.
    """

    __slots__ = ("elements", "descriptors", "max_elements", "max_descriptors")

    def __init__(self, max_elements: int, max_descriptors: int) -> None:
        self.elements = self.max_elements = max_elements
        self.descriptors = self.max_descriptors = max_descriptors

    def _spend(self, n: int) -> None:
        self.elements -= n
        if self.elements < 0:
            raise BudgetExceeded("elements", self.max_elements)

    def list_hook(self, value: list[Any]) -> list[Any]:
        self._spend(len(value) + 1)
        return value

    def object_hook(self, value: dict[Any, Any]) -> dict[Any, Any]:
        self._spend(2 * len(value) + 1)
        return value

    def unpack(self, data: bytes, depth: int) -> Any:
        plain_hook = _EXT_HOOKS[depth] if depth < len(_EXT_HOOKS) else _too_deep

        def ext_hook(code: int, payload: bytes) -> Any:
            if code in _DESC_CODES:
                self.descriptors -= 1
                if self.descriptors < 0:
                    raise BudgetExceeded("descriptors", self.max_descriptors)
            elif (code == EXT_TAGGED or code == EXT_ERROR) and depth < MAX_DEPTH:
                self._spend(1)
                return _decode_nested(code, self.unpack(payload, depth + 1))
            return plain_hook(code, payload)

        room = max(self.elements, 0)
        try:
            value = msgpack.unpackb(
                data,
                raw=False,
                use_list=True,
                strict_map_key=False,
                ext_hook=ext_hook,
                list_hook=self.list_hook,
                object_hook=self.object_hook,
                max_array_len=room,
                max_map_len=room // 2,
            )
        except CodecError:
            raise
        except ValueError as e:  # msgpack refused a container header longer than what is left
            if "exceeds max_array_len" in str(e) or "exceeds max_map_len" in str(e):
                raise BudgetExceeded("elements", self.max_elements) from None
            raise
        if type(value) is not list and type(value) is not dict:
            self._spend(1)
        return value


#: Leaves ``revive`` returns as they are (a ``Symbol`` is made by the ext hook).
_SCALARS = frozenset({str, int, float, bool, bytes, type(None), Symbol})


def revive(value: Any, on_desc: OnDesc | None = None, depth: int = 0) -> Any:
    """Second decoding step: check the data is passable and turn markers into values."""
    t = type(value)
    if t in _SCALARS:
        return value
    if depth >= MAX_DEPTH:
        raise CodecError(f"value nested deeper than {MAX_DEPTH} levels")
    if t is list:
        for i, v in enumerate(value):
            if type(v) not in _SCALARS:
                value[i] = revive(v, on_desc, depth + 1)
        return value
    if t is dict:
        for k, v in value.items():
            if type(k) is not str:
                raise CodecError("record keys must be strings")
            if type(v) not in _SCALARS:
                value[k] = revive(v, on_desc, depth + 1)
        return value
    if t is Desc:
        return value if on_desc is None else on_desc(value)
    if t is _RawTagged:
        return Tagged(value.tag, revive(value.payload, on_desc, depth + 1))
    if t is RemoteError:
        return value
    raise CodecError(f"not a passable value: msgpack {t.__name__}")


def decode(data: bytes, on_desc: OnDesc | None = None) -> Any:
    """Decode one encoded value. Raises ``CodecError`` for malformed input."""
    return revive(unpack(data), on_desc)
