"""Write the shared wire vectors (values.json, messages.json) from ocapd.captp.codec.

The JSON files are the source of truth: both the Python and the JavaScript
implementation are tested against them. This script is how they were made and
how to tell whether they still match the code:

    python tests/vectors/generate.py            # rewrite the files
    python tests/vectors/generate.py --check    # exit 1 if a file would change
    python tests/vectors/generate.py --annotate # print annotated message frames

Expected outcomes (which bytes to refuse, which abort code a frame earns) are
written here by hand: they are the specification. Only the bytes are computed.
The value notation is described in README.md next to this file.
"""

from __future__ import annotations

import argparse
import json
import math
import struct
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE.parent.parent) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(HERE.parent.parent))

from ocapd.captp import codec  # noqa: E402
from ocapd.captp.codec import (  # noqa: E402
    EXT_ANSWER,
    EXT_EXPORT,
    EXT_IMPORT_OBJECT,
    EXT_IMPORT_PROMISE,
    MAX_BIGINT_BYTES,
    MAX_DEPTH,
    MAX_POSITION,
    MAX_SYMBOL_BYTES,
    Desc,
)
from ocapd.captp.passable import RemoteError, Symbol, Tagged  # noqa: E402
from ocapd.captp.session import PROTOCOL_VERSION  # noqa: E402

VALUES_FILE = HERE / "values.json"
MESSAGES_FILE = HERE / "messages.json"

DESC_KINDS = {
    "import-object": EXT_IMPORT_OBJECT,
    "import-promise": EXT_IMPORT_PROMISE,
    "export": EXT_EXPORT,
    "answer": EXT_ANSWER,
}
DESC_NAMES = {code: name for name, code in DESC_KINDS.items()}

# The biggest vectors are 4 KiB bigints, about 9,900 decimal digits: more than
# Python's default limit on int <-> str conversion.
_BIG_DIGITS = 20_000


# ---------------------------------------------------------------------------
# The value notation (README.md): JSON that JavaScript can build values from.


def to_py(n: Any) -> Any:
    """Notation -> Python value as captp.codec produces and accepts it."""
    if n is None or n is True or n is False:
        return n
    if type(n) is not dict or len(n) != 1:
        raise ValueError(f"not a notation value: {n!r}")
    ((kind, body),) = n.items()
    if kind == "int":
        return _int_from_str(body)
    if kind == "float":
        return float(body)  # accepts "NaN", "Infinity", "-Infinity", "-0.0"
    if kind == "str":
        return body
    if kind == "bytes":
        return bytes.fromhex(body)
    if kind == "list":
        return [to_py(x) for x in body]
    if kind == "record":
        return {k: to_py(v) for k, v in body}
    if kind == "tagged":
        return Tagged(body[0], to_py(body[1]))
    if kind == "error":
        return RemoteError(*body)
    if kind == "desc":
        return Desc(DESC_KINDS[body[0]], body[1])
    if kind == "symbol":
        return Symbol(body)
    raise ValueError(f"unknown notation kind {kind!r}")


def to_notation(v: Any) -> Any:
    """Python value -> notation (the inverse of ``to_py``)."""
    t = type(v)
    if v is None or t is bool:
        return v
    if t is int:
        return {"int": _int_to_str(v)}
    if t is float:
        if math.isnan(v):
            return {"float": "NaN"}
        if math.isinf(v):
            return {"float": "Infinity" if v > 0 else "-Infinity"}
        return {"float": repr(v)}
    if t is str:
        return {"str": v}
    if t is bytes:
        return {"bytes": v.hex()}
    if t is list:
        return {"list": [to_notation(x) for x in v]}
    if t is dict:
        return {"record": [[k, to_notation(x)] for k, x in v.items()]}
    if t is Tagged:
        return {"tagged": [v.tag, to_notation(v.payload)]}
    if t is RemoteError:
        fields = [v.name, v.message]
        if v.remote_traceback is not None:
            fields.append(v.remote_traceback)
        return {"error": fields}
    if t is Desc:
        return {"desc": [DESC_NAMES[v.kind], v.position]}
    if t is Symbol:
        return {"symbol": v.name}
    raise TypeError(f"no notation for {t.__name__}")


def _int_from_str(s: str) -> int:
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(_BIG_DIGITS)
    try:
        return int(s, 10)
    finally:
        sys.set_int_max_str_digits(old)


def _int_to_str(n: int) -> str:
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(_BIG_DIGITS)
    try:
        return str(n)
    finally:
        sys.set_int_max_str_digits(old)


# ---------------------------------------------------------------------------
# Value vectors: value -> exact bytes, both ways.


def _nested_lists(depth: int) -> Any:
    v: Any = None
    for _ in range(depth):
        v = [v]
    return v


def _nested_tagged(depth: int, leaf: Any = None) -> Any:
    v: Any = leaf
    for _ in range(depth):
        v = Tagged("t", v)
    return v


BIG_200 = int("c" * 50, 16)  # 200 bits, top bit set: needs a 0x00 sign byte
MAX_BIGINT = 2 ** (MAX_BIGINT_BYTES * 8 - 1) - 1  # largest bigint that fits 4096 bytes

VALUES: list[tuple[str, Any]] = [
    # nil, booleans
    ("nil", None),
    ("false", False),
    ("true", True),
    # integers: msgpack's own types, shortest form
    ("int 0", 0),
    ("int 1", 1),
    ("int -1", -1),
    ("int 127 (largest positive fixint)", 127),
    ("int 128 (uint8)", 128),
    ("int 255", 255),
    ("int 256 (uint16)", 256),
    ("int 65535", 65535),
    ("int 65536 (uint32)", 65536),
    ("int 2**32-1", 2**32 - 1),
    ("int 2**32 (uint64)", 2**32),
    ("int 2**53-1 (largest exact JS number)", 2**53 - 1),
    ("int 2**53", 2**53),
    ("int 2**63-1", 2**63 - 1),
    ("int 2**63 (uint64, not bigint)", 2**63),
    ("int 2**64-1 (largest msgpack int)", 2**64 - 1),
    ("int -32 (smallest negative fixint)", -32),
    ("int -33 (int8)", -33),
    ("int -128", -128),
    ("int -129 (int16)", -129),
    ("int -32769 (int32)", -32769),
    ("int -2**31-1 (int64)", -(2**31) - 1),
    ("int -2**63 (smallest msgpack int)", -(2**63)),
    # integers: ext 1 bigint, two's complement, minimal length
    ("bigint 2**64 (smallest positive bigint)", 2**64),
    ("bigint -2**63-1 (largest negative bigint)", -(2**63) - 1),
    ("bigint 2**71-1 (9 bytes, no sign byte needed)", 2**71 - 1),
    ("bigint 2**71 (10 bytes: 0x00 sign byte)", 2**71),
    ("bigint -2**71 (9 bytes)", -(2**71)),
    ("bigint -2**71-1 (10 bytes: 0xff sign byte)", -(2**71) - 1),
    ("bigint 200 bits", BIG_200),
    ("bigint -(200 bits)", -BIG_200),
    ("bigint 123456789012345678901234567890", 123456789012345678901234567890),
    ("bigint 2**32767-1 (4096-byte payload, the largest allowed)", MAX_BIGINT),
    # floats: always float 64
    ("float 1.5", 1.5),
    ("float 2.0 (integral, still a float)", 2.0),
    ("float 0.0", 0.0),
    ("float -0.0", -0.0),
    ("float 0.1", 0.1),
    ("float -1e300", -1e300),
    ("float 5e-324 (smallest subnormal)", 5e-324),
    ("float NaN", math.nan),
    ("float Infinity", math.inf),
    ("float -Infinity", -math.inf),
    # strings: UTF-8, shortest str type
    ("str empty", ""),
    ("str ascii", "hello"),
    ("str 31 bytes (largest fixstr)", "a" * 31),
    ("str 32 bytes (str8)", "a" * 32),
    ("str 256 bytes (str16)", "b" * 256),
    ("str latin-1", "café"),
    ("str CJK", "日本語"),
    ("str emoji (4-byte UTF-8, a surrogate pair in JS)", "🦊"),
    ("str NUL inside", "a\x00b"),
    # bytes: bin types
    ("bytes empty", b""),
    ("bytes 3", b"\x00\xff\x10"),
    ("bytes 256 (bin16)", bytes(range(256))),
    # lists
    ("list empty", []),
    ("list of scalars", [1, "two", None, True, 3.5]),
    ("list 16 items (array16)", list(range(16))),
    ("list nested", [[], [[]], [1, [2, [3]]]]),
    ("list 128 levels deep (deepest allowed)", _nested_lists(MAX_DEPTH)),
    # records
    ("record empty", {}),
    ("record one", {"a": 1}),
    ("record keeps insertion order", {"b": 1, "a": 2, "1": 3}),
    ("record nested", {"user": {"name": "ada", "tags": ["x", "y"]}, "n": None}),
    ("record 16 entries (map16)", {f"k{i:02d}": i for i in range(16)}),
    ("record unicode key", {"clé": "valeur"}),
    # tagged
    ("tagged scalar", Tagged("point", 1)),
    ("tagged record", Tagged("point", {"x": 1, "y": -2})),
    ("tagged empty tag", Tagged("", None)),
    ("tagged nested", Tagged("outer", Tagged("inner", [1, 2]))),
    ("tagged in list", [Tagged("a", None), Tagged("b", [])]),
    ("tagged holding a bigint", Tagged("n", 2**64)),
    ("tagged 128 levels deep (deepest allowed)", _nested_tagged(MAX_DEPTH)),
    # errors
    ("error", RemoteError("TypeError", "bad argument")),
    ("error empty message", RemoteError("Error", "")),
    ("error with traceback", RemoteError("ValueError", "no", "Traceback (most recent call last):\n")),
    ("error in a list", [RemoteError("Error", "x"), 1]),
    # descriptors
    ("desc import-object 0", Desc(EXT_IMPORT_OBJECT, 0)),
    ("desc import-object 3", Desc(EXT_IMPORT_OBJECT, 3)),
    ("desc import-promise 7", Desc(EXT_IMPORT_PROMISE, 7)),
    ("desc export 0 (the bootstrap)", Desc(EXT_EXPORT, 0)),
    ("desc answer 0", Desc(EXT_ANSWER, 0)),
    ("desc position 255", Desc(EXT_EXPORT, 255)),
    ("desc position 256 (2 bytes)", Desc(EXT_EXPORT, 256)),
    ("desc position 65536 (3 bytes: ext8)", Desc(EXT_EXPORT, 65536)),
    ("desc position 2**32 (5 bytes)", Desc(EXT_ANSWER, 2**32)),
    ("desc position 2**53-1 (largest)", Desc(EXT_IMPORT_OBJECT, MAX_POSITION)),
    ("desc in record in list", [{"who": Desc(EXT_IMPORT_OBJECT, 1)}, Desc(EXT_IMPORT_PROMISE, 2)]),
    ("desc in tagged", Tagged("ref", Desc(EXT_IMPORT_OBJECT, 4))),
    # symbols (ext 6): the name's UTF-8 bytes
    ("symbol", Symbol("fetch")),
    ("symbol, empty name", Symbol("")),
    ("symbol, non-ASCII name", Symbol("héllo 🦊")),
    ("symbol next to the str of the same name", [Symbol("op:deliver"), "op:deliver"]),
    ("symbol as a record value and a tagged payload", {"verb": Symbol("get"), "t": Tagged("sel", Symbol("x"))}),
    ("symbol of 1024 bytes (longest)", Symbol("s" * MAX_SYMBOL_BYTES)),
    # leaves that are ext values are not counted in the nesting (§3.4), like strings
    ("bigint inside tagged 128 levels deep", _nested_tagged(MAX_DEPTH, 2**64)),
    ("symbol inside tagged 128 levels deep", _nested_tagged(MAX_DEPTH, Symbol("leaf"))),
]

# Bytes a decoder accepts although an encoder never writes them. Decoding gives
# the value; encoding the value gives different (canonical) bytes.
DECODE_ONLY: list[tuple[str, str, Any]] = [
    ("int 5 as uint8", "cc05", 5),
    ("int 5 as int64", "d30000000000000005", 5),
    ("int -1 as int16", "d1ffff", -1),
    ("int 300 as uint64", "cf000000000000012c", 300),
    ("float 1.5 as float 32", "ca3fc00000", 1.5),
    ("str as str8 although short", "d903616263", "abc"),
    ("array as array16 although short", "dc000101", [1]),
    ("map as map32 although short", "df00000001a16101", {"a": 1}),
    ("bytes as bin32 although short", "c60000000101", b"\x01"),
    ("desc as ext8 instead of fixext1", "c7010a05", Desc(EXT_IMPORT_OBJECT, 5)),
    ("bigint as ext16", "c800090101" + "00" * 8, 2**64),
]


def _ext(code: int, payload: bytes) -> str:
    """Hex of a msgpack ext with the shortest header, as msgpack writes it."""
    n = len(payload)
    fixed = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
    if n in fixed:
        head = bytes([fixed[n], code & 0xFF])
    elif n < 256:
        head = bytes([0xC7, n, code & 0xFF])
    elif n < 65536:
        head = bytes([0xC8]) + struct.pack(">H", n) + bytes([code & 0xFF])
    else:
        head = bytes([0xC9]) + struct.pack(">I", n) + bytes([code & 0xFF])
    return (head + payload).hex()


def _signed(n: int, length: int) -> bytes:
    return n.to_bytes(length, "big", signed=True)


def _deep_tagged_hex(depth: int) -> str:
    """``depth`` tagged values nested inside each other, holding nil, built by hand."""
    inner = b"\xc0"
    for _ in range(depth):
        inner = bytes.fromhex(_ext(2, bytes.fromhex("92a174") + inner))
    return inner.hex()


# Bytes every decoder must refuse (CodecError in Python).
REJECTS: list[tuple[str, str]] = [
    # bigint canonical form
    ("bigint with a redundant 0x00 byte", _ext(1, _signed(2**64, 10))),
    ("bigint with a redundant 0xff byte", _ext(1, _signed(-(2**63) - 1, 10))),
    ("bigint 5 (fits msgpack int)", _ext(1, b"\x05")),
    ("bigint 0 (fits msgpack int)", _ext(1, b"\x00")),
    ("bigint 2**64-1 (fits uint64)", _ext(1, _signed(2**64 - 1, 9))),
    ("bigint 2**63 (fits uint64)", _ext(1, _signed(2**63, 9))),
    ("bigint -2**63 (fits int64)", _ext(1, _signed(-(2**63), 8))),
    ("bigint empty payload", _ext(1, b"")),
    ("bigint payload of 4097 bytes", _ext(1, _signed(2 ** (MAX_BIGINT_BYTES * 8 - 1), MAX_BIGINT_BYTES + 1))),
    # positions
    ("position padded with 0x00", _ext(EXT_EXPORT, b"\x00\x01")),
    ("position 0 written in 2 bytes", _ext(EXT_IMPORT_OBJECT, b"\x00\x00")),
    ("position empty", _ext(EXT_ANSWER, b"")),
    ("position 2**53 (above 2**53-1)", _ext(EXT_IMPORT_OBJECT, (2**53).to_bytes(7, "big"))),
    ("position 2**56-1 (7 bytes, above 2**53-1)", _ext(EXT_IMPORT_PROMISE, b"\xff" * 7)),
    ("position in 8 bytes", _ext(EXT_EXPORT, (2**56).to_bytes(8, "big"))),
    # unknown or forbidden ext codes
    ("ext code 0", _ext(0, b"\x00")),
    ("ext code 4", _ext(4, b"\x00")),
    ("ext code 9", _ext(9, b"\x00")),
    ("ext code 14", _ext(14, b"\x00")),
    ("ext code 127", _ext(127, b"\x00")),
    ("ext code -2", _ext(-2, b"\x00")),
    ("timestamp ext (-1), 32-bit", "d6ff00000001"),
    ("timestamp ext (-1), 64-bit", "d7ff0000000000000001"),
    ("unknown ext inside a list", "91" + _ext(5, b"\x00")),
    # records
    ("record with an int key", "810102"),
    ("record with a nil key", "81c001"),
    ("record with a bytes key", "81c4016101"),
    ("record with an array key", "819101c0"),
    ("record nested with an int key", "81a16181" + "0102"),
    # strings
    ("str with bad UTF-8 (c3 28)", "a2c328"),
    ("str with a lone continuation byte", "a180"),
    ("str with an encoded surrogate (ed a0 80)", "a3eda080"),
    ("str with an overlong encoding (c0 af)", "a2c0af"),
    ("record key with bad UTF-8", "81a1ff01"),
    # tagged
    ("tagged payload not an array", _ext(2, b"\x00")),
    ("tagged array of 1", _ext(2, bytes.fromhex("91a174"))),
    ("tagged array of 3", _ext(2, bytes.fromhex("93a174c0c0"))),
    ("tagged tag not a str", _ext(2, bytes.fromhex("9201c0"))),
    ("tagged with bytes after the array", _ext(2, bytes.fromhex("92a174c0c0"))),
    ("tagged empty payload", _ext(2, b"")),
    ("tagged 129 levels deep", _deep_tagged_hex(MAX_DEPTH + 1)),
    # errors
    ("error array of 1", _ext(3, bytes.fromhex("91a145"))),
    ("error array of 4", _ext(3, bytes.fromhex("94a145a0a0a0"))),
    ("error message not a str", _ext(3, bytes.fromhex("92a14501"))),
    ("error name nil", _ext(3, bytes.fromhex("92c0a0"))),
    ("error payload a map", _ext(3, bytes.fromhex("81a16e01"))),
    # malformed msgpack
    ("empty input", ""),
    ("reserved byte c1", "c1"),
    ("truncated array", "9201"),
    ("truncated str", "a3616263"[:6]),
    ("two values (trailing bytes)", "c0c0"),
    ("list 129 levels deep", "91" * (MAX_DEPTH + 1) + "c0"),
    # symbols
    ("symbol not UTF-8 (ff)", _ext(6, b"\xff")),
    ("symbol with an encoded surrogate (ed a0 80)", _ext(6, bytes.fromhex("eda080"))),
    ("symbol with an overlong encoding (c0 af)", _ext(6, bytes.fromhex("c0af"))),
    ("symbol of 1025 bytes", _ext(6, b"s" * (MAX_SYMBOL_BYTES + 1))),
    ("symbol not UTF-8, inside a list", "91" + _ext(6, bytes.fromhex("c328"))),
]

# Values an encoder must refuse (TypeError in Python).
ENCODE_REJECTS: list[tuple[str, Any]] = [
    ("bigint needing 4097 bytes", 2 ** (MAX_BIGINT_BYTES * 8 - 1)),
    ("list 129 levels deep", _nested_lists(MAX_DEPTH + 1)),
    ("tagged 129 levels deep", _nested_tagged(MAX_DEPTH + 1)),
    ("symbol of 1025 bytes", Symbol("s" * (MAX_SYMBOL_BYTES + 1))),
    ("symbol of 513 two-byte characters (1026 bytes)", Symbol("é" * (MAX_SYMBOL_BYTES // 2 + 1))),
]


# ---------------------------------------------------------------------------
# Message vectors.


def imp(pos: int) -> Desc:
    return Desc(EXT_IMPORT_OBJECT, pos)


def imp_promise(pos: int) -> Desc:
    return Desc(EXT_IMPORT_PROMISE, pos)


def exp(pos: int) -> Desc:
    return Desc(EXT_EXPORT, pos)


def ans(pos: int) -> Desc:
    return Desc(EXT_ANSWER, pos)


START = ["start-session", PROTOCOL_VERSION]

# One complete frame for each op (the msgpack message, no length prefix).
FRAMES: list[tuple[str, list[Any]]] = [
    ("start-session", START),
    ("deliver: call the bootstrap, answer at 0, result to resolver 1",
     ["deliver", exp(0), "hello", ["world"], 0, imp(1)]),
    ("deliver: pipelined on answer 0", ["deliver", ans(0), "drive", [], 1, imp(2)]),
    ("deliver: no answer position, no resolver", ["deliver", exp(0), "ping", [], None, None]),
    ("deliver: passing a reference and a promise",
     ["deliver", exp(0), "watch", [imp(3), imp_promise(4)], 2, imp(5)]),
    ("deliver-only", ["deliver-only", exp(0), "log", ["hi", 42]]),
    ("deliver-only: fulfill a resolver", ["deliver-only", exp(1), "fulfill", ["hello world"]]),
    ("deliver-only: break a resolver",
     ["deliver-only", exp(1), "break", [RemoteError("TypeError", "no method 'helo'")]]),
    ("listen", ["listen", exp(3), imp(6), False]),
    ("gc-exports", ["gc-exports", [1, 3], [1, 2]]),
    ("gc-answers", ["gc-answers", [0, 1]]),
    ("abort", ["abort", "closed"]),
    ("abort with detail", ["abort", "unknown-op: 'frobnicate'"]),
    ("deliver without a method: call the target itself",
     ["deliver", exp(1), None, [2, 3], 0, imp(1)]),
    ("deliver-only without a method", ["deliver-only", exp(1), None, ["hi"]]),
    ("deliver-only: break a resolver with a value that is not an error",
     ["deliver-only", exp(1), "break", ["not found"]]),
    ("deliver: a symbol argument", ["deliver", exp(0), "echo", [Symbol("fetch")], 0, imp(1)]),
]

STREAM_EXAMPLES: list[tuple[str, list[Any]]] = [
    ("start-session on a stream", START),
    ("deliver on a stream", ["deliver", exp(0), "hello", ["world"], 0, imp(1)]),
]

#: Binary messages under the WebSocket subprotocol ``ocapd-captp.batch``: each frame as on a stream, joined.
WEBSOCKET_BATCH_EXAMPLES: list[tuple[str, list[list[Any]]]] = [
    ("start-session and a deliver-only in one message", [START, ["deliver-only", exp(0), "hello", []]]),
    ("one frame alone", [["deliver", exp(0), "hello", ["world"], 0, imp(1)]]),
]

Raw = bytes  # a frame given as raw bytes rather than a message to encode

# Frames a started session (bootstrap: the vector bootstrap, README.md) must
# abort on: (name, started, prelude messages, frame, abort code, Limits overrides).
MESSAGE_REJECTS: list[tuple[str, bool, list[Any], Any, str, dict[str, int]]] = [
    # before start-session
    ("deliver before start-session", False, [], ["deliver", exp(0), "echo", [], None, None], "not-started", {}),
    ("unknown op before start-session", False, [], ["frobnicate"], "not-started", {}),
    ("version mismatch", False, [], ["start-session", "ocapd-captp/0"], "version-mismatch", {}),
    ("version not a str", False, [], ["start-session", 1], "version-mismatch", {}),
    ("start-session without a version", False, [], ["start-session"], "bad-arity", {}),
    ("start-session with an extra field", False, [], ["start-session", PROTOCOL_VERSION, {}], "bad-arity", {}),
    ("duplicate start-session", True, [], START, "bad-field", {}),
    # framing and shape
    ("empty frame", True, [], Raw(b""), "malformed-frame", {}),
    ("not msgpack (c1)", True, [], Raw(b"\xc1"), "malformed-frame", {}),
    ("two values in one frame", True, [], Raw(codec.encode(["gc-answers", []]) + b"\xc0"), "malformed-frame", {}),
    ("truncated frame", True, [], Raw(codec.encode(["deliver-only", exp(0), "echo", []])[:-1]), "malformed-frame", {}),
    ("message not an array", True, [], {"op": "deliver"}, "malformed-frame", {}),
    ("message nil", True, [], None, "malformed-frame", {}),
    ("message an empty array", True, [], [], "malformed-frame", {}),
    ("bad UTF-8 in a method name", True, [],
     Raw(bytes.fromhex("94ac64656c697665722d6f6e6c79d40c00a2c32890")), "malformed-frame", {}),
    ("non-canonical bigint in a field", True, [],
     Raw(bytes.fromhex("92aa67632d616e7377657273" + _ext(1, b"\x05"))), "malformed-frame", {}),
    ("timestamp ext in args", True, [],
     Raw(bytes.fromhex("94ac64656c697665722d6f6e6c79d40c00a46563686f91d6ff00000001")), "malformed-frame", {}),
    ("record with an int key in args", True, [],
     Raw(bytes.fromhex("94ac64656c697665722d6f6e6c79d40c00a46563686f91810102")), "malformed-frame", {}),
    ("frame of 65 bytes, max_frame_size 64", True, [], ["deliver-only", exp(0), "echo", ["x" * 40]],
     "frame-too-large", {"max_frame_size": 64}),
    # ops and arity
    ("unknown op", True, [], ["frobnicate", 1], "unknown-op", {}),
    ("op in another case", True, [], ["Deliver", exp(0), "echo", [], None, None], "unknown-op", {}),
    ("op not a str", True, [], [1, 2], "unknown-op", {}),
    ("deliver with 4 fields", True, [], ["deliver", exp(0), "echo", [], None], "bad-arity", {}),
    ("deliver with 6 fields", True, [], ["deliver", exp(0), "echo", [], None, None, None], "bad-arity", {}),
    ("deliver-only with 4 fields", True, [], ["deliver-only", exp(0), "echo", [], None], "bad-arity", {}),
    ("listen without wants_partial", True, [], ["listen", exp(0), imp(1)], "bad-arity", {}),
    ("gc-exports with 1 field", True, [], ["gc-exports", []], "bad-arity", {}),
    ("gc-answers with 2 fields", True, [], ["gc-answers", [], []], "bad-arity", {}),
    ("abort without a reason", True, [], ["abort"], "bad-arity", {}),
    ("abort with 2 fields", True, [], ["abort", "closed", 1], "bad-arity", {}),
    # deliver fields
    ("deliver target not a descriptor", True, [], ["deliver", 0, "echo", [], None, None], "bad-field", {}),
    ("deliver target an import-object", True, [], ["deliver", imp(0), "echo", [], None, None], "bad-field", {}),
    ("deliver target an import-promise", True, [], ["deliver", imp_promise(0), "echo", [], None, None],
     "bad-field", {}),
    ("deliver method not a str", True, [], ["deliver", exp(0), b"echo", [], None, None], "bad-field", {}),
    ("deliver method longer than 128", True, [], ["deliver", exp(0), "m" * 129, [], None, None], "bad-field", {}),
    ("deliver args not an array", True, [], ["deliver", exp(0), "echo", {}, None, None], "bad-field", {}),
    ("deliver answer position negative", True, [], ["deliver", exp(0), "echo", [], -1, None], "bad-field", {}),
    ("deliver answer position 2**53", True, [], ["deliver", exp(0), "echo", [], 2**53, None], "bad-field", {}),
    ("deliver answer position a str", True, [], ["deliver", exp(0), "echo", [], "0", None], "bad-field", {}),
    ("deliver answer position a bool", True, [], ["deliver", exp(0), "echo", [], True, None], "bad-field", {}),
    ("deliver answer position a float", True, [], ["deliver", exp(0), "echo", [], 0.0, None], "bad-field", {}),
    ("deliver resolve_me an export", True, [], ["deliver", exp(0), "echo", [], 0, exp(0)], "bad-field", {}),
    ("deliver resolve_me an import-promise", True, [], ["deliver", exp(0), "echo", [], 0, imp_promise(1)],
     "bad-field", {}),
    ("deliver resolve_me an int", True, [], ["deliver", exp(0), "echo", [], 0, 1], "bad-field", {}),
    ("deliver-only target not a descriptor", True, [], ["deliver-only", "0", "echo", []], "bad-field", {}),
    ("deliver-only args not an array", True, [], ["deliver-only", exp(0), "echo", None], "bad-field", {}),
    ("import position changes from object to promise", True,
     [["deliver", exp(0), "echo", [imp(5)], 0, None]],
     ["deliver", exp(0), "echo", [imp_promise(5)], 1, None], "bad-field", {}),
    # positions
    ("deliver to an unknown export", True, [], ["deliver", exp(7), "echo", [], None, None], "unknown-position", {}),
    ("deliver to an unknown answer", True, [], ["deliver", ans(0), "echo", [], None, None], "unknown-position", {}),
    ("deliver-only to an unknown export", True, [], ["deliver-only", exp(1), "fulfill", [1]],
     "unknown-position", {}),
    ("unknown export in args", True, [], ["deliver", exp(0), "echo", [exp(9)], None, None], "unknown-position", {}),
    ("unknown answer in args", True, [], ["deliver", exp(0), "echo", [ans(9)], None, None], "unknown-position", {}),
    ("answer position already in use", True,
     [["deliver", exp(0), "echo", [1], 0, None]],
     ["deliver", exp(0), "echo", [2], 0, None], "position-in-use", {}),
    ("too many pending answers", True,
     [["deliver", exp(0), "echo", [1], 0, None]],
     ["deliver", exp(0), "echo", [2], 1, None], "limit-exceeded", {"max_answers": 1}),
    ("too many imports", True,
     [["deliver", exp(0), "echo", [imp(1)], 0, None]],
     ["deliver", exp(0), "echo", [imp(2)], 1, None], "limit-exceeded", {"max_imports": 1}),
    # listen
    ("listen resolver an export", True, [], ["listen", exp(0), exp(0), False], "bad-field", {}),
    ("listen resolver nil", True, [], ["listen", exp(0), None, False], "bad-field", {}),
    ("listen wants_partial nil", True, [], ["listen", exp(0), imp(1), None], "bad-field", {}),
    ("listen target an import-object", True, [], ["listen", imp(0), imp(1), False], "bad-field", {}),
    ("listen to an unknown export", True, [], ["listen", exp(4), imp(1), False], "unknown-position", {}),
    # gc
    ("gc-exports arrays of different lengths", True, [], ["gc-exports", [0], []], "bad-field", {}),
    ("gc-exports positions not an array", True, [], ["gc-exports", 0, [1]], "bad-field", {}),
    ("gc-exports delta 0", True, [], ["gc-exports", [0], [0]], "bad-field", {}),
    ("gc-exports delta negative", True, [], ["gc-exports", [0], [-1]], "bad-field", {}),
    ("gc-exports position not an int", True, [], ["gc-exports", ["0"], [1]], "bad-field", {}),
    ("gc-exports more than was sent", True, [], ["gc-exports", [0], [1]], "bad-field", {}),
    ("gc-exports unknown position", True, [], ["gc-exports", [5], [1]], "unknown-position", {}),
    ("gc-answers not an array", True, [], ["gc-answers", 0], "bad-field", {}),
    ("gc-answers unknown position", True, [], ["gc-answers", [0]], "unknown-position", {}),
    ("gc-answers position not an int", True, [], ["gc-answers", ["x"]], "bad-field", {}),
    ("gc-answers twice", True,
     [["deliver", exp(0), "echo", [1], 0, None], ["gc-answers", [0]]],
     ["gc-answers", [0]], "unknown-position", {}),
    # calls without a method, symbols
    ("deliver method a symbol", True, [], ["deliver", exp(0), Symbol("echo"), [], None, None], "bad-field", {}),
    ("deliver-only method a symbol", True, [], ["deliver-only", exp(0), Symbol("echo"), []], "bad-field", {}),
    ("deliver method false (not nil)", True, [], ["deliver", exp(0), False, [], None, None], "bad-field", {}),
    ("symbol not UTF-8 in args", True, [],
     Raw(codec.encode(["deliver-only", exp(0), "echo", []])[:-1] + bytes.fromhex("91" + _ext(6, b"\xff"))),
     "malformed-frame", {}),
    ("symbol of 1025 bytes in args", True, [],
     Raw(codec.encode(["deliver-only", exp(0), "echo", []])[:-1] + bytes.fromhex("91" + _ext(6, b"s" * (MAX_SYMBOL_BYTES + 1)))),
     "malformed-frame", {}),
]

# Exchanges with the vector bootstrap: frames in, the frames the session must
# send (gc-exports / gc-answers excluded: their timing depends on the garbage
# collector), and how the session ends, if it does.
EXCHANGES: list[tuple[str, list[tuple[str, Any]], dict[str, Any] | None]] = [
    ("the session speaks first", [("out", START)], None),
    ("call with a resolver", [
        ("out", START),
        ("in", START),
        ("in", ["deliver", exp(0), "echo", ["hi"], 0, imp(1)]),
        ("out", ["deliver-only", exp(1), "fulfill", ["hi"]]),
    ], None),
    ("a failing call breaks the resolver", [
        ("out", START),
        ("in", START),
        ("in", ["deliver", exp(0), "fail", ["boom"], 0, imp(1)]),
        ("out", ["deliver-only", exp(1), "break", [RemoteError("Error", "boom")]]),
    ], None),
    ("pipelining on an answer", [
        ("out", START),
        ("in", START),
        ("in", ["deliver", exp(0), "self", [], 0, None]),
        ("in", ["deliver", ans(0), "echo", [7], 1, imp(1)]),
        ("out", ["deliver-only", exp(1), "fulfill", [7]]),
    ], None),
    ("an answer passed back as an argument", [
        ("out", START),
        ("in", START),
        ("in", ["deliver", exp(0), "echo", [{"k": 1}], 0, None]),
        ("in", ["deliver", exp(0), "echo", [ans(0)], 1, imp(1)]),
        ("out", ["deliver-only", exp(1), "fulfill", [{"k": 1}]]),
    ], None),
    ("listen on an answer", [
        ("out", START),
        ("in", START),
        ("in", ["deliver", exp(0), "echo", [5], 0, None]),
        ("in", ["listen", ans(0), imp(1), False]),
        ("out", ["deliver-only", exp(1), "fulfill", [5]]),
    ], None),
    ("listen on an object fulfills with the object", [
        ("out", START),
        ("in", START),
        ("in", ["listen", exp(0), imp(1), False]),
        ("out", ["deliver-only", exp(1), "fulfill", [imp(0)]]),
    ], None),
    ("a reference comes back as an export", [
        ("out", START),
        ("in", START),
        ("in", ["deliver", exp(0), "echo", [imp(3)], 0, imp(1)]),
        ("out", ["deliver-only", exp(1), "fulfill", [exp(3)]]),
    ], None),
    ("the bootstrap goes out as import-object 0", [
        ("out", START),
        ("in", START),
        ("in", ["deliver", exp(0), "self", [], 0, imp(1)]),
        ("out", ["deliver-only", exp(1), "fulfill", [imp(0)]]),
        ("in", ["gc-exports", [0], [1]]),
    ], None),
    ("deliver-only sends nothing back", [
        ("out", START),
        ("in", START),
        ("in", ["deliver-only", exp(0), "fail", ["ignored"]]),
        ("out", None),
    ], None),
    ("the peer aborts", [
        ("out", START),
        ("in", START),
        ("in", ["abort", "closed: bye"]),
        ("out", None),
    ], {"code": "closed", "detail": "bye", "by_peer": True}),
    ("the peer aborts before start-session", [
        ("out", START),
        ("in", ["abort", "version-mismatch: peer speaks 'ocapd-captp/1'"]),
        ("out", None),
    ], {"code": "version-mismatch", "detail": "peer speaks 'ocapd-captp/1'", "by_peer": True}),
    ("a failed call is not a protocol error", [
        ("out", START),
        ("in", START),
        ("in", ["deliver", exp(0), "nosuchmethod", [], 0, None]),
        ("in", ["deliver", exp(0), "_private", [], 1, None]),
        ("in", ["deliver-only", exp(0), "fail", ["boom"]]),
        ("in", ["deliver", exp(0), "echo", ["still here"], 2, imp(1)]),
        ("out", ["deliver-only", exp(1), "fulfill", ["still here"]]),
    ], None),
    ("a call without a method calls a far function", [
        ("out", START),
        ("in", START),
        ("in", ["deliver", exp(0), "adder", [], 0, imp(1)]),
        ("out", ["deliver-only", exp(1), "fulfill", [imp(1)]]),
        ("in", ["deliver", exp(1), None, [2, 3], 1, imp(2)]),
        ("out", ["deliver-only", exp(2), "fulfill", [5]]),
        ("in", ["deliver-only", exp(1), None, [4, 4]]),
        ("out", None),
    ], None),
    ("a call without a method on an object that is not a function is rejected", [
        ("out", START),
        ("in", START),
        ("in", ["deliver", exp(0), None, ["x"], 0, imp(1)]),
        ("out", ["deliver-only", exp(1), "break", [RemoteError("TypeError", "VectorBootstrap is not a function")]]),
        ("in", ["deliver-only", exp(0), None, []]),
        ("in", ["deliver", exp(0), "echo", ["still here"], 1, imp(2)]),
        ("out", ["deliver-only", exp(2), "fulfill", ["still here"]]),
    ], None),
    ("a promise broken with a value that is not an error sends the value", [
        ("out", START),
        ("in", START),
        ("in", ["deliver", exp(0), "reject", ["not found"], 0, imp(1)]),
        ("out", ["deliver-only", exp(1), "break", ["not found"]]),
        ("in", ["deliver", exp(0), "reject", [{"code": 404}], 1, imp(2)]),
        ("out", ["deliver-only", exp(2), "break", [{"code": 404}]]),
    ], None),
    ("a break value may be a reference", [
        ("out", START),
        ("in", START),
        ("in", ["deliver", exp(0), "reject", [imp(3)], 0, imp(1)]),
        ("out", ["deliver-only", exp(1), "break", [exp(3)]]),
    ], None),
    ("a symbol comes back as a symbol", [
        ("out", START),
        ("in", START),
        ("in", ["deliver", exp(0), "echo", [[Symbol("fetch"), "fetch"]], 0, imp(1)]),
        ("out", ["deliver-only", exp(1), "fulfill", [[Symbol("fetch"), "fetch"]]]),
    ], None),
]


def _frame_hex(frame: Any) -> str:
    return (frame if type(frame) is bytes else codec.encode(frame)).hex()


# ---------------------------------------------------------------------------
# Building the documents.


def build_values() -> dict[str, Any]:
    return {
        "about": "ocapd-captp value encoding vectors; notation in README.md, rules in docs/protocol.md",
        "values": [
            {"name": name, "value": to_notation(v), "hex": codec.encode(v).hex()} for name, v in VALUES
        ],
        "decode_only": [
            {"name": name, "hex": hex_, "value": to_notation(v)} for name, hex_, v in DECODE_ONLY
        ],
        "rejects": [{"name": name, "hex": hex_, "error": "CodecError"} for name, hex_ in REJECTS],
        "encode_rejects": [
            {"name": name, "value": to_notation(v), "error": "TypeError"} for name, v in ENCODE_REJECTS
        ],
    }


def build_messages() -> dict[str, Any]:
    def step(direction: str, frame: Any) -> dict[str, Any]:
        if frame is None:
            return {direction: None}
        return {direction: _frame_hex(frame), "message": to_notation(frame)}

    return {
        "about": "ocapd-captp message vectors; notation in README.md, rules in docs/protocol.md",
        "version": PROTOCOL_VERSION,
        "frames": [
            {"name": name, "message": to_notation(msg), "hex": codec.encode(msg).hex()} for name, msg in FRAMES
        ],
        "stream_frames": [
            {
                "name": name,
                "message": to_notation(msg),
                "hex": (struct.pack(">I", len(codec.encode(msg))) + codec.encode(msg)).hex(),
            }
            for name, msg in STREAM_EXAMPLES
        ],
        "websocket_batches": [
            {
                "name": name,
                "messages": [to_notation(m) for m in msgs],
                "hex": b"".join(struct.pack(">I", len(codec.encode(m))) + codec.encode(m) for m in msgs).hex(),
            }
            for name, msgs in WEBSOCKET_BATCH_EXAMPLES
        ],
        "rejects": [
            {
                "name": name,
                "started": started,
                "prelude": [_frame_hex(m) for m in prelude],
                "hex": _frame_hex(frame),
                "abort_code": code,
                "limits": limits,
            }
            for name, started, prelude, frame, code, limits in MESSAGE_REJECTS
        ],
        "exchanges": [
            {"name": name, "steps": [step(d, f) for d, f in steps], "aborted": aborted}
            for name, steps, aborted in EXCHANGES
        ],
    }


def render(doc: dict[str, Any]) -> str:
    """JSON with one vector per line: diffable, and still plain JSON."""
    parts = ["{"]
    keys = list(doc)
    for i, key in enumerate(keys):
        comma = "," if i < len(keys) - 1 else ""
        value = doc[key]
        if type(value) is list:
            parts.append(f"  {json.dumps(key)}: [")
            for j, item in enumerate(value):
                sep = "," if j < len(value) - 1 else ""
                parts.append("    " + json.dumps(item, ensure_ascii=False) + sep)
            parts.append("  ]" + comma)
        else:
            parts.append(f"  {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}{comma}")
    parts.append("}")
    return "\n".join(parts) + "\n"


def outputs() -> dict[Path, str]:
    return {VALUES_FILE: render(build_values()), MESSAGES_FILE: render(build_messages())}


def check() -> list[str]:
    """Names of the vector files that differ from what this script would write."""
    stale = []
    for path, text in outputs().items():
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(path.name)
    return stale


# ---------------------------------------------------------------------------
# An annotated hex dump, for docs/protocol.md.


def annotate(data: bytes) -> list[str]:
    """One line per msgpack item: its bytes in hex and what they mean."""
    lines: list[str] = []

    def item(pos: int, indent: int) -> int:
        b = data[pos]
        pad = "  " * indent

        def emit(end: int, text: str) -> None:
            lines.append(f"{pad}{data[pos:end].hex(' '):<40} {text}")

        if b <= 0x7F:
            emit(pos + 1, f"int {b}")
            return pos + 1
        if b >= 0xE0:
            emit(pos + 1, f"int {b - 256}")
            return pos + 1
        if 0xA0 <= b <= 0xBF or b in (0xD9, 0xDA, 0xDB):
            if b <= 0xBF:
                n, start = b & 0x1F, pos + 1
            else:
                width = {0xD9: 1, 0xDA: 2, 0xDB: 4}[b]
                n, start = int.from_bytes(data[pos + 1 : pos + 1 + width], "big"), pos + 1 + width
            emit(start + n, f"str {data[start:start + n].decode()!r}")
            return start + n
        if 0x90 <= b <= 0x9F or b in (0xDC, 0xDD):
            if b <= 0x9F:
                n, start = b & 0x0F, pos + 1
            else:
                width = 2 if b == 0xDC else 4
                n, start = int.from_bytes(data[pos + 1 : pos + 1 + width], "big"), pos + 1 + width
            lines.append(f"{pad}{data[pos:start].hex(' '):<40} array({n})")
            for _ in range(n):
                start = item(start, indent + 1)
            return start
        if 0x80 <= b <= 0x8F:
            n, start = b & 0x0F, pos + 1
            lines.append(f"{pad}{data[pos:start].hex(' '):<40} map({n})")
            for _ in range(2 * n):
                start = item(start, indent + 1)
            return start
        simple = {0xC0: "nil", 0xC2: "false", 0xC3: "true"}
        if b in simple:
            emit(pos + 1, simple[b])
            return pos + 1
        ints = {0xCC: (1, False), 0xCD: (2, False), 0xCE: (4, False), 0xCF: (8, False),
                0xD0: (1, True), 0xD1: (2, True), 0xD2: (4, True), 0xD3: (8, True)}
        if b in ints:
            width, signed = ints[b]
            end = pos + 1 + width
            emit(end, f"int {int.from_bytes(data[pos + 1:end], 'big', signed=signed)}")
            return end
        if b in (0xC4, 0xC5, 0xC6):
            width = {0xC4: 1, 0xC5: 2, 0xC6: 4}[b]
            n = int.from_bytes(data[pos + 1 : pos + 1 + width], "big")
            end = pos + 1 + width + n
            emit(end, f"bin({n})")
            return end
        if b == 0xCB:
            emit(pos + 9, f"float64 {struct.unpack('>d', data[pos + 1:pos + 9])[0]!r}")
            return pos + 9
        fixext = {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}
        if b in fixext or b in (0xC7, 0xC8, 0xC9):
            if b in fixext:
                n, head = fixext[b], pos + 1
            else:
                width = {0xC7: 1, 0xC8: 2, 0xC9: 4}[b]
                n, head = int.from_bytes(data[pos + 1 : pos + 1 + width], "big"), pos + 1 + width
            code = int.from_bytes(data[head : head + 1], "big", signed=True)
            payload = data[head + 1 : head + 1 + n]
            end = head + 1 + n
            if code in DESC_NAMES:
                emit(end, f"ext {code} {DESC_NAMES[code]} {int.from_bytes(payload, 'big')}")
            elif code == 1:
                emit(end, f"ext 1 bigint {int.from_bytes(payload, 'big', signed=True)}")
            else:
                lines.append(f"{pad}{data[pos:head + 1].hex(' '):<40} ext {code}, payload {n} bytes:")
                inner = item_at(payload, indent + 1)
                lines.extend(inner)
            return end
        raise ValueError(f"cannot annotate byte {b:#x}")

    def item_at(payload: bytes, indent: int) -> list[str]:
        saved = list(lines)
        lines.clear()
        nonlocal data
        outer, data = data, payload
        item(0, indent)
        data = outer
        inner, lines[:] = list(lines), saved
        return inner

    item(0, 0)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if the files are not up to date")
    parser.add_argument("--annotate", action="store_true", help="print annotated message frames")
    args = parser.parse_args(argv)
    if args.annotate:
        for name, msg in FRAMES:
            print(f"# {name}\n# {codec.encode(msg).hex()}")
            print("\n".join(annotate(codec.encode(msg))), end="\n\n")
        return 0
    if args.check:
        stale = check()
        if stale:
            print("out of date: " + ", ".join(stale) + " (run tests/vectors/generate.py)")
            return 1
        print("vectors up to date")
        return 0
    for path, text in outputs().items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
