"""Weblet bundles: read one, check it, keep its normalized manifest, build its CSP.

A weblet bundle is untrusted input in one of three shapes:

- a **zip** holding ``weblet.json`` (the manifest), the UI's static files and
  optionally a Python backend module;
- a **folder** with the same layout (for development);
- a **single HTML file** declaring its manifest in ``<meta name="ocapd:weblet"
  content='{json}'>`` and/or per-field tags ``<meta name="ocapd:weblet:title"
  content="...">`` (per-field tags win over the JSON form for the keys they
  cover); it becomes a bundle of one file, ``index.html``.

:func:`read_bundle` turns any of them into a :class:`Bundle`: the validated,
normalized :class:`WebletManifest`, the files by path, and a digest. Every
refusal is one exception type, :class:`BundleError`, whose message is a single
line saying what is wrong and where, fit to show a user as is. Nothing here
does I/O beyond reading the given bytes or folder.

The checks follow the weblet-hosting security checklist: archive members are
refused if their path could leave the bundle or mean different files on
different file systems (absolute, ``..``, backslashes, drive letters, empty
segments, NUL and control characters, names equal when case is folded),
if they are not regular files (symlinks, devices), if they are encrypted, or
if they exceed the size limits below -- sizes counted while decompressing,
never taken from the zip's headers. The manifest is a strict schema: unknown
keys are refused, strings are bounded, CSP origins are plain ``https://`` or
``wss://`` host names, and permissions come from an allowlist.

:func:`csp_for` and :func:`permissions_allow` derive the weblet's
Content-Security-Policy header and its iframe ``allow=`` attribute from a
stored manifest; nothing a bundle says reaches a header unchecked.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import stat
import unicodedata
import zipfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from .names import validate_pet_name

__all__ = [
    "BundleError", "Bundle", "WebletManifest", "Size", "Csp", "Interface", "Command", "Event",
    "read_bundle", "parse_manifest", "csp_for", "permissions_allow",
    "MANIFEST_NAME", "PERMISSIONS",
    "MAX_MEMBERS", "MAX_FILE_SIZE", "MAX_TOTAL_SIZE", "MAX_RATIO", "RATIO_FLOOR",
    "MAX_PATH_LENGTH", "MAX_PATH_DEPTH", "MAX_ARCHIVE_SIZE", "MAX_MANIFEST_SIZE",
    "MAX_BACKEND_FILES", "MAX_BACKEND_SIZE",
]  # fmt: skip

KiB = 1024
MiB = 1024 * KiB

# ---- limits ----------------------------------------------------------------------------------
#: Members of an archive (files and folders). A weblet has tens of files; a UI
#: built with a bundler has hundreds; ten thousand leaves room for icon sets
#: and fonts while bounding the per-member work a hostile archive can ask for.
MAX_MEMBERS = 10_000
#: Bytes per file once uncompressed: the largest image, font or script a
#: weblet UI sensibly ships. Larger media belong behind a declared origin.
MAX_FILE_SIZE = 5 * MiB
#: Bytes of all files once uncompressed: the whole bundle is held in memory
#: while it is checked, and is stored as one blob.
MAX_TOTAL_SIZE = 50 * MiB
#: Uncompressed/compressed ratio above which a member, or the archive as a
#: whole, is treated as a zip bomb. Text and code deflate 3-10x; even very
#: repetitive JSON stays under 50x. Deflate's ceiling is about 1032x.
MAX_RATIO = 100
#: The ratio is judged only once this many bytes have come out: a tiny file
#: of spaces legitimately deflates 300x, and below this the size caps bound
#: the cost (10,000 members x 64 KiB would still hit MAX_TOTAL_SIZE first).
RATIO_FLOOR = 64 * KiB
#: Bytes in a member's path (UTF-8): the common NAME_MAX, so that any path
#: can be unpacked on any file system, and a URL stays short.
MAX_PATH_LENGTH = 255
#: Segments in a member's path; also bounds the folder walk's recursion.
MAX_PATH_DEPTH = 16
#: Bytes of an archive as given: MAX_TOTAL_SIZE stored uncompressed, plus
#: headers for MAX_MEMBERS members with the longest names (about 6 MiB).
MAX_ARCHIVE_SIZE = MAX_TOTAL_SIZE + 14 * MiB
#: Bytes of weblet.json: above any manifest the schema accepts (a few hundred
#: KiB with every list full of the longest \\u-escaped strings).
MAX_MANIFEST_SIZE = 1 * MiB
#: A backend is unpacked by workers/bundle.py, whose limits are 1000 members
#: and 16 MiB in total; refusing here what a worker would refuse later keeps
#: "installed" meaning "runnable".
MAX_BACKEND_FILES = 999  # plus bundle.json
MAX_BACKEND_SIZE = 16 * MiB - 1 * KiB  # leaves room for bundle.json
# Read members in chunks this big, checking the limits after each.
_CHUNK = 64 * KiB

MANIFEST_NAME = "weblet.json"
_BACKEND_MANIFEST = "bundle.json"  # what workers/bundle.py reads for the entry module
_META_NAME = "ocapd:weblet"
_HTML_ENTRY = "index.html"
# The gateway serves its runtime (weblet.js, captp.js) under /_ocapd/ on every
# weblet's origin: a bundle file there would be shadowed, or shadow it.
_RUNTIME_FOLDER = "_ocapd"
# Zip timestamps before 1980 cannot be written; a fixed one makes zips reproducible.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
# Development leftovers a folder bundle never includes: version control,
# bytecode caches, Finder metadata.
_FOLDER_SKIPS = frozenset({".git", ".hg", ".svn", "__pycache__", ".DS_Store"})

#: Permissions-Policy features a weblet may ask for, in the order ``allow=``
#: lists them. Left out on purpose: camera, microphone, geolocation,
#: clipboard-read and the like, because a browser remembers such a grant for
#: the *top-level* origin (the Chat page), so one weblet's grant would silently
#: extend to every other weblet given the same ``allow``. Those powers must
#: come as capabilities from the host, prompted per weblet.
PERMISSIONS = (
    "clipboard-write",
    "fullscreen",
    "autoplay",
    "picture-in-picture",
    "screen-wake-lock",
    "web-share",
)

# A user may paste anything; keep an echoed value short enough for one line.
_MAX_ECHO = 60


class BundleError(ValueError):
    """The bundle is malformed or unsafe; the message says what and where, on one line."""


def _echo(value: object) -> str:
    text = repr(value)
    if len(text) > _MAX_ECHO:
        text = text[: _MAX_ECHO - 1] + "…"
    return text


# ---- the manifest ----------------------------------------------------------------------------
def _invalid(message: str) -> ValueError:
    # pydantic reports it as "Value error, <message>"; _bundle_error drops the prefix.
    return ValueError(message)


# Bidirectional overrides can make a title read as something else in the UI.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


def _check_text(value: str, *, multiline: bool) -> str:
    for char in value:
        if multiline and char in "\n\t":
            continue
        category = unicodedata.category(char)
        if category == "Cc":
            raise _invalid(f"control character {char!r} is not allowed")
        if category == "Cs":
            raise _invalid("unpaired surrogates are not allowed")
        if char in _BIDI_CONTROLS:
            raise _invalid(f"bidirectional control U+{ord(char):04X} is not allowed")
    return value


#: Characters that show nothing (or nothing of their own) but make a
#: different string: a title of "Counter" plus one of these looks exactly
#: like the real Counter. Unicode's format characters (category Cf: zero-width
#: space and joiners, soft hyphen, word joiner, BOM, tag characters) are
#: refused by category; these are the invisible ones of other categories.
_INVISIBLE = frozenset(
    "\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180e\u180f\u2800\u3164\uffa0"
    + "".join(map(chr, range(0xFE00, 0xFE10)))  # variation selectors
    + "".join(map(chr, range(0xE0100, 0xE01F0)))  # variation selectors supplement
)


def check_lookalike(value: str) -> str:
    """``value`` if it has no invisible or format character that could make it pass for another name.

    For text the user reads as a name (a weblet's title): refuses Unicode
    format characters (Cf), line and paragraph separators, private-use and
    unassigned code points, and invisible fillers and variation selectors.
    """
    for char in value:
        category = unicodedata.category(char)
        if category in ("Cf", "Zl", "Zp", "Co", "Cn") or char in _INVISIBLE:
            name = unicodedata.name(char, "unassigned")
            raise _invalid(f"invisible or format character U+{ord(char):04X} ({name}) is not allowed in a name")
    return value


def _line(value: str) -> str:
    return check_lookalike(_check_text(value, multiline=False))


def _paragraph(value: str) -> str:
    return _check_text(value, multiline=True)


Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80), AfterValidator(_line)]
Description = Annotated[str, StringConstraints(max_length=500), AfterValidator(_paragraph)]
ShortDescription = Annotated[str, StringConstraints(max_length=300), AfterValidator(_paragraph)]
LongDescription = Annotated[str, StringConstraints(max_length=1000), AfterValidator(_paragraph)]
# Semver-ish: 1, 1.2, 1.2.3, 1.2.3-beta.1, 1.2.3+build.7.
Version = Annotated[
    str, StringConstraints(max_length=32, pattern=r"^[0-9]{1,9}(\.[0-9]{1,9}){0,3}([-+][0-9A-Za-z][0-9A-Za-z.+-]*)?$")
]
# Names an agent reads and a router matches: a fixed alphabet, no spaces.
CommandName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-zA-Z0-9_.]{0,63}$")]
EventName = CommandName
ArgName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-zA-Z0-9_]{0,63}$")]
PetName = Annotated[str, AfterValidator(validate_pet_name)]


def _normalize_origin(value: str) -> str:
    """``value`` as a normalized CSP origin, or a ValueError saying why not."""
    if "*" in value:
        raise _invalid(f"{_echo(value)} is not allowed: wildcards are refused")
    if any(c in value for c in "'\""):
        raise _invalid(f"{_echo(value)} is not allowed: quotes are refused (no CSP keywords)")
    if any(c in value for c in ";,"):
        raise _invalid(f"{_echo(value)} is not allowed: ';' and ',' are refused (one origin per entry)")
    if any(c.isspace() or unicodedata.category(c) in ("Cc", "Cs") for c in value) or not value:
        raise _invalid(f"{_echo(value)} is not allowed: whitespace and control characters are refused")
    if len(value) > 300:
        raise _invalid(f"{_echo(value)} is not allowed: longer than 300 characters")
    match = re.fullmatch(r"([A-Za-z][A-Za-z0-9+.-]*):(//)?(.*)", value, flags=re.DOTALL)
    scheme = match.group(1).lower() if match else ""
    if scheme not in ("https", "wss") or not match:
        shown = f"{scheme}:" if match else _echo(value)
        raise _invalid(f"{_echo(value)} is not allowed: only https:// and wss:// origins (not {shown})")
    if not match.group(2) or not match.group(3):
        raise _invalid(f"{_echo(value)} is not allowed: a scheme alone allows every host; name one, like https://example.com")
    authority = match.group(3)
    if authority.endswith("/"):
        authority = authority[:-1]  # "https://a.com/" means the origin; the slash carries nothing
    if "@" in authority:
        raise _invalid(f"{_echo(value)} is not allowed: credentials are refused")
    if any(c in authority for c in "/?#\\"):
        raise _invalid(f"{_echo(value)} is not allowed: an origin has no path, query or fragment")
    if authority.startswith("["):
        raise _invalid(f"{_echo(value)} is not allowed: IP literals are refused (use a host name)")
    host, colon, port = authority.partition(":")
    host = host.lower()
    if not host.isascii():
        raise _invalid(f"{_echo(value)} is not allowed: write an international name in its xn-- form")
    labels = host.split(".")
    if len(host) > 253 or not all(re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", label) for label in labels):
        raise _invalid(f"{_echo(value)} is not allowed: {_echo(host)} is not a host name")
    if re.fullmatch(r"[0-9]+", labels[-1]) or re.fullmatch(r"0x[0-9a-f]*", labels[-1]):
        raise _invalid(f"{_echo(value)} is not allowed: IP literals are refused (use a host name)")
    if len(labels) < 2 or labels[-1] == "localhost":
        raise _invalid(f"{_echo(value)} is not allowed: {_echo(host)} is a local name (use a public host name)")
    if colon:
        if not re.fullmatch(r"[0-9]{1,5}", port) or not 0 < int(port) < 65536:
            raise _invalid(f"{_echo(value)} is not allowed: {_echo(port)} is not a port number")
        # 443 is both schemes' default: one spelling per origin.
        port = "" if int(port) == 443 else str(int(port))
    return f"{scheme}://{host}" + (f":{port}" if port else "")


def _unique(values: list[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


Origin = Annotated[str, AfterValidator(_normalize_origin)]
Origins = Annotated[list[Origin], Field(max_length=16), AfterValidator(_unique)]
Permission = Literal[PERMISSIONS]  # type: ignore[valid-type]


class _Strict(BaseModel):
    # strict: a width is a JSON number, never "480"; extra keys are refused.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Size(_Strict):
    width: Annotated[int, Field(ge=100, le=4000)] = 480
    height: Annotated[int, Field(ge=100, le=4000)] = 360


class Csp(_Strict):
    """Origins beyond its own the weblet may frame or connect to."""

    frameSrc: Origins = []
    connectSrc: Origins = []


class Command(_Strict):
    description: ShortDescription = ""
    args: Annotated[dict[ArgName, Literal["string", "number", "boolean"]], Field(max_length=16)] = {}
    readOnly: bool = False  # read-only commands run without asking the user


class Event(_Strict):
    description: ShortDescription = ""


class Interface(_Strict):
    """What an agent may drive: commands it can invoke, events the weblet emits."""

    description: LongDescription = ""
    commands: Annotated[dict[CommandName, Command], Field(max_length=64)] = {}
    events: Annotated[dict[EventName, Event], Field(max_length=64)] = {}


_MODULE_PATH = re.compile(r"([A-Za-z_][A-Za-z0-9_]*/)*[A-Za-z_][A-Za-z0-9_]*\.py")


class WebletManifest(_Strict):
    """A weblet's manifest (``weblet.json``), validated and normalized.

    The fields follow the widget-host WidgetSpec (kind, size, entry, csp,
    interface, permissions) plus ocapd's own (title, description, version,
    powers, backend). Dumped with ``model_dump(mode="json")`` it is the JSON
    stored with the weblet; :func:`parse_manifest` reads it back.
    """

    kind: Literal["native", "iframe", "iframe-external", "projection-only"] = "iframe"
    title: Title
    description: Description = ""
    version: Version = "0.0.0"
    size: Size = Size()
    # A file in the bundle; for kind "iframe-external" an https URL instead.
    entry: Annotated[str, StringConstraints(min_length=1, max_length=2000)] = _HTML_ENTRY
    csp: Csp = Csp()
    permissions: Annotated[list[Permission], Field(max_length=len(PERMISSIONS) * 2), AfterValidator(_unique)] = []
    interface: Interface | None = None
    # Pet names it will ask its host for: shown at install, grants nothing.
    powers: Annotated[list[PetName], Field(max_length=64), AfterValidator(_unique)] = []
    # A .py module in the bundle exposing make(powers, context).
    backend: Annotated[str, StringConstraints(max_length=MAX_PATH_LENGTH)] | None = None

    @model_validator(mode="after")
    def _entry_and_backend(self) -> WebletManifest:
        if self.kind == "iframe-external":
            _check_external_url(self.entry)
        else:
            try:
                _check_path(self.entry)
            except BundleError as e:
                raise _invalid(f"entry: {e}") from None
        if self.backend is not None:
            if not self.backend.endswith(".py"):
                raise _invalid(f"backend: {_echo(self.backend)} is not a Python module: it must end in .py")
            try:
                _check_path(self.backend)
            except BundleError as e:
                raise _invalid(f"backend: {e}") from None
            if not _MODULE_PATH.fullmatch(self.backend):
                raise _invalid(
                    f"backend: {_echo(self.backend)} must be named like a Python module "
                    "(letters, digits and '_' in each part), like 'backend.py'"
                )
        return self


def _check_external_url(url: str) -> None:
    match = re.fullmatch(r"https://([^/?#]+)([/?#][^\s]*)?", url, flags=re.IGNORECASE)
    if not match or any(unicodedata.category(c) in ("Cc", "Cs") for c in url):
        raise _invalid(f"entry: {_echo(url)}: a weblet of kind 'iframe-external' needs an https:// URL as entry")
    try:
        _normalize_origin("https://" + match.group(1))
    except ValueError as e:
        raise _invalid(f"entry: {e}") from None


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _format_loc(loc: tuple[int | str, ...]) -> str:
    """pydantic's error location as ``csp.connectSrc[0]`` or ``interface.commands['Bad'] (name)``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part == "[key]":
            text += " (name)"
        elif _PLAIN_KEY.fullmatch(part):
            text += ("." if text else "") + part
        else:
            text += f"[{_echo(part)}]"
    return text


def _bundle_error(error: ValidationError, where: str) -> BundleError:
    errors = error.errors(include_url=False)
    first = errors[0]
    if first["type"] == "extra_forbidden":
        message = "unknown field (extra fields are not allowed)"
    elif first["type"] == "missing":
        message = "required"
    else:
        message = first["msg"].removeprefix("Value error, ")
    loc = _format_loc(tuple(first["loc"]))
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return BundleError(f"{where}: {loc + ': ' if loc else ''}{message}{more}")


def parse_manifest(data: Mapping[str, Any] | str | bytes, *, where: str = MANIFEST_NAME) -> WebletManifest:
    """Validate a manifest from its JSON (text or bytes) or an already-parsed dict.

    Raises :class:`BundleError` naming ``where`` and the offending field. This
    is also how a stored manifest (``model_dump(mode="json")``) is read back.
    """
    if isinstance(data, (str, bytes)):
        raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
        data = _load_json(raw, where)
    if not isinstance(data, Mapping):
        raise BundleError(f"{where}: the manifest must be a JSON object, not {type(data).__name__}")
    try:
        return WebletManifest.model_validate(dict(data))
    except ValidationError as e:
        raise _bundle_error(e, where) from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Parsers disagree on which duplicate wins: a manifest means one thing.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {_echo(key)}")
        result[key] = value
    return result


def _load_json(raw: bytes, where: str) -> Any:
    if len(raw) > MAX_MANIFEST_SIZE:
        raise BundleError(f"{where}: larger than {MAX_MANIFEST_SIZE} bytes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise BundleError(f"{where}: not UTF-8 text") from None
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_constant)
        # "\ud800" escapes decode to lone surrogates, which no UTF-8 store can hold.
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise BundleError(f"{where}: contains an unpaired surrogate escape") from None
    except RecursionError:
        raise BundleError(f"{where}: nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, duplicate keys, NaN, over-long integers
        raise BundleError(f"{where}: not valid JSON: {str(e).splitlines()[0]}") from None
    return data


# ---- paths -----------------------------------------------------------------------------------
def _check_path(path: str) -> str:
    """Return ``path`` if it is a normalized relative POSIX path; raise BundleError saying why not."""
    if not path:
        raise BundleError("an empty path is not allowed")
    if "\x00" in path:
        raise BundleError(f"{_echo(path)}: NUL bytes are not allowed")
    if any(unicodedata.category(c) == "Cc" for c in path):
        raise BundleError(f"{_echo(path)}: control characters are not allowed")
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise BundleError(f"{_echo(path)}: not valid UTF-8") from None
    if len(encoded) > MAX_PATH_LENGTH:
        raise BundleError(f"{_echo(path)}: longer than {MAX_PATH_LENGTH} bytes")
    if "\\" in path:
        raise BundleError(f"{_echo(path)}: backslashes are not allowed (use '/')")
    if path.startswith("/"):
        raise BundleError(f"{_echo(path)}: absolute paths are not allowed")
    if re.match(r"[A-Za-z]:", path):
        raise BundleError(f"{_echo(path)}: drive letters are not allowed")
    segments = path.split("/")
    if ".." in segments:
        raise BundleError(f"{_echo(path)}: '..' is not allowed (the path would leave the bundle)")
    if "" in segments or "." in segments:
        raise BundleError(f"{_echo(path)}: empty and '.' segments are not allowed")
    if len(segments) > MAX_PATH_DEPTH:
        raise BundleError(f"{_echo(path)}: deeper than {MAX_PATH_DEPTH} folders")
    if _fold(segments[0]) == _RUNTIME_FOLDER:
        raise BundleError(f"{_echo(path)}: '{_RUNTIME_FOLDER}/' is reserved for the runtime ocapd serves every weblet")
    return path


def _fold(path: str) -> str:
    # What a case-insensitive, normalizing file system (macOS, Windows) sees.
    return unicodedata.normalize("NFC", path).casefold()


class _Names:
    """Member names seen so far: refuses duplicates, case-fold collisions, file/folder clashes."""

    def __init__(self, where: str) -> None:
        self._where = where
        self._exact: set[tuple[str, bool]] = set()
        self._files: dict[str, str] = {}  # folded -> as spelled
        self._folders: dict[str, str] = {}

    def _fail(self, path: str, why: str) -> BundleError:
        return BundleError(f"{self._where} {_echo(path)}: {why}")

    def add(self, path: str, is_folder: bool) -> None:
        if (path, is_folder) in self._exact:
            raise self._fail(path, "duplicate name")
        self._exact.add((path, is_folder))
        segments = path.split("/")
        folders = ["/".join(segments[:i]) for i in range(1, len(segments) + (1 if is_folder else 0))]
        for folder in folders:
            folded = _fold(folder)
            if folded in self._files:
                raise self._fail(path, f"{_echo(self._files[folded])} is a file, not a folder")
            spelled = self._folders.setdefault(folded, folder)
            if spelled != folder:
                raise self._fail(path, f"collides with {_echo(spelled)} when case is ignored")
        if not is_folder:
            folded = _fold(path)
            if folded in self._folders:
                raise self._fail(path, "is both a file and a folder")
            spelled = self._files.setdefault(folded, path)
            if spelled != path:
                raise self._fail(path, f"collides with {_echo(spelled)} when case is ignored")


# ---- the bundle ------------------------------------------------------------------------------
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".py": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".ico": "image/vnd.microsoft.icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".ttf": "font/ttf",
    ".otf": "font/otf",
    ".wasm": "application/wasm",
    ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg",
    ".wav": "audio/wav",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
}
_DEFAULT_CONTENT_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class Bundle:
    """A checked weblet bundle: its normalized manifest, its files, its digest.

    Made by :func:`read_bundle`. ``files`` maps normalized relative POSIX paths
    to content and is read-only; it never holds ``weblet.json`` (the manifest
    is ``manifest``). ``digest`` is the sha256 (hex) of a canonical
    serialization of the manifest and the files, so two bundles with the same
    digest serve the same weblet, whatever shape they were read from.
    """

    manifest: WebletManifest
    files: Mapping[str, bytes]
    digest: str

    def __hash__(self) -> int:
        return hash(self.digest)

    def content_type(self, path: str) -> str:
        """The Content-Type to serve the file ``path`` with; KeyError if the bundle has no such file."""
        if path not in self.files:
            raise KeyError(path)
        _, dot, suffix = path.rpartition("/")[2].rpartition(".")
        return _CONTENT_TYPES.get("." + suffix.lower(), _DEFAULT_CONTENT_TYPE) if dot else _DEFAULT_CONTENT_TYPE

    def backend_zip(self) -> bytes | None:
        """The backend as a worker bundle (for ``make_bundle``), or None without a backend.

        A zip of the bundle's ``.py`` files plus ``bundle.json`` naming the
        entry module. Members are stored, not deflated: the bytes are the same
        on every machine (the worker caches unpacked bundles by their
        digest), and no ratio check can ever trip on them.
        """
        backend = self.manifest.backend
        if backend is None:
            return None
        members = {path: data for path, data in self.files.items() if path.endswith(".py")}
        entry = backend.removesuffix(".py").replace("/", ".")
        members[_BACKEND_MANIFEST] = json.dumps({"entry": entry}, sort_keys=True).encode("utf-8")
        return _zip(members, compress=False)

    def to_zip(self) -> bytes:
        """The bundle as a zip (``weblet.json`` first, then the files by path) for storage.

        ``read_bundle(bundle.to_zip()) == bundle``. Deterministic for a given
        zlib; a member that would deflate beyond :data:`MAX_RATIO` is stored
        instead, so the zip always passes the ratio checks it came through.
        """
        members = {MANIFEST_NAME: _manifest_json(self.manifest)}
        members.update(self.files)
        return _zip(members, compress=True)


def _manifest_json(manifest: WebletManifest) -> bytes:
    data = manifest.model_dump(mode="json")
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _digest(manifest: WebletManifest, files: Mapping[str, bytes]) -> str:
    # Length-prefixed fields: no two different bundles serialize alike. Not
    # the hash of to_zip(): deflate's output may change with the zlib version.
    h = hashlib.sha256(b"ocapd weblet bundle v1\n")
    manifest_json = _manifest_json(manifest)
    h.update(len(manifest_json).to_bytes(8, "big") + manifest_json)
    for path in sorted(files, key=lambda p: p.encode("utf-8")):
        name = path.encode("utf-8")
        h.update(len(name).to_bytes(8, "big") + name + hashlib.sha256(files[path]).digest())
    return h.hexdigest()


def _zip(members: Mapping[str, bytes], *, compress: bool) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for path in sorted(members, key=lambda p: (p != MANIFEST_NAME, p.encode("utf-8"))):
            data = members[path]
            info = zipfile.ZipInfo(path, date_time=_ZIP_EPOCH)
            info.create_system = 3  # unix, so that external_attr holds a file mode
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            deflate = compress and _deflated_size(data) * MAX_RATIO >= len(data)
            info.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
            zf.writestr(info, data)
    return out.getvalue()


def _deflated_size(data: bytes) -> int:
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)  # as zipfile does
    return len(compressor.compress(data) + compressor.flush())


def _make_bundle(manifest: WebletManifest, files: dict[str, bytes], where: str) -> Bundle:
    if manifest.kind != "iframe-external" and manifest.entry not in files:
        raise BundleError(f"{where}: entry: {_echo(manifest.entry)} is not in the bundle")
    if manifest.backend is not None:
        if manifest.backend not in files:
            raise BundleError(f"{where}: backend: {_echo(manifest.backend)} is not in the bundle")
        modules = [data for path, data in files.items() if path.endswith(".py")]
        if len(modules) > MAX_BACKEND_FILES or sum(map(len, modules)) > MAX_BACKEND_SIZE:
            raise BundleError(
                f"{where}: backend: more than {MAX_BACKEND_FILES} .py files or {MAX_BACKEND_SIZE} bytes of them "
                "(a worker would refuse to unpack it)"
            )
    ordered = dict(sorted(files.items(), key=lambda item: item[0].encode("utf-8")))
    return Bundle(manifest=manifest, files=MappingProxyType(ordered), digest=_digest(manifest, ordered))


def _assemble(files: dict[str, bytes], where: str) -> Bundle:
    """Take weblet.json out of an archive's or folder's files and check the rest against it."""
    raw = files.pop(MANIFEST_NAME, None)
    if raw is None:
        nested = sorted(p for p in files if p.endswith("/" + MANIFEST_NAME) and p.count("/") == 1)
        hint = f" (found {_echo(nested[0])}: pack the folder's contents, not the folder)" if nested else ""
        raise BundleError(f"{where}: no {MANIFEST_NAME} at the top of the bundle{hint}")
    return _make_bundle(parse_manifest(raw, where=MANIFEST_NAME), files, MANIFEST_NAME)


# ---- reading ---------------------------------------------------------------------------------
def read_bundle(source: bytes | bytearray | memoryview | str | os.PathLike[str]) -> Bundle:
    """Read and check a weblet bundle; raise :class:`BundleError` if it is malformed or unsafe.

    ``source`` is the bundle's bytes -- a zip archive or a single HTML file,
    told apart by their content -- or the path (str or PathLike) of a folder,
    a zip file or an HTML file. Symlinks are refused, the given path included.
    Nothing is written anywhere.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _read_bytes(bytes(source), "bundle")
    if isinstance(source, (str, os.PathLike)):
        return _read_path(Path(source))
    raise TypeError(f"a weblet bundle is bytes or a path, not {type(source).__name__}")


def _read_bytes(data: bytes, where: str) -> Bundle:
    if data.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _read_zip(data, where)
    head = data[:1024].removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n\f")
    if head.startswith(b"<"):
        name = where if where.lower().endswith((".html", ".htm")) else _HTML_ENTRY
        return _read_html(data, name)
    raise BundleError(f"{where}: not a weblet bundle: expected a zip archive or an HTML file")


def _read_path(path: Path) -> Bundle:
    where = str(path)
    try:
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            raise BundleError(f"{where}: symlinks are not allowed")
        if stat.S_ISDIR(info.st_mode):
            return _read_folder(path)
        if not stat.S_ISREG(info.st_mode):
            raise BundleError(f"{where}: not a regular file or folder")
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        data = _read_fd(fd, MAX_ARCHIVE_SIZE, where)
    except OSError as e:
        raise BundleError(f"{where}: cannot read: {e.strerror or e}") from None
    return _read_bytes(data, path.name)


def _read_fd(fd: int, limit: int, where: str) -> bytes:
    """Read a regular file to its end, refusing more than ``limit`` bytes; closes ``fd``."""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BundleError(f"{where}: not a regular file")
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, _CHUNK):
            size += len(chunk)
            if size > limit:
                raise BundleError(f"{where}: larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _zip_errors(where: str) -> Iterator[None]:
    # zipfile reports a malformed archive through many exception types
    # (BadZipFile, EOFError, zlib.error, struct.error, ValueError, ...);
    # within a zipfile call each of them means the archive is broken.
    try:
        yield
    except BundleError:
        raise
    except Exception as e:  # noqa: BLE001 - see above; the scope is one zipfile call
        raise BundleError(f"{where}: not a readable zip archive: {type(e).__name__}: {_echo(str(e))}") from None


def _read_zip(data: bytes, where: str) -> Bundle:
    if len(data) > MAX_ARCHIVE_SIZE:
        raise BundleError(f"{where}: larger than {MAX_ARCHIVE_SIZE} bytes")
    with _zip_errors(where):
        archive = zipfile.ZipFile(io.BytesIO(data))
    with archive:
        with _zip_errors(where):
            members = archive.infolist()
        if len(members) > MAX_MEMBERS:
            raise BundleError(f"{where}: {len(members)} members: at most {MAX_MEMBERS} are allowed")
        names = _Names("zip member")
        plan: list[tuple[zipfile.ZipInfo, str]] = []
        for info in members:
            raw_name = info.orig_filename  # .filename is cut at the first NUL
            is_folder = raw_name.endswith("/")
            try:
                path = _check_path(raw_name[:-1] if is_folder else raw_name)
            except BundleError as e:
                raise BundleError(f"zip member {e}") from None
            _check_member(info, path, is_folder)
            names.add(path, is_folder)
            if not is_folder:
                plan.append((info, path))
        files: dict[str, bytes] = {}
        total = 0
        for info, path in plan:
            files[path], total = _read_member(archive, info, path, total, len(data))
    return _assemble(files, where)


def _check_member(info: zipfile.ZipInfo, path: str, is_folder: bool) -> None:
    where = f"zip member {_echo(path)}"
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if stat.S_ISLNK(mode):
        raise BundleError(f"{where}: symlinks are not allowed")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR) or (kind == stat.S_IFDIR and not is_folder):
        raise BundleError(f"{where}: only regular files and folders are allowed")
    if info.flag_bits & 0x1:
        raise BundleError(f"{where}: encrypted members are not allowed")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise BundleError(f"{where}: compression method {info.compress_type} is not allowed (use deflate or none)")
    if info.file_size > MAX_FILE_SIZE:  # an early refusal; the real count is made while reading
        raise BundleError(f"{where}: larger than {MAX_FILE_SIZE} bytes")


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: str, total: int, archive_size: int) -> tuple[bytes, int]:
    where = f"zip member {_echo(path)}"
    # A header can lie about the compressed size too; the archive's own size cannot.
    compressed = max(1, min(info.compress_size, archive_size))
    chunks: list[bytes] = []
    size = 0
    with _zip_errors(where):
        with archive.open(info) as stream:
            while chunk := stream.read(_CHUNK):
                size += len(chunk)
                total += len(chunk)
                if size > MAX_FILE_SIZE:
                    raise BundleError(f"{where}: larger than {MAX_FILE_SIZE} bytes uncompressed")
                if total > MAX_TOTAL_SIZE:
                    raise BundleError(f"{where}: the bundle is larger than {MAX_TOTAL_SIZE} bytes uncompressed")
                if size > RATIO_FLOOR and size > compressed * MAX_RATIO:
                    raise BundleError(f"{where}: compression ratio above {MAX_RATIO}:1 (a zip bomb?)")
                if total > RATIO_FLOOR and total > archive_size * MAX_RATIO:
                    raise BundleError(f"{where}: the archive's compression ratio is above {MAX_RATIO}:1 (a zip bomb?)")
                chunks.append(chunk)
    return b"".join(chunks), total


def _read_folder(root: Path) -> Bundle:
    where = str(root)
    files: dict[str, bytes] = {}
    names = _Names("file")
    state = {"members": 0, "total": 0}

    def walk(dir_fd: int, prefix: str) -> None:
        with os.scandir(dir_fd) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            path = prefix + entry.name
            if entry.is_symlink():
                raise BundleError(f"file {_echo(path)}: symlinks are not allowed")
            if entry.name in _FOLDER_SKIPS:
                continue
            state["members"] += 1
            if state["members"] > MAX_MEMBERS:
                raise BundleError(f"{where}: more than {MAX_MEMBERS} files and folders")
            try:
                _check_path(path)
            except BundleError as e:
                raise BundleError(f"file {e}") from None
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
            if entry.is_dir(follow_symlinks=False):
                names.add(path, True)
                fd = os.open(entry.name, flags | os.O_DIRECTORY, dir_fd=dir_fd)
                try:
                    walk(fd, path + "/")
                finally:
                    os.close(fd)
            elif entry.is_file(follow_symlinks=False):
                names.add(path, False)
                fd = os.open(entry.name, flags | os.O_NONBLOCK, dir_fd=dir_fd)
                data = _read_fd(fd, MAX_FILE_SIZE, f"file {_echo(path)}")
                state["total"] += len(data)
                if state["total"] > MAX_TOTAL_SIZE:
                    raise BundleError(f"{where}: larger than {MAX_TOTAL_SIZE} bytes in all")
                files[path] = data
            else:
                raise BundleError(f"file {_echo(path)}: only regular files and folders are allowed")

    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            walk(root_fd, "")
        finally:
            os.close(root_fd)
    except OSError as e:
        raise BundleError(f"{where}: cannot read: {e.strerror or e}") from None
    return _assemble(files, where)


# ---- single HTML files -----------------------------------------------------------------------
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
        raise BundleError(f"{where}: {_echo(text)} is not WIDTHxHEIGHT, like '480x360'")
    return {"width": int(match.group(1)), "height": int(match.group(2))}


def _meta_names(text: str, where: str) -> Any:
    # Either the manifest's JSON object ({"next": {"description": ...}}) or a
    # plain list of names ("next, prev").
    if text.lstrip().startswith("{"):
        return _load_json(text.encode("utf-8", "surrogatepass"), where)
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
}


def _read_html(data: bytes, name: str) -> Bundle:
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
            json_form = _load_json(content.encode("utf-8", "surrogatepass"), where)
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
    return _make_bundle(parse_manifest(manifest, where=f"{name} (meta)"), {_HTML_ENTRY: data}, f"{name} (meta)")


# ---- CSP and Permissions-Policy --------------------------------------------------------------
_HEADER_URL = re.compile(r"(https?|wss?)://([a-z0-9.-]+(?::[0-9]{1,5})?)(/[A-Za-z0-9._~/-]*)?")


def _header_url(value: str, name: str, *, schemes: tuple[str, ...], path: bool) -> tuple[str, str]:
    match = _HEADER_URL.fullmatch(value) if isinstance(value, str) else None
    if not match or match.group(1) not in schemes or (match.group(3) and not path):
        raise ValueError(f"csp_for: {name} {_echo(value)} is not a plain {'/'.join(schemes)} URL")
    return match.group(1), match.group(2)


def csp_for(manifest: WebletManifest, *, self_origin: str, ws_url: str, frame_ancestor: str) -> str:
    """The Content-Security-Policy header for a weblet served at ``self_origin``.

    Restrictive by default: scripts, styles, images, fonts and media from the
    weblet's own origin only; network connections only to its own CapTP
    WebSocket ``ws_url`` plus the manifest's declared ``connectSrc``; frames
    only from its declared ``frameSrc``; framed only by ``frame_ancestor``
    (the Chat page's origin). The manifest's origins are checked again here,
    so the header never carries anything unchecked. ``ws_url`` must belong to
    ``self_origin`` (same host and port; ws for http, wss for https):
    ValueError otherwise.
    """
    origin_scheme, origin_host = _header_url(self_origin, "self_origin", schemes=("http", "https"), path=False)
    ws_scheme, ws_host = _header_url(ws_url, "ws_url", schemes=("ws", "wss"), path=True)
    _header_url(frame_ancestor, "frame_ancestor", schemes=("http", "https"), path=False)
    if ws_host != origin_host or ws_scheme != {"http": "ws", "https": "wss"}[origin_scheme]:
        raise ValueError(f"csp_for: ws_url {_echo(ws_url)} is not on the weblet's own origin {_echo(self_origin)}")
    try:
        connect = [_normalize_origin(o) for o in manifest.csp.connectSrc]
        frames = [_normalize_origin(o) for o in manifest.csp.frameSrc]
    except ValueError as e:
        raise ValueError(f"csp_for: {e}") from None
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self' 'unsafe-inline'",
            "img-src 'self' data:",
            "font-src 'self'",
            "media-src 'self'",
            "connect-src " + " ".join([ws_url, *connect]),
            "frame-src " + (" ".join(frames) or "'none'"),
            f"frame-ancestors {frame_ancestor}",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
        ]
    )


def permissions_allow(manifest: WebletManifest) -> str:
    """The iframe ``allow=`` attribute: the manifest's permissions, from the allowlist, in its order."""
    return "; ".join(p for p in PERMISSIONS if p in manifest.permissions)
