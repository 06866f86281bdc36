"""Bundles: a zip of Python files, checked and unpacked into a private read-only folder.

A bundle is untrusted input. ``extract_bundle`` refuses, with a
``BundleError`` that names the offending member, anything that could write
outside the target folder or exhaust the disk: absolute paths, ``..``,
backslashes, NUL bytes, symlinks and other non-regular members, names that
collide when case is folded, too many members, too large a member or total,
and suspicious compression ratios. Sizes are counted while reading, never
taken from the zip's headers. The folder is written under a temporary name
and renamed into place when complete, then made read-only (file modes).

The entry module is named by ``bundle.json`` ``{"entry": "main"}`` (a dotted
module name inside the bundle), or is ``main.py``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import zipfile
from pathlib import Path

__all__ = ["BundleError", "extract_bundle", "bundle_digest", "MAX_MEMBERS", "MAX_MEMBER_SIZE", "MAX_TOTAL_SIZE"]

#: Members per bundle: a weblet or service has tens of files, not thousands.
MAX_MEMBERS = 1000
#: Uncompressed bytes per member and in total; the total matches captp's frame limit.
MAX_MEMBER_SIZE = 8 * 1024 * 1024
MAX_TOTAL_SIZE = 16 * 1024 * 1024
#: Uncompressed/compressed ratio above which a member is treated as a zip bomb.
MAX_RATIO = 200
_CHUNK = 65536
_MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_DRIVE = re.compile(r"[A-Za-z]:")


class BundleError(ValueError):
    """The bundle is malformed or unsafe; the message says which member and why."""


def bundle_digest(bundle: bytes) -> str:
    """The bundle's content address (sha256, hex)."""
    return hashlib.sha256(bundle).hexdigest()


def _check_name(name: str) -> list[str]:
    if not name or "\x00" in name:
        raise BundleError(f"bundle member {name!r}: empty name or NUL byte")
    if "\\" in name:
        raise BundleError(f"bundle member {name!r}: backslashes are not allowed")
    if name.startswith("/") or _DRIVE.match(name):
        raise BundleError(f"bundle member {name!r}: absolute paths are not allowed")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise BundleError(f"bundle member {name!r}: '..' is not allowed")
    if not parts:
        raise BundleError(f"bundle member {name!r}: names nothing")
    return parts


def _member_kind(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16
    if info.is_dir():
        return "dir"
    if mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG):
        return "symlink" if stat.S_ISLNK(mode) else "special"
    return "file"


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
    try:
        zf = zipfile.ZipFile(io.BytesIO(bundle))
    except (zipfile.BadZipFile, ValueError) as e:
        raise BundleError(f"not a zip file: {e}") from None
    with zf:
        members = zf.infolist()
        if len(members) > MAX_MEMBERS:
            raise BundleError(f"too many members: {len(members)} (limit {MAX_MEMBERS})")
        seen: dict[str, str] = {}
        plan: list[tuple[zipfile.ZipInfo, list[str], str]] = []
        for info in members:
            parts = _check_name(info.filename)
            kind = _member_kind(info)
            if kind != "file" and kind != "dir":
                raise BundleError(f"bundle member {info.filename!r}: {kind}s are not allowed")
            folded = "/".join(parts).casefold()
            if folded in seen and not (kind == "dir" and seen[folded] == "dir"):
                raise BundleError(f"bundle member {info.filename!r}: collides with another member")
            seen[folded] = kind
            plan.append((info, parts, kind))
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = dest.parent / f".{dest.name}.partial-{os.getpid()}"
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(mode=0o700)
        try:
            total = 0
            for info, parts, kind in plan:
                target = staging.joinpath(*parts)
                if kind == "dir":
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                total = _copy_member(zf, info, target, total)
            entry = _entry_of(staging)
            _seal(staging)
            os.rename(staging, dest)
            return entry
        except BaseException:
            _unseal(staging)
            shutil.rmtree(staging, ignore_errors=True)
            raise


def _copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, total: int) -> int:
    size = 0
    compressed = max(info.compress_size, 1)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with zf.open(info) as src:
            while chunk := src.read(_CHUNK):
                size += len(chunk)
                total += len(chunk)
                if size > MAX_MEMBER_SIZE:
                    raise BundleError(f"bundle member {info.filename!r}: larger than {MAX_MEMBER_SIZE} bytes")
                if total > MAX_TOTAL_SIZE:
                    raise BundleError(f"bundle too large: more than {MAX_TOTAL_SIZE} bytes uncompressed")
                if size > 1024 * 1024 and size / compressed > MAX_RATIO:
                    raise BundleError(f"bundle member {info.filename!r}: compression ratio above {MAX_RATIO}")
                os.write(fd, chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError) as e:
        raise BundleError(f"bundle member {info.filename!r}: {e}") from None
    finally:
        os.close(fd)
    return total


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
