"""The gateway's files: a fixed table built once at startup, never a path taken from a request.

``build_table(folder)`` walks a folder and reads every servable file into
memory, keyed by the URL path it is served at. A request is answered by
looking its path up in that table: anything else - ``..``, encoded dots,
absolute paths, symlinks, hidden files, unknown extensions - is simply not
a key, so it is a 404. Nothing on the request path touches the filesystem.

The Chat UI's folder (``chat_host/static/``) is laid out as it is served:
``index.html`` at ``/``, every other file at its relative path. The browser
CapTP implementation is served at ``/_ocapd/captp.js`` (the entry point),
``/_ocapd/captp/...`` (its modules, which it imports by relative URL) and
``/_ocapd/vendor/...``, and the weblet SDK at ``/_ocapd/weblet.js``, for every
virtual host (weblets use them): from the folder's ``_ocapd/`` sub-folder if it
has one, otherwise from its top-level ``captp.js``, ``weblet.js``, ``captp/``
and ``vendor/``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ocapd.daemon.content_types import CONTENT_TYPES, content_type_for

__all__ = ["StaticFile", "build_table", "split_runtime", "CONTENT_TYPES", "DEFAULT_STATIC_DIR"]

log = logging.getLogger("ocapd.gateway")

#: The Chat UI's files, shipped in the chat_host package.
DEFAULT_STATIC_DIR = Path(__file__).resolve().parent.parent / "chat_host" / "static"

# Only files whose extension is in CONTENT_TYPES, the one table of types
# (ocapd.daemon.content_types, shared with weblet bundles), are served, each with
# its exact type (with nosniff, the browser trusts it). Other files are skipped.

#: A single file larger than this is skipped (the UI's files are small; this is a mistake guard).
MAX_FILE_SIZE = 8 * 1024 * 1024
#: Everything in the table together: it lives in memory for the daemon's life.
MAX_TOTAL_SIZE = 64 * 1024 * 1024
#: Folders deeper than this are not walked.
MAX_DEPTH = 16


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str  # quoted, strong: the content's sha256


def build_table(folder: Path) -> dict[str, StaticFile]:
    """URL path -> file, for every servable file under ``folder`` (empty if it does not exist).

    Skipped: symlinks (never followed), names starting with ``.``, unknown
    extensions, files over ``MAX_FILE_SIZE``; the walk stops at
    ``MAX_TOTAL_SIZE``. ``index.html`` of the folder is also served at ``/``.
    """
    table: dict[str, StaticFile] = {}
    total = 0
    root = Path(folder)
    try:
        info = os.stat(root, follow_symlinks=False)
    except FileNotFoundError:
        log.warning("gateway: no static folder at %s; the Chat UI is not served", root)
        return table
    if not stat.S_ISDIR(info.st_mode):
        log.warning("gateway: %s is not a folder; the Chat UI is not served", root)
        return table

    def walk(folder: Path, parts: tuple[str, ...]) -> None:
        nonlocal total
        if len(parts) > MAX_DEPTH:
            return
        with os.scandir(folder) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                name = entry.name
                if name.startswith(".") or "/" in name or "\\" in name:
                    continue
                if entry.is_symlink():
                    log.warning("gateway: skipping symlink %s", entry.path)
                    continue
                if entry.is_dir(follow_symlinks=False):
                    walk(Path(entry.path), (*parts, name))
                    continue
                if not entry.is_file(follow_symlinks=False):
                    continue
                content_type = content_type_for(name)
                if content_type is None:
                    continue
                size = entry.stat(follow_symlinks=False).st_size
                if size > MAX_FILE_SIZE or total + size > MAX_TOTAL_SIZE:
                    log.warning("gateway: skipping %s (%d bytes): too large", entry.path, size)
                    continue
                fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
                with os.fdopen(fd, "rb") as f:
                    body = f.read(MAX_FILE_SIZE + 1)
                if len(body) > MAX_FILE_SIZE:
                    continue
                total += len(body)
                etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
                table["/" + "/".join((*parts, name))] = StaticFile(body, content_type, etag)

    walk(root, ())
    if "/index.html" in table:
        table["/"] = table["/index.html"]
    return table


RUNTIME_PREFIX = "/_ocapd/"
#: The chat folder's files that make up the runtime when it has no ``_ocapd/``:
#: these files, and everything under these folders.
RUNTIME_FILES = ("/captp.js", "/weblet.js")
RUNTIME_FOLDERS = ("/captp/", "/vendor/")


def split_runtime(table: dict[str, StaticFile]) -> tuple[dict[str, StaticFile], dict[str, StaticFile]]:
    """Split a Chat UI table into (the chat host's own files, the ``/_ocapd/`` runtime files).

    The runtime files are the browser CapTP implementation, served on every
    virtual host. They come from the folder's ``_ocapd/`` if it has one,
    otherwise from its ``captp.js``, ``weblet.js``, ``captp/`` and ``vendor/``
    (which then stay served at their own paths too).
    """
    runtime = {path: f for path, f in table.items() if path.startswith(RUNTIME_PREFIX)}
    own = {path: f for path, f in table.items() if not path.startswith(RUNTIME_PREFIX)}
    if not runtime:
        for path, f in own.items():
            if path in RUNTIME_FILES or path.startswith(RUNTIME_FOLDERS):
                runtime[RUNTIME_PREFIX + path[1:]] = f
    return own, runtime
