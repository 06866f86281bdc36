"""Syrup: the canonical binary encoding OCapN speaks on the wire.

This module is the format only (the ``ocapn`` wire profile builds on it):
``encode`` writes a value's one canonical encoding, ``decode`` reads exactly
one value and accepts only canonical input, ``SyrupSplitter`` finds where
each value of a byte stream ends (OCapN over a stream sends Syrup values back
to back, with no length prefix), and ``SyrupReader`` does both at once. docs/ocapn.md ("Syrup") is the reference.

=========================  ==========================  ==========================
Syrup                      bytes                       Python
=========================  ==========================  ==========================
boolean                    ``t`` ``f``                 ``bool``
integer                    ``42+`` ``5-`` ``0+``       ``int``
double                     ``D`` + 8 bytes big-endian  ``float``
single float (read only)   ``F`` + 4 bytes big-endian  ``float`` (written as D)
bytestring                 ``3:cat``                   ``bytes``
string                     ``4"bear``                  ``str``
symbol                     ``5'fetch``                 ``Symbol``
list                       ``[...]``                   ``list`` (``tuple`` too)
dictionary                 ``{k1 v1 k2 v2}``           ``dict``
set                        ``#...$``                   ``frozenset`` (``set`` too)
record                     ``<label field...>``        ``Record``
=========================  ==========================  ==========================

Dictionary keys and set members are written sorted by their encoded bytes and
may not repeat. A list that is a dictionary key or set member (or is inside
one) decodes as a ``tuple``, so that it can be one.

What the caller may rely on:

* ``decode`` returns a value or raises ``SyrupError`` (a ``ValueError``),
  whatever the input: never another exception, never unbounded time or memory.
  Every input it accepts, except one holding single floats (``F``), is the
  exact output of ``encode`` for the value it returns.
* ``encode`` raises ``TypeError`` for a value that has no Syrup form or that a
  decoder would refuse (too deep, too large, a string with lone surrogates):
  it never writes bytes ``decode`` rejects.

Syrup itself has no null, no tagged values and no references: OCapN writes
those as records (``<desc:tagged ...>``, ``<desc:export 3>``), which the wire
profile maps to and from passable values.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from .passable import Symbol

__all__ = [
    "Record",
    "Symbol",
    "SyrupError",
    "SyrupFrame",
    "SyrupReader",
    "SyrupSplitter",
    "decode",
    "encode",
    "MAX_DEPTH",
    "MAX_INTEGER_DIGITS",
    "MAX_KEYS_PER_HASH",
    "MAX_VALUES",
    "MAX_VALUE_BYTES",
]

#: Largest encoded value, in bytes: the default frame limit of DESIGN §2
#: (16 MiB), so the two wire profiles carry messages of the same size. It also
#: bounds every declared length, and the splitter's buffer.
MAX_VALUE_BYTES = 16 * 1024 * 1024

#: Deepest nesting of lists, dictionaries, sets and records, as the msgpack
#: codec's MAX_DEPTH: CapTP messages nest a handful of levels; 128 keeps the
#: recursive reader (two frames a level) far from Python's recursion limit.
MAX_DEPTH = 128

#: Most decimal digits in an integer: CPython's own guard against quadratic
#: int/str conversion (``sys.get_int_max_str_digits()``, 4300 by default).
#: That is 14,000 bits, past any key or hash size; the msgpack profile's
#: bigints go to 4 KiB (9,865 digits), so a few of those do not fit here.
MAX_INTEGER_DIGITS = 4300

#: Most values (atoms and containers, counted one each) in one decoded value.
#: Bounds the Python objects built from one input: the smallest encodings are
#: 2-3 bytes and a small set is ~220 bytes of Python, so without a count a
#: 16 MiB message could cost over a GiB. 2**18 values cost at most ~60 MiB
#: and ~0.5 s to decode (measured), and are far more than a CapTP message holds.
MAX_VALUES = 1 << 18

#: Most dictionary keys (or set members) with one Python hash. Distinct values
#: almost never share a hash, but hashes of ints, floats and tuples can be
#: chosen: a dictionary of keys that all collide costs quadratic time to build.
#: Eight allows any accident and stops the attack.
MAX_KEYS_PER_HASH = 8

# A declared length has at most as many digits as MAX_VALUE_BYTES.
_MAX_LENGTH_DIGITS = len(str(MAX_VALUE_BYTES))
# An int with more bits than this certainly has more than MAX_INTEGER_DIGITS
# digits (log2(10) < 3.33); checked before converting, which would be slow.
_MAX_INTEGER_BITS = MAX_INTEGER_DIGITS * 10 // 3 + 1
# The one NaN Syrup carries (quiet, positive, no payload), as OCapN's notation
# writes it; Python writes the same bytes for float("nan").
_CANONICAL_NAN = b"\x7f\xf8\x00\x00\x00\x00\x00\x00"
# A run of digits, bounded so that a million digits are refused after reading
# only MAX_INTEGER_DIGITS + 1 of them.
_DIGITS = re.compile(rb"[0-9]{1,%d}" % (MAX_INTEGER_DIGITS + 1))
# A short atom's canonical head, the decoder's fast path: up to 19 digits
# without a leading zero (under any int_max_str_digits Python allows), then
# a marker. Longer numbers take the long way, which checks everything.
_ATOM = re.compile(rb"(?:0|[1-9][0-9]{0,18})[-+:\"']")

_DOUBLE = struct.Struct(">d")
_SINGLE = struct.Struct(">f")

# Marker bytes.
_T, _F, _D, _SF = b"t"[0], b"f"[0], b"D"[0], b"F"[0]
_PLUS, _MINUS, _COLON, _DQUOTE, _SQUOTE = b"+"[0], b"-"[0], b":"[0], b'"'[0], b"'"[0]
_LIST_OPEN, _LIST_CLOSE = b"["[0], b"]"[0]
_DICT_OPEN, _DICT_CLOSE = b"{"[0], b"}"[0]
_SET_OPEN, _SET_CLOSE = b"#"[0], b"$"[0]
_RECORD_OPEN, _RECORD_CLOSE = b"<"[0], b">"[0]
_ZERO, _NINE = b"0"[0], b"9"[0]
_LENGTH_MARKERS = frozenset({_COLON, _DQUOTE, _SQUOTE})
_CLOSER_OF = {_LIST_OPEN: _LIST_CLOSE, _DICT_OPEN: _DICT_CLOSE, _SET_OPEN: _SET_CLOSE, _RECORD_OPEN: _RECORD_CLOSE}


class SyrupError(ValueError):
    """Bytes that are not one canonical Syrup value within this module's limits."""


class _Truncated(SyrupError):
    """The input ends inside the value: more bytes may complete it (``SyrupReader`` waits for them)."""


@dataclass(frozen=True, slots=True)
class Record:
    """A Syrup record: a label (any value, usually a ``Symbol``) and fields.

    ``Record(Symbol("desc:export"), (3,))`` is written ``<11'desc:export3+>``.
    ``fields`` is always a tuple (any iterable given is turned into one), so a
    record is hashable when its label and fields are.
    """

    label: Any
    fields: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if type(self.fields) is not tuple:
            object.__setattr__(self, "fields", tuple(self.fields))


#: No shared symbols (``SyrupReader``'s ``symbols``): every symbol read is a new ``Symbol``.
_NO_SYMBOLS: Mapping[bytes, Symbol] = {}

# How the decoder makes a Record: its slots set directly, as the frozen
# dataclass's __init__ would, without that call and its check of the fields
# (the decoder's are a tuple already). About half the cost of Record(...).
_new_record = object.__new__
_set_label, _set_fields = vars(Record)["label"].__set__, vars(Record)["fields"].__set__


# ---------------------------------------------------------------------------
# encoding


def encode(value: object) -> bytes:
    """The canonical Syrup encoding of ``value``.

    Raises ``TypeError`` for a value with no Syrup form (None, an arbitrary
    object) and for one whose encoding ``decode`` would refuse: a str with
    lone surrogates, an int of more than MAX_INTEGER_DIGITS digits, nesting
    past MAX_DEPTH, more than MAX_VALUES values or MAX_VALUE_BYTES bytes, two
    keys written alike (two NaNs), too many keys sharing a hash.
    """
    encoder = _Encoder()
    try:
        data = encoder.value(value, 0)
    except RecursionError:
        raise TypeError("cannot encode: nested too deeply for this thread's stack") from None
    if len(data) > MAX_VALUE_BYTES:
        raise TypeError(f"cannot encode: {len(data)} bytes is more than MAX_VALUE_BYTES ({MAX_VALUE_BYTES})")
    return data


class _Encoder:
    __slots__ = ("budget",)

    def __init__(self) -> None:
        self.budget = MAX_VALUES

    def value(self, value: object, depth: int) -> bytes:
        self.budget -= 1
        if self.budget < 0:
            raise TypeError(f"cannot encode: more than MAX_VALUES ({MAX_VALUES}) values")
        if value is True:
            return b"t"
        if value is False:
            return b"f"
        if isinstance(value, int):
            return _encode_int(value)
        if isinstance(value, float):
            return b"D" + (_CANONICAL_NAN if value != value else _DOUBLE.pack(value))
        if isinstance(value, (bytes, bytearray, memoryview)):
            raw = bytes(value)
            return b"%d:%s" % (len(raw), raw)
        if isinstance(value, str):
            raw = _utf8(value)
            return b'%d"%s' % (len(raw), raw)
        if isinstance(value, Symbol):
            raw = _utf8(value.name)
            return b"%d'%s" % (len(raw), raw)
        if depth >= MAX_DEPTH:
            raise TypeError(f"cannot encode: nested deeper than MAX_DEPTH ({MAX_DEPTH}) levels")
        depth += 1
        if isinstance(value, (list, tuple)):
            return b"[" + b"".join([self.value(item, depth) for item in value]) + b"]"
        if isinstance(value, dict):
            pairs = sorted([(self.value(k, depth), self.value(v, depth)) for k, v in value.items()])
            _check_keys([k for k, _ in pairs], list(value), "dictionary key")
            return b"{" + b"".join([k + v for k, v in pairs]) + b"}"
        if isinstance(value, (set, frozenset)):
            members = sorted([self.value(item, depth) for item in value])
            _check_keys(members, list(value), "set member")
            return b"#" + b"".join(members) + b"$"
        if isinstance(value, Record):
            label = self.value(value.label, depth)
            return b"<" + label + b"".join([self.value(field, depth) for field in value.fields]) + b">"
        raise TypeError(f"cannot encode {type(value).__name__}: it has no Syrup form")


def _encode_int(value: int) -> bytes:
    if value.bit_length() > _MAX_INTEGER_BITS:
        raise TypeError(f"cannot encode: int has more than MAX_INTEGER_DIGITS ({MAX_INTEGER_DIGITS}) digits")
    try:
        digits = str(abs(value)).encode("ascii")
    except ValueError:  # a process-wide int_max_str_digits set below ours
        raise TypeError("cannot encode: int has more digits than this process converts") from None
    if len(digits) > MAX_INTEGER_DIGITS:
        raise TypeError(f"cannot encode: int has more than MAX_INTEGER_DIGITS ({MAX_INTEGER_DIGITS}) digits")
    return digits + (b"+" if value >= 0 else b"-")


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise TypeError("cannot encode: text with lone surrogates is not Unicode, UTF-8 cannot carry it") from None


def _check_keys(encoded: list[bytes], keys: list[Any], what: str) -> None:
    """Refuse what ``decode`` refuses: two keys written alike, or too many sharing a hash."""
    for before, after in zip(encoded, encoded[1:], strict=False):
        if before == after:
            raise TypeError(f"cannot encode: two {what}s have the same encoding {before!r}")
    if len(keys) > MAX_KEYS_PER_HASH:
        per_hash: dict[int, int] = {}
        for key in keys:
            h = hash(key)
            per_hash[h] = per_hash.get(h, 0) + 1
            if per_hash[h] > MAX_KEYS_PER_HASH:
                raise TypeError(f"cannot encode: more than MAX_KEYS_PER_HASH ({MAX_KEYS_PER_HASH}) {what}s share a hash")


# ---------------------------------------------------------------------------
# decoding


def decode(data: bytes | bytearray | memoryview) -> Any:
    """Decode exactly one canonical Syrup value that fills ``data``.

    Raises ``SyrupError`` for anything else: bytes that are not Syrup, left
    over after the value, out of canonical order, over a limit (MAX_*), or
    naming two dictionary keys or set members that Python holds equal (``1+``
    and ``t``, or ``D`` +0.0 and -0.0: Syrup tells them apart, a dict cannot).
    """
    if not isinstance(data, bytes):
        if not isinstance(data, (bytearray, memoryview)):
            raise TypeError(f"decode() needs bytes, not {type(data).__name__}")
        data = bytes(data)
    if len(data) > MAX_VALUE_BYTES:
        raise SyrupError(f"{len(data)} bytes is more than MAX_VALUE_BYTES ({MAX_VALUE_BYTES})")
    if not data:
        raise SyrupError("no value: the input is empty")
    reader = _decoder(data, 0, len(data), MAX_DEPTH, _NO_SYMBOLS)
    try:
        value, end = reader.value(0, 0, False)
    except RecursionError:
        raise SyrupError("nested too deeply for this thread's stack") from None
    if end != len(data):
        raise SyrupError(f"{len(data) - end} bytes left over after the value (at byte {end})")
    return value


def _decoder(data: bytes, start: int, end: int, max_depth: int, symbols: Mapping[bytes, Symbol]) -> _Decoder:
    """A decoder for the value at ``start``: one that counts values only if the bytes could hold more than MAX_VALUES.

    Every value takes at least one byte, so fewer bytes than MAX_VALUES (any
    message of a usual size) cannot exceed it: counting them would change nothing.
    """
    if end - start > MAX_VALUES:
        return _CountingDecoder(data, end, max_depth, symbols)
    return _Decoder(data, end, max_depth, symbols)


class _Decoder:
    """Reads one value at a position; each method returns ``(value, next position)``.

    ``frozen`` is true inside a dictionary key or set member: lists become
    tuples there, and dictionaries (which Python cannot hash) are refused.
    It does not count values: ``_decoder`` gives it only input too short to
    hold more than MAX_VALUES.
    """

    __slots__ = ("data", "end", "max_depth", "symbols")

    def __init__(
        self, data: bytes, end: int | None = None, max_depth: int = MAX_DEPTH, symbols: Mapping[bytes, Symbol] = _NO_SYMBOLS
    ) -> None:
        self.data = data
        #: Where the input ends for this reader: ``len(data)``, or less to read a prefix only.
        self.end = len(data) if end is None else end
        self.max_depth = max_depth
        #: Symbols read as these objects rather than new ones, by their encoded names (``SyrupReader``'s ``symbols``).
        self.symbols = symbols

    def fail(self, pos: int, message: str) -> NoReturn:
        raise SyrupError(f"{message} (at byte {pos})")

    def truncated(self, pos: int, message: str) -> NoReturn:
        raise _Truncated(f"{message} (at byte {pos})")

    def value(self, pos: int, depth: int, frozen: bool) -> tuple[Any, int]:
        """The value at ``pos``, which the caller has checked is before ``end``."""
        data = self.data
        byte = data[pos]
        if _ZERO <= byte <= _NINE:
            # The common atoms the short way: one or two digits and a marker
            # (most of a message: small integers, names' lengths) by hand,
            # other canonical digits and a marker in one regex match. Anything
            # else (and every error) goes the long way, through atom().
            length = byte - _ZERO
            marker_at = pos + 1
            marker = data[marker_at] if marker_at < self.end else 0
            if _ZERO <= marker <= _NINE and length:  # a second digit, after a first that is not 0
                length = length * 10 + marker - _ZERO
                marker_at += 1
                marker = data[marker_at] if marker_at < self.end else 0
            if marker == _PLUS:
                return length, marker_at + 1
            if marker not in _LENGTH_MARKERS:
                match = _ATOM.match(data, pos, self.end)
                if match is None:
                    return self.atom(pos)
                marker_at = match.end() - 1
                marker = data[marker_at]
                if marker == _PLUS:
                    return int(data[pos:marker_at]), marker_at + 1
                if marker == _MINUS or marker_at - pos > _MAX_LENGTH_DIGITS:
                    return self.atom(pos)
                length = int(data[pos:marker_at])
            start = marker_at + 1
            stop = start + length
            if stop > self.end:
                return self.atom(pos)
            raw = data[start:stop]
            if marker == _SQUOTE:
                shared = self.symbols.get(raw)
                if shared is not None:
                    return shared, stop
            elif marker == _COLON:
                return raw, stop
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                return self.atom(pos)
            return (text if marker == _DQUOTE else Symbol(text)), stop
        if byte in _CLOSER_OF:  # containers, then the rarer atoms: in order of frequency in messages
            if depth >= self.max_depth:
                self.fail(pos, f"nested deeper than MAX_DEPTH ({self.max_depth}) levels")
            if byte == _RECORD_OPEN:
                return self.record(pos, depth + 1, frozen)
            if byte == _LIST_OPEN:
                return self.sequence(pos, depth + 1, frozen)
            if byte == _DICT_OPEN:
                return self.dictionary(pos, depth + 1, frozen)
            return self.set(pos, depth + 1)
        if byte == _T:
            return True, pos + 1
        if byte == _F:
            return False, pos + 1
        if byte == _D:
            return self.double(pos)
        if byte == _SF:
            if pos + 5 > self.end:
                self.truncated(pos, "truncated: a single float needs 4 bytes")
            return _SINGLE.unpack_from(self.data, pos + 1)[0], pos + 5
        if byte in (_LIST_CLOSE, _DICT_CLOSE, _SET_CLOSE, _RECORD_CLOSE):
            self.fail(pos, f"{chr(byte)!r} closes nothing here")
        self.fail(pos, f"byte {bytes([byte])!r} does not start a Syrup value")

    def atom(self, pos: int) -> tuple[Any, int]:
        """An integer, or a bytestring, string or symbol with its length."""
        data = self.data
        match = _DIGITS.match(data, pos, self.end)
        assert match is not None  # data[pos] is a digit
        marker_at = match.end()
        ndigits = marker_at - pos
        if ndigits > MAX_INTEGER_DIGITS:
            self.fail(pos, f"a number of more than MAX_INTEGER_DIGITS ({MAX_INTEGER_DIGITS}) digits")
        if marker_at >= self.end:
            self.truncated(pos, "truncated: digits without the marker after them")
        if data[pos] == _ZERO and ndigits > 1:
            self.fail(pos, "a number with a leading zero is not canonical")
        marker = data[marker_at]
        if marker == _PLUS or marker == _MINUS:
            if marker == _MINUS and ndigits == 1 and data[pos] == _ZERO:
                self.fail(pos, "0- (negative zero) is not an integer; zero is 0+")
            number = self.number(pos, marker_at)
            return (number if marker == _PLUS else -number), marker_at + 1
        if marker != _COLON and marker != _DQUOTE and marker != _SQUOTE:
            self.fail(marker_at, f"byte {bytes([marker])!r} after digits: expected one of + - : \" '")
        if ndigits > _MAX_LENGTH_DIGITS:
            self.fail(pos, f"a declared length over MAX_VALUE_BYTES ({MAX_VALUE_BYTES})")
        length = self.number(pos, marker_at)
        start = marker_at + 1
        stop = start + length
        if stop > self.end:
            self.truncated(pos, f"truncated: declares {length} bytes, {self.end - start} remain")
        raw = data[start:stop]
        if marker == _COLON:
            return raw, stop
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            self.fail(start + e.start, f"{'string' if marker == _DQUOTE else 'symbol'} is not valid UTF-8")
        return (text if marker == _DQUOTE else Symbol(text)), stop

    def number(self, start: int, stop: int) -> int:
        try:
            return int(self.data[start:stop])
        except ValueError:  # a process-wide int_max_str_digits set below ours
            self.fail(start, "a number with more digits than this process converts")

    def double(self, pos: int) -> tuple[float, int]:
        if pos + 9 > self.end:
            self.truncated(pos, "truncated: a double needs 8 bytes")
        number: float = _DOUBLE.unpack_from(self.data, pos + 1)[0]
        if number != number and self.data[pos + 1 : pos + 9] != _CANONICAL_NAN:
            self.fail(pos, "a NaN other than the canonical 7ff8000000000000 is not canonical")
        return number, pos + 9

    def sequence(self, pos: int, depth: int, frozen: bool) -> tuple[Any, int]:
        items: list[Any] = []
        pos += 1
        while True:
            if pos >= self.end:
                self.truncated(pos, "truncated: a list is not closed")
            if self.data[pos] == _LIST_CLOSE:
                return (tuple(items) if frozen else items), pos + 1
            item, pos = self.value(pos, depth, frozen)
            items.append(item)

    def dictionary(self, pos: int, depth: int, frozen: bool) -> tuple[dict[Any, Any], int]:
        if frozen:
            self.fail(pos, "a dictionary inside a dictionary key or set member has no Python form (dicts are unhashable)")
        result: dict[Any, Any] = {}
        keys = _KeyChecker(self, "dictionary key", result)
        pos += 1
        while True:
            if pos >= self.end:
                self.truncated(pos, "truncated: a dictionary is not closed")
            if self.data[pos] == _DICT_CLOSE:
                return result, pos + 1
            key_at = pos
            key, pos = self.value(pos, depth, True)
            keys.check(key, key_at, pos)
            if pos >= self.end:
                self.truncated(pos, "truncated: a dictionary key without a value")
            if self.data[pos] == _DICT_CLOSE:
                self.fail(pos, "a dictionary key without a value")
            result[key], pos = self.value(pos, depth, False)
            if len(result) != keys.count:
                self.fail(key_at, "two dictionary keys are equal as Python values (such as 1+ and t, or 0.0 and -0.0)")

    def set(self, pos: int, depth: int) -> tuple[frozenset[Any], int]:
        members: list[Any] = []
        keys = _KeyChecker(self, "set member", members)
        pos += 1
        while True:
            if pos >= self.end:
                self.truncated(pos, "truncated: a set is not closed")
            if self.data[pos] == _SET_CLOSE:
                result = frozenset(members)
                if len(result) != len(members):
                    self.fail(pos, "two set members are equal as Python values (such as 1+ and t, or 0.0 and -0.0)")
                return result, pos + 1
            member_at = pos
            member, pos = self.value(pos, depth, True)
            keys.check(member, member_at, pos)
            members.append(member)

    def record(self, pos: int, depth: int, frozen: bool) -> tuple[Record, int]:
        pos += 1
        if pos >= self.end:
            self.truncated(pos, "truncated: a record without its label")
        if self.data[pos] == _RECORD_CLOSE:
            self.fail(pos, "a record without a label")
        label, pos = self.value(pos, depth, frozen)
        fields: list[Any] = []
        while True:
            if pos >= self.end:
                self.truncated(pos, "truncated: a record is not closed")
            if self.data[pos] == _RECORD_CLOSE:
                record = _new_record(Record)
                _set_label(record, label)
                _set_fields(record, tuple(fields))
                return record, pos + 1
            field, pos = self.value(pos, depth, frozen)
            fields.append(field)


class _CountingDecoder(_Decoder):
    """A ``_Decoder`` that refuses more than MAX_VALUES values: for input long enough to hold them."""

    __slots__ = ("budget",)

    def __init__(self, data: bytes, end: int | None, max_depth: int, symbols: Mapping[bytes, Symbol]) -> None:
        super().__init__(data, end, max_depth, symbols)
        self.budget = MAX_VALUES

    def value(self, pos: int, depth: int, frozen: bool) -> tuple[Any, int]:
        self.budget -= 1
        if self.budget < 0:
            self.fail(pos, f"more than MAX_VALUES ({MAX_VALUES}) values")
        return _Decoder.value(self, pos, depth, frozen)


class _KeyChecker:
    """Dictionary keys and set members: strictly ascending encodings, few per hash.

    ``earlier`` is where the caller keeps the keys checked so far (the
    dictionary, or the list of members): hashes are counted only from the
    key past MAX_KEYS_PER_HASH on, since fewer keys cannot exceed it.
    """

    __slots__ = ("reader", "what", "previous", "count", "per_hash", "earlier")

    def __init__(self, reader: _Decoder, what: str, earlier: Iterable[Any]) -> None:
        self.reader = reader
        self.what = what
        self.previous = b""
        self.count = 0
        self.per_hash: dict[int, int] = {}
        self.earlier = earlier

    def check(self, key: Any, start: int, stop: int) -> None:
        encoded = self.reader.data[start:stop]
        if self.count and encoded <= self.previous:
            problem = "repeated" if encoded == self.previous else "out of canonical order (sorted by encoded bytes)"
            self.reader.fail(start, f"{self.what} {problem}")
        self.previous = encoded
        self.count += 1
        if self.count <= MAX_KEYS_PER_HASH:
            return
        if self.count == MAX_KEYS_PER_HASH + 1:
            for earlier in self.earlier:  # all distinct hashes or not, none is past the limit yet
                h = hash(earlier)
                self.per_hash[h] = self.per_hash.get(h, 0) + 1
        h = hash(key)
        seen = self.per_hash.get(h, 0) + 1
        if seen > MAX_KEYS_PER_HASH:
            self.reader.fail(start, f"more than MAX_KEYS_PER_HASH ({MAX_KEYS_PER_HASH}) {self.what}s share a hash")
        self.per_hash[h] = seen


# ---------------------------------------------------------------------------
# splitting a stream into values


class SyrupSplitter:
    """Finds where each top-level value of a Syrup byte stream ends.

    Feed bytes as they arrive with ``feed``; ``next_value`` returns the bytes of
    the next complete value (to hand to ``decode``) or None until more arrive.
    It reads each byte once however the stream is cut (only a number cut in
    its digits is reread, at most MAX_INTEGER_DIGITS of them), and only the
    structure: digits, markers,
    brackets and skipped lengths. Canonical order, UTF-8 and the values
    themselves are ``decode``'s to check, so a value the splitter returns may
    still be refused by ``decode``.

    Bytes that cannot begin or continue a value, closers that do not match,
    nesting past ``max_depth`` and a value growing past ``max_value_bytes``
    raise ``SyrupError`` as soon as they arrive; after that every call raises
    the same error (the stream is unusable: where the next value would start
    is unknown). Memory held is at most ``max_value_bytes`` plus the bytes of
    values found but not yet taken and of the last ``feed``.
    """

    def __init__(self, max_value_bytes: int = MAX_VALUE_BYTES, max_depth: int = MAX_DEPTH) -> None:
        self._max_value_bytes = max_value_bytes
        self._max_depth = max_depth
        self._buffer = bytearray()
        self._start = 0  # where the value being scanned begins in _buffer
        self._pos = 0  # the next byte (or token) not yet scanned
        self._closers: list[int] = []  # closing bytes of the open containers, innermost last
        self._dropped = 0  # bytes removed from the front of _buffer, for offsets in errors
        self._error: SyrupError | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes received from the stream."""
        if self._error is not None:
            raise self._error
        self._buffer += data

    @property
    def buffered(self) -> int:
        """Bytes held that are not yet part of a returned value (nonzero at the
        end of a stream means it ended inside a value)."""
        return len(self._buffer) - self._start

    def next_value(self) -> bytes | None:
        """The bytes of the next complete value, or None if more are needed."""
        if self._error is not None:
            raise self._error
        try:
            end = self._scan()
        except SyrupError as e:
            self._error = e
            raise
        if end is None:
            return None
        value = bytes(self._buffer[self._start : end])
        self._start = self._pos = end
        # Drop what was returned once it is most of the buffer, so the cost of
        # moving the remainder is paid at most once per byte.
        if self._start * 2 >= len(self._buffer):
            del self._buffer[: self._start]
            self._dropped += self._start
            self._start = self._pos = 0
        return value

    def _fail(self, pos: int, message: str) -> NoReturn:
        raise SyrupError(f"{message} (at byte {self._dropped + pos} of the stream)")

    def _take_rest(self) -> bytes:
        """Hand over the bytes held past the last value returned (``SyrupReader``); the splitter is done."""
        rest = bytes(self._buffer[self._start :])
        self._buffer = bytearray()
        self._start = self._pos = 0
        return rest

    def _scan(self) -> int | None:
        buffer, closers = self._buffer, self._closers
        end = len(buffer)
        pos = self._pos
        limit = self._start + self._max_value_bytes
        while True:
            self._pos = pos  # resume here: every token before pos is complete
            if pos >= end:
                if pos > limit:
                    self._fail(self._start, f"a value longer than {self._max_value_bytes} bytes")
                return None
            if pos >= limit:
                self._fail(self._start, f"a value longer than {self._max_value_bytes} bytes")
            byte = buffer[pos]
            if _ZERO <= byte <= _NINE:
                match = _DIGITS.match(buffer, pos)
                assert match is not None
                marker_at = match.end()
                ndigits = marker_at - pos
                if ndigits > MAX_INTEGER_DIGITS:
                    self._fail(pos, f"a number of more than MAX_INTEGER_DIGITS ({MAX_INTEGER_DIGITS}) digits")
                if buffer[pos] == _ZERO and ndigits > 1:
                    self._fail(pos, "a number with a leading zero is not canonical")
                if marker_at >= end:
                    return None  # the digits may go on
                marker = buffer[marker_at]
                if marker == _PLUS or marker == _MINUS:
                    pos = marker_at + 1
                elif marker == _COLON or marker == _DQUOTE or marker == _SQUOTE:
                    if ndigits > _MAX_LENGTH_DIGITS:
                        self._fail(pos, f"a declared length over MAX_VALUE_BYTES ({MAX_VALUE_BYTES})")
                    stop = marker_at + 1 + int(buffer[pos:marker_at])
                    if stop > limit:
                        self._fail(self._start, f"a value longer than {self._max_value_bytes} bytes")
                    if stop > end:
                        return None  # rescans only the length header next time
                    pos = stop
                else:
                    self._fail(marker_at, f"byte {bytes([marker])!r} after digits: expected one of + - : \" '")
            elif byte == _T or byte == _F:
                pos += 1
            elif byte == _D or byte == _SF:
                stop = pos + (9 if byte == _D else 5)
                if stop > end:
                    return None
                pos = stop
            elif byte in _CLOSER_OF:
                if len(closers) >= self._max_depth:
                    self._fail(pos, f"nested deeper than {self._max_depth} levels")
                closers.append(_CLOSER_OF[byte])
                pos += 1
                continue  # a container is not complete when it opens
            elif closers and byte == closers[-1]:
                closers.pop()
                pos += 1
            else:
                self._fail(pos, f"byte {bytes([byte])!r} does not start a Syrup value here")
            if not closers:
                if pos > limit:
                    self._fail(self._start, f"a value longer than {self._max_value_bytes} bytes")
                return pos


# ---------------------------------------------------------------------------
# reading a stream: splitting and decoding in one pass


class SyrupFrame(bytes):
    """The bytes of one value read from a stream, with ``value``: what they decode to.

    A ``bytes`` (equal to, and usable as, the plain bytes), so code that
    takes frames takes these; code that knows them (the OCapN profile) uses
    ``value`` rather than decoding the same bytes again.
    """

    value: Any


class SyrupReader:
    """``SyrupSplitter`` and ``decode`` in one pass: bytes in, decoded values out.

    ``feed`` bytes as they arrive; ``next_frame`` returns the next value as a
    ``SyrupFrame`` (its bytes, and its ``value`` as ``decode`` returns it),
    or None until more bytes arrive. Values are checked as ``decode`` checks
    them (canonical form, UTF-8, limits): any bad one raises ``SyrupError``,
    and after that every call raises it (where the next value starts is
    unknown).

    Values that arrive whole (the usual case: a read holds whole messages)
    are parsed once, where they lie in the fed bytes, without being scanned
    first or copied before parsing. A value cut by the end of what was fed
    is handed, with the bytes after it, to a ``SyrupSplitter``, which reads
    each further byte once; when it finds the value's end, the value is
    decoded and reading goes back to the fast way. So the work stays linear
    however the stream is cut: a value is parsed at most twice (once partly).

    A symbol named as one of ``symbols`` (a protocol's labels, which every
    message repeats) is read as that object: equal to the ``Symbol`` made
    otherwise, but shared, so reading it costs a lookup, not a new object.
    """

    def __init__(
        self, max_value_bytes: int = MAX_VALUE_BYTES, max_depth: int = MAX_DEPTH, symbols: Iterable[Symbol] = ()
    ) -> None:
        self._max_value_bytes = max_value_bytes
        self._max_depth = max_depth
        self._symbols = {symbol.name.encode("utf-8"): symbol for symbol in symbols}
        self._data = b""  # bytes fed and not yet read, from _offset on
        self._offset = 0
        self._splitter: SyrupSplitter | None = None  # set while a value is arriving in pieces
        self._error: SyrupError | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes received from the stream."""
        if self._error is not None:
            raise self._error
        if self._splitter is not None:
            self._splitter.feed(data)
        elif self._offset < len(self._data):
            self._data = self._data[self._offset :] + bytes(data)
            self._offset = 0
        else:
            self._data = bytes(data)
            self._offset = 0

    @property
    def buffered(self) -> int:
        """Bytes held that are not yet part of a returned value (nonzero at the end of a stream: it ended inside one)."""
        if self._splitter is not None:
            return self._splitter.buffered
        return len(self._data) - self._offset

    def next_frame(self) -> SyrupFrame | None:
        """The next complete value and its bytes, or None if more bytes are needed."""
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except RecursionError:
            self._error = SyrupError("nested too deeply for this thread's stack")
        except SyrupError as e:
            self._error = e
        raise self._error

    def _next(self) -> SyrupFrame | None:
        if self._splitter is not None:
            whole = self._splitter.next_value()
            if whole is None:
                return None
            self._data, self._offset = self._splitter._take_rest(), 0
            self._splitter = None
            value, end = _decoder(whole, 0, len(whole), self._max_depth, self._symbols).value(0, 0, False)
            if end != len(whole):  # pragma: no cover - the splitter found this end
                raise SyrupError(f"the value ends at byte {end}, not {len(whole)}")
            frame = SyrupFrame(whole)
            frame.value = value
            return frame
        data, start = self._data, self._offset
        if start >= len(data):
            return None
        # Read no further than the limit allows: a longer value is "truncated"
        # here, and the splitter refuses it as it does any other.
        end = len(data)
        if end - start > self._max_value_bytes:
            end = start + self._max_value_bytes
        try:
            if start >= end:  # a limit of no bytes: the splitter refuses the value
                raise _Truncated("a value longer than the limit")
            value, stop = _decoder(data, start, end, self._max_depth, self._symbols).value(start, 0, False)
        except _Truncated:
            splitter = SyrupSplitter(self._max_value_bytes, self._max_depth)
            splitter.feed(data[start:])
            self._data, self._offset = b"", 0
            self._splitter = splitter
            return self._next()
        self._offset = stop
        frame = SyrupFrame(data if stop - start == len(data) else data[start:stop])  # a whole read: no slice
        frame.value = value
        return frame
