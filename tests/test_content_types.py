"""One table of file types (daemon/content_types.py): the gateway and weblet bundles agree on every extension."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from ocapd.daemon.content_types import CONTENT_TYPES, DEFAULT_CONTENT_TYPE
from ocapd.daemon.weblet import read_bundle
from ocapd.gateway.static import build_table

# Extensions no table holds: the gateway skips such files, a bundle serves them as opaque bytes.
UNKNOWN = [".py", ".exe", ".php", ".sh", ".xhtml", ".htaccess", ""]


def _bundle_of(names: list[str]) -> dict[str, str]:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("weblet.json", json.dumps({"title": "t"}))
        zf.writestr("index.html", "<!doctype html>")
        for name in names:
            zf.writestr(name, b"x")
    bundle = read_bundle(out.getvalue())
    return {name: bundle.content_type(name) for name in names}


def _gateway_of(tmp_path: Path, names: list[str]) -> dict[str, str | None]:
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    table = build_table(tmp_path)
    return {name: (table["/" + name].content_type if "/" + name in table else None) for name in names}


@pytest.mark.parametrize("spell", [str.lower, str.upper], ids=["lower", "upper"])
def test_the_gateway_and_a_bundle_serve_every_extension_with_the_same_type(tmp_path: Path, spell) -> None:
    names = [f"file{i}{spell(ext)}" for i, ext in enumerate(CONTENT_TYPES)]
    from_bundle = _bundle_of(names)
    from_gateway = _gateway_of(tmp_path, names)
    for name, ext in zip(names, CONTENT_TYPES, strict=True):
        assert from_gateway[name] == from_bundle[name] == CONTENT_TYPES[ext], name


def test_a_type_the_table_does_not_know_is_never_served_as_something_a_browser_runs(tmp_path: Path) -> None:
    names = [f"file{i}{ext}" for i, ext in enumerate(UNKNOWN)]
    assert set(_bundle_of(names).values()) == {DEFAULT_CONTENT_TYPE}
    assert set(_gateway_of(tmp_path, names).values()) == {None}


def test_an_icon_has_one_type_everywhere(tmp_path: Path) -> None:
    # The two tables this one replaced disagreed here (image/x-icon and image/vnd.microsoft.icon).
    assert _bundle_of(["favicon.ico"]) == _gateway_of(tmp_path, ["favicon.ico"]) == {"favicon.ico": "image/vnd.microsoft.icon"}


def test_there_is_one_table() -> None:
    import ocapd.daemon.weblet.bundle
    import ocapd.gateway.static

    assert ocapd.gateway.static.CONTENT_TYPES is CONTENT_TYPES
    assert not [name for name, value in vars(ocapd.daemon.weblet.bundle).items() if isinstance(value, dict) and ".html" in value]
