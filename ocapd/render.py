"""How commands print: one rendering of values for people, one JSON form for machines (``--json``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

__all__ = [
    "confinement_summary",
    "describe_error",
    "format_message",
    "is_reference",
    "jsonable",
    "print_json",
    "print_name_event",
    "show_value",
]


def print_json(value: Any) -> None:
    import json

    print(json.dumps(jsonable(value), indent=None, sort_keys=True))


def jsonable(value: Any) -> Any:
    from ocapd.captp import Promise, RemoteRef, Tagged

    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, Tagged):
        return {"tagged": value.tag, "payload": jsonable(value.payload)}
    if isinstance(value, (RemoteRef, Promise)):
        return {"reference": True}
    if isinstance(value, BaseException):
        return {"error": str(value)}
    return repr(value)


#: Bytes shown of a byte string before the rest is elided (the chat shows as many).
BYTES_SHOWN = 64
#: Nesting shown before "…" (a guard against pathological values).
MAX_DEPTH = 20


def show_value(value: Any) -> str:
    """A value as people read it, the same way the chat's transcript writes it (docs/cli.md, "Output").

    A string prints as it is; anything else as JSON-like text in which
    ``null``, ``true`` and numbers are JSON's, byte strings are
    ``bytes(N) hex…``, tagged records ``tag(payload)``, errors
    ``message (ErrorName)`` and references ``<a reference>``.
    """
    if isinstance(value, str):
        return value
    return _format_data(value, 0)


def _format_data(value: Any, depth: int) -> str:
    import json

    from ocapd.captp import Promise, RemoteRef, Tagged

    if depth > MAX_DEPTH:
        return "…"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, BaseException):
        return describe_error(value)
    if isinstance(value, (bytes, bytearray)):
        shown = bytes(value[:BYTES_SHOWN]).hex()
        return f"bytes({len(value)}) {shown}{'…' if len(value) > BYTES_SHOWN else ''}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_format_data(v, depth + 1) for v in value) + "]"
    if isinstance(value, Tagged):
        return f"{value.tag}({_format_data(value.payload, depth + 1)})"
    if isinstance(value, (RemoteRef, Promise)):
        return "<a reference>"
    if isinstance(value, dict):
        items = (f"{json.dumps(str(k), ensure_ascii=False)}: {_format_data(v, depth + 1)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    return repr(value)


def is_reference(value: Any) -> bool:
    """A capability (a remote reference or a promise), not copy data."""
    from ocapd.captp import Promise, RemoteRef

    return isinstance(value, (RemoteRef, Promise))


def format_message(m: dict[str, Any]) -> str:
    title = m.get("from_title")  # a weblet no longer named here
    sender = (m.get("from_names") or [f"weblet {title!r}" if title is not None else m["from"][:16]])[0]
    if m["type"] == "request":
        state = m.get("settled") or "pending"
        return f"{m['number']}. {sender} requests: {m['description']} ({state})"
    parts = []
    for i, s in enumerate(m["strings"]):
        parts.append(s)
        if i < len(m["names"]):
            parts.append(f"@{m['names'][i]}")
    return f"{m['number']}. {sender}: {''.join(parts)}"


def print_name_event(args: argparse.Namespace) -> Callable[[dict[str, Any]], None]:
    def show(event: dict[str, Any]) -> None:
        if args.json:
            print_json(event)
        elif "add" in event:
            print(f"+ {event['add']}")
        elif "remove" in event:
            print(f"- {event['remove']}")
        elif "rename" in event:
            print(f"~ {event['rename']['from']} -> {event['rename']['to']}")
        sys.stdout.flush()

    return show


def confinement_summary(conf: dict[str, Any]) -> str:
    """What was applied to a worker, in a few words (``--json`` has every detail)."""
    parts = []
    if conf.get("environment") is not None:
        parts.append("env")
    if conf.get("rlimits"):
        parts.append("rlimits")
    for key, label in (
        ("namespaces", "own-pid-ipc-mount-ns"),
        ("network", "no-network"),
        ("landlock", "landlock"),
        ("seccomp", "seccomp"),
        ("capabilities", "no-caps"),
        ("cgroup", "cgroup"),
        ("scratch", "scratch-tmpfs"),
    ):
        value = conf.get(key)
        if isinstance(value, dict) and value.get("applied") is True:
            parts.append(label)
    if conf.get("no_new_privs") is True:
        parts.append("no_new_privs")
    return ",".join(parts) or "none"


def describe_error(e: BaseException) -> str:
    """An error as one line: ``message (ErrorName)``, as the chat shows it."""
    from ocapd.captp import RemoteError, SessionAborted

    if isinstance(e, RemoteError):
        if not e.message:
            return e.name
        if e.name in ("Error", "Exception") or e.message.startswith(f"{e.name}:"):
            return e.message
        return f"{e.message} ({e.name})"
    if isinstance(e, SessionAborted):
        return f"the daemon ended the conversation ({e.reason})"
    if isinstance(e, ConnectionError):
        return f"lost the connection to the daemon ({e})"
    return f"{type(e).__name__}: {e}"
