"""A projection-only weblet's projection: the small declarative view its backend returns, checked and capped.

A weblet of kind ``projection-only`` has no page. Its backend's ``make()``
object offers ``projection()``, returning plain data; the host (the Chat page,
``chat_host/static/projection.js``) draws it from text nodes only::

    {"title": "Weather",                                   # optional
     "nodes": [
       {"type": "text", "text": "Sunny", "style": "heading"},   # style: heading | body (default) | muted
       {"type": "list", "items": ["a", "b"], "ordered": False},
       {"type": "table", "columns": ["day", "max"], "rows": [["Mon", 21]]},
       {"type": "kv", "items": [["wind", "12 km/h"]]},         # or {"wind": "12 km/h"}
       {"type": "image", "src": "sun.png", "alt": "a sun"},     # a PNG/JPEG/GIF/WebP file of the bundle
     ]}

A bare list is taken as ``nodes``. :func:`check_projection` returns the
normalized projection (cells, items and values as strings; images with their
file's digest, so the host fetches each once) or raises
:class:`ProjectionError` with one line naming the offending node. Every limit
is a named constant; a projection is a status card, not a data channel.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Mapping
from typing import Any

__all__ = [
    "ProjectionError", "check_projection", "image_type",
    "MAX_NODES", "MAX_TEXT", "MAX_ITEMS", "MAX_COLUMNS", "MAX_ROWS", "MAX_CELL", "MAX_IMAGES", "MAX_IMAGE_BYTES",
    "IMAGE_TYPES",
]  # fmt: skip

#: Nodes in one projection: a card's worth.
MAX_NODES = 64
#: Characters of one text node (a paragraph), of a title, of one list item, key, value or cell.
MAX_TEXT = 4000
MAX_TITLE = 200
MAX_CELL = 500
#: Items of a list or key/value node; columns and rows of a table.
MAX_ITEMS = 200
MAX_COLUMNS = 16
MAX_ROWS = 500
#: Images in one projection, and the bytes of one (they travel over CapTP, once per file digest).
MAX_IMAGES = 8
MAX_IMAGE_BYTES = 512 * 1024
#: What an image may be, by extension. No SVG: it is a document, and this is a picture.
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp"}
_STYLES = ("heading", "body", "muted")
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


class ProjectionError(ValueError):
    """The backend's projection is not one the host can draw; the message says where, on one line."""


def image_type(path: str) -> str | None:
    """The image type of a bundle path, by extension, or None if it is no image a projection may show."""
    dot = path.rfind(".")
    return IMAGE_TYPES.get(path[dot:].lower()) if dot >= 0 else None


def _text(value: Any, where: str, limit: int) -> str:
    if isinstance(value, bool) or value is None:
        value = "" if value is None else ("true" if value else "false")
    elif isinstance(value, (int, float)):
        value = repr(value) if isinstance(value, float) else str(value)
    if not isinstance(value, str):
        raise ProjectionError(f"{where}: a string or number, not {type(value).__name__}")
    if len(value) > limit:
        raise ProjectionError(f"{where}: longer than {limit} characters")
    for char in value:
        if char in "\n\t":
            continue
        if unicodedata.category(char) in ("Cc", "Cs") or char in _BIDI_CONTROLS:
            raise ProjectionError(f"{where}: control character U+{ord(char):04X}")
    return value


def _list(value: Any, where: str, limit: int) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise ProjectionError(f"{where}: a list, not {type(value).__name__}")
    if len(value) > limit:
        raise ProjectionError(f"{where}: more than {limit} entries")
    return list(value)


def _keys(node: Mapping[str, Any], where: str, allowed: set[str]) -> None:
    unknown = sorted(k for k in node if k not in allowed)
    if unknown:
        raise ProjectionError(f"{where}: unknown field {str(unknown[0])[:40]!r}")


def check_projection(value: Any, files: Mapping[str, bytes]) -> dict[str, Any]:
    """Normalize a backend's projection; ``files`` is the weblet's bundle (image sources must be there)."""
    if isinstance(value, (list, tuple)):
        value = {"nodes": value}
    if not isinstance(value, Mapping):
        raise ProjectionError(f"the projection must be a record with 'nodes' (or a list of nodes), not {type(value).__name__}")
    _keys(value, "the projection", {"title", "nodes"})
    out: dict[str, Any] = {}
    if value.get("title") is not None:
        out["title"] = _text(value["title"], "title", MAX_TITLE)
    nodes = _list(value.get("nodes", []), "nodes", MAX_NODES)
    images = 0
    checked = []
    for i, node in enumerate(nodes):
        where = f"nodes[{i}]"
        if not isinstance(node, Mapping):
            raise ProjectionError(f"{where}: a record with a 'type', not {type(node).__name__}")
        kind = node.get("type")
        if kind == "text":
            _keys(node, where, {"type", "text", "style"})
            style = node.get("style", "body")
            if style not in _STYLES:
                raise ProjectionError(f"{where}.style: one of {', '.join(_STYLES)}")
            checked.append({"type": "text", "text": _text(node.get("text", ""), f"{where}.text", MAX_TEXT), "style": style})
        elif kind == "list":
            _keys(node, where, {"type", "items", "ordered"})
            items = [_text(item, f"{where}.items[{j}]", MAX_CELL) for j, item in enumerate(_list(node.get("items", []), f"{where}.items", MAX_ITEMS))]
            checked.append({"type": "list", "items": items, "ordered": node.get("ordered") is True})
        elif kind == "table":
            _keys(node, where, {"type", "columns", "rows"})
            columns = [_text(c, f"{where}.columns[{j}]", MAX_CELL) for j, c in enumerate(_list(node.get("columns", []), f"{where}.columns", MAX_COLUMNS))]
            rows = []
            for j, row in enumerate(_list(node.get("rows", []), f"{where}.rows", MAX_ROWS)):
                cells = _list(row, f"{where}.rows[{j}]", MAX_COLUMNS)
                rows.append([_text(c, f"{where}.rows[{j}][{k}]", MAX_CELL) for k, c in enumerate(cells)])
            checked.append({"type": "table", "columns": columns, "rows": rows})
        elif kind == "kv":
            _keys(node, where, {"type", "items"})
            raw = node.get("items", [])
            pairs = list(raw.items()) if isinstance(raw, Mapping) else _list(raw, f"{where}.items", MAX_ITEMS)
            if len(pairs) > MAX_ITEMS:
                raise ProjectionError(f"{where}.items: more than {MAX_ITEMS} entries")
            pairs_out: list[list[str]] = []
            for j, pair in enumerate(pairs):
                if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                    raise ProjectionError(f"{where}.items[{j}]: a [key, value] pair")
                pairs_out.append([_text(pair[0], f"{where}.items[{j}][0]", MAX_CELL), _text(pair[1], f"{where}.items[{j}][1]", MAX_TEXT)])
            checked.append({"type": "kv", "items": pairs_out})
        elif kind == "image":
            _keys(node, where, {"type", "src", "alt", "width"})
            images += 1
            if images > MAX_IMAGES:
                raise ProjectionError(f"{where}: more than {MAX_IMAGES} images")
            src = node.get("src")
            if not isinstance(src, str) or src not in files or image_type(src) is None:
                shown = str(src)[:80] if isinstance(src, str) else type(src).__name__
                raise ProjectionError(f"{where}.src: {shown!r} is not a PNG, JPEG, GIF or WebP file of the weblet's bundle")
            if len(files[src]) > MAX_IMAGE_BYTES:
                raise ProjectionError(f"{where}.src: {src!r} is larger than {MAX_IMAGE_BYTES // 1024} KiB")
            image: dict[str, Any] = {
                "type": "image", "src": src, "alt": _text(node.get("alt", ""), f"{where}.alt", MAX_CELL),
                "digest": hashlib.sha256(files[src]).hexdigest()[:32],
            }  # fmt: skip
            width = node.get("width")
            if width is not None:
                if isinstance(width, bool) or not isinstance(width, int) or not 8 <= width <= 2000:
                    raise ProjectionError(f"{where}.width: a whole number of pixels from 8 to 2000")
                image["width"] = width
            checked.append(image)
        else:
            shown = str(kind)[:40] if kind is not None else "none"
            raise ProjectionError(f"{where}.type: {shown!r} is not one of text, list, table, kv, image")
    out["nodes"] = checked
    return out
