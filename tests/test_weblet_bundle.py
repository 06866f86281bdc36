"""Weblet bundles: reading, checking, normalizing, and the CSP built from them (daemon/weblet/; archive limits in workers/archive.py)."""

from __future__ import annotations

import io
import json
import os
import stat
import string
import warnings
import zipfile
from pathlib import Path

import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocapd.daemon.weblet import (
    PERMISSIONS,
    Bundle,
    BundleError,
    WebletManifest,
    csp_for,
    parse_manifest,
    permissions_allow,
    read_bundle,
)
from ocapd.workers.archive import MAX_FILE_SIZE, MAX_MEMBERS, MAX_PATH_DEPTH, MAX_RATIO, MAX_TOTAL_SIZE

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "weblets"
INDEX = b"<!doctype html><title>t</title><p>hello</p>"
MANIFEST = {"title": "Test weblet"}


# ---- helpers ---------------------------------------------------------------------------------
def make_zip(members: list[tuple[str | zipfile.ZipInfo, bytes | str]], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip holding ``members`` in order (duplicates allowed, for the tests that need them)."""
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names
        with zipfile.ZipFile(out, "w", compression) as zf:
            for name, data in members:
                zf.writestr(name, data)
    return out.getvalue()


def weblet_zip(*extra: tuple[str | zipfile.ZipInfo, bytes | str], manifest: dict | None = None, **kw) -> bytes:
    members = [("weblet.json", json.dumps(MANIFEST if manifest is None else manifest)), ("index.html", INDEX)]
    return make_zip(members + list(extra), **kw)


def info(name: str, mode: int) -> zipfile.ZipInfo:
    zi = zipfile.ZipInfo(name)
    zi.create_system = 3
    zi.external_attr = mode << 16
    return zi


def refused(source, expected: str) -> str:
    with pytest.raises(BundleError) as caught:
        read_bundle(source)
    message = str(caught.value)
    assert expected in message, message
    assert "\n" not in message
    return message


def meta_html(*tags: str) -> bytes:
    return ("<!doctype html><html><head>" + "".join(tags) + "</head><body>hi</body></html>").encode()


def write_folder(root: Path, files: dict[str, bytes | str]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    return root


# ---- valid bundles ---------------------------------------------------------------------------
def test_a_zip_bundle_is_read_with_its_normalized_manifest_and_files() -> None:
    bundle = read_bundle(
        weblet_zip(
            ("app.js", "console.log(1)"),
            ("img/", b""),
            ("img/logo.svg", "<svg/>"),
            manifest={"title": "  Clock ", "csp": {"connectSrc": ["HTTPS://API.Example.com:443/"]}},
        )
    )
    assert bundle.manifest.title == "Clock"
    assert bundle.manifest.csp.connectSrc == ["https://api.example.com"]
    assert bundle.manifest.size.width == 480 and bundle.manifest.size.height == 360
    assert dict(bundle.files) == {"app.js": b"console.log(1)", "img/logo.svg": b"<svg/>", "index.html": INDEX}
    assert len(bundle.digest) == 64 and set(bundle.digest) <= set("0123456789abcdef")
    assert bundle.content_type("index.html") == "text/html; charset=utf-8"
    assert bundle.content_type("app.js") == "text/javascript; charset=utf-8"
    assert bundle.content_type("img/logo.svg") == "image/svg+xml"
    with pytest.raises(KeyError):
        bundle.content_type("missing.css")
    assert bundle.backend_zip() is None


def test_a_bundles_files_cannot_be_changed() -> None:
    bundle = read_bundle(weblet_zip())
    with pytest.raises(TypeError):
        bundle.files["index.html"] = b"evil"  # type: ignore[index]
    with pytest.raises(pydantic.ValidationError):
        bundle.manifest.title = "other"  # type: ignore[misc]


def test_a_folder_bundle_reads_like_the_same_zip(tmp_path: Path) -> None:
    folder = write_folder(
        tmp_path / "w",
        {"weblet.json": json.dumps(MANIFEST), "index.html": INDEX, "css/a.css": "p{}", "__pycache__/x.pyc": "junk"},
    )
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD").write_text("ref")
    from_folder = read_bundle(folder)
    from_zip = read_bundle(weblet_zip(("css/a.css", "p{}")))
    assert sorted(from_folder.files) == ["css/a.css", "index.html"]
    assert from_folder == from_zip
    assert read_bundle(str(folder)).digest == from_zip.digest


def test_a_zip_file_path_is_read_like_its_bytes(tmp_path: Path) -> None:
    data = weblet_zip()
    (tmp_path / "w.zip").write_bytes(data)
    assert read_bundle(tmp_path / "w.zip") == read_bundle(data)


def test_a_single_html_file_with_a_json_meta_tag_is_a_one_file_bundle() -> None:
    html = meta_html(
        """<meta name="ocapd:weblet" content='{"title":"Snake &amp; co","size":{"width":360,"height":420},"""
        """"interface":{"commands":{"turn":{"args":{"dir":"string"}}}}}'>"""
    )
    bundle = read_bundle(html)
    assert bundle.manifest.title == "Snake & co"
    assert (bundle.manifest.size.width, bundle.manifest.size.height) == (360, 420)
    assert bundle.manifest.interface is not None
    assert bundle.manifest.interface.commands["turn"].args == {"dir": "string"}
    assert dict(bundle.files) == {"index.html": html}
    assert bundle.manifest.entry == "index.html"


def test_a_single_html_file_with_per_field_meta_tags() -> None:
    bundle = read_bundle(
        meta_html(
            '<meta name="ocapd:weblet:title" content="Snake">',
            '<meta name="ocapd:weblet:description" content="A classic snake game.">',
            '<meta name="ocapd:weblet:size" content="360x420">',
            '<meta name="ocapd:weblet:version" content="1.2.3">',
            '<meta name="ocapd:weblet:permissions" content="fullscreen, clipboard-write">',
            '<meta name="ocapd:weblet:kind" content="iframe">',
            '<meta name="ocapd:weblet:csp.connect-src" content="https://api.example.com wss://live.example.com">',
            '<meta name="ocapd:weblet:csp.frame-src" content="https://video.example.com">',
            '<meta name="ocapd:weblet:commands" content="start, pause">',
            """<meta name="ocapd:weblet:events" content='{"game.over": {"description": "The snake hit a wall."}}'>""",
        )
    )
    m = bundle.manifest
    assert (m.title, m.description, m.version, m.kind) == ("Snake", "A classic snake game.", "1.2.3", "iframe")
    assert (m.size.width, m.size.height) == (360, 420)
    assert m.permissions == ["fullscreen", "clipboard-write"]
    assert m.csp.connectSrc == ["https://api.example.com", "wss://live.example.com"]
    assert m.csp.frameSrc == ["https://video.example.com"]
    assert m.interface is not None
    assert sorted(m.interface.commands) == ["pause", "start"]
    assert m.interface.events["game.over"].description == "The snake hit a wall."


def test_per_field_meta_tags_win_over_the_json_form_whichever_comes_first() -> None:
    for order in (1, -1):
        tags = [
            """<meta name="ocapd:weblet" content='{"title":"From JSON","description":"kept","""
            """"csp":{"frameSrc":["https://f.example.com"],"connectSrc":["https://old.example.com"]}}'>""",
            '<meta name="ocapd:weblet:title" content="From field">',
            '<meta name="ocapd:weblet:csp.connect-src" content="https://new.example.com">',
        ][::order]
        m = read_bundle(meta_html(*tags)).manifest
        assert (m.title, m.description) == ("From field", "kept")
        assert m.csp.connectSrc == ["https://new.example.com"]
        assert m.csp.frameSrc == ["https://f.example.com"]


@pytest.mark.parametrize(
    "tags, expected",
    [
        ((), 'no <meta name="ocapd:weblet"> tag'),
        (('<meta name="ocapd:weblet:icon" content="x.png">',), "unknown field"),
        (('<meta name="ocapd:weblet:title" content="a">', '<meta name="ocapd:weblet:title" content="b">'), "appears twice"),
        (('<meta name="ocapd:weblet:title" content="a">', '<meta name="ocapd:weblet:size" content="big">'), "is not WIDTHxHEIGHT"),
        (("""<meta name="ocapd:weblet" content='["a"]'>""",), "must be a JSON object"),
        (("""<meta name="ocapd:weblet" content='{"title":"a","evil":1}'>""",), "index.html (meta): evil: unknown field"),
        (('<meta name="ocapd:weblet:title" content="a">', '<meta name="ocapd:weblet:csp.connect-src" content="*">'),
         "csp.connectSrc[0]: '*' is not allowed: wildcards are refused"),
        (("""<meta name="ocapd:weblet" content='{"title":"a","backend":"b.py"}'>""",), "backend: 'b.py' is not in the bundle"),
        (("""<meta name="ocapd:weblet" content='{"title":"a","entry":"main.html"}'>""",), "entry: 'main.html' is not in the bundle"),
    ],
)
def test_bad_meta_tags_are_refused_clearly(tags: tuple[str, ...], expected: str) -> None:
    refused(meta_html(*tags), expected)


def test_bytes_that_are_neither_zip_nor_html_are_refused() -> None:
    refused(b"hello", "expected a zip archive or an HTML file")
    refused(b"PK\x03\x04 truncated", "not a readable zip archive")


# ---- archive refusals ------------------------------------------------------------------------
def _nul_name_zip() -> bytes:
    data = weblet_zip(("aXb.js", "1"))
    return data.replace(b"aXb.js", b"a\x00b.js")


def _encrypted_zip() -> bytes:
    data = bytearray(weblet_zip(("secret.js", "1")))
    central = data.rfind(b"PK\x01\x02")  # the last central record: secret.js
    data[central + 8] |= 0x01  # general purpose flag bit 0: encrypted
    return bytes(data)


ARCHIVE_REFUSALS = {
    "zip-slip": (lambda: weblet_zip(("../x", "1")), "zip member '../x': '..' is not allowed"),
    "nested-dotdot": (lambda: weblet_zip(("a/../../x", "1")), "'..' is not allowed"),
    "absolute": (lambda: weblet_zip(("/etc/x", "1")), "zip member '/etc/x': absolute paths are not allowed"),
    "backslash": (lambda: weblet_zip(("a\\..\\x", "1")), "backslashes are not allowed"),
    "drive-letter": (lambda: weblet_zip(("C:/x", "1")), "drive letters are not allowed"),
    "empty-segment": (lambda: weblet_zip(("a//b", "1")), "empty and '.' segments are not allowed"),
    "dot-segment": (lambda: weblet_zip(("./a", "1")), "empty and '.' segments are not allowed"),
    "nul": (_nul_name_zip, "NUL bytes are not allowed"),
    "control-character": (lambda: weblet_zip(("a\nb", "1")), "control characters are not allowed"),
    "too-long-path": (lambda: weblet_zip(("x" * 256, "1")), "longer than 255 bytes"),
    "too-deep": (lambda: weblet_zip(("a/" * MAX_PATH_DEPTH + "x", "1")), f"deeper than {MAX_PATH_DEPTH} folders"),
    "symlink": (
        lambda: weblet_zip((info("link", stat.S_IFLNK | 0o777), "/etc/passwd")),
        "zip member 'link': symlinks are not allowed",
    ),
    "fifo": (lambda: weblet_zip((info("pipe", stat.S_IFIFO | 0o644), "")), "only regular files and folders"),
    "encrypted": (_encrypted_zip, "zip member 'secret.js': encrypted members are not allowed"),
    "duplicate": (lambda: weblet_zip(("app.js", "1"), ("app.js", "2")), "zip member 'app.js': duplicate name"),
    "case-fold": (
        lambda: weblet_zip(("A.txt", "1"), ("a.txt", "2")),
        "zip member 'a.txt': collides with 'A.txt' when case is ignored",
    ),
    "case-fold-folder": (lambda: weblet_zip(("Img/a.png", "1"), ("img/b.png", "2")), "when case is ignored"),
    "file-and-folder": (lambda: weblet_zip(("a", "1"), ("a/b", "2")), "'a' is a file, not a folder"),
    "bzip2": (lambda: weblet_zip(("a.js", "1"), compression=zipfile.ZIP_BZIP2), "compression method 12 is not allowed"),
    "reserved-runtime-folder": (lambda: weblet_zip(("_ocapd/weblet.js", "1")), "'_ocapd/' is reserved"),
    "missing-manifest": (lambda: make_zip([("index.html", INDEX)]), "no weblet.json at the top of the bundle"),
    "manifest-in-a-folder": (
        lambda: make_zip([("w/weblet.json", json.dumps(MANIFEST)), ("w/index.html", INDEX)]),
        "found 'w/weblet.json': pack the folder's contents, not the folder",
    ),
    "manifest-not-json": (lambda: make_zip([("weblet.json", "{title"), ("index.html", INDEX)]), "weblet.json: not valid JSON"),
    "manifest-not-object": (lambda: weblet_zip(manifest=["title"]), "weblet.json: the manifest must be a JSON object"),
    "manifest-duplicate-keys": (
        lambda: make_zip([("weblet.json", '{"title": "a", "title": "b"}'), ("index.html", INDEX)]),
        "duplicate key 'title'",
    ),
    "manifest-surrogate": (
        lambda: make_zip([("weblet.json", '{"title": "\\ud800"}'), ("index.html", INDEX)]),
        "unpaired surrogate",
    ),
    "manifest-nested-too-deeply": (
        lambda: make_zip([("weblet.json", "[" * 100_000), ("index.html", INDEX)], zipfile.ZIP_STORED),
        "weblet.json: nested too deeply",
    ),
    "entry-missing": (lambda: weblet_zip(manifest={"title": "t", "entry": "main.html"}), "entry: 'main.html' is not in the bundle"),
    "backend-missing": (lambda: weblet_zip(manifest={"title": "t", "backend": "api.py"}), "backend: 'api.py' is not in the bundle"),
    "backend-not-python": (
        lambda: weblet_zip(("api.js", "1"), manifest={"title": "t", "backend": "api.js"}),
        "backend: 'api.js' is not a Python module: it must end in .py",
    ),
    "backend-not-a-module-name": (
        lambda: weblet_zip(("my-api.py", "1"), manifest={"title": "t", "backend": "my-api.py"}),
        "must be named like a Python module",
    ),
}


@pytest.mark.parametrize("case", sorted(ARCHIVE_REFUSALS))
def test_unsafe_or_malformed_archives_are_refused_with_a_clear_error(case: str) -> None:
    build, expected = ARCHIVE_REFUSALS[case]
    refused(build(), expected)


def _archive_of(members: int) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("weblet.json", json.dumps(MANIFEST))
        zf.writestr("index.html", INDEX)
        for i in range(members - 2):
            zf.writestr(f"f/{i}", b"")
    return out.getvalue()


def test_an_archive_of_one_member_more_than_the_limit_is_refused() -> None:
    refused(_archive_of(MAX_MEMBERS + 1), f"{MAX_MEMBERS + 1} members: at most {MAX_MEMBERS} are allowed")


def test_an_archive_of_exactly_the_member_limit_is_accepted() -> None:
    assert len(read_bundle(_archive_of(MAX_MEMBERS)).files) == MAX_MEMBERS - 1


def test_a_zip_bomb_is_refused_by_its_compression_ratio_while_streaming() -> None:
    # 4 MiB of zeros: within the per-file size, so only the ratio, counted as
    # the member is decompressed, stops it.
    bomb = weblet_zip(("bomb.bin", bytes(4 * 1024 * 1024)))
    assert len(bomb) < 20_000  # deflated to a few KiB
    refused(bomb, f"zip member 'bomb.bin': compression ratio above {MAX_RATIO}:1 (a zip bomb?)")


def test_a_zip_bomb_beyond_the_size_limit_is_refused() -> None:
    refused(weblet_zip(("bomb.bin", bytes(MAX_FILE_SIZE + 1024 * 1024))), "zip member 'bomb.bin': larger than")


def test_a_member_too_large_is_refused_even_when_stored_uncompressed() -> None:
    refused(
        weblet_zip(("big.bin", bytes(MAX_FILE_SIZE + 1)), compression=zipfile.ZIP_STORED),
        f"zip member 'big.bin': larger than {MAX_FILE_SIZE} bytes",
    )


def test_many_small_compressible_members_are_refused_by_the_overall_ratio() -> None:
    # Each member stays below the per-member ratio floor; together they are a bomb.
    members = [(f"z/{i}", bytes(60 * 1024)) for i in range(200)]
    refused(weblet_zip(*members), f"the archive's compression ratio is above {MAX_RATIO}:1")


def test_a_header_that_understates_a_members_size_does_not_hide_it() -> None:
    data = bytearray(weblet_zip(("big.js", b"x" * 100_000), compression=zipfile.ZIP_STORED))
    central = data.rfind(b"PK\x01\x02")
    data[central + 24 : central + 28] = (10).to_bytes(4, "little")  # uncompressed size: "10"
    with pytest.raises(BundleError):
        read_bundle(bytes(data))


def test_the_total_uncompressed_size_is_limited(tmp_path: Path) -> None:
    # 4.9 MiB members of hex text (deflates about 2x, far from a bomb): each
    # allowed, together above MAX_TOTAL_SIZE, the archive itself well within its limit.
    chunk = os.urandom(int(4.9 * 1024 * 1024) // 2).hex().encode()
    count = MAX_TOTAL_SIZE // len(chunk) + 1
    refused(
        weblet_zip(*[(f"m{i}.txt", chunk) for i in range(count)]),
        f"the bundle is larger than {MAX_TOTAL_SIZE} bytes uncompressed",
    )


# ---- folder refusals -------------------------------------------------------------------------
def _folder(tmp_path: Path) -> Path:
    return write_folder(tmp_path / "w", {"weblet.json": json.dumps(MANIFEST), "index.html": INDEX})


def test_a_folder_with_a_symlink_to_a_file_is_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (folder / "passwd").symlink_to("/etc/passwd")
    refused(folder, "file 'passwd': symlinks are not allowed")


def test_a_folder_with_a_symlink_to_a_folder_is_refused_even_where_skipped(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (folder / "sub").mkdir()
    (folder / "sub" / "__pycache__").symlink_to("/etc")
    refused(folder, "file 'sub/__pycache__': symlinks are not allowed")


def test_a_symlinked_folder_is_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (tmp_path / "link").symlink_to(folder)
    refused(tmp_path / "link", "symlinks are not allowed")


def test_a_folder_with_a_fifo_is_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    os.mkfifo(folder / "pipe")
    refused(folder, "file 'pipe': only regular files and folders are allowed")


def test_a_folder_with_names_equal_but_for_case_is_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (folder / "A.txt").write_text("1")
    (folder / "a.txt").write_text("2")
    refused(folder, "file 'a.txt': collides with 'A.txt' when case is ignored")


def test_a_folder_with_a_file_too_large_is_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    with open(folder / "big.bin", "wb") as f:
        f.truncate(MAX_FILE_SIZE + 1)  # sparse: quick to make
    refused(folder, f"file 'big.bin': larger than {MAX_FILE_SIZE} bytes")


def test_a_folder_too_deep_is_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    write_folder(folder, {"a/" * MAX_PATH_DEPTH + "x": "1"})
    refused(folder, f"deeper than {MAX_PATH_DEPTH} folders")


def test_a_missing_path_is_a_bundle_error(tmp_path: Path) -> None:
    refused(tmp_path / "nothing", "cannot read")


# ---- manifest injection ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "manifest, expected",
    [
        ({"title": "t", "onload": "alert(1)"}, "weblet.json: onload: unknown field"),
        ({"title": "t", "csp": {"scriptSrc": ["https://a.com"]}}, "csp.scriptSrc: unknown field"),
        ({"title": "t", "size": {"width": 200, "height": 200, "depth": 3}}, "size.depth: unknown field"),
        ({"title": "t", "interface": {"commands": {"go": {"run": "x"}}}}, "interface.commands.go.run: unknown field"),
        ({"title": "t", "allow": "camera"}, "allow: unknown field"),
        ({}, "title: required"),
        ({"title": ""}, "title: String should have at least 1 character"),
        ({"title": "x" * 81}, "title: String should have at most 80 characters"),
        ({"title": "a\nb"}, "title: control character '\\n' is not allowed"),
        ({"title": "abc\u202e"}, "bidirectional control U+202E"),
        ({"title": "t", "description": "x" * 501}, "description: String should have at most 500 characters"),
        ({"title": "t", "version": "1." * 20}, "version: String should"),
        ({"title": "t", "version": "latest"}, "version: String should match pattern"),
        ({"title": "t", "size": {"width": 99, "height": 200}}, "size.width: Input should be greater than or equal to 100"),
        ({"title": "t", "size": {"width": 4001, "height": 200}}, "size.width: Input should be less than or equal to 4000"),
        ({"title": "t", "size": {"width": "480", "height": 200}}, "size.width: Input should be a valid integer"),
        ({"title": "t", "kind": "script"}, "kind: Input should be"),
        ({"title": "t", "permissions": ["camera"]}, "permissions[0]: Input should be 'clipboard-write'"),
        ({"title": "t", "interface": {"description": "x" * 1001}}, "interface.description: String should have at most 1000"),
        (
            {"title": "t", "interface": {"commands": {"go": {"description": "x" * 301}}}},
            "interface.commands.go.description: String should have at most 300",
        ),
        ({"title": "t", "interface": {"commands": {"Go": {}}}}, "interface.commands.Go (name): String should match pattern"),
        ({"title": "t", "interface": {"commands": {"go now": {}}}}, "interface.commands['go now'] (name)"),
        ({"title": "t", "interface": {"commands": {"go\n": {}}}}, "(name): String should match pattern"),
        (
            {"title": "t", "interface": {"commands": {f"c{i}": {} for i in range(65)}}},
            "interface.commands: Dictionary should have at most 64 items",
        ),
        ({"title": "t", "interface": {"commands": {"go": {"args": {"x": "object"}}}}}, "interface.commands.go.args.x"),
        ({"title": "t", "powers": ["HOST"]}, "powers[0]: 'HOST' is a special name"),
        ({"title": "t", "powers": ["Bad Name"]}, "powers[0]: invalid pet name"),
        ({"title": "t", "kind": "iframe-external", "entry": "http://a.com/"}, "needs an https:// URL"),
        ({"title": "t", "kind": "iframe-external", "entry": "https://10.0.0.1/"}, "IP literals are refused"),
        ({"title": "t", "entry": "../index.html"}, "entry: '../index.html': '..' is not allowed"),
        ({"title": "t", "csp": {"connectSrc": [f"https://h{i}.example.com" for i in range(17)]}}, "at most 16 items"),
    ],
)
def test_manifest_injection_is_refused(manifest: dict, expected: str) -> None:
    message = refused(weblet_zip(manifest=manifest), expected)
    assert message.startswith("weblet.json: ")


HOSTILE_ORIGINS = [
    ("*", "wildcards are refused"),
    ("https://*", "wildcards are refused"),
    ("https://*.example.com", "wildcards are refused"),
    ("'unsafe-eval'", "quotes are refused"),
    ("'self'", "quotes are refused"),
    ("data:", "only https:// and wss:// origins (not data:)"),
    ("blob:", "only https:// and wss:// origins (not blob:)"),
    ("https:", "a scheme alone allows every host"),
    ("wss://", "a scheme alone allows every host"),
    ("https://a.com; script-src *", "wildcards are refused"),
    ("https://a.com;script-src", "';' and ',' are refused"),
    ("https://a.com,https://b.com", "';' and ',' are refused"),
    ("javascript:", "only https:// and wss:// origins (not javascript:)"),
    (" https://a.com", "whitespace and control characters are refused"),
    ("https://a.com\n", "whitespace and control characters are refused"),
    ("https://user:pw@a.com", "credentials are refused"),
    ("https://1.2.3.4", "IP literals are refused"),
    ("https://[::1]", "IP literals are refused"),
    ("https://0x7f.0.0.1", "IP literals are refused"),
    ("http://a.com", "only https:// and wss:// origins (not http:)"),
    ("ws://a.com", "only https:// and wss:// origins (not ws:)"),
    ("https://a.com/path", "no path, query or fragment"),
    ("https://a.com?x", "no path, query or fragment"),
    ("https://localhost", "is a local name"),
    ("https://evil.localhost:8920", "is a local name"),
    ("https://intranet", "is a local name"),
    ("https://a.com:0", "is not a port number"),
    ("https://a.com:99999", "is not a port number"),
    ("https://bücher.de", "xn-- form"),
    ("https://-a.com", "is not a host name"),
    ("", "whitespace and control characters are refused"),
]


@pytest.mark.parametrize("origin, reason", HOSTILE_ORIGINS, ids=[o for o, _ in HOSTILE_ORIGINS])
@pytest.mark.parametrize("field", ["connectSrc", "frameSrc"])
def test_hostile_csp_entries_are_refused(field: str, origin: str, reason: str) -> None:
    manifest = {"title": "t", "csp": {field: ["https://ok.example.com", origin]}}
    message = refused(weblet_zip(manifest=manifest), f"weblet.json: csp.{field}[1]: {origin!r} is not allowed: ")
    assert reason in message


def test_the_wildcard_error_reads_as_documented() -> None:
    with pytest.raises(BundleError) as caught:
        parse_manifest({"title": "t", "csp": {"connectSrc": ["https://*"]}})
    assert str(caught.value) == "weblet.json: csp.connectSrc[0]: 'https://*' is not allowed: wildcards are refused"


def test_csp_origins_are_normalized_and_deduplicated() -> None:
    m = parse_manifest(
        {
            "title": "t",
            "csp": {
                "connectSrc": ["HTTPS://API.Example.COM", "https://api.example.com:443/", "WSS://Live.Example.com:8443"],
                "frameSrc": ["https://xn--bcher-kva.de"],
            },
            "permissions": ["fullscreen", "fullscreen"],
        }
    )
    assert m.csp.connectSrc == ["https://api.example.com", "wss://live.example.com:8443"]
    assert m.csp.frameSrc == ["https://xn--bcher-kva.de"]
    assert m.permissions == ["fullscreen"]


def test_a_stored_manifest_reads_back_equal() -> None:
    m = read_bundle(EXAMPLES / "counter").manifest
    stored = json.loads(json.dumps(m.model_dump(mode="json")))
    assert parse_manifest(stored) == m
    assert parse_manifest(json.dumps(stored)) == m


def test_an_iframe_external_weblet_needs_no_files() -> None:
    bundle = read_bundle(
        make_zip([("weblet.json", json.dumps({"title": "Docs", "kind": "iframe-external", "entry": "https://docs.example.com/app?x=1"}))])
    )
    assert bundle.manifest.entry == "https://docs.example.com/app?x=1"
    assert dict(bundle.files) == {}


# ---- CSP and allow= --------------------------------------------------------------------------
ORIGINS = dict(
    self_origin="http://0123456789abcdef0123456789abcdef.localhost:8920",
    ws_url="ws://0123456789abcdef0123456789abcdef.localhost:8920/_ocapd/ws",
    frame_ancestor="http://localhost:8920",
)


def test_the_default_csp_allows_only_the_weblets_own_files_and_websocket() -> None:
    assert csp_for(WebletManifest(title="t"), **ORIGINS) == (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "font-src 'self'; media-src 'self'; "
        "connect-src ws://0123456789abcdef0123456789abcdef.localhost:8920/_ocapd/ws; frame-src 'none'; "
        "frame-ancestors http://localhost:8920; object-src 'none'; base-uri 'none'; form-action 'self'"
    )


def test_the_csp_adds_exactly_the_declared_origins() -> None:
    m = parse_manifest(
        {"title": "t", "csp": {"connectSrc": ["https://API.example.com", "wss://live.example.com:8443"], "frameSrc": ["https://video.example.com"]}}
    )
    assert csp_for(m, **ORIGINS) == (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "font-src 'self'; media-src 'self'; "
        "connect-src ws://0123456789abcdef0123456789abcdef.localhost:8920/_ocapd/ws "
        "https://api.example.com wss://live.example.com:8443; frame-src https://video.example.com; "
        "frame-ancestors http://localhost:8920; object-src 'none'; base-uri 'none'; form-action 'self'"
    )


def test_the_csp_rechecks_origins_of_an_unvalidated_manifest() -> None:
    forged = WebletManifest.model_construct(title="t", csp=WebletManifest(title="t").csp.model_construct(connectSrc=["*"], frameSrc=[]))
    with pytest.raises(ValueError, match="wildcards are refused"):
        csp_for(forged, **ORIGINS)


@pytest.mark.parametrize(
    "override",
    [
        {"ws_url": "ws://other.localhost:8920/_ocapd/ws"},
        {"ws_url": "wss://0123456789abcdef0123456789abcdef.localhost:8920/_ocapd/ws"},
        {"ws_url": "ws://0123456789abcdef0123456789abcdef.localhost:8920/x; script-src *"},
        {"frame_ancestor": "http://localhost:8920 'unsafe-inline'"},
        {"self_origin": "http://x.localhost:8920/path"},
    ],
)
def test_csp_for_refuses_arguments_that_do_not_fit_a_header(override: dict) -> None:
    with pytest.raises(ValueError):
        csp_for(WebletManifest(title="t"), **{**ORIGINS, **override})


def test_permissions_allow_is_derived_from_the_allowlist_in_its_order() -> None:
    assert permissions_allow(WebletManifest(title="t")) == ""
    m = parse_manifest({"title": "t", "permissions": ["web-share", "clipboard-write", "fullscreen"]})
    assert permissions_allow(m) == "clipboard-write; fullscreen; web-share"
    assert "camera" not in PERMISSIONS and "microphone" not in PERMISSIONS and "geolocation" not in PERMISSIONS


# ---- backends --------------------------------------------------------------------------------
def test_the_backend_zip_is_what_a_worker_unpacks(tmp_path: Path) -> None:
    from ocapd.daemon.weblet import MAX_BACKEND_FILES, MAX_BACKEND_SIZE
    from ocapd.workers import extract_bundle

    # The worker unpacks with the same reader and limits: one member more (bundle.json) must fit.
    assert MAX_BACKEND_FILES < MAX_MEMBERS and MAX_BACKEND_SIZE < MAX_TOTAL_SIZE
    bundle = read_bundle(
        weblet_zip(
            ("server/__init__.py", ""),
            ("server/app.py", "def make(powers, context):\n    return 1\n"),
            ("ui.js", "1"),
            manifest={"title": "t", "backend": "server/app.py"},
        )
    )
    blob = bundle.backend_zip()
    assert blob is not None and blob == bundle.backend_zip()  # deterministic: workers cache by digest
    assert sorted(zipfile.ZipFile(io.BytesIO(blob)).namelist()) == ["bundle.json", "server/__init__.py", "server/app.py"]
    assert extract_bundle(blob, tmp_path / "unpacked") == "server.app"


# ---- the shipped examples --------------------------------------------------------------------
@pytest.mark.parametrize("name", ["counter", "notes"])
def test_the_example_weblets_are_valid_bundles(name: str) -> None:
    bundle = read_bundle(EXAMPLES / name)
    assert {"index.html", "app.js", "style.css"} <= set(bundle.files)
    assert b'from "/_ocapd/weblet.js"' in bundle.files["app.js"]
    assert read_bundle(bundle.to_zip()) == bundle


def test_the_counter_backend_counts() -> None:
    bundle = read_bundle(EXAMPLES / "counter")
    assert bundle.manifest.backend == "backend.py" and bundle.manifest.powers == []
    namespace: dict = {"__name__": "counter_backend"}
    exec(compile(bundle.files["backend.py"], "backend.py", "exec"), namespace)  # noqa: S102 - our own example
    counter = namespace["make"](None, None)
    assert (counter.get(), counter.incr(), counter.incr(), counter.get()) == (0, 1, 2, 2)


def test_the_notes_weblet_asks_its_host_for_a_place() -> None:
    bundle = read_bundle(EXAMPLES / "notes")
    assert b'E(powers).request("HOST", "a place to keep notes", "notes")' in bundle.files["app.js"]
    assert bundle.manifest.powers == ["notes"] and bundle.manifest.backend is None


# ---- properties ------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
FIELDS = ["kind", "title", "description", "version", "size", "entry", "csp", "permissions", "interface", "powers", "backend"]
field_values = {
    "kind": st.sampled_from(["native", "iframe", "iframe-external", "projection-only", "other"]) | json_values,
    "title": st.text(max_size=90) | json_values,
    "size": st.fixed_dictionaries({"width": st.integers(0, 5000), "height": st.integers(0, 5000)}) | json_values,
    "entry": st.sampled_from(["index.html", "https://a.example.com/", "../x", "/etc/passwd", "a.js"]) | st.text(max_size=20),
    "csp": st.fixed_dictionaries(
        {"connectSrc": st.lists(st.sampled_from([o for o, _ in HOSTILE_ORIGINS] + ["https://a.com", "wss://b.io:1"]) | st.text(max_size=20), max_size=3)}
    )
    | json_values,
    "permissions": st.lists(st.sampled_from(list(PERMISSIONS) + ["camera"]), max_size=3) | json_values,
    "interface": st.fixed_dictionaries(
        {"commands": st.dictionaries(st.text(max_size=8), st.fixed_dictionaries({"description": st.text(max_size=5)}), max_size=3)}
    )
    | json_values,
    "backend": st.sampled_from(["backend.py", "x.py", "a.js", None]) | json_values,
}
manifests = st.fixed_dictionaries({}, optional={f: field_values.get(f, json_values) for f in FIELDS}) | json_values
# WEBLET_EXAMPLES=2000 searches longer.
FAST = settings(max_examples=int(os.environ.get("WEBLET_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(manifest=manifests, extra_key=st.booleans())
def test_any_manifest_is_read_or_refused_with_a_bundle_error(manifest, extra_key: bool) -> None:
    extra_key = extra_key and isinstance(manifest, dict)
    if extra_key:
        manifest = {**manifest, "extra": 1}
    for source in (
        weblet_zip(("backend.py", "def make(p, c): pass"), manifest=manifest),
        meta_html(f"<meta name='ocapd:weblet' content='{json.dumps(manifest).replace(chr(39), '&#39;')}'>"),
    ):
        try:
            bundle = read_bundle(source)
        except BundleError as e:
            assert "\n" not in str(e)
        else:
            assert not extra_key
            assert read_bundle(bundle.to_zip()) == bundle


@FAST
@given(text=st.text(max_size=200) | st.binary(max_size=200), prefix=st.sampled_from([b"", b"PK\x03\x04", b"<", b"{"]))
def test_any_bytes_are_read_or_refused_with_a_bundle_error(text, prefix: bytes) -> None:
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    for source in (prefix + raw, make_zip([("weblet.json", raw), ("index.html", INDEX)])):
        try:
            read_bundle(source)
        except BundleError:
            pass


VALID_ZIP = weblet_zip(("app.js", "console.log('hi')" * 20), ("backend.py", "def make(p, c): pass"),
                      manifest={"title": "t", "backend": "backend.py"})


@FAST
@given(flips=st.lists(st.tuples(st.integers(0, len(VALID_ZIP) - 1), st.integers(0, 255)), min_size=1, max_size=4))
def test_a_corrupted_zip_is_read_or_refused_with_a_bundle_error(flips: list[tuple[int, int]]) -> None:
    data = bytearray(VALID_ZIP)
    for position, value in flips:
        data[position] = value
    try:
        read_bundle(bytes(data))
    except BundleError as e:
        assert "\n" not in str(e)


@FAST
@given(tags=st.lists(st.tuples(st.sampled_from(["ocapd:weblet", "ocapd:weblet:title", "ocapd:weblet:size",
                                                "ocapd:weblet:commands", "ocapd:weblet:csp.connect-src", "OCAPD:WEBLET:kind",
                                                "ocapd:weblet:nope"]), st.text(max_size=40)), max_size=4),
       tail=st.text(max_size=60))
def test_any_meta_tags_are_read_or_refused_with_a_bundle_error(tags, tail: str) -> None:
    html = "<!doctype html>" + "".join(f'<meta name="{n}" content="{c.replace(chr(34), "&quot;")}">' for n, c in tags) + tail
    try:
        read_bundle(html.encode("utf-8", "surrogatepass"))
    except BundleError:
        pass


path_segment = st.text(alphabet=string.ascii_letters + string.digits + "-_.é", min_size=1, max_size=8).filter(
    lambda s: s not in (".", "..") and s.casefold() != "_ocapd"
)
paths = st.lists(path_segment, min_size=1, max_size=3).map("/".join)
contents = st.binary(max_size=300) | st.builds(lambda n: bytes(n), st.integers(0, 300_000))
valid_manifests = st.builds(
    lambda title, desc, w, conn, perms, cmds: {
        "title": title,
        "description": desc,
        "size": {"width": w, "height": 300},
        "csp": {"connectSrc": conn},
        "permissions": perms,
        "interface": {"commands": {c: {"readOnly": True} for c in cmds}},
    },
    st.text(alphabet=string.ascii_letters + " é", min_size=1, max_size=80).filter(str.strip),
    st.text(max_size=100).filter(lambda s: all(c in "\n\t" or c.isprintable() for c in s)),
    st.integers(100, 4000),
    st.lists(st.sampled_from(["https://a.example.com", "wss://b.example.com:8443", "https://c.example.org"]), max_size=3),
    st.lists(st.sampled_from(PERMISSIONS), max_size=3),
    st.lists(st.from_regex(r"[a-z][a-zA-Z0-9_.]{0,10}", fullmatch=True), max_size=3),
)


def _collision_free(files: dict[str, bytes]) -> bool:
    try:
        read_bundle(make_zip([("weblet.json", json.dumps(MANIFEST)), ("index.html", INDEX), *files.items()], zipfile.ZIP_STORED))
    except BundleError:
        return False
    return True


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(manifest=valid_manifests, files=st.dictionaries(paths, contents, max_size=6).filter(_collision_free))
def test_a_bundle_survives_its_own_zip(manifest: dict, files: dict[str, bytes]) -> None:
    bundle = read_bundle(weblet_zip(*files.items(), manifest=manifest, compression=zipfile.ZIP_STORED))
    again = read_bundle(bundle.to_zip())
    assert again == bundle and again.digest == bundle.digest
    assert again.to_zip() == bundle.to_zip()
    assert isinstance(hash(bundle), int) and isinstance(bundle, Bundle)
