"""Syrup as a specification: the published test data and the spec's examples
decode to what they say, every value has exactly one encoding and survives a
round trip, the splitter cuts a stream where the decoder would, and no input
makes ``decode`` or the splitter raise anything but ``SyrupError`` or take long.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocapd.captp import Symbol
from ocapd.captp.syrup import (
    MAX_DEPTH,
    MAX_INTEGER_DIGITS,
    MAX_KEYS_PER_HASH,
    MAX_VALUE_BYTES,
    MAX_VALUES,
    Record,
    SyrupError,
    SyrupFrame,
    SyrupReader,
    SyrupSplitter,
    decode,
    encode,
)

#: The Syrup project's test data, beside the repository (CI copies shared/ there too).
SYRUP_TEST_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "syrup-test-data"

def same(a: Any, b: Any) -> bool:
    """Equality that also compares types (True is not 1, a list is not a tuple),
    the sign of zero and NaN with NaN, through every container."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if type(a) in (list, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return len(a) == len(b) and same(canonical_items(a), canonical_items(b))
    if type(a) is frozenset:
        return len(a) == len(b) and same(sorted(a, key=encode), sorted(b, key=encode))
    if type(a) is Record:
        return same(a.label, b.label) and same(a.fields, b.fields)
    return bool(a == b)


def canonical_items(d: dict[Any, Any]) -> list[Any]:
    """A dictionary's items as a list of [key, value] lists, in canonical order."""
    return [[k, d[k]] for k in sorted(d, key=encode)]


def assert_refused(data: bytes, fragment: str = "") -> SyrupError:
    # Refused by a limit, not by running out of time: how long a refusal
    # takes is a benchmark's business, not a test's.
    with pytest.raises(SyrupError) as info:
        decode(data)
    assert fragment in str(info.value)
    return info.value


# ---------------------------------------------------------------------------
# the published test data


def zoo_value() -> Record:
    """What SOURCE.txt says zoo.bin decodes to."""

    def animal(species: bytes, name: str, age: int, weight: float, alive: bool, eats: set[bytes]) -> dict[Any, Any]:
        return {
            Symbol("species"): species,
            Symbol("name"): name,
            Symbol("age"): age,
            Symbol("weight"): weight,
            Symbol("alive?"): alive,
            Symbol("eats"): frozenset(eats),
        }

    return Record(
        b"zoo",
        (
            "The Grand Menagerie",
            [
                animal(b"cat", "Tabatha", 12, 8.2, True, {b"mice", b"fish", b"kibble"}),
                animal(b"monkey", "George", 6, 17.24, False, {b"bananas", b"insects"}),
                animal(b"ghost", "Casper", -12, -34.5, False, set()),
            ],
        ),
    )


def test_zoo_decodes_to_what_its_source_describes_and_encodes_back_byte_for_byte() -> None:
    data = (SYRUP_TEST_DATA / "zoo.bin").read_bytes()
    value = decode(data)
    assert same(value, zoo_value())
    assert encode(value) == data
    assert encode(zoo_value()) == data


def test_zoo_cut_anywhere_is_truncated_not_misread() -> None:
    data = (SYRUP_TEST_DATA / "zoo.bin").read_bytes()
    for cut in range(len(data)):
        assert_refused(data[:cut])


# ---------------------------------------------------------------------------
# the spec's examples (ocapn/syrup draft-specification.md, ocapn/ocapn Notation.md)

SPEC_EXAMPLES = [
    (True, b"t"),
    (False, b"f"),
    (0, b"0+"),
    (72, b"72+"),
    (-5, b"5-"),
    (42, b"42+"),
    (-1, b"1-"),
    (b"cat", b"3:cat"),
    (bytes.fromhex("b0b5c0ffeefacade"), b"8:" + bytes.fromhex("b0b5c0ffeefacade")),
    ("bear", b'4"bear'),
    ("björn", '6"björn'.encode()),
    ("熊", '3"熊'.encode()),
    ("twine", b'5"twine'),
    (Symbol("fetch"), b"5'fetch"),
    (Symbol("hämta"), "6'hämta".encode()),
    (Symbol("fleur-de-lis"), b"12'fleur-de-lis"),
    (float("nan"), b"D\x7f\xf8\x00\x00\x00\x00\x00\x00"),
    ({b"name": b"Alice", b"age": 30, b"isAlive": True}, b"{3:age30+4:name5:Alice7:isAlivet}"),
    ({"a": 10, "b": 2}, b'{1"a10+1"b2+}'),
    ({Symbol("a"): 10, Symbol("b"): 2}, b"{1'a10+1'b2+}"),
    ([1, 2, 3], b"[1+2+3+]"),
    (Record(b"person", (b"Alice", 30, True)), b"<6:person5:Alice30+t>"),
    (Record(Symbol("foo"), (1, 2, 3)), b"<3'foo1+2+3+>"),
    (Record("foo", (1, 2, 3)), b'<3"foo1+2+3+>'),
    (frozenset({3, 2, 1}), b"#1+2+3+$"),
]


@pytest.mark.parametrize(("value", "data"), SPEC_EXAMPLES, ids=[repr(d) for _, d in SPEC_EXAMPLES])
def test_spec_examples_encode_and_decode_as_the_spec_writes_them(value: Any, data: bytes) -> None:
    assert encode(value) == data
    assert same(decode(data), value)


def test_doubles_are_big_endian_ieee_and_keep_the_sign_of_zero_and_infinities() -> None:
    for number in [0.0, -0.0, 1.5, -34.5, math.inf, -math.inf, 5e-324, 1.7976931348623157e308]:
        data = encode(number)
        assert data == b"D" + struct.pack(">d", number)
        assert same(decode(data), number)


def test_single_floats_decode_to_float_and_are_written_back_as_doubles() -> None:
    assert same(decode(b"F" + struct.pack(">f", 1.5)), 1.5)
    assert encode(decode(b"F" + struct.pack(">f", -2.0))) == b"D" + struct.pack(">d", -2.0)
    assert same(decode(b"[F" + struct.pack(">f", 0.25) + b"]"), [0.25])


def test_tuples_and_sets_are_written_as_lists_and_sets() -> None:
    assert encode((1, "a")) == b'[1+1"a]'
    assert encode({b"b", b"a"}) == b"#1:a1:b$"
    assert same(decode(b"#1:a1:b$"), frozenset({b"a", b"b"}))


def test_lists_inside_keys_and_set_members_decode_as_tuples_so_python_can_hold_them() -> None:
    value = decode(b"{[1+2+]t}")
    assert same(value, {(1, 2): True})
    assert same(decode(b"#[1+[]]$"), frozenset({(1, ())}))
    assert same(decode(b"{<1'p[1+]>t}"), {Record(Symbol("p"), ((1,),)): True})
    assert encode(value) == b"{[1+2+]t}"


def test_dictionary_keys_and_set_members_are_sorted_by_their_encoded_bytes() -> None:
    # "10+" sorts before "9+" (byte '1' < '9'); "1'b" before "2'aa" (length digits first).
    assert encode({9: "x", 10: "y"}) == b'{10+1"y9+1"x}'
    assert encode(frozenset({Symbol("aa"), Symbol("b")})) == b"#1'b2'aa$"
    # Across types the marker after the length decides: '"' < "'" < '+' < ':'.
    assert encode({"z": 1, b"z": 2, Symbol("z"): 3, 1: 4}) == b'{1"z1+1\'z3+1+4+1:z2+}'


def test_symbol_is_equal_only_to_symbols_hashable_and_immutable() -> None:
    op = Symbol("op:deliver")
    assert op == Symbol("op:deliver")
    assert op != "op:deliver" and "op:deliver" != op
    assert hash(op) == hash(Symbol("op:deliver"))
    assert len({op, Symbol("op:deliver"), "op:deliver"}) == 2
    assert repr(op) == "Symbol('op:deliver')"
    assert str(op) == "op:deliver"
    with pytest.raises(AttributeError):
        op.name = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Symbol(b"bytes")  # type: ignore[arg-type]


def test_record_fields_are_a_tuple_and_records_compare_by_value() -> None:
    record = Record(Symbol("desc:export"), [3])  # type: ignore[arg-type]
    assert record.fields == (3,)
    assert record == Record(Symbol("desc:export"), (3,))
    assert hash(record) == hash(Record(Symbol("desc:export"), (3,)))
    assert encode(record) == b"<11'desc:export3+>"
    assert encode(Record(Symbol("op:gc-answers"))) == b"<13'op:gc-answers>"


# ---------------------------------------------------------------------------
# what encode refuses


@pytest.mark.parametrize(
    "value",
    [
        None,
        object(),
        1j,
        "\ud800",
        Symbol("\udfff"),
        10**MAX_INTEGER_DIGITS,
        {float("nan"): 1, float("nan"): 2},
        frozenset({float("nan"), float("nan")}),
        [{"x": [1]}] * 2 + [object()],
    ],
    ids=["None", "object", "complex", "lone surrogate", "surrogate symbol", "too many digits", "two NaN keys", "two NaN members", "object deep inside"],
)
def test_encode_refuses_values_without_a_syrup_form_with_type_error(value: Any) -> None:
    with pytest.raises(TypeError):
        encode(value)


def test_encode_refuses_exactly_the_limits_decode_enforces() -> None:
    assert encode(10**MAX_INTEGER_DIGITS - 1) == b"9" * MAX_INTEGER_DIGITS + b"+"
    nested: Any = []
    for _ in range(MAX_DEPTH - 1):
        nested = [nested]
    assert decode(encode(nested)) == nested
    with pytest.raises(TypeError, match="MAX_DEPTH"):
        encode([nested])
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(TypeError):
        encode(loop)
    with pytest.raises(TypeError, match="MAX_VALUES"):
        encode([True] * MAX_VALUES)
    assert len(decode(encode([True] * (MAX_VALUES - 1)))) == MAX_VALUES - 1
    with pytest.raises(TypeError, match="MAX_VALUE_BYTES"):
        encode(b"x" * MAX_VALUE_BYTES)
    colliding = {k * (2**61 - 1): k for k in range(1, MAX_KEYS_PER_HASH + 2)}  # all hash to 0
    with pytest.raises(TypeError, match="MAX_KEYS_PER_HASH"):
        encode(colliding)


# ---------------------------------------------------------------------------
# what decode refuses, each quickly and with SyrupError


def colliding_ints_dict(count: int) -> bytes:
    """A canonical dictionary of ``count`` int keys that all hash to 0 in Python."""
    keys = sorted(encode(k * (2**61 - 1)) for k in range(1, count + 1))
    return b"{" + b"".join(key + b"t" for key in keys) + b"}"


HOSTILE = [
    # structure
    (b"", "empty"),
    (b"x", "does not start"),
    (b" t", "does not start"),
    (b"t f", "left over"),
    (b"tf", "left over"),
    (b"t\n", "left over"),
    (b"]", "closes nothing"),
    (b"[}", "closes nothing"),
    (b"[", "not closed"),
    (b"{1+", "truncated"),
    (b"{1+}", "without a value"),
    (b"#", "not closed"),
    (b"<", "truncated"),
    (b"<>", "without a label"),
    (b"<1'a", "not closed"),
    (b"i42e", "does not start"),
    (b"d3:agei12ee", "does not start"),
    (b"l1:ae", "does not start"),
    (b"(3:abc)", "does not start"),
    (b"12", "truncated"),
    (b"12x", "after digits"),
    (b"12.5+", "after digits"),
    # numbers and lengths
    (b"01+", "leading zero"),
    (b"00+", "leading zero"),
    (b"0-", "negative zero"),
    (b"01:a", "leading zero"),
    (b"1" * (MAX_INTEGER_DIGITS + 1) + b"+", "MAX_INTEGER_DIGITS"),
    (b"1" * 1_000_000 + b"+", "MAX_INTEGER_DIGITS"),
    (b"9" * 9 + b":", "declared length"),
    (b"99999999:abc", "truncated: declares 99999999 bytes"),
    (b"5:abc", "truncated: declares 5 bytes, 3 remain"),
    (b'3"a', "truncated"),
    (b"D\x00\x00", "double needs 8 bytes"),
    (b"F\x00", "single float needs 4 bytes"),
    (b"D\x7f\xf8\x00\x00\x00\x00\x00\x01", "NaN"),
    (b"D\xff\xf8\x00\x00\x00\x00\x00\x00", "NaN"),
    # text
    (b'2"\xc3(', "UTF-8"),
    (b'3"\xed\xa0\x80', "UTF-8"),  # an encoded surrogate
    (b"2'\xc0\x80", "UTF-8"),  # overlong NUL
    # canonical order and repeats
    (b'{1"b1+1"a2+}', "out of canonical order"),
    (b'{1"a1+1"a2+}', "repeated"),
    (b"#2+1+$", "out of canonical order"),
    (b"#1+1+$", "repeated"),
    (b"{9+t10+t}", "out of canonical order"),
    (b"{1+1:at1:b}", "equal as Python values"),
    (b"#1+t$", "equal as Python values"),
    (b"#D" + struct.pack(">d", 0.0) + b"D" + struct.pack(">d", -0.0) + b"$", "equal as Python values"),
    (b"#{}$", "unhashable"),
    (b"{[{}]t}", "unhashable"),
    (colliding_ints_dict(MAX_KEYS_PER_HASH + 1), "MAX_KEYS_PER_HASH"),
    (colliding_ints_dict(100_000), "MAX_KEYS_PER_HASH"),
    # size
    (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "MAX_DEPTH"),
    (b"[" * 1_000_000, "MAX_DEPTH"),
    (b"<" * 100_000, "MAX_DEPTH"),
    (b"[" + b"t" * MAX_VALUES + b"]", "MAX_VALUES"),
    (b"[" + b"#$" * MAX_VALUES + b"]", "MAX_VALUES"),
    (b"%d:" % MAX_VALUE_BYTES + b"x" * MAX_VALUE_BYTES, "MAX_VALUE_BYTES"),
]


@pytest.mark.parametrize(("data", "fragment"), HOSTILE, ids=[repr(d[:24]) for d, _ in HOSTILE])
def test_decode_refuses_bad_input_quickly_with_syrup_error(data: bytes, fragment: str) -> None:
    error = assert_refused(data, fragment)
    assert isinstance(error, ValueError)


def test_limits_are_inclusive() -> None:
    assert decode(b"9" * MAX_INTEGER_DIGITS + b"-") == -(10**MAX_INTEGER_DIGITS - 1)
    assert decode(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None
    assert decode(colliding_ints_dict(MAX_KEYS_PER_HASH)) == {k * (2**61 - 1): True for k in range(1, MAX_KEYS_PER_HASH + 1)}
    exact = b"%d:" % (MAX_VALUE_BYTES - 9) + b"x" * (MAX_VALUE_BYTES - 9)
    assert len(exact) == MAX_VALUE_BYTES
    assert len(decode(exact)) == MAX_VALUE_BYTES - 9


def test_decode_takes_bytes_like_values_and_refuses_other_types_with_type_error() -> None:
    assert decode(bytearray(b"3:cat")) == b"cat"
    assert decode(memoryview(b"3:cat")) == b"cat"
    with pytest.raises(TypeError):
        decode("t")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# round trips over generated values

atoms = st.one_of(
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**80), max_value=10**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.binary(max_size=40),
    st.text(max_size=20),
    st.text(max_size=8).map(Symbol),
)

#: Values Python can hash (dictionary keys, set members): no NaN (two NaNs are
#: distinct members but one encoding), tuples for lists, no dictionaries.
frozen_values = st.recursive(
    atoms.filter(lambda v: not (isinstance(v, float) and math.isnan(v))),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(tuple),
        st.frozensets(inner, max_size=4),
        st.builds(Record, inner, st.lists(inner, max_size=3).map(tuple)),
    ),
    max_leaves=12,
)



def containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(frozen_values, inner, max_size=5),
        st.frozensets(frozen_values, max_size=5),
        st.builds(Record, st.one_of(st.text(max_size=8).map(Symbol), inner), st.lists(inner, max_size=4).map(tuple)),
    )


values = st.recursive(atoms, containers, max_leaves=30)
#: Smaller values, where many examples matter more than big ones.
small_values = st.recursive(atoms, containers, max_leaves=8)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_every_value_survives_a_round_trip_and_has_one_encoding(value: Any) -> None:
    data = encode(value)
    decoded = decode(data)
    assert same(decoded, value)
    assert encode(decoded) == data


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_raise_only_syrup_error_and_what_decodes_is_canonical(data: bytes) -> None:
    try:
        value = decode(data)
    except SyrupError:
        return
    if b"F" not in data:
        assert encode(value) == data
    assert split_all([data]) == [data]


@st.composite
def mutated_encodings(draw: st.DrawFn) -> bytes:
    """An encoding with a few bytes replaced, inserted or deleted: near-valid input."""
    data = bytearray(encode(draw(small_values)))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = draw(st.sampled_from(list(b'0123456789+-:"\'[]{}#$<>tfDF') + [0, 255]))
        if edit == "insert" or at == len(data):
            data.insert(at, byte)
        elif edit == "replace":
            data[at] = byte
        else:
            del data[at]
    return bytes(data)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_encodings())
def test_mutated_encodings_raise_only_syrup_error_and_what_decodes_is_canonical(data: bytes) -> None:
    try:
        value = decode(data)
    except SyrupError:
        return
    if b"F" not in data:
        assert encode(value) == data
    assert split_all([data]) == [data]


# ---------------------------------------------------------------------------
# the splitter


def split_all(chunks: list[bytes], splitter: SyrupSplitter | None = None) -> list[bytes]:
    splitter = splitter or SyrupSplitter()
    found = []
    for chunk in chunks:
        splitter.feed(chunk)
        while (value := splitter.next_value()) is not None:
            found.append(value)
    return found


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(small_values, min_size=1, max_size=4))
def test_splitter_cuts_a_stream_where_each_value_ends_however_the_bytes_arrive(stream_values: list[Any]) -> None:
    encodings = [encode(v) for v in stream_values]
    stream = b"".join(encodings)
    for cut in range(len(stream) + 1):
        assert split_all([stream[:cut], stream[cut:]]) == encodings
    splitter = SyrupSplitter()
    assert split_all([stream[i : i + 1] for i in range(len(stream))], splitter) == encodings
    assert splitter.buffered == 0
    for data, value in zip(encodings, stream_values, strict=True):
        assert same(decode(data), value)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=16), max_size=8))
def test_splitter_on_random_bytes_raises_only_syrup_error_and_its_values_are_whole(chunks: list[bytes]) -> None:
    splitter = SyrupSplitter()
    found = []
    try:
        for chunk in chunks:
            splitter.feed(chunk)
            while (value := splitter.next_value()) is not None:
                found.append(value)
    except SyrupError:
        pass
    assert b"".join(chunks).startswith(b"".join(found))


def test_splitter_says_more_is_needed_until_a_value_is_complete() -> None:
    splitter = SyrupSplitter()
    for piece in [b"[1", b"2", b"3+", b"5:ab", b"cd", b"e", b"D\x00\x00\x00", b"\x00\x00\x00\x00"]:
        splitter.feed(piece)
        assert splitter.next_value() is None
    splitter.feed(b"\x00]t")
    assert splitter.next_value() == b"[123+5:abcdeD" + b"\x00" * 8 + b"]"
    assert splitter.next_value() == b"t"
    assert splitter.next_value() is None
    assert splitter.buffered == 0
    splitter.feed(b"<3'foo")
    assert splitter.next_value() is None
    assert splitter.buffered == 6


@pytest.mark.parametrize(
    ("stream", "fragment"),
    [
        (b"t x", "does not start"),
        (b"[}", "does not start"),
        (b"]", "does not start"),
        (b"01+", "leading zero"),
        (b"12x", "after digits"),
        (b"9" * 9 + b":", "declared length"),
        (b"[" * (MAX_DEPTH + 1), "nested deeper"),
        (b"1" * (MAX_INTEGER_DIGITS + 1), "MAX_INTEGER_DIGITS"),
    ],
)
def test_splitter_refuses_bad_structure_as_soon_as_it_arrives_and_stays_refused(stream: bytes, fragment: str) -> None:
    splitter = SyrupSplitter()
    splitter.feed(stream)
    with pytest.raises(SyrupError, match=fragment):
        while splitter.next_value() is not None:
            pass
    with pytest.raises(SyrupError, match=fragment):
        splitter.next_value()
    with pytest.raises(SyrupError, match=fragment):
        splitter.feed(b"t")


def test_splitter_refuses_a_value_longer_than_its_limit_before_it_arrives() -> None:
    splitter = SyrupSplitter(max_value_bytes=100)
    splitter.feed(b"1000:")  # the declared length alone is over the limit
    with pytest.raises(SyrupError, match="longer than 100 bytes"):
        splitter.next_value()
    splitter = SyrupSplitter(max_value_bytes=100)
    splitter.feed(b"[" + b"t" * 99)
    assert splitter.next_value() is None
    splitter.feed(b"t")
    with pytest.raises(SyrupError, match="longer than 100 bytes"):
        splitter.next_value()
    splitter = SyrupSplitter(max_value_bytes=100)
    splitter.feed(b"[" + b"t" * 98 + b"]")
    assert splitter.next_value() is not None


def test_splitter_reads_a_long_stream_fed_in_small_pieces() -> None:
    one = encode([{"x": b"y" * 50}, 123456789, Symbol("op:deliver")])
    stream = one * 2000
    found = split_all([stream[i : i + 7] for i in range(0, len(stream), 7)])
    assert found == [one] * 2000
    big = b"%d:" % (1 << 20) + b"z" * (1 << 20)
    assert split_all([big[i : i + 512] for i in range(0, len(big), 512)]) == [big]


# ---------------------------------------------------------------------------
# the reader: the splitter and decode in one pass


def read_all(chunks: list[bytes], reader: SyrupReader | None = None) -> list[SyrupFrame]:
    reader = reader or SyrupReader()
    found = []
    for chunk in chunks:
        reader.feed(chunk)
        while (frame := reader.next_frame()) is not None:
            found.append(frame)
    return found


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(small_values, min_size=1, max_size=4))
def test_reader_gives_each_value_and_its_bytes_however_the_bytes_arrive(stream_values: list[Any]) -> None:
    encodings = [encode(v) for v in stream_values]
    stream = b"".join(encodings)
    for cut in range(len(stream) + 1):
        frames = read_all([stream[:cut], stream[cut:]])
        assert frames == encodings
        for frame, value in zip(frames, stream_values, strict=True):
            assert same(frame.value, value)
    reader = SyrupReader()
    frames = read_all([stream[i : i + 1] for i in range(len(stream))], reader)
    assert frames == encodings and reader.buffered == 0
    for frame, value in zip(frames, stream_values, strict=True):
        assert same(frame.value, value)


def test_reader_reads_the_symbols_it_is_given_as_those_objects_and_others_as_new_ones() -> None:
    label, method = Symbol("op:deliver"), Symbol("fulfill")
    reader = SyrupReader(symbols=[label, method])
    stream = b"<10'op:deliver7'fulfill4'echo1\"a>" + b"10'op:deliver"
    first, second = read_all([stream], reader)
    record = first.value
    assert record == Record(Symbol("op:deliver"), (Symbol("fulfill"), Symbol("echo"), "a"))
    assert record.label is label and record.fields[0] is method and second.value is label
    assert record.fields[2] == "a"  # a string of the same name is no symbol
    assert read_all([b"7\"fulfill"], SyrupReader(symbols=[method]))[0].value == "fulfill"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=16), max_size=8))
def test_reader_on_random_bytes_raises_only_syrup_error_and_reads_what_decode_reads(chunks: list[bytes]) -> None:
    reader = SyrupReader()
    found = []
    try:
        for chunk in chunks:
            reader.feed(chunk)
            while (frame := reader.next_frame()) is not None:
                found.append(frame)
    except SyrupError:
        pass
    assert b"".join(chunks).startswith(b"".join(found))
    for frame in found:
        assert same(decode(bytes(frame)), frame.value)


@pytest.mark.parametrize("cut", [None, 1, 3])
@pytest.mark.parametrize(
    ("stream", "fragment"),
    [
        (b"{1:b1+1:a2+}", "canonical order"),  # the splitter passes these; decode refuses them
        (b'2"\xff\xfe', "UTF-8"),
        (b"[1+2+]0-", "negative zero"),
        (b"t x", "does not start"),
        (b"[" * (MAX_DEPTH + 1), "nested deeper"),
        (b"[" + b"t" * MAX_VALUES + b"]", "MAX_VALUES"),
    ],
)
def test_reader_refuses_what_decode_refuses_and_stays_refused(stream: bytes, fragment: str, cut: int | None) -> None:
    reader = SyrupReader()
    chunks = [stream] if cut is None else [stream[:cut], stream[cut:]]
    with pytest.raises(SyrupError, match=fragment):
        read_all(chunks, reader)
    with pytest.raises(SyrupError, match=fragment):
        reader.next_frame()
    with pytest.raises(SyrupError, match=fragment):
        reader.feed(b"t")


def test_reader_refuses_a_value_longer_than_its_limit_whole_or_in_pieces() -> None:
    for chunks in ([b"[" + b"t" * 100 + b"]"], [b"[" + b"t" * 50, b"t" * 50 + b"]"], [b"1000:"]):
        with pytest.raises(SyrupError, match="longer than 100 bytes"):
            read_all(chunks, SyrupReader(max_value_bytes=100))
    assert read_all([b"[" + b"t" * 98 + b"]"], SyrupReader(max_value_bytes=100))


def test_reader_reads_a_long_stream_fed_in_small_pieces() -> None:
    one = encode([{"x": b"y" * 50}, 123456789, Symbol("op:deliver")])
    stream = one * 2000
    frames = read_all([stream[i : i + 7] for i in range(0, len(stream), 7)])
    assert frames == [one] * 2000 and frames[-1].value == decode(one)
    big = b"%d:" % (1 << 20) + b"z" * (1 << 20)
    (frame,) = read_all([big[i : i + 512] for i in range(0, len(big), 512)] + [b"t"])[:1]
    assert frame == big and frame.value == b"z" * (1 << 20)
