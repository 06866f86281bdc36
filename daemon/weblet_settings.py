"""The operator's settings for the widget manager: ``<state>/weblets.json``.

One small JSON file in the state folder, read when a setting is needed (and
read again only when the file changed), so an operator edits it without
restarting the daemon. Every key is optional; a missing file means the safe
defaults::

    {
      "fetch": {
        "allowed_hosts": ["store.intranet.example"],   // addresses not checked (exact names)
        "http_hosts": [],                               // may use plain http:// (still checked)
        "ca_file": "/etc/ocapd/intranet-ca.pem"         // also trust this CA (PEM) for https
      },
      "stores": {"intranet": "https://store.intranet.example/catalogue.json",
                 "mine": "/home/me/weblets/catalogue.json"},
      "manifest_cache_ttl": 300
    }

``stores`` adds catalogues beside the one shipped with ocapd (``examples``);
a value is an absolute path or an ``https://`` URL. ``manifest_cache_ttl`` is
how long (seconds) the agent's view of a host's enabled manifests may be
served from memory; every change through the manager invalidates it anyway.

A malformed file is an error naming the file and the key, never silently
ignored: an operator who wrote an allow list must not get the defaults.
"""

from __future__ import annotations

import json
import os
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .weblet_fetch import FetchPolicy

__all__ = ["SETTINGS_FILE", "DEFAULT_MANIFEST_TTL", "EXAMPLES_STORE", "SettingsError", "WebletSettings", "load_settings"]

SETTINGS_FILE = "weblets.json"
#: Seconds the agent's manifest list may be served from the cache (seed 000: five minutes).
DEFAULT_MANIFEST_TTL = 300.0
#: The store every daemon has: the catalogue shipped with the examples.
EXAMPLES_STORE = "examples"
#: Bytes of the settings file: a few lists of host names.
MAX_SETTINGS_BYTES = 256 * 1024
_STORE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}\Z")
_KEYS = {"fetch", "stores", "manifest_cache_ttl"}
_FETCH_KEYS = {"allowed_hosts", "http_hosts", "ca_file"}


class SettingsError(ValueError):
    """The settings file is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class WebletSettings:
    allowed_hosts: frozenset[str] = frozenset()
    http_hosts: frozenset[str] = frozenset()
    ca_file: str | None = None
    stores: dict[str, str] = field(default_factory=dict)  # name -> absolute path or URL (not the examples)
    manifest_cache_ttl: float = DEFAULT_MANIFEST_TTL

    def fetch_policy(self) -> FetchPolicy:
        context = None
        if self.ca_file is not None:
            # The public CAs and the operator's own: an intranet store keeps working
            # beside public URLs.
            context = ssl.create_default_context()
            try:
                import certifi

                context.load_verify_locations(certifi.where())
            except ImportError:  # pragma: no cover - httpx depends on certifi
                pass
            context.load_verify_locations(self.ca_file)
        return FetchPolicy(allowed_hosts=self.allowed_hosts, http_hosts=self.http_hosts, ssl_context=context)


def _hosts(value: Any, where: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(h, str) and h and len(h) <= 253 for h in value):
        raise SettingsError(f"{where}: a list of host names")
    return frozenset(h.strip().lower() for h in value)


def parse_settings(data: Any, where: str) -> WebletSettings:
    """Settings from the file's JSON; :class:`SettingsError` says what is wrong."""
    if not isinstance(data, dict):
        raise SettingsError(f"{where}: must be a JSON object")
    unknown = set(data) - _KEYS
    if unknown:
        raise SettingsError(f"{where}: unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(_KEYS))})")
    fetch = data.get("fetch", {})
    if not isinstance(fetch, dict) or set(fetch) - _FETCH_KEYS:
        raise SettingsError(f"{where}: \"fetch\" takes {', '.join(sorted(_FETCH_KEYS))}")
    ca_file = fetch.get("ca_file")
    if ca_file is not None and (not isinstance(ca_file, str) or not os.path.isabs(ca_file)):
        raise SettingsError(f"{where}: fetch.ca_file must be an absolute path")
    stores = data.get("stores", {})
    if not isinstance(stores, dict):
        raise SettingsError(f"{where}: \"stores\" maps names to catalogue paths or URLs")
    for name, location in stores.items():
        if not _STORE_NAME.match(name) or name == EXAMPLES_STORE:
            raise SettingsError(f"{where}: store name {name!r} must be a short lower-case word, not {EXAMPLES_STORE!r}")
        if not isinstance(location, str) or not (os.path.isabs(location) or location.startswith(("https://", "http://"))):
            raise SettingsError(f"{where}: store {name!r} must be an absolute path or an https:// URL")
    ttl = data.get("manifest_cache_ttl", DEFAULT_MANIFEST_TTL)
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 <= ttl <= 86400:
        raise SettingsError(f"{where}: manifest_cache_ttl is a number of seconds from 0 to 86400")
    return WebletSettings(
        allowed_hosts=_hosts(fetch.get("allowed_hosts", []), f"{where}: fetch.allowed_hosts"),
        http_hosts=_hosts(fetch.get("http_hosts", []), f"{where}: fetch.http_hosts"),
        ca_file=ca_file,
        stores=dict(stores),
        manifest_cache_ttl=float(ttl),
    )


class _Cache:
    def __init__(self) -> None:
        self.key: tuple[int, int] | None = None
        self.settings = WebletSettings()


_cache: dict[Path, _Cache] = {}


def load_settings(state: Path | None) -> WebletSettings:
    """The settings in ``<state>/weblets.json`` (defaults if there is no such file or no state folder)."""
    if state is None:
        return WebletSettings()
    path = Path(state) / SETTINGS_FILE
    try:
        info = path.stat()
    except FileNotFoundError:
        return WebletSettings()
    cache = _cache.setdefault(path, _Cache())
    key = (info.st_mtime_ns, info.st_size)
    if cache.key == key:
        return cache.settings
    if info.st_size > MAX_SETTINGS_BYTES:
        raise SettingsError(f"{path}: larger than {MAX_SETTINGS_BYTES} bytes")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise SettingsError(f"{path}: not valid JSON ({str(e).splitlines()[0][:120]})") from None
    cache.settings = parse_settings(data, str(path))
    cache.key = key
    return cache.settings
