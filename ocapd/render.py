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


def show_value(value: Any) -> str:
    from ocapd.captp import Promise, RemoteRef, Tagged

    if isinstance(value, (RemoteRef, Promise)):
        return "<a reference: name it with -n to keep it>"
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, Tagged)):
        return repr(value)
    import json

    try:
        return json.dumps(jsonable(value))
    except (TypeError, ValueError):
        return repr(value)


def format_message(m: dict) -> str:
    sender = (m.get("from_names") or [m["from"][:16]])[0]
    if m["type"] == "request":
        state = m.get("settled") or "pending"
        return f"{m['number']}. {sender} requests: {m['description']} ({state})"
    parts = []
    for i, s in enumerate(m["strings"]):
        parts.append(s)
        if i < len(m["names"]):
            parts.append(f"@{m['names'][i]}")
    return f"{m['number']}. {sender}: {''.join(parts)}"


def print_name_event(args: argparse.Namespace) -> Callable[[dict], None]:
    def show(event: dict) -> None:
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


def confinement_summary(conf: dict) -> str:
    """What was applied to a worker, in a few words (``--json`` has every detail)."""
    parts = []
    if conf.get("environment") is not None:
        parts.append("env")
    if conf.get("rlimits"):
        parts.append("rlimits")
    for key, label in (("network", "no-network"), ("landlock", "landlock"), ("seccomp", "seccomp"), ("capabilities", "no-caps")):
        value = conf.get(key)
        if isinstance(value, dict) and value.get("applied") is True:
            parts.append(label)
    if conf.get("no_new_privs") is True:
        parts.append("no_new_privs")
    return ",".join(parts) or "none"


def describe_error(e: BaseException) -> str:
    from ocapd.captp import RemoteError, SessionAborted

    if isinstance(e, RemoteError):
        return e.message or e.name
    if isinstance(e, SessionAborted):
        return f"the daemon ended the conversation ({e.reason})"
    if isinstance(e, ConnectionError):
        return f"lost the connection to the daemon ({e})"
    return f"{type(e).__name__}: {e}"

