"""The WebRTC switch without a browser: manifest field, headers, single-HTML meta tag, doctor's report.

The browser side (zero datagrams unless declared) is tests/test_weblet_webrtc_browser.py.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from daemon_harness import zip_bundle

from ocapd.daemon.weblet import BundleError, WebletManifest, connection_allowlist, parse_manifest, read_bundle
from ocapd.daemon.weblet.browser import WEBRTC_SUMMARY, browser_report


def test_webrtc_is_off_unless_declared_and_only_a_json_boolean_declares_it() -> None:
    assert parse_manifest({"title": "t"}).webrtc is False
    assert parse_manifest({"title": "t", "webrtc": True}).webrtc is True
    for bad in ("true", 1, None, [], {}):
        with pytest.raises(BundleError, match="webrtc"):
            parse_manifest({"title": "t", "webrtc": bad})


def test_an_undeclared_field_dumps_as_before_so_stored_digests_do_not_change() -> None:
    plain = parse_manifest({"title": "t"})
    assert "webrtc" not in plain.model_dump(mode="json")
    assert parse_manifest(plain.model_dump(mode="json")) == plain
    declared = parse_manifest({"title": "t", "webrtc": True})
    assert declared.model_dump(mode="json")["webrtc"] is True
    assert parse_manifest(declared.model_dump(mode="json")) == declared
    # the digest covers the manifest: declaring WebRTC is a different bundle
    page = b"<!doctype html><p>x"
    digests = {
        read_bundle(zip_bundle({"weblet.json": json.dumps(m).encode(), "index.html": page})).digest
        for m in ({"title": "t"}, {"title": "t", "webrtc": False}, {"title": "t", "webrtc": True})
    }
    assert len(digests) == 2




def test_the_connection_allowlist_header_is_only_the_webrtc_switch() -> None:
    assert connection_allowlist(WebletManifest(title="t")) == '("*://*:*");redirects=allow;webrtc=block'
    assert connection_allowlist(WebletManifest(title="t", webrtc=True)) == '("*://*:*");redirects=allow;webrtc=allow'


def test_a_single_html_weblet_declares_webrtc_with_a_meta_tag() -> None:
    def html(value: str) -> bytes:
        return (
            '<!doctype html><meta name="ocapd:weblet:title" content="T">'
            f'<meta name="ocapd:weblet:webrtc" content="{value}"><p>x'
        ).encode()

    assert read_bundle(html("true")).manifest.webrtc is True
    assert read_bundle(html("false")).manifest.webrtc is False
    with pytest.raises(BundleError, match="webrtc"):
        read_bundle(html("yes"))


def _fake_browser(tmp_path: Path, version_line: str) -> str:
    path = tmp_path / "chromium"
    path.write_text(f"#!/bin/sh\necho '{version_line}'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


@pytest.mark.parametrize(
    ("line", "blocked"),
    [
        ("Chromium 156.0.8078.114 built on Debian GNU/Linux 12 (bookworm)", True),
        ("Google Chrome 152.0.1.2", True),
        ("Chromium 151.0.7000.1", False),
        ("something else", None),
    ],
)
def test_doctor_says_whether_this_machines_chromium_enforces_the_block(tmp_path: Path, line: str, blocked: bool | None) -> None:
    report = browser_report(_fake_browser(tmp_path, line))
    assert report["webrtc_blocked_here"] is blocked
    assert report["webrtc"] == WEBRTC_SUMMARY
    assert "not governed by CSP" in WEBRTC_SUMMARY and "Firefox" in WEBRTC_SUMMARY


def test_doctor_reports_the_browser_section(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "OCAPD_HOME": str(tmp_path / "home"), "OCAPD_CHROMIUM": _fake_browser(tmp_path, "Chromium 151.0.1.1")}
    text = subprocess.run([sys.executable, "-m", "ocapd", "doctor"], env=env, capture_output=True, text=True, check=True).stdout
    assert "does NOT enforce the WebRTC block" in text
    assert "WebRTC                 not governed by CSP" in text
    data = json.loads(
        subprocess.run([sys.executable, "-m", "ocapd", "doctor", "--json"], env=env, capture_output=True, text=True, check=True).stdout
    )
    assert data["browser"]["webrtc_blocked_here"] is False
