"""A weblet bundle: read from a zip, a folder or a single HTML file, checked, and held as a :class:`Bundle`.

:func:`read_bundle` turns any of the three shapes into a :class:`Bundle`: the
validated, normalized manifest, the files by path, and a digest.

- A **zip** is read by the one archive reader,
  :func:`ocapd.workers.archive.read_zip`, with the one set of limits a worker
  also applies when it unpacks a backend: paths that could leave the bundle,
  links, collisions, encryption, sizes and ratios counted while decompressing.
  A weblet adds one rule of its own: nothing under ``_ocapd/``.
- A **folder** (for development) is walked here with the same path rules and
  limits, never following a link.
- A **single HTML file** declares its manifest in ``<meta>`` tags
  (:mod:`.single_html`) and becomes a bundle of one file, ``index.html``.

Every refusal is one exception type, :class:`BundleError`, whose message is a
single line saying what is wrong and where, fit to show a user as is. Nothing
here does I/O beyond reading the given bytes or path.

A :class:`Bundle` turns back into a zip for storage (:meth:`Bundle.to_zip`)
and gives its backend as the zip a worker unpacks (:meth:`Bundle.backend_zip`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from ocapd.workers.archive import (
    CHUNK,
    MAX_ARCHIVE_SIZE,
    MAX_FILE_SIZE,
    MAX_MEMBERS,
    MAX_RATIO,
    MAX_TOTAL_SIZE,
    BundleError,
    MemberNames,
    echo,
    read_zip,
)

from ..content_types import DEFAULT_CONTENT_TYPE, content_type_for
from .manifest import HTML_ENTRY, MANIFEST_NAME, WebletManifest, check_weblet_path, parse_manifest, refuse_runtime_folder
from .single_html import manifest_from_html

__all__ = ["Bundle", "read_bundle", "MAX_BACKEND_FILES", "MAX_BACKEND_SIZE"]

#: A backend is unpacked by a worker with the same archive limits (see
#: ocapd.workers.archive); its zip holds the .py files plus bundle.json.
#: Refusing here what a worker would refuse later keeps "installed" meaning
#: "runnable".
MAX_BACKEND_FILES = MAX_MEMBERS - 1  # plus bundle.json
MAX_BACKEND_SIZE = MAX_TOTAL_SIZE - 1024  # leaves room for bundle.json
_BACKEND_MANIFEST = "bundle.json"  # what workers/bundle.py reads for the entry module
# Zip timestamps before 1980 cannot be written; a fixed one makes zips reproducible.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
# Development leftovers a folder bundle never includes: version control,
# bytecode caches, Finder metadata.
_FOLDER_SKIPS = frozenset({".git", ".hg", ".svn", "__pycache__", ".DS_Store"})


# ---- the bundle ------------------------------------------------------------------------------
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
        return content_type_for(path) or DEFAULT_CONTENT_TYPE

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
    # An external entry is a URL; a projection-only weblet has no page at all.
    if manifest.kind not in ("iframe-external", "projection-only") and manifest.entry not in files:
        raise BundleError(f"{where}: entry: {echo(manifest.entry)} is not in the bundle")
    if manifest.backend is not None:
        if manifest.backend not in files:
            raise BundleError(f"{where}: backend: {echo(manifest.backend)} is not in the bundle")
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
        hint = f" (found {echo(nested[0])}: pack the folder's contents, not the folder)" if nested else ""
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
        name = where if where.lower().endswith((".html", ".htm")) else HTML_ENTRY
        # single_html names the manifest "<name> (meta)" in its messages; so do we.
        return _make_bundle(manifest_from_html(data, name), {HTML_ENTRY: data}, f"{name} (meta)")
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
        while chunk := os.read(fd, CHUNK):
            size += len(chunk)
            if size > limit:
                raise BundleError(f"{where}: larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _read_zip(data: bytes, where: str) -> Bundle:
    # The one archive reader, with the one set of limits a worker also applies
    # to the backend it unpacks; the weblet adds only its reserved folder.
    contents = read_zip(data, where=where, extra_path_rule=refuse_runtime_folder)
    return _assemble(dict(contents.files), where)


def _read_folder(root: Path) -> Bundle:
    where = str(root)
    files: dict[str, bytes] = {}
    names = MemberNames("file")
    state = {"members": 0, "total": 0}

    def walk(dir_fd: int, prefix: str) -> None:
        with os.scandir(dir_fd) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            path = prefix + entry.name
            if entry.is_symlink():
                raise BundleError(f"file {echo(path)}: symlinks are not allowed")
            if entry.name in _FOLDER_SKIPS:
                continue
            state["members"] += 1
            if state["members"] > MAX_MEMBERS:
                raise BundleError(f"{where}: more than {MAX_MEMBERS} files and folders")
            try:
                check_weblet_path(path)
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
                data = _read_fd(fd, MAX_FILE_SIZE, f"file {echo(path)}")
                state["total"] += len(data)
                if state["total"] > MAX_TOTAL_SIZE:
                    raise BundleError(f"{where}: larger than {MAX_TOTAL_SIZE} bytes in all")
                files[path] = data
            else:
                raise BundleError(f"file {echo(path)}: only regular files and folders are allowed")

    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            walk(root_fd, "")
        finally:
            os.close(root_fd)
    except OSError as e:
        raise BundleError(f"{where}: cannot read: {e.strerror or e}") from None
    return _assemble(files, where)
