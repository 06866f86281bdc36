"""The codec as a specification: every passable value survives a round trip, and
every value has exactly one encoding (canonical forms), so that two
implementations of docs/protocol.md agree byte for byte on what a frame says.

Bad bytes are refused with ``CodecError``; values that cannot be passed are
refused with ``TypeError`` — the codec never raises anything else.
"""

from __future__ import annotations

import enum
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgpack import ExtType
from strict_equality import same

from ocapd.captp.codec import (
    EXT_ANSWER,
    EXT_BIGINT,
    EXT_ERROR,
    EXT_EXPORT,
    EXT_IMPORT_OBJECT,
    EXT_IMPORT_PROMISE,
    EXT_SYMBOL,
    EXT_TAGGED,
    MAX_BIGINT_BYTES,
    MAX_DEPTH,
    MAX_POSITION,
    MAX_SYMBOL_BYTES,
    CodecError,
    Desc,
    decode,
    encode,
)
from ocapd.captp.passable import Far, RemoteError, Symbol, Tagged, far

DESC_CODES = [EXT_IMPORT_OBJECT, EXT_IMPORT_PROMISE, EXT_EXPORT, EXT_ANSWER]

#: The largest and smallest ints a bigint ext can carry (MAX_BIGINT_BYTES of two's complement).
BIGINT_MAX = 2 ** (8 * MAX_BIGINT_BYTES - 1) - 1
BIGINT_MIN = -(2 ** (8 * MAX_BIGINT_BYTES - 1))

#: Where the wire changes representation: msgpack's own ints end, bigint exts begin.
INT_EDGES = [
    -(2**63) - 1,
    -(2**63),
    -(2**63) + 1,
    -1,
    0,
    1,
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    2**64 + 1,
    -(2**64),
    2**71 - 1,
    2**71,
    -(2**71),
    -(2**71) - 1,
    2**72,
]
#: The ends of the bigint range. Kept apart from INT_EDGES: their decimal forms
#: are longer than Python's int-to-str limit, and hypothesis prints strategies.
BIGINT_ENDS = [BIGINT_MAX, BIGINT_MIN]


# ---------------------------------------------------------------------------
# helpers


def raw_ext(code: int, payload: bytes) -> bytes:
    """An ext value as msgpack bytes, for any code (msgpack.ExtType refuses negative ones)."""
    return b"\xc7" + bytes([len(payload)]) + struct.pack(">b", code) + payload


def split_ext(data: bytes) -> Any:
    """Decode msgpack bytes keeping ext values as ``ExtType`` (to look at the wire form)."""
    return msgpack.unpackb(data, raw=False, ext_hook=ExtType, strict_map_key=False)


def min_bigint_payload(n: int) -> bytes:
    """The shortest two's complement big-endian bytes holding ``n``."""
    length = 1
    while True:
        try:
            return n.to_bytes(length, "big", signed=True)
        except OverflowError:
            length += 1


def minimal_position(pos: int) -> bytes:
    return pos.to_bytes(max(1, (pos.bit_length() + 7) // 8), "big")


def as_decoded(value: Any) -> Any:
    """What ``decode(encode(value))`` should give: tuples come back as lists (copy arrays)."""
    if type(value) in (list, tuple):
        return [as_decoded(v) for v in value]
    if type(value) is dict:
        return {k: as_decoded(v) for k, v in value.items()}
    if type(value) is Tagged:
        return Tagged(value.tag, as_decoded(value.payload))
    return value



def nested(kind: str, depth: int, leaf: Any = None) -> Any:
    """A value with ``depth`` levels of containers of one kind around ``leaf``."""
    value = leaf
    for _ in range(depth):
        if kind == "list":
            value = [value]
        elif kind == "dict":
            value = {"k": value}
        elif kind == "tuple":
            value = (value,)
        else:
            value = Tagged("t", value)
    return value


def nested_bytes(kind: str, depth: int) -> bytes:
    """``depth`` levels of one container kind around nil, built directly as bytes.

    Built without msgpack so that depths far beyond what a packer allows (and
    100,000-level tagged values, whose payloads nest) cost linear time.
    """
    if kind == "list":
        return b"\x91" * depth + b"\xc0"
    if kind == "dict":
        return b"\x81\xa1k" * depth + b"\xc0"
    # tagged: ext32(2, [ "t", <inner> ]) around nil, sizes computed from the inside out
    headers = []
    size = 1  # nil
    for _ in range(depth):
        payload = 3 + size  # fixarray(2) + fixstr "t" + inner
        header = b"\xc9" + struct.pack(">Ib", payload, EXT_TAGGED) + b"\x92\xa1t"
        headers.append(header)
        size = len(header) + size
    return b"".join(reversed(headers)) + b"\xc0"


# ---------------------------------------------------------------------------
# strategies

ints = st.one_of(
    st.integers(),
    st.sampled_from(INT_EDGES),
    st.sampled_from([0, 1]).map(lambda i: BIGINT_ENDS[i]),
    st.integers(min_value=-(2**600), max_value=2**600),
    # far beyond 64 bits, both signs, near powers of two where lengths change
    st.builds(
        lambda bits, sign, delta: sign * (2**bits) + delta,
        st.integers(min_value=60, max_value=8 * MAX_BIGINT_BYTES - 2),
        st.sampled_from([1, -1]),
        st.integers(min_value=-2, max_value=2),
    ),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    ints,
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(),  # every code point that UTF-8 can carry
    st.binary(),
)
errors = st.builds(RemoteError, st.text(), st.text(), st.none() | st.text())
passables = st.recursive(
    st.one_of(scalars, errors),
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.lists(children, max_size=5).map(tuple),
        st.dictionaries(st.text(), children, max_size=5),
        st.builds(Tagged, st.text(), children),
    ),
    max_leaves=25,
)

FAST = settings(deadline=None, derandomize=True, database=None)


# ---------------------------------------------------------------------------
# round trips


@settings(FAST, max_examples=600, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(passables)
def test_every_passable_value_survives_a_round_trip(value: Any) -> None:
    # Tuples are copy arrays like lists: they come back as lists.
    data = encode(value)
    back = decode(data)
    assert same(back, as_decoded(value))
    # One value, one encoding: re-encoding what was decoded gives the same bytes.
    assert encode(back) == data


@settings(FAST, max_examples=300)
@given(ints)
def test_ints_of_any_size_survive_a_round_trip(n: int) -> None:
    back = decode(encode(n))
    assert type(back) is int and back == n


@pytest.mark.parametrize(
    "n", INT_EDGES + BIGINT_ENDS, ids=[f"{'-' if n < 0 else '+'}{n.bit_length()}bits" for n in INT_EDGES + BIGINT_ENDS]
)
def test_int_edges_survive_a_round_trip(n: int) -> None:
    assert decode(encode(n)) == n
    assert decode(encode([n, {"n": n}])) == [n, {"n": n}]


@pytest.mark.parametrize(
    "value",
    [float("nan"), -0.0, 0.0, float("inf"), float("-inf"), 5e-324, 1.7976931348623157e308],
)
def test_special_floats_survive_a_round_trip(value: float) -> None:
    assert same(decode(encode(value)), value)


def test_bools_stay_bools_and_ints_stay_ints() -> None:
    assert [type(v) for v in decode(encode([True, 1, False, 0]))] == [bool, int, bool, int]


def test_tuples_come_back_as_lists() -> None:
    assert decode(encode((1, (2, 3), [4, (5,)]))) == [1, [2, 3], [4, [5]]]


def test_tagged_values_nest_inside_each_other() -> None:
    value = Tagged("outer", [Tagged("middle", {"x": Tagged("inner", b"\x00")}), (1, 2)])
    assert decode(encode(value)) == Tagged(
        "outer", [Tagged("middle", {"x": Tagged("inner", b"\x00")}), [1, 2]]
    )


def test_errors_cross_as_name_and_message_without_a_traceback() -> None:
    try:
        raise KeyError("missing")
    except KeyError as e:
        back = decode(encode(e))
    assert back == RemoteError("KeyError", "'missing'")
    assert back.remote_traceback is None
    assert decode(encode(RemoteError("E", "m", "trace"))).remote_traceback == "trace"


@settings(FAST, max_examples=200)
@given(st.sampled_from(DESC_CODES), st.integers(min_value=0, max_value=MAX_POSITION))
def test_descriptors_survive_a_round_trip_with_minimal_positions(code: int, pos: int) -> None:
    data = encode(Desc(code, pos))
    assert split_ext(data) == ExtType(code, minimal_position(pos))
    assert decode(data) == Desc(code, pos)


# ---------------------------------------------------------------------------
# canonical forms: ints


def test_ints_inside_64_bits_are_plain_msgpack_ints() -> None:
    for n in (-(2**63), -1, 0, 2**63, 2**64 - 1):
        assert type(split_ext(encode(n))) is int


def test_ints_outside_64_bits_are_minimal_bigint_exts() -> None:
    assert split_ext(encode(2**64)) == ExtType(EXT_BIGINT, b"\x01" + b"\x00" * 8)
    assert split_ext(encode(-(2**63) - 1)) == ExtType(EXT_BIGINT, b"\xff\x7f" + b"\xff" * 7)
    assert split_ext(encode(2**71)) == ExtType(EXT_BIGINT, b"\x00\x80" + b"\x00" * 8)
    assert split_ext(encode(-(2**71))) == ExtType(EXT_BIGINT, b"\x80" + b"\x00" * 8)


@settings(FAST, max_examples=300)
@given(ints.filter(lambda n: not -(2**63) <= n < 2**64))
def test_bigint_payload_is_the_shortest_twos_complement(n: int) -> None:
    ext = split_ext(encode(n))
    assert ext == ExtType(EXT_BIGINT, min_bigint_payload(n))


@settings(FAST, max_examples=200)
@given(
    ints.filter(lambda n: not -(2**63) <= n < 2**64 and abs(n) < 2**4000),
    st.integers(min_value=1, max_value=8),
)
def test_sign_padded_bigints_are_refused(n: int, pad: int) -> None:
    payload = min_bigint_payload(n)
    padded = (b"\xff" if n < 0 else b"\x00") * pad + payload
    assert int.from_bytes(padded, "big", signed=True) == n  # same number, longer form
    with pytest.raises(CodecError):
        decode(msgpack.packb(ExtType(EXT_BIGINT, padded)))


@settings(FAST, max_examples=200)
@given(st.integers(min_value=-(2**63), max_value=2**64 - 1), st.integers(min_value=0, max_value=4))
def test_bigint_exts_holding_a_64_bit_value_are_refused(n: int, pad: int) -> None:
    payload = (b"\xff" if n < 0 else b"\x00") * pad + min_bigint_payload(n)
    with pytest.raises(CodecError):
        decode(msgpack.packb(ExtType(EXT_BIGINT, payload)))


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x00" * (MAX_BIGINT_BYTES + 1), b"\x01" + b"\x00" * MAX_BIGINT_BYTES],
    ids=["empty", "too-long-zero", "too-long"],
)
def test_bigint_exts_of_bad_length_are_refused(payload: bytes) -> None:
    with pytest.raises(CodecError):
        decode(msgpack.packb(ExtType(EXT_BIGINT, payload)))


def test_ints_beyond_the_bigint_limit_are_refused_on_encode() -> None:
    assert decode(encode(BIGINT_MAX)) == BIGINT_MAX
    assert decode(encode(BIGINT_MIN)) == BIGINT_MIN
    for n in (BIGINT_MAX + 1, BIGINT_MIN - 1):
        with pytest.raises(TypeError, match="too large"):
            encode(n)


# ---------------------------------------------------------------------------
# canonical forms: positions


@pytest.mark.parametrize("code", DESC_CODES)
@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\x00\x00",
        b"\x00\x01",
        b"\x00" + (MAX_POSITION).to_bytes(7, "big"),
        (MAX_POSITION + 1).to_bytes(7, "big"),  # 2**53
        (2**56 - 1).to_bytes(7, "big"),
        (2**56).to_bytes(8, "big"),
        (2**64).to_bytes(9, "big"),
        b"\xff" * 16,
    ],
    ids=["empty", "zero-padded", "one-padded", "max-padded", "2**53", "2**56-1", "2**56", "2**64", "16-bytes"],
)
def test_non_minimal_or_out_of_range_positions_are_refused(code: int, payload: bytes) -> None:
    with pytest.raises(CodecError):
        decode(msgpack.packb(ExtType(code, payload)))


@settings(FAST, max_examples=200)
@given(
    st.sampled_from(DESC_CODES),
    st.integers(min_value=0, max_value=MAX_POSITION),
    st.integers(min_value=1, max_value=4),
)
def test_zero_padded_positions_are_refused(code: int, pos: int, pad: int) -> None:
    with pytest.raises(CodecError):
        decode(msgpack.packb(ExtType(code, b"\x00" * pad + minimal_position(pos))))


@pytest.mark.parametrize("pos", [0, 1, 255, 256, 2**32, MAX_POSITION])
def test_position_edges_decode(pos: int) -> None:
    for code in DESC_CODES:
        assert decode(msgpack.packb(ExtType(code, minimal_position(pos)))) == Desc(code, pos)


@pytest.mark.parametrize("pos", [-1, MAX_POSITION + 1, 2**64])
def test_positions_outside_the_wire_range_are_refused_on_encode(pos: int) -> None:
    # The encoder must not produce a descriptor its own decoder refuses.
    with pytest.raises(TypeError):
        encode(Desc(EXT_EXPORT, pos))


# ---------------------------------------------------------------------------
# records need str keys


@pytest.mark.parametrize(
    "value",
    [
        {1: "x"},
        {b"k": 1},
        {None: 1},
        {True: 1},
        {1.5: 1},
        {(1, 2): 1},
        {"ok": {2: "nested"}},
        [{"ok": 1}, {3: 4}],
        Tagged("t", {5: 6}),
    ],
    ids=["int", "bytes", "none", "bool", "float", "tuple", "nested", "in-list", "in-tagged"],
)
def test_non_str_keys_are_refused_on_encode(value: Any) -> None:
    with pytest.raises(TypeError, match="keys must be str"):
        encode(value)


@pytest.mark.parametrize(
    "data",
    [
        msgpack.packb({1: "x"}),
        msgpack.packb({b"k": 1}, use_bin_type=True),
        msgpack.packb({None: 1}),
        msgpack.packb({1.5: 1}),
        msgpack.packb({"ok": {2: "nested"}}),
        msgpack.packb([{"ok": 1}, {3: 4}]),
        msgpack.packb(ExtType(EXT_TAGGED, msgpack.packb(["t", {5: 6}]))),
        msgpack.packb({ExtType(EXT_EXPORT, b"\x01"): 1}),
        b"\x81\x91\x01\x02",  # {[1]: 2}: an array as a key
        b"\x81\x80\x02",  # {{}: 2}: a map as a key
    ],
    ids=["int", "bytes", "none", "float", "nested", "in-list", "in-tagged", "desc", "array", "map"],
)
def test_non_str_keys_are_refused_on_decode(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode(data)


# ---------------------------------------------------------------------------
# only passables


class _Colour(enum.IntEnum):
    RED = 1


class _Name(str):
    pass


@far("Thing")
class _Thing:
    def ping(self) -> str:
        return "pong"


@pytest.mark.parametrize(
    "value, type_name",
    [
        (object(), "object"),
        ({1, 2}, "set"),
        (frozenset(), "frozenset"),
        (lambda: None, "function"),
        (_Thing, "type"),
        (_Thing(), "_Thing"),
        (Far("Greeter", hello=lambda: "hi"), "_FarRecord"),
        (_Colour.RED, "_Colour"),
        (_Name("x"), "_Name"),
        (1 + 2j, "complex"),
        ([1, {"deep": [object()]}], "object"),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, str) else v,
)
def test_non_passable_values_are_refused_on_encode_with_a_clear_type_error(
    value: Any, type_name: str
) -> None:
    # Remotables need a session to pass them by reference; bare encode has none.
    with pytest.raises(TypeError, match=f"cannot encode {type_name}"):
        encode(value)


def test_remotables_are_passed_through_on_ref() -> None:
    thing = _Thing()
    data = encode([thing], on_ref=lambda obj: Desc(EXT_IMPORT_OBJECT, 7))
    assert decode(data) == [Desc(EXT_IMPORT_OBJECT, 7)]
    assert decode(data, on_desc=lambda d: ("ref", d.position)) == [("ref", 7)]


@pytest.mark.parametrize("value", ["\ud800", "ok \udcff", ["x", {"k": "\udfff"}], Tagged("\ud800", 1)])
def test_strings_with_lone_surrogates_are_refused_with_type_error(value: Any) -> None:
    # A lone surrogate has no UTF-8 form, so it cannot be passed. Callers (the
    # session's result reporting) rely on encode raising only TypeError.
    with pytest.raises(TypeError):
        encode(value)


# ---------------------------------------------------------------------------
# nesting


@pytest.mark.parametrize("kind", ["list", "tuple", "dict", "tagged"])
def test_nesting_up_to_max_depth_round_trips(kind: str) -> None:
    value = nested(kind, MAX_DEPTH)
    assert decode(encode(value)) == as_decoded(value)


@pytest.mark.parametrize("kind", ["list", "tuple", "dict", "tagged"])
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1000, 100_000])
def test_nesting_beyond_max_depth_is_refused_on_encode(kind: str, depth: int) -> None:
    with pytest.raises(TypeError, match="nested deeper"):
        encode(nested(kind, depth))


def test_mixed_nesting_beyond_max_depth_is_refused_on_encode() -> None:
    value: Any = None
    for i in range(MAX_DEPTH + 1):
        value = [value] if i % 3 == 0 else {"k": value} if i % 3 == 1 else Tagged("t", value)
    with pytest.raises(TypeError, match="nested deeper"):
        encode(value)


@pytest.mark.parametrize("kind", ["list", "dict", "tagged"])
def test_nesting_at_max_depth_decodes(kind: str) -> None:
    assert decode(nested_bytes(kind, MAX_DEPTH)) == as_decoded(nested(kind, MAX_DEPTH))


@pytest.mark.parametrize("kind", ["list", "dict", "tagged"])
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1000, 100_000])
def test_nesting_beyond_max_depth_is_refused_on_decode(kind: str, depth: int) -> None:
    with pytest.raises(CodecError):
        decode(nested_bytes(kind, depth))


def test_nesting_beyond_max_depth_is_refused_inside_tagged_payloads() -> None:
    inner = nested_bytes("list", MAX_DEPTH)  # legal alone, one level too deep inside a tag
    data = msgpack.packb(ExtType(EXT_TAGGED, b"\x92\xa1t" + inner))
    with pytest.raises(CodecError):
        decode(data)


# ---------------------------------------------------------------------------
# ext codes and strings


@pytest.mark.parametrize("code", [0, 4, 5, 9, 14, 42, 100, 127, -2, -100, -128])
def test_unknown_ext_codes_are_refused(code: int) -> None:
    with pytest.raises(CodecError):
        decode(raw_ext(code, b"\x01"))
    with pytest.raises(CodecError):
        decode(b"\x92\x01" + raw_ext(code, b"\x01"))  # inside an array


@pytest.mark.parametrize(
    "data",
    [
        msgpack.packb(msgpack.Timestamp(0)),
        msgpack.packb(msgpack.Timestamp(2**40, 5)),
        msgpack.packb([msgpack.Timestamp(1)]),
        raw_ext(-1, b"\x00"),  # a timestamp of a length msgpack does not know
    ],
    ids=["ts32", "ts96", "in-list", "bad-length"],
)
def test_msgpack_timestamps_are_refused(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode(data)


@pytest.mark.parametrize(
    "payload",
    [
        msgpack.packb("just a string"),
        msgpack.packb(["tag"]),
        msgpack.packb(["tag", 1, 2]),
        msgpack.packb([1, "payload"]),
        msgpack.packb(["tag", 1]) + b"\xc0",  # trailing bytes
        b"",
    ],
    ids=["not-array", "short", "long", "int-tag", "trailing", "empty"],
)
def test_malformed_tagged_payloads_are_refused(payload: bytes) -> None:
    with pytest.raises(CodecError):
        decode(msgpack.packb(ExtType(EXT_TAGGED, payload)))


@pytest.mark.parametrize(
    "fields",
    [["Name"], ["Name", "m", "tb", "x"], ["Name", 1], [None, "m"], "Name: m", {"name": "N"}],
    ids=["short", "long", "int-message", "nil-name", "str", "map"],
)
def test_malformed_error_payloads_are_refused(fields: Any) -> None:
    with pytest.raises(CodecError):
        decode(msgpack.packb(ExtType(EXT_ERROR, msgpack.packb(fields))))


@pytest.mark.parametrize(
    "data",
    [
        b"\xa2\xc3\x28",  # truncated two-byte sequence
        b"\xa2\xc0\xaf",  # overlong "/"
        b"\xa3\xed\xa0\x80",  # an encoded surrogate
        b"\xa4\xf4\x90\x80\x80",  # beyond U+10FFFF
        b"\xa1\xff",
        b"\x81\xa1\xff\x01",  # as a record key
        msgpack.packb(ExtType(EXT_TAGGED, b"\x92\xa1\xff\xc0")),  # as a tag
        msgpack.packb(ExtType(EXT_ERROR, b"\x92\xa1\xff\xa0")),  # as an error name
    ],
    ids=["truncated", "overlong", "surrogate", "too-high", "ff", "key", "tag", "error-name"],
)
def test_invalid_utf8_is_refused(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode(data)


@pytest.mark.parametrize(
    "data",
    [b"", b"\xc1", b"\x92\x01", b"\x01\x02", b"\xdd\xff\xff\xff\xff", b"\xc4\x05ab", b"\xc9\x00\x00\x00\x05\x01"],
    ids=["empty", "never-used-byte", "short-array", "trailing", "huge-array", "short-bin", "short-ext"],
)
def test_truncated_or_malformed_msgpack_is_refused(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode(data)


@settings(FAST, max_examples=1000)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_codec_error_only(data: bytes) -> None:
    try:
        decode(data)
    except CodecError:
        pass


# ---------------------------------------------------------------------------
# symbols (ext 6): a name that is not a string


@pytest.mark.parametrize("name", ["fetch", "", "op:deliver", "héllo 🦊", "\x00", "n" * MAX_SYMBOL_BYTES])
def test_symbols_survive_a_round_trip_and_stay_symbols(name: str) -> None:
    data = encode([Symbol(name), name])
    back = decode(data)
    assert back == [Symbol(name), name]
    assert type(back[0]) is Symbol and type(back[1]) is str


def test_a_symbol_is_an_ext_whose_payload_is_its_utf8_name() -> None:
    assert split_ext(encode(Symbol("héllo"))) == ExtType(EXT_SYMBOL, "héllo".encode())
    assert encode(Symbol("")) == bytes.fromhex("c70006")


def test_symbol_names_longer_than_the_cap_are_refused_both_ways() -> None:
    with pytest.raises(TypeError, match="symbol"):
        encode(Symbol("n" * (MAX_SYMBOL_BYTES + 1)))
    with pytest.raises(TypeError, match="symbol"):
        encode(Symbol("é" * (MAX_SYMBOL_BYTES // 2 + 1)))  # the cap counts UTF-8 bytes
    with pytest.raises(CodecError):
        decode(msgpack.packb(ExtType(EXT_SYMBOL, b"n" * (MAX_SYMBOL_BYTES + 1))))


@pytest.mark.parametrize(
    "payload",
    [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"ok\x80"],
    ids=["ff", "truncated", "surrogate", "overlong", "stray-continuation"],
)
def test_symbols_that_are_not_utf8_are_refused(payload: bytes) -> None:
    with pytest.raises(CodecError):
        decode(raw_ext(EXT_SYMBOL, payload))
    with pytest.raises(CodecError):
        decode(b"\x91" + raw_ext(EXT_SYMBOL, payload))


def test_symbols_with_lone_surrogates_are_refused_on_encode() -> None:
    with pytest.raises(TypeError):
        encode(Symbol("\ud800"))


def test_symbols_are_leaves_and_pass_at_the_deepest_nesting() -> None:
    value: Any = Symbol("deep")
    for _ in range(MAX_DEPTH - 1):
        value = [value]
    assert decode(encode(value)) == value


def test_refusing_a_value_that_is_not_passable_does_not_blame_the_missing_session() -> None:
    with pytest.raises(TypeError) as info:
        encode({1, 2})
    assert "no session" not in str(info.value)
    assert "not passable" in str(info.value)
