"""The deterministic router: a chat message to one tool and its arguments, or a plain "no" saying why.

What it understands, most specific first (the first level that matches decides):

1. a tool's full name: ``counter.increment 5``, ``counter.increment by=5``;
2. a weblet (slug or pet name) and a command, either order: ``counter increment 5``;
3. an example phrase the manifest declares, then arguments: ``add 5`` (``add`` an
   example of ``counter.increment``), ``show tasks``; the longest phrase wins;
4. a command name alone: ``increment 5``, ``value``.

Matching ignores case and extra spaces. When a level matches commands of two
or more weblets the router says so and names them, rather than guessing;
when nothing matches it says that too, with what the visible weblets offer.

Arguments (what follows the matched words): ``name=value`` or ``name: value``
pairs, ``name value`` for a declared non-text argument, and bare values that
fill the declared arguments in order. A command whose only argument is text
takes the whole rest as that text (``append buy milk``). Values are read by
the declared type (``5`` a number, ``yes``/``no`` a boolean); anything that
does not fit is refused with a line saying what the command takes.

Pure: no I/O, no clock. The caller checks the result against the declared
types again (``tools.check_args``) before anything runs.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .tools import ArgumentError, Tool, check_args

__all__ = ["Routed", "parse_args", "route"]

#: A message longer than this is not a command line; the router does not try.
MAX_MESSAGE = 4096

How = Literal["name", "weblet", "example", "command", "none", "ambiguous", "bad_args"]
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")


@dataclass(frozen=True)
class Routed:
    """What the router made of a message: a tool and its arguments, or ``tool is None`` and a reply saying why."""

    how: How
    tool: Tool | None = None
    args: dict[str, Any] = field(default_factory=dict)
    reply: str = ""
    candidates: tuple[str, ...] = ()


def _words(text: str) -> list[str]:
    return text.split()


def _value(tool: Tool, name: str, kind: str, raw: str) -> Any:
    if kind == "number":
        if not _NUMBER.fullmatch(raw):
            raise ArgumentError(f"{tool.name}: {name} is a number, not {raw[:40]!r}")
        number = float(raw)
        return int(number) if number.is_integer() and re.fullmatch(r"[-+]?\d+", raw) else number
    if kind == "boolean":
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ArgumentError(f"{tool.name}: {name} is yes or no, not {raw[:40]!r}")
    return raw


def _signature(tool: Tool) -> str:
    return ", ".join(f"{n} ({k})" for n, k in tool.args) or "no arguments"


def parse_args(tool: Tool, rest: str) -> dict[str, Any]:
    """The arguments written after a command's words, read by the declared types (see the module doc)."""
    rest = rest.strip()
    if not rest:
        return {}
    declared = tool.arg_types
    if len(tool.args) == 1 and tool.args[0][1] == "string":
        name = tool.args[0][0]
        for prefix in (f"{name}=", f"{name}:"):
            if rest.lower().startswith(prefix):
                rest = rest[len(prefix):].strip()
                break
        if len(rest) >= 2 and rest[0] == rest[-1] and rest[0] in "\"'":
            rest = rest[1:-1]
        return {name: rest}
    try:
        tokens = shlex.split(rest)
    except ValueError:
        tokens = rest.split()
    named: dict[str, str] = {}
    positional: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        key, sep, value = token.partition("=")
        if sep and key:
            named[key] = value
        elif token.endswith(":") and token[:-1] in declared and i + 1 < len(tokens):
            named[token[:-1]] = tokens[i + 1]
            i += 1
        elif token in declared and declared[token] != "string" and i + 1 < len(tokens) and token not in named:
            named[token] = tokens[i + 1]
            i += 1
        else:
            positional.append(token)
        i += 1
    for name in named:
        if name not in declared:
            raise ArgumentError(f"{tool.name} has no argument {name[:64]!r} (it takes {_signature(tool)})")
    free = [n for n, _ in tool.args if n not in named]
    if len(positional) > len(free):
        raise ArgumentError(f"{tool.name} takes {_signature(tool)}; I could not place {' '.join(positional[len(free):])[:80]!r}")
    for name, raw in zip(free, positional, strict=False):
        named[name] = raw
    return {name: _value(tool, name, declared[name], raw) for name, raw in named.items()}


def _pick(how: How, matches: list[tuple[Tool, str]], tools: Sequence[Tool]) -> Routed:
    """One match: parse its arguments. Several of different weblets: say so."""
    by_tool = {t.name: (t, rest) for t, rest in matches}
    if len(by_tool) > 1:
        names = tuple(sorted(by_tool))
        listed = " and ".join(f"{by_tool[n][0].title} ({n})" for n in names)
        return Routed("ambiguous", reply=f"That matches more than one weblet: {listed}. Say which, e.g. {names[0]}.", candidates=names)
    tool, rest = next(iter(by_tool.values()))
    try:
        args = check_args(tool, parse_args(tool, rest))
    except ArgumentError as e:
        return Routed("bad_args", tool=None, reply=f"{e}.", candidates=(tool.name,))
    return Routed(how, tool=tool, args=args)


def _starts(words: list[str], phrase: list[str]) -> bool:
    return len(words) >= len(phrase) and [w.lower() for w in words[: len(phrase)]] == phrase


def route(text: str, tools: Sequence[Tool]) -> Routed:
    """The tool and arguments ``text`` asks for, among ``tools`` (see the module doc)."""
    if not isinstance(text, str) or not text.strip():
        return Routed("none", reply="Say what to do, e.g. a command of a weblet you have open.")
    if len(text) > MAX_MESSAGE:
        return Routed("none", reply=f"That is longer than a command ({MAX_MESSAGE} characters at most).")
    words = _words(text)
    if not tools:
        return Routed("none", reply="No weblet with commands is open here: open one, then ask again.")
    first = words[0].lower()

    def rest_after(n: int) -> str:
        return " ".join(words[n:])

    # 1. the full tool name
    hits = [(t, rest_after(1)) for t in tools if t.name.lower() == first]
    if hits:
        return _pick("name", hits, tools)

    # 2. weblet and command, either order
    if len(words) >= 2:
        second = words[1].lower()
        hits = [
            (t, rest_after(2)) for t in tools
            if (first in (t.slug.lower(), t.weblet_name.lower()) and second == t.command.lower())
            or (second in (t.slug.lower(), t.weblet_name.lower()) and first == t.command.lower())
        ]  # fmt: skip
        if hits:
            return _pick("weblet", hits, tools)

    # 3. example phrases, longest first
    best: list[tuple[Tool, str]] = []
    best_len = 0
    for tool in tools:
        for example in tool.examples:
            phrase = example.lower().split()
            if phrase and _starts(words, phrase) and len(phrase) >= best_len:
                if len(phrase) > best_len:
                    best, best_len = [], len(phrase)
                best.append((tool, rest_after(len(phrase))))
    if best:
        return _pick("example", best, tools)

    # 4. a command name alone
    hits = [(t, rest_after(1)) for t in tools if t.command.lower() == first]
    if hits:
        return _pick("command", hits, tools)

    offered = ", ".join(t.name for t in tools[:12]) + (" …" if len(tools) > 12 else "")
    return Routed("none", reply=f"No open weblet has a command for that. Open weblets offer: {offered}.")
