"""The tool list: each command a visible weblet's manifest declares, as one tool ``<slug>.<command>``.

The manifests come from the widget manager's read API only
(``WebletRegistry.manifests_for``): enabled weblets of this host with a panel
among the ids the page says are visible, plus the built-ins. Nothing a page or
a client sends can add a manifest or a tool; the visible list is a hint that
can only *narrow* what the server already has.

A tool's arguments are a JSON schema built from the manifest's declared
types (``"string" | "number" | "boolean"``). Every argument is optional (a
manifest does not say which are required); unknown ones are refused.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_ARG_TEXT", "MAX_ARGS_BYTES", "MAX_VISIBLE", "ArgumentError", "Tool", "build_tools", "check_args", "clean_visible", "tool_names",
]  # fmt: skip

#: Panels a page may report as visible: more than a screen holds; bounds the work per message.
MAX_VISIBLE = 64
#: A panel id is ``<slug>-<12 hex>`` (slug at most 40): anything longer is no panel of ours.
MAX_PANEL_ID = 128
#: One string argument: a line of notes, a task title; not a data channel.
MAX_ARG_TEXT = 4096
#: All of one call's arguments, as JSON: what the audit keeps (capped further there) and what a weblet receives.
MAX_ARGS_BYTES = 16 * 1024

_JSON_TYPES = {"string": "string", "number": "number", "boolean": "boolean"}


class ArgumentError(ValueError):
    """A call's arguments do not match what the manifest declares; the message says how, on one line."""


@dataclass(frozen=True)
class Tool:
    """One command of one weblet, as the router, the model and MCP see it."""

    name: str  # "<slug>.<command>"
    weblet: str  # the registry's weblet id (a built-in: its id)
    weblet_name: str  # the host's pet name for it
    slug: str
    title: str
    command: str
    description: str
    args: tuple[tuple[str, str], ...]  # (name, declared type), in the manifest's order
    read_only: bool
    examples: tuple[str, ...]
    builtin: bool
    manifest_hash: str

    @property
    def arg_types(self) -> dict[str, str]:
        return dict(self.args)

    def parameters(self) -> dict[str, Any]:
        """The JSON schema of the arguments."""
        return {
            "type": "object",
            "properties": {name: {"type": _JSON_TYPES[kind]} for name, kind in self.args},
            "additionalProperties": False,
        }

    def describe(self) -> dict[str, Any]:
        """JSON-ready: what ``GET /api/agent/tools`` lists."""
        return {
            "name": self.name, "weblet": self.weblet, "weblet_name": self.weblet_name, "slug": self.slug,
            "title": self.title, "command": self.command, "description": self.description,
            "parameters": self.parameters(), "readOnly": self.read_only, "examples": list(self.examples),
            "builtin": self.builtin,
        }  # fmt: skip


def clean_visible(visible: Any) -> list[str]:
    """The page's visible-panel hint as a list of plausible panel ids (anything else dropped, at most MAX_VISIBLE)."""
    if visible is None:
        return []
    if isinstance(visible, str):
        visible = visible.split(",")
    if not isinstance(visible, (list, tuple)):
        raise ArgumentError("visible is a list of panel ids")
    out: list[str] = []
    for panel in visible:
        if isinstance(panel, str) and 0 < len(panel.strip()) <= MAX_PANEL_ID and panel.strip() not in out:
            out.append(panel.strip())
        if len(out) >= MAX_VISIBLE:
            break
    return out


_cache: dict[tuple[str, str, str, str], tuple[Tool, ...]] = {}
#: Weblet versions whose tools are kept built (an update makes a new hash; old ones age out).
_CACHE_SIZE = 1024


def _tools_of(entry: dict[str, Any]) -> tuple[Tool, ...]:
    key = (entry["weblet"], entry["manifest_hash"], entry["slug"], entry["name"])
    cached = _cache.get(key)
    if cached is not None:
        return cached
    manifest = entry["manifest"]
    commands = ((manifest.get("interface") or {}).get("commands")) or {}
    tools = tuple(
        Tool(
            name=f"{entry['slug']}.{command}", weblet=entry["weblet"], weblet_name=entry["name"], slug=entry["slug"],
            title=str(entry.get("title") or manifest.get("title") or entry["name"]), command=command,
            description=str(spec.get("description", "")), args=tuple((a, t) for a, t in (spec.get("args") or {}).items()),
            read_only=bool(spec.get("readOnly", False)), examples=tuple(spec.get("examples") or ()),
            builtin=bool(entry.get("builtin")), manifest_hash=entry["manifest_hash"],
        )  # fmt: skip
        for command, spec in commands.items()
    )
    if len(_cache) >= _CACHE_SIZE:
        _cache.clear()
    _cache[key] = tools
    return tools


def build_tools(entries: Iterable[dict[str, Any]]) -> list[Tool]:
    """The tools of ``manifests_for`` entries, in their order (a weblet's commands in its manifest's order)."""
    out: list[Tool] = []
    for entry in entries:
        out.extend(_tools_of(entry))
    return out


def _coerce_number(value: Any) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def check_args(tool: Tool, args: Any) -> dict[str, Any]:
    """``args`` checked against the tool's declared types: a fresh dict, or :class:`ArgumentError`."""
    if args is None:
        return {}
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise ArgumentError(f"{tool.name}: the arguments are an object of named values")
    declared = tool.arg_types
    out: dict[str, Any] = {}
    for name, value in args.items():
        kind = declared.get(name)
        if kind is None:
            takes = ", ".join(declared) or "no arguments"
            raise ArgumentError(f"{tool.name} has no argument {name[:64]!r} (it takes {takes})")
        if kind == "string":
            if not isinstance(value, str):
                raise ArgumentError(f"{tool.name}: {name} is text")
            if len(value) > MAX_ARG_TEXT:
                raise ArgumentError(f"{tool.name}: {name} is at most {MAX_ARG_TEXT} characters")
        elif kind == "number":
            if _coerce_number(value) is None:
                raise ArgumentError(f"{tool.name}: {name} is a number")
        elif kind == "boolean":
            if not isinstance(value, bool):
                raise ArgumentError(f"{tool.name}: {name} is true or false")
        out[name] = value
    if len(json.dumps(out, ensure_ascii=False).encode("utf-8")) > MAX_ARGS_BYTES:
        raise ArgumentError(f"{tool.name}: the arguments are larger than {MAX_ARGS_BYTES} bytes")
    return out


def tool_names(tools: Sequence[Tool]) -> str:
    return ", ".join(t.name for t in tools)
