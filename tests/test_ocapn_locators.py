"""OCapN locators as a specification (OCapN draft Locators.md): peer and
sturdyref URIs parse and print canonically and round-trip, their Syrup records
(`<ocapn-peer transport designator hints>`, `<ocapn-sturdyref peer swiss>`)
match the spec and the test suite's dialect, and a malformed URI or record is
refused with one line saying what is wrong.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ocapd.captp import Symbol
from ocapd.captp.ocapn_locators import (
    MAX_URI_LENGTH,
    LocatorError,
    PeerLocator,
    SturdyRef,
    parse_uri,
)
from ocapd.captp.syrup import Record, decode, encode

SUITE_LIKE = "ocapn://0a1b2c3d4e5f.tcp-testing-only?host=127.0.0.1&port=22045"


def test_a_peer_uri_parses_into_designator_netlayer_and_hints() -> None:
    peer = PeerLocator.from_uri(SUITE_LIKE)
    assert peer.designator == "0a1b2c3d4e5f"
    assert peer.transport == "tcp-testing-only"
    assert dict(peer.hints) == {"host": "127.0.0.1", "port": "22045"}
    assert peer.hint("port") == "22045"
    assert peer.hint("missing") is None
    assert peer.to_uri() == SUITE_LIKE


def test_the_last_dot_separates_designator_from_netlayer() -> None:
    peer = PeerLocator.from_uri("ocapn://abc.def.onion")
    assert (peer.designator, peer.transport) == ("abc.def", "onion")
    assert peer.hints == {}
    assert peer.to_uri() == "ocapn://abc.def.onion"


def test_hints_print_sorted_and_escaped_so_one_locator_has_one_uri() -> None:
    peer = PeerLocator("d", "tls-ed25519", {"port": "1", "host": "::1", "note": "a b+c&d=e/é"})
    uri = peer.to_uri()
    assert uri == "ocapn://d.tls-ed25519?host=%3A%3A1&note=a%20b%2Bc%26d%3De%2F%C3%A9&port=1"
    assert PeerLocator.from_uri(uri) == peer


def test_a_plus_in_a_hint_is_a_plus_as_rfc3986_says_not_a_space() -> None:
    assert PeerLocator.from_uri("ocapn://d.x?k=a+b").hint("k") == "a+b"


def test_the_scheme_is_case_insensitive_and_printed_lower_case() -> None:
    assert PeerLocator.from_uri("OCapN://d.x").to_uri() == "ocapn://d.x"


def test_a_sturdyref_uri_carries_its_swiss_number_before_the_hints() -> None:
    uri = "ocapn://0a1b.tcp-testing-only/s/VMDDd1voKWarCe2GvgLbxbVFysNzRPzx?host=127.0.0.1&port=9"
    ref = SturdyRef.from_uri(uri)
    assert ref.peer == PeerLocator("0a1b", "tcp-testing-only", {"host": "127.0.0.1", "port": "9"})
    assert ref.swiss_num == b"VMDDd1voKWarCe2GvgLbxbVFysNzRPzx"
    assert ref.to_uri() == uri


def test_a_swiss_number_of_any_bytes_survives_the_uri() -> None:
    ref = SturdyRef(PeerLocator("d", "x"), bytes(range(256)))
    assert SturdyRef.from_uri(ref.to_uri()) == ref


def test_parse_uri_tells_a_peer_from_a_sturdyref() -> None:
    assert isinstance(parse_uri("ocapn://d.x"), PeerLocator)
    assert isinstance(parse_uri("ocapn://d.x/s/abc"), SturdyRef)


def test_a_peer_locator_is_not_a_sturdyref_and_back() -> None:
    with pytest.raises(LocatorError, match="sturdyref"):
        PeerLocator.from_uri("ocapn://d.x/s/abc")
    with pytest.raises(LocatorError, match="/s/"):
        SturdyRef.from_uri("ocapn://d.x")


def test_same_peer_ignores_hints_as_the_spec_says() -> None:
    a = PeerLocator("d", "x", {"host": "a"})
    b = PeerLocator("d", "x", {"host": "b"})
    assert a != b
    assert a.same_peer(b)
    assert not a.same_peer(PeerLocator("d", "y", {"host": "a"}))
    assert not a.same_peer(PeerLocator("e", "x", {"host": "a"}))


def test_locators_are_immutable_and_hashable() -> None:
    peer = PeerLocator("d", "x", {"k": "v"})
    assert hash(peer) == hash(PeerLocator("d", "x", {"k": "v"}))
    with pytest.raises(TypeError):
        peer.hints["k"] = "w"  # type: ignore[index]
    with pytest.raises(AttributeError):
        peer.designator = "e"  # type: ignore[misc]


# --- the Syrup records --------------------------------------------------------


def test_the_peer_record_is_transport_then_designator_then_hints() -> None:
    peer = PeerLocator("abc", "tcp-testing-only", {"host": "127.0.0.1", "port": "9"})
    record = peer.to_syrup()
    assert record == Record(Symbol("ocapn-peer"), (Symbol("tcp-testing-only"), "abc", {"host": "127.0.0.1", "port": "9"}))
    assert PeerLocator.from_syrup(decode(encode(record))) == peer


def test_a_peer_without_hints_writes_false() -> None:
    assert PeerLocator("abc", "onion").to_syrup() == Record(Symbol("ocapn-peer"), (Symbol("onion"), "abc", False))
    assert PeerLocator.from_syrup(Record(Symbol("ocapn-peer"), (Symbol("onion"), "abc", False))).hints == {}


def test_hint_keys_written_as_symbols_are_read_too() -> None:
    record = Record(Symbol("ocapn-peer"), (Symbol("x"), "d", {Symbol("host"): "h"}))
    assert PeerLocator.from_syrup(record).hints == {"host": "h"}


def test_the_sturdyref_record_holds_the_peer_record_and_the_swiss_bytes() -> None:
    ref = SturdyRef(PeerLocator("abc", "onion"), b"swiss")
    assert ref.to_syrup() == Record(Symbol("ocapn-sturdyref"), (PeerLocator("abc", "onion").to_syrup(), b"swiss"))
    assert SturdyRef.from_syrup(decode(encode(ref.to_syrup()))) == ref


def test_a_swiss_number_written_as_a_string_is_read_as_its_utf8_bytes() -> None:
    record = Record(Symbol("ocapn-sturdyref"), (PeerLocator("a", "b").to_syrup(), "swiss"))
    assert SturdyRef.from_syrup(record).swiss_num == b"swiss"


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("not a record", "not an ocapn-peer record"),
        (Record(Symbol("ocapn-node"), (Symbol("x"), "d", False)), "not an ocapn-peer record"),
        (Record("ocapn-peer", (Symbol("x"), "d", False)), "not an ocapn-peer record"),
        (Record(Symbol("ocapn-peer"), (Symbol("x"), "d")), "3 fields"),
        (Record(Symbol("ocapn-peer"), ("x", "d", False)), "netlayer must be a symbol"),
        (Record(Symbol("ocapn-peer"), (Symbol("x.y"), "d", False)), "netlayer"),
        (Record(Symbol("ocapn-peer"), (Symbol("x"), b"d", False)), "designator must be a string"),
        (Record(Symbol("ocapn-peer"), (Symbol("x"), "", False)), "designator"),
        (Record(Symbol("ocapn-peer"), (Symbol("x"), "d", True)), "hints"),
        (Record(Symbol("ocapn-peer"), (Symbol("x"), "d", {"k": 1})), "hint"),
        (Record(Symbol("ocapn-peer"), (Symbol("x"), "d", {1: "v"})), "hint"),
        (Record(Symbol("ocapn-peer"), (Symbol("x"), "d", {"k": "v", Symbol("k"): "w"})), "twice"),
    ],
)
def test_a_malformed_peer_record_is_refused(value: object, complaint: str) -> None:
    with pytest.raises(LocatorError, match=complaint):
        PeerLocator.from_syrup(value)


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        (Record(Symbol("ocapn-sturdyref"), (PeerLocator("a", "b").to_syrup(),)), "2 fields"),
        (Record(Symbol("ocapn-sturdyref"), (PeerLocator("a", "b").to_syrup(), 5)), "swiss"),
        (Record(Symbol("ocapn-sturdyref"), (PeerLocator("a", "b").to_syrup(), b"")), "swiss"),
        (Record(Symbol("ocapn-sturdyref"), ("ocapn://a.b", b"s")), "ocapn-peer"),
        (Record(Symbol("ocapn-peer"), (Symbol("x"), "d", False)), "not an ocapn-sturdyref record"),
    ],
)
def test_a_malformed_sturdyref_record_is_refused(value: object, complaint: str) -> None:
    with pytest.raises(LocatorError, match=complaint):
        SturdyRef.from_syrup(value)


# --- malformed URIs -------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "complaint"),
    [
        ("", "ocapn://"),
        ("http://d.x", "ocapn://"),
        ("ocapn:d.x", "ocapn://"),
        ("ocapn://", "designator"),
        ("ocapn://nodot", "<designator>.<netlayer>"),
        ("ocapn://.x", "designator"),
        ("ocapn://d.", "netlayer"),
        ("ocapn://d.x!y", "netlayer"),
        ("ocapn://user@d.x", "'@'"),
        ("ocapn://d.x:1234", "':'"),
        ("ocapn://d.x/", "path"),
        ("ocapn://d.x/s/", "swiss"),
        ("ocapn://d.x/s/a/b", "path"),
        ("ocapn://d.x/t/a", "path"),
        ("ocapn://d.x#frag", "fragment"),
        ("ocapn://d.x?", "empty"),
        ("ocapn://d.x?a", "'name=value'"),
        ("ocapn://d.x?a=1&a=2", "twice"),
        ("ocapn://d.x?=1", "hint name"),
        ("ocapn://d.x?a=1&&b=2", "'name=value'"),
        ("ocapn://d%zz.x", "percent"),
        ("ocapn://d%ff.x", "UTF-8"),
        ("ocapn://d.x?a=%ff", "UTF-8"),
        ("ocapn://d x.y", "character"),
        ("ocapn://d.x\n", "character"),
        (b"ocapn://d.x", "must be a str"),
    ],
)
def test_a_malformed_uri_is_refused_with_one_line(uri: str, complaint: str) -> None:
    with pytest.raises(LocatorError, match=complaint) as caught:
        parse_uri(uri)
    message = str(caught.value)
    assert "\n" not in message


def test_a_very_long_uri_is_refused_before_it_is_read_and_not_echoed_whole() -> None:
    uri = "ocapn://" + "d" * MAX_URI_LENGTH + ".x"
    with pytest.raises(LocatorError, match="longer than") as caught:
        parse_uri(uri)
    assert len(str(caught.value)) < 300


def test_constructing_a_locator_checks_its_parts() -> None:
    with pytest.raises(LocatorError, match="netlayer"):
        PeerLocator("d", "a.b")
    with pytest.raises(LocatorError, match="designator"):
        PeerLocator("", "x")
    with pytest.raises(LocatorError, match="hint"):
        PeerLocator("d", "x", {"": "v"})
    with pytest.raises(LocatorError, match="swiss"):
        SturdyRef(PeerLocator("d", "x"), b"")


# --- round trips ------------------------------------------------------------------

_text = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=20)
_netlayer = st.from_regex(r"[A-Za-z0-9_~-]{1,20}", fullmatch=True)
_peers = st.builds(PeerLocator, _text, _netlayer, st.dictionaries(_text, st.text(st.characters(exclude_categories=("Cs",)), max_size=20), max_size=4))


@given(_peers)
def test_any_peer_survives_its_uri_and_its_record(peer: PeerLocator) -> None:
    uri = peer.to_uri()
    assert PeerLocator.from_uri(uri) == peer
    assert PeerLocator.from_uri(uri).to_uri() == uri
    assert PeerLocator.from_syrup(decode(encode(peer.to_syrup()))) == peer


@given(_peers, st.binary(min_size=1, max_size=40))
def test_any_sturdyref_survives_its_uri_and_its_record(peer: PeerLocator, swiss: bytes) -> None:
    ref = SturdyRef(peer, swiss)
    assert SturdyRef.from_uri(ref.to_uri()) == ref
    assert SturdyRef.from_syrup(decode(encode(ref.to_syrup()))) == ref


@given(st.text(max_size=60))
def test_any_text_either_parses_to_a_locator_that_prints_back_or_is_refused_with_locator_error(text: str) -> None:
    try:
        parsed = parse_uri("ocapn://" + text)
    except LocatorError as error:
        assert "\n" not in str(error)
    else:
        assert parse_uri(parsed.to_uri()) == parsed


_odd_values = st.one_of(
    st.integers(-3, 3),
    st.booleans(),
    st.binary(max_size=4),
    st.text(max_size=6),
    st.sampled_from([Symbol("ocapn-peer"), Symbol("ocapn-sturdyref"), Symbol("tcp-testing-only"), Symbol("a.b"), Symbol("")]),
    st.just([]),
    st.just({}),
    st.dictionaries(
        st.one_of(st.text(max_size=3), st.sampled_from([Symbol("host"), Symbol("port")])),
        st.one_of(st.text(max_size=3), st.integers()),
        max_size=3,
    ),
)


@given(st.integers(0, 4), st.integers(0, 3), _odd_values)
def test_a_record_with_any_field_changed_reads_as_a_locator_or_a_locator_error(depth: int, index: int, new: object) -> None:
    """Whatever a peer puts in a location record, reading it raises nothing but LocatorError."""
    ref = SturdyRef(PeerLocator("d", "tcp-testing-only", {"host": "127.0.0.1", "port": "9"}), b"swiss").to_syrup()
    peer = ref.fields[0]
    if depth % 2:
        fields = list(peer.fields)
        fields[index % 3] = new
        value: object = Record(ref.label, (Record(peer.label, tuple(fields)), ref.fields[1]))
    else:
        fields = list(ref.fields)
        fields[index % 2] = new
        value = Record(ref.label, tuple(fields))
    try:
        decoded = decode(encode(value))
    except TypeError:
        return
    try:
        SturdyRef.from_syrup(decoded)
    except LocatorError as error:
        assert "\n" not in str(error)
    try:
        PeerLocator.from_syrup(decoded.fields[0] if decoded.fields else decoded)
    except LocatorError as error:
        assert "\n" not in str(error)
