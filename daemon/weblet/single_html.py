"""The single-HTML form of a weblet: a manifest declared in the page's ``<meta>`` tags.

A weblet may be one HTML file that declares its manifest in
``<meta name="ocapd:weblet" content='{json}'>`` and/or per-field tags such as
``<meta name="ocapd:weblet:title" content="...">``; per-field tags win over
the JSON form for the keys they cover, wherever they stand in the page.
:func:`manifest_from_html` reads those tags into a checked
:class:`~.manifest.WebletManifest`; the bundle reader makes the file the
bundle's one file, ``index.html``.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

from ocapd.workers.archive import MAX_FILE_SIZE, BundleError, echo

from .manifest import WebletManifest, load_json, parse_manifest

__all__ = ["manifest_from_html"]

_META_NAME = "ocapd:weblet"


class _MetaTags(HTMLParser):
    """Collects ``<meta name="ocapd:weblet[:field]" content=...>`` in document order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag != "meta":
            return
        values: dict[str, str | None] = {}
        for key, value in attrs:
            values.setdefault(key, value)  # as in browsers, the first of a repeated attribute counts
        name = (values.get("name") or "").strip().lower()
        if name == _META_NAME or name.startswith(_META_NAME + ":"):
            self.tags.append((name, values.get("content") or ""))


def _split_list(text: str) -> list[str]:
    return [item for item in re.split(r"[\s,]+", text) if item]


def _meta_size(text: str, where: str) -> dict[str, int]:
    match = re.fullmatch(r"\s*([0-9]{1,5})\s*[xX]\s*([0-9]{1,5})\s*", text)
    if not match:
        raise BundleError(f"{where}: {echo(text)} is not WIDTHxHEIGHT, like '480x360'")
    return {"width": int(match.group(1)), "height": int(match.group(2))}


def _meta_bool(text: str, where: str) -> bool:
    value = text.strip().lower()
    if value not in ("true", "false"):
        raise BundleError(f"{where}: {echo(text)} is not 'true' or 'false'")
    return value == "true"


def _meta_names(text: str, where: str) -> Any:
    # Either the manifest's JSON object ({"next": {"description": ...}}) or a
    # plain list of names ("next, prev").
    if text.lstrip().startswith("{"):
        return load_json(text.encode("utf-8", "surrogatepass"), where)
    return {name: {} for name in _split_list(text)}


# field -> (where it goes in the manifest, how its text becomes a value)
_META_FIELDS: dict[str, tuple[tuple[str, ...], Any]] = {
    "title": (("title",), lambda text, where: text),
    "description": (("description",), lambda text, where: text),
    "version": (("version",), lambda text, where: text.strip()),
    "kind": (("kind",), lambda text, where: text.strip()),
    "size": (("size",), _meta_size),
    "permissions": (("permissions",), lambda text, where: _split_list(text)),
    "csp.frame-src": (("csp", "frameSrc"), lambda text, where: _split_list(text)),
    "csp.connect-src": (("csp", "connectSrc"), lambda text, where: _split_list(text)),
    "commands": (("interface", "commands"), _meta_names),
    "events": (("interface", "events"), _meta_names),
    "webrtc": (("webrtc",), _meta_bool),
}


def manifest_from_html(data: bytes, name: str) -> WebletManifest:
    """The manifest a single HTML file declares in its ``<meta>`` tags; BundleError if there is none or it is bad.

    ``name`` is how messages name the file; a manifest error is reported for
    ``"<name> (meta)"``. The file itself becomes the bundle's ``index.html``
    (the caller makes the bundle).
    """
    if len(data) > MAX_FILE_SIZE:
        raise BundleError(f"{name}: larger than {MAX_FILE_SIZE} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BundleError(f"{name}: not UTF-8 text") from None
    parser = _MetaTags()
    try:
        parser.feed(text)
        parser.close()
    except Exception as e:  # noqa: BLE001 - html.parser signals broken markup with assorted types
        raise BundleError(f"{name}: cannot be parsed as HTML: {type(e).__name__}") from None
    json_form: dict[str, Any] = {}
    fields: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for tag, content in parser.tags:
        where = f'{name}: <meta name="{tag}">'
        if tag in seen:
            raise BundleError(f"{where}: appears twice")
        seen.add(tag)
        if tag == _META_NAME:
            json_form = load_json(content.encode("utf-8", "surrogatepass"), where)
            if not isinstance(json_form, dict):
                raise BundleError(f"{where}: the content must be a JSON object")
        elif tag[len(_META_NAME) + 1 :] in _META_FIELDS:
            fields.append((tag[len(_META_NAME) + 1 :], content, where))
        else:
            raise BundleError(f"{where}: unknown field (known: {', '.join(_META_FIELDS)})")
    # Per-field tags win over the JSON form, wherever they stand in the page.
    manifest = dict(json_form)
    for field, content, where in fields:
        keys, convert = _META_FIELDS[field]
        target = manifest
        for key in keys[:-1]:
            inner = target.get(key, {})
            if not isinstance(inner, dict):
                raise BundleError(f"{where}: the JSON form's {key!r} is not an object")
            target[key] = inner = dict(inner)
            target = inner
        target[keys[-1]] = convert(content, where)
    if not parser.tags:
        raise BundleError(
            f'{name}: no <meta name="{_META_NAME}"> tag: declare at least a title, like '
            f'<meta name="{_META_NAME}:title" content="My weblet">'
        )
    return parse_manifest(manifest, where=f"{name} (meta)")
