"""The OCapN wire profile's messages and passable values as Syrup bytes (captp/ocapn_profile.py).

The expected bytes are written out by hand from the OCapN draft CapTP
specification and from what the OCapN test suite sends (docs/ocapn.md, "The
suite's dialect"), so a change in either direction of the mapping shows here.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocapd.captp.messages import (
    Abort,
    Deliver,
    DeliverOnly,
    DescKind,
    Descriptor,
    GcAnswers,
    GcExports,
    Listen,
    ProtocolError,
    StartSession,
)
from ocapd.captp.ocapn_keys import generate_key, sign_envelope
from ocapd.captp.ocapn_locators import PeerLocator, SturdyRef
from ocapd.captp.ocapn_profile import OcapnProfile
from ocapd.captp.passable import RemoteError, Symbol, Tagged
from ocapd.captp.session import Limits
from ocapd.captp.syrup import Record, decode, encode

LIMITS = Limits()
HERE = PeerLocator("ocapd-test", "tcp-testing-only", {"host": "127.0.0.1", "port": "1"})
EXPORT, ANSWER, IMPORT_OBJECT, IMPORT_PROMISE = DescKind.EXPORT, DescKind.ANSWER, DescKind.IMPORT_OBJECT, DescKind.IMPORT_PROMISE


def _profile() -> OcapnProfile:
    return OcapnProfile(HERE)


def _parse(data: bytes) -> Any:
    return _profile().decode_message(data, LIMITS)


def _args(data: bytes, revive: Any = lambda d: d) -> Any:
    profile = _profile()
    message = profile.decode_message(data, LIMITS)
    return message.method, profile.decode_args(message.args, revive)


def _write(message: Any, describe: Any = None) -> bytes:
    return _profile().encode_message(message, describe or _no_refs, LIMITS)


def _no_refs(obj: object) -> Any:
    raise TypeError(f"no references here: {obj!r}")


def _value(data: bytes, revive: Any = lambda d: d) -> Any:
    """The passable value ``data`` stands for, read as the only argument of a call."""
    return _profile().decode_args([decode(data)], revive)[0]


def _syrup_of(value: Any, describe: Any = None) -> bytes:
    """The bytes ``value`` is written as, as the only argument of a call without a method."""
    frame = _write(DeliverOnly(Descriptor(EXPORT, 1), None, [value]), describe)
    prefix = b"<15'op:deliver-only<11'desc:export1+>["
    assert frame.startswith(prefix) and frame.endswith(b"]>")
    return frame[len(prefix) : -2]


# -- messages in ------------------------------------------------------------------


def test_the_suites_fetch_is_a_deliver_of_fetch_to_the_bootstrap_with_false_for_no_answer_position():
    data = b"<10'op:deliver<11'desc:export0+>[5'fetch32:IO58l1laTyhcrgDKbEzFOO32MDd6zE5w]f<18'desc:import-object0+>>"
    message = _parse(data)
    assert message == Deliver(Descriptor(EXPORT, 0), "fetch", [b"IO58l1laTyhcrgDKbEzFOO32MDd6zE5w"], None, Descriptor(IMPORT_OBJECT, 0))


def test_a_pipelined_deliver_names_its_answer_position_and_targets_an_answer():
    data = b"<10'op:deliver<11'desc:answer1+>[[3'red9'zoomracer]]2+<18'desc:import-object3+>>"
    assert _parse(data) == Deliver(Descriptor(ANSWER, 1), None, [[Symbol("red"), Symbol("zoomracer")]], 2, Descriptor(IMPORT_OBJECT, 3))


def test_a_method_symbol_with_dashes_names_the_python_method_with_underscores():
    data = b"<15'op:deliver-only<11'desc:export0+>[12'deposit-gift7:my-gift<18'desc:import-object4+>]>"
    assert _args(data) == ("deposit_gift", [b"my-gift", Descriptor(IMPORT_OBJECT, 4)])


def test_args_without_a_leading_symbol_are_a_call_without_a_method():
    assert _args(b"<15'op:deliver-only<11'desc:export2+>[5\"Hello]>") == (None, ["Hello"])


def test_the_suites_singular_gc_ops_read_as_the_specs_plural_ones():
    assert _parse(b"<12'op:gc-export[3+][4+]>") == GcExports([3], [4])
    assert _parse(b"<13'op:gc-exports[3+][4+]>") == GcExports([3], [4])
    assert _parse(b"<12'op:gc-answer[0+]>") == GcAnswers([0])
    assert _parse(b"<13'op:gc-answers[0+]>") == GcAnswers([0])


def test_listen_has_three_fields_and_abort_one():
    data = b"<9'op:listen<11'desc:export5+><18'desc:import-object6+>f>"
    assert _parse(data) == Listen(Descriptor(EXPORT, 5), Descriptor(IMPORT_OBJECT, 6), False)
    assert _parse(b"<8'op:abort14\"session closed>") == Abort("session closed")


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"[1+]", "malformed-frame"),  # not a record
        (b"<7'op:nope>", "unknown-op"),
        (b"<10'op:deliver<11'desc:export0+>[]f>", "bad-arity"),  # a field short
        (b"<10'op:deliver4:nope[]f<18'desc:import-object0+>>", "malformed-frame"),  # target not a descriptor
        (b"<10'op:deliver<11'desc:export1->[]f<18'desc:import-object0+>>", "malformed-frame"),  # negative position
        (b"<10'op:deliver<11'desc:export9007199254740992+>[]f<18'desc:import-object0+>>", "malformed-frame"),  # past 2**53-1
        (b"<10'op:deliver<11'desc:export1+2+>[]f<18'desc:import-object0+>>", "malformed-frame"),  # descriptor with two fields
        (b"<10'op:deliver", "malformed-frame"),  # not even Syrup
    ],
)
def test_malformed_messages_are_refused_with_a_protocol_error(data: bytes, code: str):
    with pytest.raises(ProtocolError) as caught:
        _parse(data)
    assert caught.value.code == code


def test_too_many_descriptors_in_one_frame_are_refused_while_decoding():
    data = b"<15'op:deliver-only<11'desc:export2+>[" + b"<11'desc:export2+>" * 20 + b"]>"
    with pytest.raises(ProtocolError) as caught:
        OcapnProfile(HERE).decode_message(data, Limits(max_descriptors=10))
    assert caught.value.code == "too-many-descriptors"


# -- messages out -------------------------------------------------------------------


def test_a_call_goes_out_with_its_method_as_a_leading_symbol_and_its_result_resolver():
    resolver = object()
    frame = _write(Deliver(Descriptor(EXPORT, 3), "withdraw_gift", [b"x"], 0, resolver), lambda obj: Descriptor(IMPORT_OBJECT, 1))
    assert frame == b"<10'op:deliver<11'desc:export3+>[13'withdraw-gift1:x]0+<18'desc:import-object1+>>"


def test_fulfilling_a_resolver_is_a_deliver_only_with_the_fulfill_symbol():
    assert _write(DeliverOnly(Descriptor(EXPORT, 4), "fulfill", ["Vroom!"])) == b"<15'op:deliver-only<11'desc:export4+>[7'fulfill6\"Vroom!]>"


def test_gc_goes_out_in_the_singular_the_suite_and_goblins_read():
    assert _write(GcExports([3, 5], [1, 4])) == b"<12'op:gc-export[3+5+][1+4+]>"
    assert _write(GcAnswers([0])) == b"<12'op:gc-answer[0+]>"


def test_a_deliver_without_answer_position_writes_false():
    frame = _write(Deliver(Descriptor(ANSWER, 2), None, [], None, object()), lambda obj: Descriptor(IMPORT_PROMISE, 9))
    assert frame == b"<10'op:deliver<11'desc:answer2+>[]f<19'desc:import-promise9+>>"


def test_references_in_args_are_described_by_the_callback_in_order():
    a, b = object(), object()
    seen: list[object] = []

    def describe(obj: object) -> Descriptor:
        seen.append(obj)
        return Descriptor(IMPORT_OBJECT, 7 if obj is a else 8)

    assert _syrup_of([a, {"k": b}], describe) == b"[<18'desc:import-object7+>{1\"k<18'desc:import-object8+>}]"
    assert seen == [a, b]


# -- start-session ---------------------------------------------------------------------


def test_start_session_carries_version_key_location_and_a_signature_the_peer_checks():
    ours, theirs = OcapnProfile(HERE), OcapnProfile(PeerLocator("other", "tcp-testing-only"))
    frame = ours.encode_message(ours.start_session(), _no_refs, LIMITS)
    assert frame.startswith(b"<16'op:start-session3\"1.0[10'public-key")
    theirs.check_start(theirs.decode_message(frame, LIMITS))
    assert theirs.peer is not None and theirs.peer.location == HERE


def test_start_session_with_another_version_is_refused():
    ours, theirs = OcapnProfile(HERE), OcapnProfile(HERE)
    start = ours.start_session()
    frame = ours.encode_message(StartSession("0.9", start.extra), _no_refs, LIMITS)
    with pytest.raises(ProtocolError) as caught:
        theirs.check_start(theirs.decode_message(frame, LIMITS))
    assert caught.value.code == "version-mismatch"


def test_start_session_whose_location_signature_is_by_another_key_is_refused():
    ours, theirs = OcapnProfile(HERE), OcapnProfile(HERE)
    key, location, _ = ours.start_session().extra
    forged = OcapnProfile(HERE).start_session().extra[2]
    frame = ours.encode_message(StartSession("1.0", (key, location, forged)), _no_refs, LIMITS)
    with pytest.raises(ProtocolError) as caught:
        theirs.check_start(theirs.decode_message(frame, LIMITS))
    assert caught.value.code == "bad-field"


def test_start_session_with_a_malformed_key_is_refused():
    ours, theirs = OcapnProfile(HERE), OcapnProfile(HERE)
    _, location, sig = ours.start_session().extra
    frame = ours.encode_message(StartSession("1.0", ([Symbol("public-key")], location, sig)), _no_refs, LIMITS)
    with pytest.raises(ProtocolError) as caught:
        theirs.check_start(theirs.decode_message(frame, LIMITS))
    assert caught.value.code == "bad-field"


# -- passable values -----------------------------------------------------------------


def test_values_syrup_lacks_are_records():
    assert _syrup_of(None) == b"<4'null>"
    assert _syrup_of(Tagged("point", [1, 2])) == b"<11'desc:tagged5'point[1+2+]>"
    assert _syrup_of(RemoteError("TypeError", "bad")) == b"<10'desc:error14\"TypeError: bad>"
    assert _syrup_of(ValueError("no")) == b"<10'desc:error14\"ValueError: no>"
    assert _syrup_of(Symbol("ok")) == b"2'ok"


def test_null_void_tagged_and_error_read_back():
    assert _value(b"<4'null>") is None
    assert _value(b"<4'void>") is None
    assert _value(b"<11'desc:tagged5'point[1+2+]>") == Tagged("point", [1, 2])
    assert _value(b"<11'desc:tagged5\"point1+>") == Tagged("point", 1)
    assert _value(b"<10'desc:error3\"bad>") == RemoteError("Error", "bad")


@pytest.mark.parametrize(
    ("error", "written"),
    [
        (RemoteError("Revoked", "this reference was revoked"), b"<10'desc:error35\"Revoked: this reference was revoked>"),
        (RemoteError("KeyError", ""), b"<10'desc:error10\"KeyError: >"),
        (RemoteError("gaierror", "no such name"), b"<10'desc:error22\"gaierror: no such name>"),
        (RemoteError("Error", "a: b"), b"<10'desc:error11\"Error: a: b>"),
        (RemoteError("_Private9", "x\ny"), b"<10'desc:error14\"_Private9: x\ny>"),
    ],
)
def test_an_error_name_that_is_an_identifier_crosses_with_its_message(error: RemoteError, written: bytes) -> None:
    assert _syrup_of(error) == written
    back = _value(written)
    assert (back.name, back.message) == (error.name, error.message)


@pytest.mark.parametrize(
    ("message", "read"),
    [
        ("bad", RemoteError("Error", "bad")),  # what Endo writes for Error("bad"): no name
        ("Not a name: x", RemoteError("Error", "Not a name: x")),
        ("9Lives: x", RemoteError("Error", "9Lives: x")),
        ("Name:no space", RemoteError("Error", "Name:no space")),
        ("Ünïcode: x", RemoteError("Error", "Ünïcode: x")),
        ("N" * 65 + ": x", RemoteError("Error", "N" * 65 + ": x")),
        ("", RemoteError("Error", "")),
    ],
)
def test_a_message_without_a_name_before_it_reads_as_an_error_named_error(message: str, read: RemoteError) -> None:
    assert _value(encode(Record(Symbol("desc:error"), (message,)))) == read


@given(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,63}", fullmatch=True), st.text(max_size=20))
def test_any_identifier_name_and_any_message_round_trip(name: str, message: str) -> None:
    back = _value(_syrup_of(RemoteError(name, message)))
    assert (back.name, back.message) == (name, message)


def test_goblins_fieldless_mystery_error_reads_as_an_error() -> None:
    """Guile Goblins breaks promises with <exn:fail:mystery> and no fields, revealing nothing."""
    error = _value(b"<16'exn:fail:mystery>")
    assert isinstance(error, RemoteError) and error.name == "Error" and "does not describe" in error.message
    with pytest.raises(ProtocolError, match="exn:fail:mystery"):
        _value(b"<16'exn:fail:mystery3\"why>")


def test_descriptors_inside_values_go_to_revive():
    seen: list[Descriptor] = []
    value = _value(b"[<19'desc:import-promise2+>{1\"k<18'desc:import-object3+>}]", lambda d: seen.append(d) or d.position)
    assert value == [2, {"k": 3}]
    assert seen == [Descriptor(IMPORT_PROMISE, 2), Descriptor(IMPORT_OBJECT, 3)]


def test_locators_and_sturdyrefs_are_values():
    sturdy = SturdyRef(PeerLocator("abc", "tcp-testing-only", {"host": "127.0.0.1", "port": "9"}), b"my-object")
    data = _syrup_of(sturdy)
    assert data == b"<15'ocapn-sturdyref<10'ocapn-peer16'tcp-testing-only3\"abc{4\"host9\"127.0.0.14\"port1\"9}>9:my-object>"
    assert _value(data) == sturdy


def test_a_signed_handoff_goes_to_on_handoff_or_stays_a_record():
    envelope = sign_envelope(generate_key(), Record(Symbol("desc:handoff-give"), (1,)))
    assert _value(encode(envelope)) == envelope
    seen: list[Any] = []
    profile = OcapnProfile(HERE, on_handoff=lambda p, record: seen.append(record) or "promise")
    assert profile.decode_args([envelope], lambda d: d) == ["promise"]
    assert seen == [envelope]


@pytest.mark.parametrize(
    "data",
    [
        b"#1+$",  # sets are not passable
        b"{1+1+}",  # dictionary keys must be strings
        b"<5'thing1+>",  # unknown record
        b"<4'null1+>",  # null with a field
        b"<11'desc:tagged1+1+>",  # tag not a symbol or string
        b"<10'desc:error1+>",  # error message not a string
        b"<15'ocapn-sturdyref1+>",  # a sturdyref without its fields
    ],
)
def test_values_that_are_not_passable_are_refused(data: bytes):
    with pytest.raises(ProtocolError) as caught:
        _value(data)
    assert caught.value.code == "malformed-frame"


def test_unpassable_python_values_raise_type_error():
    with pytest.raises(TypeError):
        _syrup_of({1: "x"})
    with pytest.raises(TypeError):
        _syrup_of(Record(Symbol("op:abort"), ("forged",)))


# -- every input: a message, or ProtocolError --------------------------------------

_LABELS = [
    Symbol(n)
    for n in (
        "op:deliver", "op:deliver-only", "op:listen", "op:gc-export", "op:gc-exports", "op:gc-answer", "op:gc-answers",
        "op:abort", "op:start-session", "desc:export", "desc:answer", "desc:import-object", "desc:import-promise",
        "desc:tagged", "desc:error", "desc:sig-envelope", "ocapn-peer", "ocapn-sturdyref", "null", "void", "other",
    )
]
_atoms = st.one_of(
    st.booleans(), st.integers(), st.text(max_size=8), st.binary(max_size=8), st.sampled_from(_LABELS + [Symbol("fetch")])
)


def _containers(children: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=3), children, max_size=3),
        st.builds(Record, st.sampled_from(_LABELS), st.lists(children, max_size=5)),
    )


_values = st.recursive(_atoms, _containers, max_leaves=12)


def _decode_all(data: bytes) -> None:
    profile = _profile()
    message = profile.decode_message(data, LIMITS)
    if isinstance(message, (Deliver, DeliverOnly)):
        profile.decode_args(message.args, lambda d: d)
    if isinstance(message, StartSession):
        profile.check_start(message)


@settings(max_examples=3000, deadline=None)
@given(_values)
def test_any_syrup_value_is_a_message_or_a_protocol_error(value: object):
    try:
        data = encode(value)
    except TypeError:
        return
    try:
        _decode_all(data)
    except ProtocolError:
        pass


@settings(max_examples=3000, deadline=None)
@given(st.binary(min_size=1, max_size=64), st.data())
def test_mutated_message_bytes_are_a_message_or_a_protocol_error(noise: bytes, data: st.DataObject):
    base = bytearray(b"<10'op:deliver<11'desc:answer1+>[[3'red9'zoomracer]<4'null>]2+<18'desc:import-object3+>>")
    at = data.draw(st.integers(0, len(base) - 1))
    base[at : at + len(noise) // 2] = noise
    try:
        _decode_all(bytes(base))
    except ProtocolError:
        pass


# -- the single-pass writer writes exactly the records the mapping describes ----------------


def _reference(value: Any) -> Any:
    """The Syrup value the module docstring maps a passable to (no references)."""
    if value is None:
        return Record(Symbol("null"))
    if type(value) in (list, tuple):
        return [_reference(v) for v in value]
    if type(value) is dict:
        return {k: _reference(v) for k, v in value.items()}
    if type(value) is Tagged:
        return Record(Symbol("desc:tagged"), (Symbol(value.tag), _reference(value.payload)))
    if isinstance(value, BaseException):
        err = RemoteError.from_exception(value)
        return Record(Symbol("desc:error"), (f"{err.name}: {err.message}",))
    return value


_passables = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6), st.binary(max_size=6),
        st.builds(Symbol, st.text(max_size=6)), st.builds(RemoteError, st.text(max_size=4), st.text(max_size=4)),
    ),
    lambda kids: st.one_of(
        st.lists(kids, max_size=4),
        st.dictionaries(st.text(max_size=4), kids, max_size=4),
        st.builds(Tagged, st.text(max_size=4), kids),
    ),
    max_leaves=15,
)


@settings(max_examples=2000, deadline=None)
@given(_passables)
def test_the_writer_writes_what_syrup_encodes_for_the_mapped_value(value: object):
    assert _syrup_of(value) == encode(_reference(value))


def test_the_writer_refuses_what_the_peer_would_refuse():
    with pytest.raises(TypeError):
        _syrup_of("\ud800")  # a lone surrogate
    with pytest.raises(TypeError):
        _syrup_of(10**4400)
    nested: list[Any] = []
    for _ in range(200):
        nested = [nested]
    with pytest.raises(TypeError):
        _syrup_of(nested)
    with pytest.raises(TypeError):  # LimitExceeded is a TypeError
        OcapnProfile(HERE).encode_message(DeliverOnly(Descriptor(EXPORT, 1), None, [list(range(100))]), _no_refs, Limits(max_elements=50))
    many = [object() for _ in range(11)]
    with pytest.raises(TypeError):
        OcapnProfile(HERE).encode_message(DeliverOnly(Descriptor(EXPORT, 1), None, many), lambda o: Descriptor(IMPORT_OBJECT, 1), Limits(max_descriptors=10))


@settings(max_examples=500, deadline=None)
@given(st.lists(st.integers(0, 3), max_size=30), st.integers(5, 40))
def test_a_frame_the_writer_accepts_is_one_the_reader_accepts(shape: list[int], max_elements: int):
    limits = Limits(max_elements=max_elements, max_descriptors=3)
    args = [[None] * n if n % 2 else {"k" * n: n} for n in shape]
    profile = OcapnProfile(HERE)
    try:
        frame = profile.encode_message(DeliverOnly(Descriptor(EXPORT, 1), "m", args), _no_refs, limits)
    except TypeError:
        return
    profile.decode_message(frame, limits)  # no ProtocolError: within the same limits
