"""The one zip reader for untrusted bundles, and the one set of limits it enforces.

Weblet bundles (read by the daemon at install) and worker bundles (unpacked
by a worker for ``make_bundle``) are the same kind of untrusted input, so
they are read by this one function, :func:`read_zip`, with the limits below:
one reader, one verdict. It lives in ``workers`` because both sides may
import it (the daemon imports workers; workers import nothing of the daemon),
and it imports nothing but the standard library, so a confined worker can
load it.

:func:`read_zip` takes an archive's bytes and returns its members' contents,
or raises :class:`BundleError` -- one line saying what is wrong and where, fit
to show a user as is. It refuses a member

- whose path could leave the bundle or mean different files on different file
  systems (:func:`check_path`: absolute, ``..``, backslashes, drive letters,
  empty or ``.`` segments, NUL and control characters, too long, too deep);
- whose name equals another's, or another's when case is folded, or names
  both a file and a folder (:class:`MemberNames`);
- that is not a regular file or folder (symlinks, devices, fifos);
- that is encrypted, or compressed other than by deflate or not at all;
- beyond the size and ratio limits -- sizes counted while decompressing,
  never taken from the zip's headers.

Nothing is written anywhere: what to do with the files (serve them, unpack
them into a folder) is the caller's business.
"""

from __future__ import annotations

import contextlib
import io
import re
import stat
import unicodedata
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = [
    "BundleError", "ZipContents", "MemberNames", "read_zip", "check_path", "fold", "echo",
    "MAX_MEMBERS", "MAX_FILE_SIZE", "MAX_TOTAL_SIZE", "MAX_RATIO", "RATIO_FLOOR",
    "MAX_PATH_LENGTH", "MAX_PATH_DEPTH", "MAX_ARCHIVE_SIZE", "CHUNK",
]  # fmt: skip

KiB = 1024
MiB = 1024 * KiB

# ---- limits ----------------------------------------------------------------------------------
# Where the weblet reader and the worker reader used to differ, these are the
# stricter of the two (the old values are in the comments).

#: Members of an archive (files and folders). A weblet or a backend has tens
#: of files; a UI built with a bundler has a few hundred. A thousand bounds the
#: per-member work a hostile archive can ask for, and every member of a weblet
#: bundle may end up a file a worker unpacks. (Weblets allowed 10,000.)
MAX_MEMBERS = 1000
#: Bytes per file once uncompressed: the largest image, font, script or module
#: a bundle sensibly ships. Larger media belong behind a declared origin.
#: (Workers allowed 8 MiB.)
MAX_FILE_SIZE = 5 * MiB
#: Bytes of all files once uncompressed: the whole bundle is held in memory
#: while it is checked and is stored as one blob; a bundle reaches the daemon,
#: and a backend reaches its worker, in one CapTP frame, whose default limit is
#: also 16 MiB. (Weblets allowed 50 MiB.)
MAX_TOTAL_SIZE = 16 * MiB
#: Uncompressed/compressed ratio above which a member, or the archive as a
#: whole, is treated as a zip bomb. Text and code deflate 3-10x; even very
#: repetitive JSON stays under 50x. Deflate's ceiling is about 1032x.
#: (Workers allowed 200, and judged members only, not the whole archive.)
MAX_RATIO = 100
#: The ratio is judged only once this many bytes have come out: a tiny file
#: of spaces legitimately deflates 300x. Below it the size caps bound the
#: cost: many members each under the floor still add up to MAX_TOTAL_SIZE at
#: most, and the whole archive's ratio is judged as well, against the same
#: floor. (Workers judged a member only after 1 MiB.)
RATIO_FLOOR = 64 * KiB
#: Bytes in a member's path (UTF-8): the common NAME_MAX, so that any path
#: can be unpacked on any file system, and a URL stays short. (Workers had none.)
MAX_PATH_LENGTH = 255
#: Segments in a member's path; also bounds a folder walk's recursion. (Workers had none.)
MAX_PATH_DEPTH = 16
#: Bytes of an archive as given: MAX_TOTAL_SIZE stored uncompressed, plus the
#: headers of MAX_MEMBERS members with the longest names (local and central
#: headers, two copies of a 255-byte name, a data descriptor and the usual
#: extra fields: under 1 KiB each, under 1 MiB in all) with room to spare.
MAX_ARCHIVE_SIZE = MAX_TOTAL_SIZE + 2 * MiB
#: Read members in chunks this big, checking the limits after each.
CHUNK = 64 * KiB

# Deflate is what every zip tool writes; "stored" is what reproducible
# bundles (ocapd's own) use. bzip2 and LZMA are refused: nobody needs them
# for a bundle, their decompressors are optional in Python builds, and each
# is one more decompressor for hostile bytes to reach.
_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
# Zip's "encrypted" flag (general purpose bit 0).
_ENCRYPTED = 0x1
# A user may paste anything; keep an echoed value short enough for one line.
_MAX_ECHO = 60


class BundleError(ValueError):
    """The bundle is malformed or unsafe; the message says what and where, on one line."""


def echo(value: object) -> str:
    """``value`` as it may appear in a one-line message: its repr, cut to a few dozen characters."""
    text = repr(value)
    if len(text) > _MAX_ECHO:
        text = text[: _MAX_ECHO - 1] + "…"
    return text


# ---- paths -----------------------------------------------------------------------------------
def check_path(path: str) -> str:
    """Return ``path`` if it is a normalized relative POSIX path within the limits; raise BundleError saying why not.

    The message starts with the path (echoed), so callers prefix what it is:
    ``zip member '../x': '..' is not allowed (the path would leave the bundle)``.
    """
    if not path:
        raise BundleError("an empty path is not allowed")
    if "\x00" in path:
        raise BundleError(f"{echo(path)}: NUL bytes are not allowed")
    if any(unicodedata.category(c) == "Cc" for c in path):
        raise BundleError(f"{echo(path)}: control characters are not allowed")
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise BundleError(f"{echo(path)}: not valid UTF-8") from None
    if len(encoded) > MAX_PATH_LENGTH:
        raise BundleError(f"{echo(path)}: longer than {MAX_PATH_LENGTH} bytes")
    if "\\" in path:
        raise BundleError(f"{echo(path)}: backslashes are not allowed (use '/')")
    if path.startswith("/"):
        raise BundleError(f"{echo(path)}: absolute paths are not allowed")
    if re.match(r"[A-Za-z]:", path):
        raise BundleError(f"{echo(path)}: drive letters are not allowed")
    segments = path.split("/")
    if ".." in segments:
        raise BundleError(f"{echo(path)}: '..' is not allowed (the path would leave the bundle)")
    if "" in segments or "." in segments:
        raise BundleError(f"{echo(path)}: empty and '.' segments are not allowed")
    if len(segments) > MAX_PATH_DEPTH:
        raise BundleError(f"{echo(path)}: deeper than {MAX_PATH_DEPTH} folders")
    return path


def fold(path: str) -> str:
    """What a case-insensitive, normalizing file system (macOS, Windows) sees of ``path``."""
    return unicodedata.normalize("NFC", path).casefold()


class MemberNames:
    """Member names seen so far: refuses duplicates, case-fold collisions, file/folder clashes.

    ``where`` names the kind of member in messages (``zip member``, ``file``).
    """

    def __init__(self, where: str) -> None:
        self._where = where
        self._exact: set[tuple[str, bool]] = set()
        self._files: dict[str, str] = {}  # folded -> as spelled
        self._folders: dict[str, str] = {}

    def _fail(self, path: str, why: str) -> BundleError:
        return BundleError(f"{self._where} {echo(path)}: {why}")

    def add(self, path: str, is_folder: bool) -> None:
        """Record ``path`` (already checked by :func:`check_path`); BundleError if it clashes with one seen."""
        if (path, is_folder) in self._exact:
            raise self._fail(path, "duplicate name")
        self._exact.add((path, is_folder))
        segments = path.split("/")
        folders = ["/".join(segments[:i]) for i in range(1, len(segments) + (1 if is_folder else 0))]
        for folder in folders:
            folded = fold(folder)
            if folded in self._files:
                raise self._fail(path, f"{echo(self._files[folded])} is a file, not a folder")
            spelled = self._folders.setdefault(folded, folder)
            if spelled != folder:
                raise self._fail(path, f"collides with {echo(spelled)} when case is ignored")
        if not is_folder:
            folded = fold(path)
            if folded in self._folders:
                raise self._fail(path, "is both a file and a folder")
            spelled = self._files.setdefault(folded, path)
            if spelled != path:
                raise self._fail(path, f"collides with {echo(spelled)} when case is ignored")


# ---- the archive -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ZipContents:
    """What :func:`read_zip` found: the files' contents and the folders, by checked path, in archive order.

    Every parent folder of a file is implied; ``folders`` lists only those the
    archive names (an empty folder appears nowhere else).
    """

    files: dict[str, bytes]
    folders: tuple[str, ...]


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
        raise BundleError(f"{where}: not a readable zip archive: {type(e).__name__}: {echo(str(e))}") from None


def read_zip(data: bytes, *, where: str = "bundle", extra_path_rule: Callable[[str], object] | None = None) -> ZipContents:
    """Read and check a zip archive held in memory; raise :class:`BundleError` if it is malformed or unsafe.

    ``where`` names the archive in messages about it as a whole; messages about
    one member name the member. ``extra_path_rule`` is called with every
    member's path after :func:`check_path` accepted it and may raise
    BundleError (the weblet reader uses it to reserve a folder for its runtime):
    it can only refuse more, never accept what the rules here refuse.

    Every member's name and kind is checked before any is decompressed; then
    members are decompressed in chunks, the limits checked after each chunk.
    """
    if len(data) > MAX_ARCHIVE_SIZE:
        raise BundleError(f"{where}: larger than {MAX_ARCHIVE_SIZE} bytes")
    with _zip_errors(where):
        archive = zipfile.ZipFile(io.BytesIO(data))
    with archive:
        with _zip_errors(where):
            members = archive.infolist()
        if len(members) > MAX_MEMBERS:
            raise BundleError(f"{where}: {len(members)} members: at most {MAX_MEMBERS} are allowed")
        names = MemberNames("zip member")
        plan: list[tuple[zipfile.ZipInfo, str]] = []
        folders: list[str] = []
        for info in members:
            raw_name = info.orig_filename  # .filename is cut at the first NUL
            is_folder = raw_name.endswith("/")
            try:
                path = check_path(raw_name[:-1] if is_folder else raw_name)
                if extra_path_rule is not None:
                    extra_path_rule(path)
            except BundleError as e:
                raise BundleError(f"zip member {e}") from None
            _check_member(info, path, is_folder)
            names.add(path, is_folder)
            if is_folder:
                folders.append(path)
            else:
                plan.append((info, path))
        files: dict[str, bytes] = {}
        total = 0
        for info, path in plan:
            files[path], total = _read_member(archive, info, path, total, len(data))
    return ZipContents(files=files, folders=tuple(folders))


def _check_member(info: zipfile.ZipInfo, path: str, is_folder: bool) -> None:
    where = f"zip member {echo(path)}"
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    # Regular files and folders only. Kind 0 is an archive made where files
    # have no Unix mode (DOS, Windows): the name's trailing "/" tells a folder.
    if stat.S_ISLNK(mode):
        raise BundleError(f"{where}: symlinks are not allowed")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR) or (kind == stat.S_IFDIR and not is_folder):
        raise BundleError(f"{where}: only regular files and folders are allowed")
    if info.flag_bits & _ENCRYPTED:
        raise BundleError(f"{where}: encrypted members are not allowed")
    if info.compress_type not in _METHODS:
        raise BundleError(f"{where}: compression method {info.compress_type} is not allowed (use deflate or none)")
    if info.file_size > MAX_FILE_SIZE:  # an early refusal; the real count is made while reading
        raise BundleError(f"{where}: larger than {MAX_FILE_SIZE} bytes")


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: str, total: int, archive_size: int) -> tuple[bytes, int]:
    where = f"zip member {echo(path)}"
    # A header can lie about the compressed size too; the archive's own size cannot.
    compressed = max(1, min(info.compress_size, archive_size))
    chunks: list[bytes] = []
    size = 0
    with _zip_errors(where):
        with archive.open(info) as stream:
            while chunk := stream.read(CHUNK):
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
