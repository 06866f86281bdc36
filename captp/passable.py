"""What may cross a CapTP session: copy data, tagged records, errors and remotables.

Copy data (None, bool, int of any size, float, str, bytes, lists/tuples and
dicts with str keys) travels by value; so do ``Tagged`` records and, on the
``ocapn`` wire profile, ``Symbol`` names. A *remotable* travels by reference: the
peer receives a proxy, and calls on the proxy become calls on the original.
An object is remotable when its class is marked with ``@far("Iface")`` or when
it was made by ``Far("Iface", method=...)``. Only its public methods (names
not starting with ``_``) can be called remotely. ``Far("Iface", fn)`` makes a
*far function*: the peer calls it itself, ``E(fn)(*args)``, as in Endo.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = [
    "far",
    "Far",
    "Tagged",
    "Symbol",
    "Frozen",
    "RemoteError",
    "Rejected",
    "is_remotable",
    "is_far_function",
    "interface_of",
    "is_method_name",
]

_FAR_ATTR = "__captp_interface__"

#: Method names a peer may call: an identifier that does not start with ``_``.
#: This keeps dunder and private attributes out of reach of the wire.
_METHOD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,127}\Z")

T = TypeVar("T", bound=type)


def far(interface: str) -> Callable[[T], T]:
    """Class decorator: instances of the class are passed by reference.

    >>> @far("Counter")
    ... class Counter:
    ...     def incr(self) -> int: ...
    """
    if not isinstance(interface, str) or not interface:
        raise TypeError("far() needs a non-empty interface name")

    def mark(cls: T) -> T:
        setattr(cls, _FAR_ATTR, interface)
        return cls

    return mark


class _FarRecord:
    """A remotable made from loose functions by ``Far(iface, [fn,] name=fn, ...)``."""

    __slots__ = ("_interface", "_methods", "_call", "__weakref__")

    def __init__(
        self, interface: str, methods: dict[str, Callable[..., Any]], call: Callable[..., Any] | None = None
    ) -> None:
        self._interface = interface
        self._methods = methods
        #: What a call of the remotable itself runs (None: it is not a function).
        self._call = call

    def __getattr__(self, name: str) -> Callable[..., Any]:
        try:
            return self._methods[name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self) -> str:
        return f"<Far {self._interface}>"


def Far(interface: str, call: Callable[..., Any] | None = None, /, **methods: Callable[..., Any]) -> Any:  # noqa: N802 - mirrors Endo's Far
    """Make a remotable whose methods are the given callables.

    >>> greeter = Far("Greeter", hello=lambda name: f"hello {name}")

    With a callable before the methods, the remotable is a *far function*:
    ``E(add)(1, 2)`` calls it (a deliver without a method name).

    >>> add = Far("Add", lambda a, b: a + b)
    """
    if not isinstance(interface, str) or not interface:
        raise TypeError("Far() needs a non-empty interface name")
    if call is not None and not callable(call):
        raise TypeError("Far(): the function is not callable")
    for name, fn in methods.items():
        if not is_method_name(name):
            raise TypeError(f"Far(): {name!r} is not a valid remote method name")
        if not callable(fn):
            raise TypeError(f"Far(): method {name!r} is not callable")
    return _FarRecord(interface, dict(methods), call)


def is_remotable(obj: object) -> bool:
    """True if ``obj`` is passed by reference (marked with ``far``/``Far``)."""
    return type(obj) is _FarRecord or getattr(type(obj), _FAR_ATTR, None) is not None


def is_far_function(obj: object) -> bool:
    """True if ``obj`` may be called itself, ``E(obj)(...)``: made by ``Far(iface, fn)``.

    Only such far functions: a ``@far`` class with a ``__call__`` is not one,
    as dunder methods are never reachable from the wire.
    """
    return type(obj) is _FarRecord and obj._call is not None


def interface_of(obj: object) -> str | None:
    """The interface name of a remotable, or None for anything else."""
    if type(obj) is _FarRecord:
        return obj._interface
    return getattr(type(obj), _FAR_ATTR, None)


def is_method_name(name: object) -> bool:
    """True if ``name`` may be used as a remote method name."""
    return isinstance(name, str) and _METHOD_NAME.match(name) is not None


# Tagged and Symbol are written out rather than made by ``dataclasses``
# (frozen, slots): dataclasses imports inspect, about 10 ms of the blocking
# CLI client's start (tests/test_protocol_classes.py pins the behaviour).
_set = object.__setattr__


class Frozen:
    """The base of the records written out by hand (Tagged, Symbol, Limits): ``__init__``
    sets each field once with ``object.__setattr__``; assigning or deleting one later raises."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: {type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: {type(self).__name__} is immutable")


class Tagged(Frozen):
    """A tagged copy record: ``Tagged("point", {"x": 1})``. Both parts are copied."""

    __slots__ = ("tag", "payload")
    __match_args__ = ("tag", "payload")
    tag: str
    payload: Any

    def __init__(self, tag: str, payload: Any) -> None:
        if not isinstance(tag, str):
            raise TypeError("Tagged.tag must be a str")
        _set(self, "tag", tag)
        _set(self, "payload", payload)

    def __eq__(self, other: object) -> bool:
        if type(other) is not Tagged:
            return NotImplemented
        return (self.tag, self.payload) == (other.tag, other.payload)

    def __hash__(self) -> int:
        return hash((self.tag, self.payload))

    def __repr__(self) -> str:
        return f"Tagged(tag={self.tag!r}, payload={self.payload!r})"

    def __reduce__(self) -> tuple[type[Tagged], tuple[str, Any]]:
        return (Tagged, (self.tag, self.payload))


class Symbol(Frozen):
    """A symbol (OCapN's *selector*): a name that is not a string.

    ``Symbol("op:deliver")`` is equal only to a Symbol of the same name (never
    to the str), hashable and immutable. The ``ocapn`` wire profile carries it
    as a Syrup symbol, the msgpack profile as ext 6 (its UTF-8 name, at most
    ``codec.MAX_SYMBOL_BYTES``), captp.js as a ``Selector``.
    """

    __slots__ = ("name",)
    __match_args__ = ("name",)
    name: str

    def __init__(self, name: str) -> None:
        if not isinstance(name, str):
            raise TypeError(f"Symbol name must be a str, not {type(name).__name__}")
        _set(self, "name", name)

    def __eq__(self, other: object) -> bool:
        if type(other) is not Symbol:
            return NotImplemented
        return self.name == other.name

    def __hash__(self) -> int:
        return hash((self.name,))

    def __reduce__(self) -> tuple[type[Symbol], tuple[str]]:
        return (Symbol, (self.name,))

    def __repr__(self) -> str:
        return f"Symbol({self.name!r})"

    def __str__(self) -> str:
        return self.name


class Rejected(Exception):
    """A promise broken with a value that is not an error; ``value`` is that value.

    Promises reject with exceptions, so a rejection with any other passable
    value (allowed by CapTP and OCapN: ``break`` takes any value) is wrapped
    in this. A rejection with ``Rejected(v)`` reaches the peer as ``v``
    itself, and a peer's break with ``v`` arrives as ``Rejected(v)``.
    """

    def __init__(self, value: Any) -> None:
        super().__init__(value)
        self.value = value

    def __eq__(self, other: object) -> bool:
        return type(other) is Rejected and self.value == other.value

    def __hash__(self) -> int:
        return hash(("Rejected", repr(self.value)))

    def __repr__(self) -> str:
        return f"Rejected({self.value!r})"


class RemoteError(Exception):
    """An error that crossed the wire: the remote exception's type name and message.

    Tracebacks do not cross unless the session was opened with ``debug=True``;
    then ``remote_traceback`` holds the peer's formatted traceback.
    """

    def __init__(self, name: str, message: str, remote_traceback: str | None = None) -> None:
        super().__init__(f"{name}: {message}" if message else name)
        self.name = name
        self.message = message
        self.remote_traceback = remote_traceback

    @classmethod
    def from_exception(cls, exc: BaseException, *, with_traceback: bool = False) -> RemoteError:
        """Describe a local exception as it will be sent."""
        if isinstance(exc, RemoteError):
            return exc
        tb = None
        if with_traceback:
            import traceback

            tb = "".join(traceback.format_exception(exc))
        # Error text crosses as UTF-8; escape what UTF-8 cannot carry.
        message = str(exc).encode("utf-8", "backslashreplace").decode("utf-8")
        return cls(type(exc).__name__, message, tb)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, RemoteError)
            and (self.name, self.message) == (other.name, other.message)
        )

    def __hash__(self) -> int:
        return hash((self.name, self.message))

    def __repr__(self) -> str:
        return f"RemoteError({self.name!r}, {self.message!r})"
