"""Bundles: a zip of Python files, checked and unpacked into a private read-only folder.

A bundle is untrusted input. ``extract_bundle`` reads it with the one
archive reader, :func:`ocapd.workers.archive.read_zip` -- the same reader and
limits a weblet bundle passes at install -- which refuses, with a
``BundleError`` that names the offending member, anything that could write
outside the target folder or exhaust memory or disk. Only then is anything
written: the folder is written under a temporary name and renamed into place
when complete, then made read-only (file modes).

The entry module is named by ``bundle.json`` ``{"entry": "main"}`` (a dotted
module name inside the bundle), or is ``main.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

from .archive import BundleError, read_zip

__all__ = ["BundleError", "extract_bundle", "bundle_digest"]

_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")


def bundle_digest(bundle: bytes) -> str:
    """The bundle's content address (sha256, hex)."""
    return hashlib.sha256(bundle).hexdigest()


def extract_bundle(bundle: bytes, dest: Path) -> str:
    """Check ``bundle`` and unpack it into ``dest`` (which must not exist); return the entry module name.

    If ``dest`` already exists it is assumed to be this bundle unpacked
    earlier (callers name it by ``bundle_digest``) and only the entry is read.
    """
    if not isinstance(bundle, (bytes, bytearray)):
        raise BundleError(f"a bundle is bytes (a zip), not {type(bundle).__name__}")
    if dest.exists():
        return _entry_of(dest)
    return _unpack(bytes(bundle), dest)


def _unpack(bundle: bytes, dest: Path) -> str:
    contents = read_zip(bundle)  # every check happens here, before anything is written
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(mode=0o700)
    try:
        for folder in contents.folders:
            staging.joinpath(*folder.split("/")).mkdir(parents=True, exist_ok=True)
        for path, data in contents.files.items():
            target = staging.joinpath(*path.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_new(target, data)
        entry = _entry_of(staging)
        _seal(staging)
        os.rename(staging, dest)
        return entry
    except BaseException:
        _unseal(staging)
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _write_new(target: Path, data: bytes) -> None:
    # O_EXCL | O_NOFOLLOW: never through a link, never over a file (read_zip
    # already refused duplicates; this holds even if the folder was tampered with).
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _seal(folder: Path) -> None:
    for root, _dirs, files in os.walk(folder):
        for f in files:
            os.chmod(os.path.join(root, f), 0o444)
    for root, dirs, _files in os.walk(folder, topdown=False):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o555)
    os.chmod(folder, 0o555)


def _unseal(folder: Path) -> None:
    if folder.exists():
        for root, _dirs, _files in os.walk(folder):
            os.chmod(root, 0o700)


def _entry_of(folder: Path) -> str:
    manifest = folder / "bundle.json"
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise BundleError(f"bundle.json is not valid JSON: {e}") from None
        entry = data.get("entry", "main") if isinstance(data, dict) else None
        if not isinstance(entry, str) or not _MODULE_NAME.match(entry.removesuffix(".py")):
            raise BundleError(f"bundle.json: 'entry' must be a module name, got {entry!r}")
        entry = entry.removesuffix(".py")
    else:
        entry = "main"
    parts = entry.split(".")
    module_file = folder.joinpath(*parts[:-1], parts[-1] + ".py")
    package_init = folder.joinpath(*parts, "__init__.py")
    if not module_file.is_file() and not package_init.is_file():
        raise BundleError(f"bundle has no entry module {entry!r} ({'/'.join(parts)}.py)")
    return entry
