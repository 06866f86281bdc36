"""OCapN messages and passable values as Syrup bytes (captp/ocapn_syrup.py).

The expected bytes are written out by hand from the OCapN draft CapTP
specification and from what the OCapN test suite sends (docs/ocapn.md, "The
suite's dialect"), so a change in either direction of the mapping shows here.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocapd.captp.codec import EXT_ANSWER, EXT_EXPORT, EXT_IMPORT_OBJECT, EXT_IMPORT_PROMISE, Desc
from ocapd.captp.ocapn_syrup import OcapnFormatError, build_message, from_syrup, parse_message, to_syrup
from ocapd.captp.passable import RemoteError, Symbol, Tagged
from ocapd.captp.syrup import Record, SyrupError, decode, encode


def _parse(data: bytes) -> list[object]:
    return parse_message(decode(data))


def _no_refs(obj: object) -> object:
    raise TypeError(f"no references here: {obj!r}")


# -- messages in ------------------------------------------------------------------


def test_the_suites_fetch_is_a_deliver_of_fetch_to_the_bootstrap_with_false_for_no_answer_position():
    data = b"<10'op:deliver<11'desc:export0+>[5'fetch32:IO58l1laTyhcrgDKbEzFOO32MDd6zE5w]f<18'desc:import-object0+>>"
    assert _parse(data) == [
        "deliver", Desc(EXT_EXPORT, 0), "fetch", [b"IO58l1laTyhcrgDKbEzFOO32MDd6zE5w"], None, Desc(EXT_IMPORT_OBJECT, 0),
    ]


def test_a_pipelined_deliver_names_its_answer_position_and_targets_an_answer():
    data = b"<10'op:deliver<11'desc:answer1+>[[3'red9'zoomracer]]2+<18'desc:import-object3+>>"
    assert _parse(data) == [
        "deliver", Desc(EXT_ANSWER, 1), None, [[Symbol("red"), Symbol("zoomracer")]], 2, Desc(EXT_IMPORT_OBJECT, 3),
    ]


def test_a_method_symbol_with_dashes_names_the_python_method_with_underscores():
    data = b"<15'op:deliver-only<11'desc:export0+>[12'deposit-gift7:my-gift<18'desc:import-object4+>]>"
    assert _parse(data) == ["deliver-only", Desc(EXT_EXPORT, 0), "deposit_gift", [b"my-gift", Record(Symbol("desc:import-object"), (4,))]]


def test_args_without_a_leading_symbol_are_a_call_without_a_method():
    data = b"<15'op:deliver-only<11'desc:export2+>[5\"Hello]>"
    assert _parse(data) == ["deliver-only", Desc(EXT_EXPORT, 2), None, ["Hello"]]


def test_the_suites_singular_gc_ops_read_as_the_specs_plural_ones():
    assert _parse(b"<12'op:gc-export[3+][4+]>") == ["gc-exports", [3], [4]]
    assert _parse(b"<13'op:gc-exports[3+][4+]>") == ["gc-exports", [3], [4]]
    assert _parse(b"<12'op:gc-answer[0+]>") == ["gc-answers", [0]]
    assert _parse(b"<13'op:gc-answers[0+]>") == ["gc-answers", [0]]


def test_listen_has_three_fields():
    data = b"<9'op:listen<11'desc:export5+><18'desc:import-object6+>f>"
    assert _parse(data) == ["listen", Desc(EXT_EXPORT, 5), Desc(EXT_IMPORT_OBJECT, 6), False]


def test_abort_start_session_get_index_untag():
    assert _parse(b"<8'op:abort14\"session closed>") == ["abort", "session closed"]
    start = _parse(b"<16'op:start-session3\"1.0[]t[]>")
    assert start == ["start-session", "1.0", [], True, []]
    assert _parse(b"<6'op:get<11'desc:answer1+>1\"x2+>") == ["get", Desc(EXT_ANSWER, 1), "x", 2]
    assert _parse(b"<8'op:index<11'desc:answer1+>0+2+>") == ["index", Desc(EXT_ANSWER, 1), 0, 2]
    assert _parse(b"<8'op:untag<11'desc:export1+>1\"t2+>") == ["untag", Desc(EXT_EXPORT, 1), "t", 2]


@pytest.mark.parametrize(
    "data",
    [
        b"[1+]",  # not a record
        b"<7'op:nope>",  # unknown op
        b"<10'op:deliver<11'desc:export0+>[]f>",  # a field short
        b"<10'op:deliver<18'desc:import-object0+>[]f<18'desc:import-object0+>>",  # target is an import
        b"<10'op:deliver<11'desc:export0+>[]f<11'desc:export0+>>",  # resolver is an export
        b"<10'op:deliver<11'desc:export0+>[]1-<18'desc:import-object0+>>",  # negative answer position
        b"<10'op:deliver<11'desc:export0+>[]9007199254740992+<18'desc:import-object0+>>",  # past 2**53-1
        b"<10'op:deliver<11'desc:export0+>3\"abcf<18'desc:import-object0+>>",  # args not a list
        b"<10'op:deliver<11'desc:export1+2+>[]f<18'desc:import-object0+>>",  # descriptor with two fields
        b"<9'op:listen<11'desc:export5+><18'desc:import-object6+>0+>",  # wants-partial not a boolean
        b"<12'op:gc-export[3+][1\"x]>",  # delta not an integer
        b"<8'op:abort3'why>",  # reason not a string
        b"<16'op:start-session1+[]t[]>",  # version not a string
    ],
)
def test_malformed_messages_are_refused_with_one_error_type(data: bytes):
    with pytest.raises(OcapnFormatError):
        _parse(data)


# -- messages out -------------------------------------------------------------------


def test_a_call_goes_out_with_its_method_as_a_leading_symbol_and_its_result_resolver():
    msg = ["deliver", Desc(EXT_EXPORT, 3), "withdraw_gift", [b"x"], 0, Desc(EXT_IMPORT_OBJECT, 1)]
    assert encode(build_message(msg, _no_refs)) == (
        b"<10'op:deliver<11'desc:export3+>[13'withdraw-gift1:x]0+<18'desc:import-object1+>>"
    )


def test_fulfilling_a_resolver_is_a_deliver_only_with_the_fulfill_symbol():
    msg = ["deliver-only", Desc(EXT_EXPORT, 4), "fulfill", ["Vroom!"]]
    assert encode(build_message(msg, _no_refs)) == b"<15'op:deliver-only<11'desc:export4+>[7'fulfill6\"Vroom!]>"


def test_gc_goes_out_in_the_singular_the_suite_and_goblins_read():
    assert encode(build_message(["gc-exports", [3, 5], [1, 4]], _no_refs)) == b"<12'op:gc-export[3+5+][1+4+]>"
    assert encode(build_message(["gc-answers", [0]], _no_refs)) == b"<12'op:gc-answer[0+]>"


def test_a_deliver_without_answer_position_writes_false():
    msg = ["deliver", Desc(EXT_ANSWER, 2), None, [], None, Desc(EXT_IMPORT_PROMISE, 9)]
    assert encode(build_message(msg, _no_refs)) == b"<10'op:deliver<11'desc:answer2+>[]f<19'desc:import-promise9+>>"


def test_references_in_args_are_described_by_the_callback():
    marker = object()
    msg = ["deliver-only", Desc(EXT_EXPORT, 1), None, [marker, [marker]]]
    out = encode(build_message(msg, lambda obj: Desc(EXT_IMPORT_OBJECT, 7) if obj is marker else _no_refs(obj)))
    assert out == b"<15'op:deliver-only<11'desc:export1+>[<18'desc:import-object7+>[<18'desc:import-object7+>]]>"


# -- passable values -----------------------------------------------------------------


def test_values_syrup_lacks_are_records():
    assert encode(to_syrup(None, _no_refs)) == b"<4'null>"
    assert encode(to_syrup(Tagged("point", [1, 2]), _no_refs)) == b"<11'desc:tagged5'point[1+2+]>"
    assert encode(to_syrup(RemoteError("TypeError", "bad"), _no_refs)) == b"<10'desc:error14\"TypeError: bad>"
    assert encode(to_syrup(ValueError("no"), _no_refs)) == b"<10'desc:error14\"ValueError: no>"


def test_null_void_tagged_and_error_read_back():
    assert from_syrup(decode(b"<4'null>")) is None
    assert from_syrup(decode(b"<4'void>")) is None
    assert from_syrup(decode(b"<11'desc:tagged5'point[1+2+]>")) == Tagged("point", [1, 2])
    assert from_syrup(decode(b"<11'desc:tagged5\"point1+>")) == Tagged("point", 1)
    assert from_syrup(decode(b"<10'desc:error3\"bad>")) == RemoteError("Error", "bad")


def test_descriptors_inside_values_go_to_the_callback():
    seen: list[Desc] = []
    value = from_syrup(decode(b"[<19'desc:import-promise2+>{1\"k<18'desc:import-object3+>}]"), lambda d: seen.append(d) or d.position)
    assert value == [2, {"k": 3}]
    assert seen == [Desc(EXT_IMPORT_PROMISE, 2), Desc(EXT_IMPORT_OBJECT, 3)]


@pytest.mark.parametrize(
    "data",
    [
        b"#1+$",  # sets are not passable
        b"{1+1+}",  # dictionary keys must be strings
        b"<5'thing1+>",  # unknown record without a handler
        b"<4'null1+>",  # null with a field
        b"<11'desc:tagged1+1+>",  # tag not a symbol or string
        b"<10'desc:error1+>",  # error message not a string
        b"<18'desc:import-object1-1+>",  # negative position
    ],
)
def test_values_that_are_not_passable_are_refused(data: bytes):
    with pytest.raises(OcapnFormatError):
        from_syrup(decode(data))


def test_unknown_records_go_to_on_record_when_given():
    rec = decode(b"<15'ocapn-sturdyref1\"x>")
    assert from_syrup([rec], on_record=lambda r: ("seen", r.label)) == [("seen", Symbol("ocapn-sturdyref"))]


def test_unpassable_python_values_raise_type_error():
    with pytest.raises(TypeError):
        to_syrup({1: "x"}, _no_refs)
    with pytest.raises(TypeError):
        to_syrup(object(), _no_refs)


# -- every input: a message, or OcapnFormatError --------------------------------------

_atoms = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=8), st.binary(max_size=8),
    st.sampled_from([Symbol("fetch"), Symbol("op:deliver"), Symbol("desc:export"), Symbol("desc:answer"),
                     Symbol("desc:import-object"), Symbol("op:gc-export"), Symbol("null"), Symbol("desc:tagged")]),
)


def _records(children: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    labels = st.sampled_from(sorted((s for s in _atoms_labels), key=lambda s: s.name))
    return st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=3), children, max_size=3),
        st.builds(lambda label, fields: Record(label, fields), labels, st.lists(children, max_size=5)),
    )


_atoms_labels = [
    Symbol(n) for n in (
        "op:deliver", "op:deliver-only", "op:listen", "op:gc-export", "op:gc-exports", "op:gc-answer", "op:gc-answers",
        "op:abort", "op:start-session", "op:get", "op:index", "op:untag", "desc:export", "desc:answer",
        "desc:import-object", "desc:import-promise", "desc:tagged", "desc:error", "null", "void", "other",
    )
]
_values = st.recursive(_atoms.filter(lambda v: v is not None), _records, max_leaves=12)


@settings(max_examples=3000, deadline=None)
@given(_values)
def test_any_syrup_value_is_a_message_or_a_format_error(value: object):
    try:
        message = parse_message(value)
    except OcapnFormatError:
        return
    assert type(message) is list and type(message[0]) is str
    if message[0] in ("deliver", "deliver-only"):
        try:
            from_syrup(message[3])
        except OcapnFormatError:
            pass


@settings(max_examples=2000, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.data())
def test_mutated_message_bytes_are_a_message_a_format_error_or_a_syrup_error(noise: bytes, data: st.DataObject):
    base = bytearray(b"<10'op:deliver<11'desc:answer1+>[[3'red9'zoomracer]]2+<18'desc:import-object3+>>")
    at = data.draw(st.integers(0, len(base) - 1))
    base[at : at + len(noise) // 2] = noise
    try:
        message = parse_message(decode(bytes(base)))
    except (OcapnFormatError, SyrupError):
        return
    assert type(message) is list
