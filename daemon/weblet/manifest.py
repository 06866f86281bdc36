"""A weblet's manifest: the strict schema of ``weblet.json``, and what a path in a weblet may be.

:func:`parse_manifest` validates a manifest from JSON or a dict into a frozen
:class:`WebletManifest`, or raises :class:`BundleError` naming the offending
field, on one line. The schema is strict: unknown keys are refused, strings
are bounded and free of control and bidirectional characters, CSP origins are
plain ``https://`` or ``wss://`` host names (:func:`normalize_origin`), and
permissions come from an allowlist (:data:`PERMISSIONS`). The JSON itself is
read by :func:`load_json`: bounded, UTF-8, no duplicate keys, no NaN.

:func:`check_weblet_path` is the archive reader's path rule
(:func:`ocapd.workers.archive.check_path`) plus the one rule of weblets: the
``_ocapd/`` folder belongs to the runtime the gateway serves on every weblet's
origin. It checks bundle members and the manifest's ``entry`` and ``backend``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    StringConstraints,
    ValidationError,
    model_serializer,
    model_validator,
)

from ocapd.workers.archive import MAX_PATH_LENGTH, BundleError, check_path, echo, fold

from ..names import validate_pet_name

__all__ = [
    "WebletManifest", "Size", "Csp", "Interface", "Command", "Event",
    "parse_manifest", "load_json", "normalize_origin", "check_weblet_path", "refuse_runtime_folder",
    "MANIFEST_NAME", "MAX_MANIFEST_SIZE", "HTML_ENTRY", "RUNTIME_FOLDER", "PERMISSIONS",
]  # fmt: skip

MANIFEST_NAME = "weblet.json"
#: Bytes of weblet.json: above any manifest the schema accepts (a few hundred
#: KiB with every list full of the longest \\u-escaped strings).
MAX_MANIFEST_SIZE = 1024 * 1024
#: The entry a manifest names when it names none, and the one file of the single-HTML form.
HTML_ENTRY = "index.html"
#: The gateway serves its runtime (weblet.js, captp.js) under /_ocapd/ on every
#: weblet's origin: a bundle file there would be shadowed, or shadow it.
RUNTIME_FOLDER = "_ocapd"

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


# ---- paths -----------------------------------------------------------------------------------
def refuse_runtime_folder(path: str) -> None:
    """BundleError if ``path`` lies in the folder reserved for the runtime (case ignored)."""
    if fold(path.split("/")[0]) == RUNTIME_FOLDER:
        raise BundleError(f"{echo(path)}: '{RUNTIME_FOLDER}/' is reserved for the runtime ocapd serves every weblet")


def check_weblet_path(path: str) -> str:
    """Return ``path`` if a weblet may hold a file there; raise BundleError saying why not."""
    check_path(path)
    refuse_runtime_folder(path)
    return path


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


def _example(value: str) -> str:
    return _check_text(value, multiline=False)


def _paragraph(value: str) -> str:
    return _check_text(value, multiline=True)


Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=80), AfterValidator(_line)]
Description = Annotated[str, StringConstraints(max_length=500), AfterValidator(_paragraph)]
ShortDescription = Annotated[str, StringConstraints(max_length=300), AfterValidator(_paragraph)]
LongDescription = Annotated[str, StringConstraints(max_length=1000), AfterValidator(_paragraph)]
#: A phrase a user might type for a command ("show tasks"): one line, checked like a description.
ExamplePhrase = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120), AfterValidator(_example)]
#: Example phrases per command: enough to route by, too few to flood a prompt.
MAX_EXAMPLES_PER_COMMAND = 8
# Semver-ish: 1, 1.2, 1.2.3, 1.2.3-beta.1, 1.2.3+build.7.
Version = Annotated[
    str, StringConstraints(max_length=32, pattern=r"^[0-9]{1,9}(\.[0-9]{1,9}){0,3}([-+][0-9A-Za-z][0-9A-Za-z.+-]*)?$")
]
# Names an agent reads and a router matches: a fixed alphabet, no spaces.
CommandName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-zA-Z0-9_.]{0,63}$")]
EventName = CommandName
ArgName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-zA-Z0-9_]{0,63}$")]
PetName = Annotated[str, AfterValidator(validate_pet_name)]


def normalize_origin(value: str) -> str:
    """``value`` as a normalized CSP origin, or a ValueError saying why not."""
    if "*" in value:
        raise _invalid(f"{echo(value)} is not allowed: wildcards are refused")
    if any(c in value for c in "'\""):
        raise _invalid(f"{echo(value)} is not allowed: quotes are refused (no CSP keywords)")
    if any(c in value for c in ";,"):
        raise _invalid(f"{echo(value)} is not allowed: ';' and ',' are refused (one origin per entry)")
    if any(c.isspace() or unicodedata.category(c) in ("Cc", "Cs") for c in value) or not value:
        raise _invalid(f"{echo(value)} is not allowed: whitespace and control characters are refused")
    if len(value) > 300:
        raise _invalid(f"{echo(value)} is not allowed: longer than 300 characters")
    match = re.fullmatch(r"([A-Za-z][A-Za-z0-9+.-]*):(//)?(.*)", value, flags=re.DOTALL)
    scheme = match.group(1).lower() if match else ""
    if scheme not in ("https", "wss") or not match:
        shown = f"{scheme}:" if match else echo(value)
        raise _invalid(f"{echo(value)} is not allowed: only https:// and wss:// origins (not {shown})")
    if not match.group(2) or not match.group(3):
        raise _invalid(f"{echo(value)} is not allowed: a scheme alone allows every host; name one, like https://example.com")
    authority = match.group(3)
    if authority.endswith("/"):
        authority = authority[:-1]  # "https://a.com/" means the origin; the slash carries nothing
    if "@" in authority:
        raise _invalid(f"{echo(value)} is not allowed: credentials are refused")
    if any(c in authority for c in "/?#\\"):
        raise _invalid(f"{echo(value)} is not allowed: an origin has no path, query or fragment")
    if authority.startswith("["):
        raise _invalid(f"{echo(value)} is not allowed: IP literals are refused (use a host name)")
    host, colon, port = authority.partition(":")
    host = host.lower()
    if not host.isascii():
        raise _invalid(f"{echo(value)} is not allowed: write an international name in its xn-- form")
    labels = host.split(".")
    if len(host) > 253 or not all(re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", label) for label in labels):
        raise _invalid(f"{echo(value)} is not allowed: {echo(host)} is not a host name")
    if re.fullmatch(r"[0-9]+", labels[-1]) or re.fullmatch(r"0x[0-9a-f]*", labels[-1]):
        raise _invalid(f"{echo(value)} is not allowed: IP literals are refused (use a host name)")
    if len(labels) < 2 or labels[-1] == "localhost":
        raise _invalid(f"{echo(value)} is not allowed: {echo(host)} is a local name (use a public host name)")
    if colon:
        if not re.fullmatch(r"[0-9]{1,5}", port) or not 0 < int(port) < 65536:
            raise _invalid(f"{echo(value)} is not allowed: {echo(port)} is not a port number")
        # 443 is both schemes' default: one spelling per origin.
        port = "" if int(port) == 443 else str(int(port))
    return f"{scheme}://{host}" + (f":{port}" if port else "")


def _unique(values: list[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


Origin = Annotated[str, AfterValidator(normalize_origin)]
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
    # Phrases the chat's deterministic router matches ("add 5" -> this command, 5 as its first argument).
    examples: Annotated[list[ExamplePhrase], Field(max_length=MAX_EXAMPLES_PER_COMMAND), AfterValidator(_unique)] = []

    @model_serializer(mode="wrap")
    def _without_empty_examples(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # No examples: the normalized manifest is what it was before commands had
        # them, so bundle digests and manifest hashes of existing weblets stay put.
        data: dict[str, Any] = handler(self)
        if not data.get("examples"):
            data.pop("examples", None)
        return data


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
    # A file in the bundle; for kind "iframe-external" an https URL instead;
    # unused by "projection-only" (the host draws its backend's projection()).
    entry: Annotated[str, StringConstraints(min_length=1, max_length=2000)] = HTML_ENTRY
    csp: Csp = Csp()
    permissions: Annotated[list[Permission], Field(max_length=len(PERMISSIONS) * 2), AfterValidator(_unique)] = []
    interface: Interface | None = None
    # Pet names it will ask its host for: shown at install, grants nothing.
    powers: Annotated[list[PetName], Field(max_length=64), AfterValidator(_unique)] = []
    # A .py module in the bundle exposing make(powers, context).
    backend: Annotated[str, StringConstraints(max_length=MAX_PATH_LENGTH)] | None = None
    # WebRTC peer connections (RTCPeerConnection). connect-src does not govern
    # them: a page that may use them can send UDP to any address (STUN/TURN
    # servers it names), so only a weblet that declares this may; the gateway
    # blocks them for every other one (csp.connection_allowlist), and the
    # install dialog and the weblet's header say so.
    webrtc: bool = False

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Written only when declared: a manifest from before the field dumps
        # (and so hashes, bundle digest included) exactly as it did.
        data: dict[str, Any] = handler(self)
        if not self.webrtc:
            data.pop("webrtc", None)
        return data

    @model_validator(mode="after")
    def _entry_and_backend(self) -> WebletManifest:
        if self.kind == "projection-only" and self.backend is None:
            raise _invalid("backend: a 'projection-only' weblet needs a backend whose object offers projection()")
        if self.kind == "iframe-external":
            _check_external_url(self.entry)
        else:
            try:
                check_weblet_path(self.entry)
            except BundleError as e:
                raise _invalid(f"entry: {e}") from None
        if self.backend is not None:
            if not self.backend.endswith(".py"):
                raise _invalid(f"backend: {echo(self.backend)} is not a Python module: it must end in .py")
            try:
                check_weblet_path(self.backend)
            except BundleError as e:
                raise _invalid(f"backend: {e}") from None
            if not _MODULE_PATH.fullmatch(self.backend):
                raise _invalid(
                    f"backend: {echo(self.backend)} must be named like a Python module "
                    "(letters, digits and '_' in each part), like 'backend.py'"
                )
        return self


def _check_external_url(url: str) -> None:
    match = re.fullmatch(r"https://([^/?#]+)([/?#][^\s]*)?", url, flags=re.IGNORECASE)
    if not match or any(unicodedata.category(c) in ("Cc", "Cs") for c in url):
        raise _invalid(f"entry: {echo(url)}: a weblet of kind 'iframe-external' needs an https:// URL as entry")
    try:
        normalize_origin("https://" + match.group(1))
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
            text += f"[{echo(part)}]"
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
        data = load_json(raw, where)
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
            raise ValueError(f"duplicate key {echo(key)}")
        result[key] = value
    return result


def load_json(raw: bytes, where: str) -> Any:
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
