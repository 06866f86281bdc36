"""The one archive reader (workers/archive.py): weblet install and worker unpacking give one verdict.

Every hostile archive below is fed to both call sites -- ``read_bundle`` (the
daemon reading a weblet at install) and ``extract_bundle`` (a worker
unpacking a bundle) -- and both must refuse it with the same message, before
anything is written. Archives at the limits must pass both.
"""

from __future__ import annotations

import io
import json
import os
import stat
import unicodedata
import warnings
import zipfile
from pathlib import Path

import pytest

from ocapd.daemon.weblet import read_bundle
from ocapd.workers import extract_bundle
from ocapd.workers.archive import (
    MAX_ARCHIVE_SIZE,
    MAX_FILE_SIZE,
    MAX_MEMBERS,
    MAX_PATH_DEPTH,
    MAX_PATH_LENGTH,
    MAX_RATIO,
    MAX_TOTAL_SIZE,
    BundleError,
)

# What each side needs to accept an archive: a weblet's manifest and entry, a worker's entry module.
BASE = [
    ("weblet.json", json.dumps({"title": "t"}).encode()),
    ("index.html", b"<!doctype html><p>hi</p>"),
    ("main.py", b"def make(powers, context):\n    return 1\n"),
]


def archive(*extra: tuple[str | zipfile.ZipInfo, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(out, "w", compression) as zf:
            for name, data in [*BASE, *extra]:
                zf.writestr(name, data)
    return out.getvalue()


def member(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # unix: external_attr holds a file mode
    info.external_attr = mode << 16
    return info


def flip_central(data: bytes, name: bytes, offset: int, value: bytes) -> bytes:
    """``data`` with ``value`` written at ``offset`` in the central record of member ``name``."""
    out = bytearray(data)
    central = out.find(b"PK\x01\x02")
    while central != -1 and out[central + 46 : central + 46 + len(name)] != name:
        central = out.find(b"PK\x01\x02", central + 4)
    assert central != -1
    out[central + offset : central + offset + len(value)] = value
    return bytes(out)


def many(count: int) -> bytes:
    return archive(*[(f"f/{i}", b"") for i in range(count - len(BASE))], compression=zipfile.ZIP_STORED)


def hex_text(size: int) -> bytes:
    # Deflates about 2x: big, but no bomb.
    return os.urandom(size // 2 + 1).hex().encode()[:size]


HOSTILE = {
    "zip-slip": (lambda: archive(("../evil.py", b"x")), "zip member '../evil.py': '..' is not allowed"),
    "nested-dotdot": (lambda: archive(("a/../../evil.py", b"x")), "'..' is not allowed"),
    "absolute": (lambda: archive(("/etc/evil.py", b"x")), "zip member '/etc/evil.py': absolute paths are not allowed"),
    "backslash": (lambda: archive(("a\\..\\evil.py", b"x")), "backslashes are not allowed"),
    "drive-letter": (lambda: archive(("C:/evil.py", b"x")), "drive letters are not allowed"),
    "empty-segment": (lambda: archive(("a//b.py", b"x")), "empty and '.' segments are not allowed"),
    "dot-segment": (lambda: archive(("./a.py", b"x")), "empty and '.' segments are not allowed"),
    "nul": (lambda: archive(("aXb.py", b"x")).replace(b"aXb.py", b"a\x00b.py"), "NUL bytes are not allowed"),
    "control-character": (lambda: archive(("a\nb.py", b"x")), "control characters are not allowed"),
    "path-too-long": (lambda: archive(("x" * (MAX_PATH_LENGTH + 1), b"x")), f"longer than {MAX_PATH_LENGTH} bytes"),
    "path-too-deep": (lambda: archive(("a/" * MAX_PATH_DEPTH + "x", b"x")), f"deeper than {MAX_PATH_DEPTH} folders"),
    "symlink": (lambda: archive((member("link.py", stat.S_IFLNK | 0o777), b"/etc/passwd")), "zip member 'link.py': symlinks are not allowed"),
    "fifo": (lambda: archive((member("pipe", stat.S_IFIFO | 0o644), b"")), "only regular files and folders are allowed"),
    "device": (lambda: archive((member("tty", stat.S_IFCHR | 0o644), b"")), "only regular files and folders are allowed"),
    "folder-mode-on-a-file": (lambda: archive((member("dir", stat.S_IFDIR | 0o755), b"")), "only regular files and folders are allowed"),
    "encrypted": (lambda: flip_central(archive(("secret.py", b"x")), b"secret.py", 8, b"\x01"), "encrypted members are not allowed"),
    "bzip2": (lambda: archive(("a.py", b"x"), compression=zipfile.ZIP_BZIP2), "compression method 12 is not allowed"),
    "lzma": (lambda: archive(("a.py", b"x"), compression=zipfile.ZIP_LZMA), "compression method 14 is not allowed"),
    "duplicate": (lambda: archive(("a.py", b"1"), ("a.py", b"2")), "zip member 'a.py': duplicate name"),
    "case-fold": (lambda: archive(("A.py", b"1"), ("a.py", b"2")), "zip member 'a.py': collides with 'A.py' when case is ignored"),
    "unicode-normalization": (
        lambda: archive((unicodedata.normalize("NFC", "é.py"), b"1"), (unicodedata.normalize("NFD", "é.py"), b"2")),
        "when case is ignored",
    ),
    "case-fold-folder": (lambda: archive(("Pkg/a.py", b"1"), ("pkg/b.py", b"2")), "when case is ignored"),
    "file-and-folder": (lambda: archive(("a", b"1"), ("a/b.py", b"2")), "'a' is a file, not a folder"),
    "too-many-members": (lambda: many(MAX_MEMBERS + 1), f"bundle: {MAX_MEMBERS + 1} members: at most {MAX_MEMBERS} are allowed"),
    "file-too-large-stored": (
        lambda: archive(("big.bin", os.urandom(MAX_FILE_SIZE + 1)), compression=zipfile.ZIP_STORED),
        f"zip member 'big.bin': larger than {MAX_FILE_SIZE} bytes",
    ),
    "file-too-large-deflated": (lambda: archive(("big.txt", hex_text(MAX_FILE_SIZE + 1))), f"larger than {MAX_FILE_SIZE} bytes"),
    "header-understates-size": (
        # The central header says 10 bytes; the data is 4 MiB of zeros. The reader never takes a header's word.
        lambda: flip_central(archive(("bomb.txt", bytes(4 * 1024 * 1024))), b"bomb.txt", 24, (10).to_bytes(4, "little")),
        "zip member 'bomb.txt'",
    ),
    "total-too-large": (
        lambda: archive(*[(f"m{i}.txt", hex_text(MAX_FILE_SIZE - 1024)) for i in range(MAX_TOTAL_SIZE // MAX_FILE_SIZE + 1)]),
        f"the bundle is larger than {MAX_TOTAL_SIZE} bytes uncompressed",
    ),
    "member-ratio-bomb": (lambda: archive(("bomb.bin", bytes(4 * 1024 * 1024))), f"zip member 'bomb.bin': compression ratio above {MAX_RATIO}:1"),
    "archive-ratio-bomb": (
        # Each member stays below the ratio floor; together they are a bomb.
        lambda: archive(*[(f"z/{i}", bytes(60 * 1024)) for i in range(200)]),
        f"the archive's compression ratio is above {MAX_RATIO}:1",
    ),
    "archive-too-large": (lambda: archive(("pad.bin", b"")) + bytes(MAX_ARCHIVE_SIZE), f"bundle: larger than {MAX_ARCHIVE_SIZE} bytes"),
    "truncated": (lambda: archive()[:-30], "bundle: not a readable zip archive"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_install_and_worker_refuse_a_hostile_archive_with_one_verdict(case: str, tmp_path: Path) -> None:
    build, expected = HOSTILE[case]
    data = build()
    with pytest.raises(BundleError) as at_install:
        read_bundle(data)
    with pytest.raises(BundleError) as in_worker:
        extract_bundle(data, tmp_path / "unpacked")
    assert str(at_install.value) == str(in_worker.value)
    assert expected in str(in_worker.value), str(in_worker.value)
    assert "\n" not in str(in_worker.value)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even the staging folder


AT_THE_LIMITS = {
    "members": lambda: many(MAX_MEMBERS),
    "file-size": lambda: archive(("big.bin", os.urandom(MAX_FILE_SIZE)), compression=zipfile.ZIP_STORED),
    "path": lambda: archive(("a/" * (MAX_PATH_DEPTH - 1) + "x" * (MAX_PATH_LENGTH - 2 * (MAX_PATH_DEPTH - 1)), b"1")),
    "ratio-below-the-floor": lambda: archive(("spaces.txt", b" " * 60 * 1024)),
    "empty-folder": lambda: archive(("pkg/", b"")),
}


@pytest.mark.parametrize("case", sorted(AT_THE_LIMITS))
def test_install_and_worker_accept_an_archive_at_the_limits(case: str, tmp_path: Path) -> None:
    data = AT_THE_LIMITS[case]()
    bundle = read_bundle(data)
    assert extract_bundle(data, tmp_path / "unpacked") == "main"
    unpacked = {p.relative_to(tmp_path / "unpacked").as_posix() for p in (tmp_path / "unpacked").rglob("*") if p.is_file()}
    assert unpacked == set(bundle.files) | {"weblet.json"}


def test_the_only_rule_a_weblet_adds_is_its_reserved_runtime_folder(tmp_path: Path) -> None:
    # /_ocapd/ is where the gateway serves its runtime on every weblet's origin;
    # a worker has no such folder, so the rule is the weblet's, not the reader's.
    data = archive(("_ocapd/weblet.js", b"1"))
    with pytest.raises(BundleError, match="'_ocapd/' is reserved"):
        read_bundle(data)
    assert extract_bundle(data, tmp_path / "unpacked") == "main"
