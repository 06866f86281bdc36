"""OCapN's messages and passable values as Syrup, and back (docs/ocapn.md).

The OCapN wire profile writes every CapTP message as one Syrup record
(``<op:deliver <desc:export 3> ['fetch 5:swiss] 1+ <desc:import-object 2>>``).
This module is the mapping between those records and the messages the session
speaks, in the session's own shape: a list whose first element is the op name
(``["deliver", Desc, method, args, answer_pos, resolve_me]``), descriptors as
``codec.Desc``, passable values as Python values. It checks every field's
shape on the way in — a record that is not one of OCapN's messages raises
``OcapnFormatError`` and nothing else — and accepts both what the current
draft specification says and what the public OCapN test suite sends where the
two differ (the table in docs/ocapn.md, "The suite's dialect").

Passable values Syrup has no type for are records, as Endo writes them:
``<null>`` (and ``<void>``, JavaScript's undefined: both read as None),
``<desc:tagged 'tag payload>`` for ``Tagged``, ``<desc:error "message">`` for
errors. A method name travels as a leading symbol argument
(``['deposit-gift 7 <desc:import-object 1>]``): Python's ``deposit_gift``.
Records the passable mapping does not know (locators, signed handoffs) are
handed to the caller's ``on_record``; without one they are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .codec import EXT_ANSWER, EXT_EXPORT, EXT_IMPORT_OBJECT, EXT_IMPORT_PROMISE, MAX_POSITION, Desc
from .passable import RemoteError, Symbol, Tagged, is_method_name
from .syrup import MAX_DEPTH, Record

__all__ = [
    "CAPTP_VERSION",
    "OcapnFormatError",
    "to_syrup",
    "from_syrup",
    "method_symbol",
    "symbol_method",
    "split_method",
    "parse_message",
    "build_message",
    "desc_record",
    "LABELS",
]

#: The version every ``op:start-session`` carries; anything else is refused.
CAPTP_VERSION = "1.0"


class OcapnFormatError(ValueError):
    """A Syrup value that is not an OCapN message, descriptor or passable value."""


def _sym(name: str) -> Symbol:
    return Symbol(name)


VOID = _sym("void")
NULL = _sym("null")
TAGGED = _sym("desc:tagged")
ERROR = _sym("desc:error")

#: Descriptor labels and the session's descriptor kinds.
DESC_LABEL = {
    EXT_IMPORT_OBJECT: _sym("desc:import-object"),
    EXT_IMPORT_PROMISE: _sym("desc:import-promise"),
    EXT_EXPORT: _sym("desc:export"),
    EXT_ANSWER: _sym("desc:answer"),
}
DESC_KIND = {label: kind for kind, label in DESC_LABEL.items()}

# Op labels. The suite writes gc ops in the singular; the spec in the plural.
OP_START = _sym("op:start-session")
OP_DELIVER = _sym("op:deliver")
OP_DELIVER_ONLY = _sym("op:deliver-only")
OP_LISTEN = _sym("op:listen")
OP_GC_EXPORTS = _sym("op:gc-exports")
OP_GC_EXPORT = _sym("op:gc-export")
OP_GC_ANSWERS = _sym("op:gc-answers")
OP_GC_ANSWER = _sym("op:gc-answer")
OP_ABORT = _sym("op:abort")
OP_GET = _sym("op:get")
OP_INDEX = _sym("op:index")
OP_UNTAG = _sym("op:untag")

#: Every label this module gives a meaning to (for documentation and tests).
LABELS = frozenset(
    {VOID, NULL, TAGGED, ERROR, *DESC_LABEL.values(), OP_START, OP_DELIVER, OP_DELIVER_ONLY, OP_LISTEN,
     OP_GC_EXPORTS, OP_GC_EXPORT, OP_GC_ANSWERS, OP_GC_ANSWER, OP_ABORT, OP_GET, OP_INDEX, OP_UNTAG}
)

OnRef = Callable[[Any], Any]
OnDesc = Callable[[Desc], Any]
OnRecord = Callable[[Record], Any]

_PLAIN = frozenset({str, bytes, bool, float, Symbol})


def desc_record(desc: Desc) -> Record:
    """``<desc:export 3>`` for ``Desc(EXT_EXPORT, 3)``."""
    return Record(DESC_LABEL[desc.kind], (desc.position,))


# ---------------------------------------------------------------------------
# passable values


def to_syrup(value: Any, on_ref: OnRef, depth: int = 0) -> Any:
    """The Syrup form of a passable value; ``on_ref`` describes references.

    ``on_ref(obj)`` returns a ``Desc`` (written as its descriptor record) or
    any Syrup value to write as is (a signed handoff). Raises ``TypeError``
    for what cannot be passed.
    """
    t = type(value)
    if t in _PLAIN:
        return value
    if t is int:
        return value
    if value is None:
        return Record(NULL)
    if depth >= MAX_DEPTH:
        raise TypeError(f"value nested deeper than {MAX_DEPTH} levels")
    depth += 1
    if t is list or t is tuple:
        return [to_syrup(v, on_ref, depth) for v in value]
    if t is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise TypeError(f"record keys must be str, not {type(k).__name__}")
            out[k] = to_syrup(v, on_ref, depth)
        return out
    if t is Desc:
        return desc_record(value)
    if t is Tagged:
        return Record(TAGGED, (Symbol(value.tag), to_syrup(value.payload, on_ref, depth)))
    if t is Record:
        return value  # already in wire form (a locator, a signed handoff)
    if isinstance(value, BaseException):
        err = RemoteError.from_exception(value)
        return Record(ERROR, (f"{err.name}: {err.message}" if err.message else err.name,))
    described = on_ref(value)
    if type(described) is Desc:
        return desc_record(described)
    return described


def _position(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_POSITION:
        raise OcapnFormatError(f"{what} must be an integer 0..2**53-1")
    return value


def _desc_of(value: Any) -> Desc | None:
    """The descriptor a record is, or None if it is no descriptor."""
    if type(value) is not Record:
        return None
    kind = DESC_KIND.get(value.label)
    if kind is None:
        return None
    if len(value.fields) != 1:
        raise OcapnFormatError(f"{value.label} takes one position")
    return Desc(kind, _position(value.fields[0], "a descriptor's position"))


def from_syrup(value: Any, on_desc: OnDesc | None = None, on_record: OnRecord | None = None, depth: int = 0) -> Any:
    """The passable value a Syrup value stands for.

    Descriptors go through ``on_desc`` (kept as ``Desc`` without one); other
    records this module does not know through ``on_record``. Sets, records
    with unknown labels and dictionaries with non-string keys are refused
    with ``OcapnFormatError``.
    """
    t = type(value)
    if t in _PLAIN or t is int:
        return value
    if depth >= MAX_DEPTH:
        raise OcapnFormatError(f"value nested deeper than {MAX_DEPTH} levels")
    depth += 1
    if t is list:
        return [from_syrup(v, on_desc, on_record, depth) for v in value]
    if t is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise OcapnFormatError("a passable dictionary's keys are strings")
            out[k] = from_syrup(v, on_desc, on_record, depth)
        return out
    if t is Record:
        label, fields = value.label, value.fields
        if label == NULL or label == VOID:
            if fields:
                raise OcapnFormatError(f"<{label}> has no fields")
            return None
        desc = _desc_of(value)
        if desc is not None:
            return on_desc(desc) if on_desc is not None else desc
        if label == TAGGED:
            if len(fields) != 2 or type(fields[0]) not in (Symbol, str):
                raise OcapnFormatError("<desc:tagged> takes a tag and a payload")
            tag = fields[0].name if type(fields[0]) is Symbol else fields[0]
            return Tagged(tag, from_syrup(fields[1], on_desc, on_record, depth))
        if label == ERROR:
            if len(fields) != 1 or type(fields[0]) is not str:
                raise OcapnFormatError("<desc:error> takes a message string")
            return RemoteError("Error", fields[0])
        if on_record is not None:
            return on_record(value)
        raise OcapnFormatError(f"unknown record {_brief(label)}")
    raise OcapnFormatError(f"{t.__name__} is not passable")


def _brief(value: Any) -> str:
    return repr(value)[:64]


# ---------------------------------------------------------------------------
# methods as leading symbols


def method_symbol(method: str) -> Symbol:
    """``deposit_gift`` -> ``'deposit-gift``: Python's spelling to OCapN's."""
    return Symbol(method.replace("_", "-"))


def symbol_method(symbol: Symbol) -> str:
    """``'withdraw-gift`` -> ``withdraw_gift``; a name no method can have is kept as is.

    (The session then answers the call with a ``TypeError``, as for any
    unknown method.)
    """
    name = symbol.name.replace("-", "_")
    return name if is_method_name(name) else symbol.name


def split_method(args: list[Any]) -> tuple[str | None, list[Any]]:
    """A call's method (its leading symbol, if any) and the remaining arguments."""
    if args and type(args[0]) is Symbol:
        return symbol_method(args[0]), args[1:]
    return None, args


def _join_method(method: str | None, args: list[Any]) -> list[Any]:
    if method is None:
        return list(args)
    return [method_symbol(method), *args]


# ---------------------------------------------------------------------------
# messages


def _fields(record: Record, n: int) -> tuple[Any, ...]:
    if len(record.fields) != n:
        raise OcapnFormatError(f"{record.label} takes {n} fields, got {len(record.fields)}")
    return record.fields


def _target(value: Any, what: str) -> Desc:
    desc = _desc_of(value)
    if desc is None or desc.kind not in (EXT_EXPORT, EXT_ANSWER):
        raise OcapnFormatError(f"{what} must be a desc:export or desc:answer")
    return desc


def _import(value: Any, what: str) -> Desc:
    desc = _desc_of(value)
    if desc is None or desc.kind not in (EXT_IMPORT_OBJECT, EXT_IMPORT_PROMISE):
        raise OcapnFormatError(f"{what} must be a desc:import-object or desc:import-promise")
    return desc


def _positions(value: Any, what: str) -> list[int]:
    if type(value) is not list:
        raise OcapnFormatError(f"{what} must be a list")
    return [_position(v, what) for v in value]


def _args(value: Any) -> list[Any]:
    if type(value) is not list:
        raise OcapnFormatError("args must be a list")
    return value


def parse_message(record: Any) -> list[Any]:
    """One OCapN message, in the session's list shape.

    =====================================  ==========================================================
    Syrup                                   result
    =====================================  ==========================================================
    ``<op:start-session v key loc sig>``    ``["start-session", v, key, loc, sig]`` (raw Syrup fields)
    ``<op:deliver to args pos resolver>``   ``["deliver", to, method|None, args, pos|None, resolver|None]``
    ``<op:deliver-only to args>``           ``["deliver-only", to, method|None, args]``
    ``<op:listen to resolver partial>``     ``["listen", to, resolver, partial]``
    ``<op:gc-exports poss deltas>``         ``["gc-exports", poss, deltas]`` (also ``op:gc-export``)
    ``<op:gc-answers poss>``                ``["gc-answers", poss]`` (also ``op:gc-answer``)
    ``<op:get to field pos>``               ``["get", to, field, pos]``; ``op:index``, ``op:untag`` alike
    ``<op:abort reason>``                   ``["abort", reason]``
    =====================================  ==========================================================

    ``args`` still holds Syrup values (descriptors as records): the session
    revives them with ``from_syrup`` and its own tables.
    """
    if type(record) is not Record:
        raise OcapnFormatError("a message must be a record")
    label = record.label
    if label == OP_DELIVER:
        to, args, pos, resolver = _fields(record, 4)
        method, rest = split_method(_args(args))
        if pos is False:
            answer_pos = None
        else:
            answer_pos = _position(pos, "answer-pos")
        resolve_me = None if resolver is False else _import(resolver, "resolve-me-desc")
        return ["deliver", _target(to, "to-desc"), method, rest, answer_pos, resolve_me]
    if label == OP_DELIVER_ONLY:
        to, args = _fields(record, 2)
        method, rest = split_method(_args(args))
        return ["deliver-only", _target(to, "to-desc"), method, rest]
    if label == OP_LISTEN:
        to, resolver, partial = _fields(record, 3)
        if type(partial) is not bool:
            raise OcapnFormatError("wants-partial must be a boolean")
        return ["listen", _target(to, "to-desc"), _import(resolver, "listen-desc"), partial]
    if label == OP_GC_EXPORTS or label == OP_GC_EXPORT:
        positions, deltas = _fields(record, 2)
        return ["gc-exports", _positions(positions, "export positions"), _positions(deltas, "wire deltas")]
    if label == OP_GC_ANSWERS or label == OP_GC_ANSWER:
        (positions,) = _fields(record, 1)
        return ["gc-answers", _positions(positions, "answer positions")]
    if label == OP_ABORT:
        (reason,) = _fields(record, 1)
        if type(reason) is not str:
            raise OcapnFormatError("an abort's reason must be a string")
        return ["abort", reason]
    if label == OP_START:
        version, key, location, sig = _fields(record, 4)
        if type(version) is not str:
            raise OcapnFormatError("captp-version must be a string")
        return ["start-session", version, key, location, sig]
    if label == OP_GET or label == OP_UNTAG:
        to, name, pos = _fields(record, 3)
        if type(name) is not str:
            raise OcapnFormatError(f"{label}'s name must be a string")
        return [label.name[3:], _target(to, "receiver-desc"), name, _position(pos, "new-answer-pos")]
    if label == OP_INDEX:
        to, index, pos = _fields(record, 3)
        if type(index) is not int or index < 0:
            raise OcapnFormatError("op:index's index must be a non-negative integer")
        return ["index", _target(to, "receiver-desc"), index, _position(pos, "new-answer-pos")]
    raise OcapnFormatError(f"unknown op {_brief(label)}")


def build_message(message: list[Any], on_ref: OnRef) -> Record:
    """The Syrup record for a message in the session's list shape (``parse_message``'s inverse).

    Gc ops are written in the singular (``op:gc-export``, ``op:gc-answer``),
    as Goblins and the test suite read them; ``answer-pos`` and a missing
    resolver as ``false``.
    """
    op = message[0]
    if op == "deliver":
        _, to, method, args, pos, resolver = message
        return Record(OP_DELIVER, (
            desc_record(to),
            to_syrup(_join_method(method, args), on_ref),
            False if pos is None else pos,
            False if resolver is None else to_syrup(resolver, on_ref),
        ))
    if op == "deliver-only":
        _, to, method, args = message
        return Record(OP_DELIVER_ONLY, (desc_record(to), to_syrup(_join_method(method, args), on_ref)))
    if op == "listen":
        _, to, resolver, partial = message
        return Record(OP_LISTEN, (desc_record(to), to_syrup(resolver, on_ref), partial))
    if op == "gc-exports":
        return Record(OP_GC_EXPORT, (list(message[1]), list(message[2])))
    if op == "gc-answers":
        return Record(OP_GC_ANSWER, (list(message[1]),))
    if op == "abort":
        return Record(OP_ABORT, (message[1],))
    if op == "start-session":
        return Record(OP_START, tuple(message[1:5]))
    if op in ("get", "index", "untag"):
        _, to, key, pos = message
        return Record(_sym("op:" + op), (desc_record(to), key, pos))
    raise ValueError(f"no OCapN form for op {op!r}")
