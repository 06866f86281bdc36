"""OCapN locators: where a peer is, and which object there a sturdyref names.

Per OCapN's draft Locators specification, a *peer locator* is a designator
(usually a key), a netlayer name (OCapN's "transport") and hints (whatever
else the netlayer needs to reach the peer: a host and port, say). A
*sturdyref* is a peer locator and a swiss number, the secret that names one
object there. Each has two forms:

- a URI for people and out-of-band exchange:
  ``ocapn://<designator>.<netlayer>?<hints>`` and
  ``ocapn://<designator>.<netlayer>/s/<swiss-num>?<hints>``;
- a Syrup record for the wire: ``<ocapn-peer netlayer designator hints>``
  (netlayer a symbol, hints a dictionary of strings or ``false``) and
  ``<ocapn-sturdyref peer swiss-num>``.

    peer = PeerLocator.from_uri("ocapn://k3x.tcp-testing-only?host=127.0.0.1&port=9")
    peer.to_syrup()   # Record(Symbol('ocapn-peer'), (Symbol('tcp-testing-only'), 'k3x', {...}))

Printing is canonical, so one locator has one URI: hints sorted by name, and
every character outside RFC 3986's unreserved set (``A-Z a-z 0-9 - . _ ~``)
percent-encoded as UTF-8 (the designator keeps its dots). Parsing is strict:
anything else in the URI is a ``LocatorError`` with a one-line reason, never
a guess. Pure functions over strings and Syrup values; no I/O.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .passable import Symbol
from .syrup import Record

__all__ = [
    "MAX_URI_LENGTH",
    "LocatorError",
    "PeerLocator",
    "SturdyRef",
    "parse_uri",
]

#: Longest URI read, in characters. Designators are keys (an Ed25519 key is 52
#: base32 characters, an onion service ID 56), hints a host and a port, swiss
#: numbers 32 bytes: real locators are a few hundred characters. The bound
#: keeps a pasted megabyte from being scanned, and errors from echoing it.
MAX_URI_LENGTH = 4096

PEER_LABEL = Symbol("ocapn-peer")
STURDYREF_LABEL = Symbol("ocapn-sturdyref")

#: A netlayer name: a Syrup symbol without "." (the spec's rule), limited to
#: RFC 3986's unreserved characters so that it needs no escaping in a URI.
_NETLAYER = re.compile(r"[A-Za-z0-9_~-]+\Z")
#: Characters allowed anywhere in a URI (RFC 3986: unreserved, reserved, "%").
_URI_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_SHOWN_CHARS = 80


class LocatorError(ValueError):
    """A malformed OCapN URI or locator record; the message is one line."""


def _shown(text: str) -> str:
    """``text`` quoted for an error message, cut short if long."""
    if len(text) > _SHOWN_CHARS:
        return repr(text[:_SHOWN_CHARS]) + "…"
    return repr(text)


def _check_text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise LocatorError(f"the {what} must be a string, not {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise LocatorError(f"the {what} {_shown(value)} is not valid Unicode (it holds a lone surrogate)") from None
    return value


def _check_netlayer(value: object) -> str:
    value = _check_text(value, "netlayer")
    if not _NETLAYER.match(value):
        raise LocatorError(f"netlayer name {_shown(value)} may hold only letters, digits, '-', '_' and '~' (and no '.')")
    return value


def _check_designator(value: object) -> str:
    value = _check_text(value, "designator")
    if not value:
        raise LocatorError("the designator is empty")
    return value


@dataclass(frozen=True, slots=True)
class PeerLocator:
    """Where an OCapN peer is: ``PeerLocator(designator, netlayer, hints)``.

    ``hints`` is read-only (any mapping of str to str given is copied, sorted
    by name). Equality compares all three parts; ``same_peer`` compares only
    designator and netlayer, which the spec says name the peer (hints only
    help reach it). Construction checks every part (``LocatorError``).
    """

    designator: str
    transport: str
    hints: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_designator(self.designator)
        _check_netlayer(self.transport)
        if not isinstance(self.hints, Mapping):
            raise LocatorError(f"hints must be a mapping of str to str, not {type(self.hints).__name__}")
        hints: dict[str, str] = {}
        for name, value in sorted(self.hints.items(), key=lambda item: str(item[0])):
            _check_text(name, "hint name")
            if not name:
                raise LocatorError("a hint name is empty")
            _check_text(value, f"hint {name!r}")
            hints[name] = value
        object.__setattr__(self, "hints", MappingProxyType(hints))

    def __hash__(self) -> int:
        return hash((self.designator, self.transport, tuple(self.hints.items())))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PeerLocator):
            return NotImplemented
        return (self.designator, self.transport, dict(self.hints)) == (other.designator, other.transport, dict(other.hints))

    def __repr__(self) -> str:
        return f"PeerLocator({self.designator!r}, {self.transport!r}, {dict(self.hints)!r})"

    def hint(self, name: str) -> str | None:
        """The hint called ``name``, or None."""
        return self.hints.get(name)

    def same_peer(self, other: PeerLocator) -> bool:
        """Whether ``other`` names the same peer (same designator and netlayer)."""
        return (self.designator, self.transport) == (other.designator, other.transport)

    @classmethod
    def from_uri(cls, uri: str) -> PeerLocator:
        """The peer an ``ocapn://<designator>.<netlayer>?<hints>`` URI names."""
        located = parse_uri(uri)
        if isinstance(located, SturdyRef):
            raise LocatorError(f"{_shown(uri)} is a sturdyref (it has /s/<swiss-num>), not a peer locator")
        return located

    def to_uri(self) -> str:
        """The canonical URI: ``ocapn://<designator>.<netlayer>`` then sorted hints."""
        return f"ocapn://{_quote(self.designator, '.')}.{self.transport}{_query(self.hints)}"

    @classmethod
    def from_syrup(cls, value: object) -> PeerLocator:
        """The peer a decoded ``<ocapn-peer netlayer designator hints>`` record names.

        Hints may be ``false`` or a dictionary whose keys are strings (the
        current spec: a struct) or symbols (earlier drafts), values strings.
        """
        if not isinstance(value, Record) or value.label != PEER_LABEL:
            raise LocatorError(f"not an ocapn-peer record: {_describe(value)}")
        if len(value.fields) != 3:
            raise LocatorError(f"an ocapn-peer record has 3 fields (netlayer, designator, hints), not {len(value.fields)}")
        transport, designator, raw_hints = value.fields
        if not isinstance(transport, Symbol):
            raise LocatorError(f"the netlayer must be a symbol, not {type(transport).__name__}")
        if not isinstance(designator, str):
            raise LocatorError(f"the designator must be a string, not {type(designator).__name__}")
        hints: dict[str, str] = {}
        if raw_hints is not False:
            if not isinstance(raw_hints, dict):
                raise LocatorError(f"the hints must be a dictionary or false, not {_describe(raw_hints)}")
            for key, hint in raw_hints.items():
                name = key.name if isinstance(key, Symbol) else key
                if not isinstance(name, str):
                    raise LocatorError(f"a hint name must be a string or a symbol, not {type(key).__name__}")
                if not isinstance(hint, str):
                    raise LocatorError(f"hint {name!r} must be a string, not {type(hint).__name__}")
                if name in hints:
                    raise LocatorError(f"hint {name!r} is given twice (as a string and as a symbol)")
                hints[name] = hint
        return cls(designator, transport.name, hints)

    def to_syrup(self) -> Record:
        """``<ocapn-peer netlayer designator hints>``, hints ``false`` when there are none."""
        hints: dict[str, str] | bool = dict(self.hints) if self.hints else False
        return Record(PEER_LABEL, (Symbol(self.transport), self.designator, hints))


@dataclass(frozen=True, slots=True)
class SturdyRef:
    """An object at a peer: ``SturdyRef(peer, swiss_num)``.

    The swiss number is bytes (CapTP's ``fetch`` takes a bytestring); a
    record holding it as a string (the Locators draft's wording) is read as
    that string's UTF-8 bytes. Whoever holds a sturdyref can fetch the
    object: it is a capability, print it only to its intended holder.
    """

    peer: PeerLocator
    swiss_num: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.peer, PeerLocator):
            raise LocatorError(f"a sturdyref's peer must be a PeerLocator, not {type(self.peer).__name__}")
        if not isinstance(self.swiss_num, bytes | bytearray):
            raise LocatorError(f"the swiss number must be bytes, not {type(self.swiss_num).__name__}")
        if not self.swiss_num:
            raise LocatorError("the swiss number is empty")
        object.__setattr__(self, "swiss_num", bytes(self.swiss_num))

    def __repr__(self) -> str:
        # The swiss number is the capability: keep it out of logs and tracebacks.
        return f"SturdyRef({self.peer!r}, <swiss number, {len(self.swiss_num)} bytes>)"

    @classmethod
    def from_uri(cls, uri: str) -> SturdyRef:
        """The object an ``ocapn://<designator>.<netlayer>/s/<swiss-num>?<hints>`` URI names."""
        located = parse_uri(uri)
        if isinstance(located, PeerLocator):
            raise LocatorError(f"{_shown(uri)} names a peer, not an object (a sturdyref has /s/<swiss-num>)")
        return located

    def to_uri(self) -> str:
        """The canonical URI: the peer's, with ``/s/<swiss-num>`` before the hints."""
        peer = self.peer
        swiss = urllib.parse.quote_from_bytes(self.swiss_num, safe="")
        return f"ocapn://{_quote(peer.designator, '.')}.{peer.transport}/s/{swiss}{_query(peer.hints)}"

    @classmethod
    def from_syrup(cls, value: object) -> SturdyRef:
        """The object a decoded ``<ocapn-sturdyref peer swiss-num>`` record names."""
        if not isinstance(value, Record) or value.label != STURDYREF_LABEL:
            raise LocatorError(f"not an ocapn-sturdyref record: {_describe(value)}")
        if len(value.fields) != 2:
            raise LocatorError(f"an ocapn-sturdyref record has 2 fields (peer, swiss number), not {len(value.fields)}")
        peer, swiss = value.fields
        if isinstance(swiss, str):
            swiss = swiss.encode("utf-8")
        if not isinstance(swiss, bytes):
            raise LocatorError(f"the swiss number must be a bytestring or a string, not {type(swiss).__name__}")
        return cls(PeerLocator.from_syrup(peer), swiss)

    def to_syrup(self) -> Record:
        """``<ocapn-sturdyref <ocapn-peer ...> swiss-num>``."""
        return Record(STURDYREF_LABEL, (self.peer.to_syrup(), self.swiss_num))


def parse_uri(uri: str) -> PeerLocator | SturdyRef:
    """The peer locator or sturdyref an OCapN URI names; ``LocatorError`` if malformed."""
    if not isinstance(uri, str):
        raise LocatorError(f"an OCapN URI must be a str, not {type(uri).__name__}")
    if len(uri) > MAX_URI_LENGTH:
        raise LocatorError(f"URI {_shown(uri)} is longer than {MAX_URI_LENGTH} characters")
    allowed = _URI_CHARS.match(uri)
    assert allowed is not None
    if allowed.end() != len(uri):
        bad = uri[allowed.end()]
        raise LocatorError(f"character {bad!r} (U+{ord(bad):04X}) at position {allowed.end()} of {_shown(uri)} is not allowed in a URI; write it as %XX")
    scheme = _SCHEME.match(uri)
    if scheme is None or scheme.group(1).lower() != "ocapn":
        raise LocatorError(f"{_shown(uri)} is not an OCapN URI: expected ocapn://<designator>.<netlayer>")
    rest = uri[scheme.end() :]
    if "#" in rest:
        raise LocatorError(f"{_shown(uri)} has a fragment ('#'); OCapN URIs have none")
    rest, question, query = rest.partition("?")
    authority, slash, path = rest.partition("/")
    peer = _peer_from_uri(uri, authority, query if question else None)
    if not slash:
        return peer
    if not path.startswith("s/") or "/" in path[2:]:
        raise LocatorError(f"the path of {_shown(uri)} is not /s/<swiss-num> (the only path an OCapN URI has)")
    if not path[2:]:
        raise LocatorError(f"{_shown(uri)} has /s/ but no swiss number after it")
    return SturdyRef(peer, _unquote_bytes(uri, path[2:], "swiss number"))


def _peer_from_uri(uri: str, authority: str, query: str | None) -> PeerLocator:
    for char, meaning in (("@", "user information"), (":", "a port"), ("[", "an IP literal"), ("]", "an IP literal")):
        if char in authority:
            raise LocatorError(f"{_shown(uri)} has {char!r} ({meaning}) before its path; the designator has none (write it as %XX)")
    if not authority:
        raise LocatorError(f"{_shown(uri)} has no designator: expected ocapn://<designator>.<netlayer>")
    if "." not in authority:
        raise LocatorError(f"{_shown(uri)} is not ocapn://<designator>.<netlayer>: no '.' before the netlayer name")
    raw_designator, _, netlayer = authority.rpartition(".")
    if not raw_designator:
        raise LocatorError(f"{_shown(uri)} has an empty designator before the netlayer name")
    if not netlayer:
        raise LocatorError(f"{_shown(uri)} has no netlayer name after its last '.'")
    _check_netlayer(netlayer)
    designator = _unquote(uri, raw_designator, "designator")
    return PeerLocator(designator, netlayer, _hints_from_query(uri, query))


def _hints_from_query(uri: str, query: str | None) -> dict[str, str]:
    if query is None:
        return {}
    if not query:
        raise LocatorError(f"{_shown(uri)} has an empty query; leave out the '?' when there are no hints")
    hints: dict[str, str] = {}
    for part in query.split("&"):
        raw_name, equals, raw_value = part.partition("=")
        if not equals:
            raise LocatorError(f"hint {_shown(part)} in {_shown(uri)} is not 'name=value'")
        if not raw_name:
            raise LocatorError(f"{_shown(uri)} has an empty hint name before '='")
        name = _unquote(uri, raw_name, "hint name")
        if name in hints:
            raise LocatorError(f"hint {_shown(name)} is given twice in {_shown(uri)}")
        hints[name] = _unquote(uri, raw_value, f"hint {name!r}")
    return hints


def _unquote_bytes(uri: str, raw: str, what: str) -> bytes:
    """``raw`` with its %XX escapes decoded; a "%" not followed by two hex digits is refused."""
    if _PERCENT.search(raw):
        raise LocatorError(f"the {what} in {_shown(uri)} has a '%' that is not a percent-escape (%XX)")
    return urllib.parse.unquote_to_bytes(raw)


def _unquote(uri: str, raw: str, what: str) -> str:
    """``raw`` percent-decoded as UTF-8 (strictly)."""
    try:
        return _unquote_bytes(uri, raw, what).decode("utf-8")
    except UnicodeDecodeError:
        raise LocatorError(f"the {what} in {_shown(uri)} is not UTF-8 once its %XX escapes are decoded") from None


def _quote(text: str, safe: str = "") -> str:
    return urllib.parse.quote(text, safe=safe)


def _query(hints: Mapping[str, str]) -> str:
    if not hints:
        return ""
    return "?" + "&".join(f"{_quote(name)}={_quote(value)}" for name, value in sorted(hints.items()))


def _describe(value: object) -> str:
    if isinstance(value, Record):
        return f"a record labelled {value.label!r}"
    return f"a {type(value).__name__}"
