"""The manifest kinds beyond ``iframe``: ``iframe-external`` (a wrapper page frames an https entry) and
``projection-only`` (the host draws the backend's checked projection); ``native`` stays ocapd's own.

A real daemon with its gateway on a free port for what is served and
answered; the pure parts (the wrapper's page and CSP, the projection checker)
directly. No external network is reached: the wrapper's markup and headers
are checked, never the site it frames.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import trio
from daemon_harness import DaemonProcess, zip_bundle
from gateway_clients import http, websocket
from trio_websocket import ConnectionRejected

from ocapd.captp import E, RemoteError
from ocapd.daemon.weblet import read_bundle
from ocapd.daemon.weblet.projection import MAX_NODES, ProjectionError, check_projection
from ocapd.gateway.external import entry_problem, wrapper_csp, wrapper_page
from ocapd.gateway.site import Site
from ocapd.workers.archive import BundleError

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "weblets"
HOSTILE = '<img src=x onerror=alert(1)><script>alert(2)</script>"\'&'
ENTRY = "https://docs.python.org/3/"




def folder_zip(folder: Path) -> bytes:
    return zip_bundle({p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.suffix != ".pyc"})


# ---- iframe-external: the wrapper ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        (None, "names no external entry"),
        ("", "names no external entry"),
        ("index.html", "not an https:// URL"),
        ("http://docs.python.org/", "not an https:// URL"),
        ("javascript:alert(1)", "not an https:// URL"),
        ("https://127.0.0.1/", "public host"),
        ("https://app.localhost/", "public host"),
        ("https://user:pw@example.com/", "credentials"),
        ("https://exa mple.com/", "not a usable URL"),
    ],
)
def test_an_entry_the_wrapper_will_not_frame_says_why(entry: Any, why: str) -> None:
    problem = entry_problem(entry)
    assert problem is not None and why in problem


def test_the_wrapper_frames_the_entry_escaped_with_the_stricter_sandbox_and_no_script() -> None:
    assert entry_problem(ENTRY) is None
    page = wrapper_page('https://example.com/a?b="><script>x</script>', HOSTILE).decode()
    frames = re.findall(r"<iframe [^>]*>", page)
    assert len(frames) == 1
    assert 'sandbox="allow-scripts allow-forms"' in frames[0] and "allow-same-origin" not in page
    assert 'src="https://example.com/a?b=&quot;&gt;&lt;script&gt;x&lt;/script&gt;"' in frames[0]
    assert "<script" not in page and "<img" not in page  # the title is escaped too
    csp = [p.strip() for p in wrapper_csp(ENTRY, ["https://cdn.example.com"], "http://localhost:1234").split(";")]
    assert "default-src 'none'" in csp and "frame-ancestors http://localhost:1234" in csp
    assert "frame-src https://docs.python.org https://cdn.example.com" in csp
    assert not any(p.startswith("script-src") for p in csp)
    assert "form-action 'none'" in csp and "base-uri 'none'" in csp


def test_a_refused_site_answers_400_on_every_path() -> None:
    site = Site("w", {}, {"X-Content-Type-Options": "nosniff"}, frozenset(), lambda c: None, refusal="not https")
    for path in ("/", "/index.html"):
        response = site.response_for(path, None)
        assert response.status_code == 400
        assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_the_schema_refuses_a_non_https_or_missing_external_entry_at_install() -> None:
    for manifest in ({"title": "t", "kind": "iframe-external", "entry": "http://a.example.com/"},
                     {"title": "t", "kind": "iframe-external"}):  # fmt: skip
        with pytest.raises(BundleError, match="needs an https:// URL"):
            read_bundle(zip_bundle({"weblet.json": json.dumps(manifest)}))


# ---- projection-only: the checker -------------------------------------------------------------------


def test_a_projection_keeps_markup_as_plain_strings_and_normalizes_values() -> None:
    checked = check_projection(
        {"title": HOSTILE, "nodes": [
            {"type": "text", "text": HOSTILE},
            {"type": "list", "items": [HOSTILE, 2]},
            {"type": "table", "columns": ["a"], "rows": [[1.5], [True], [None]]},
            {"type": "kv", "items": {"k": HOSTILE}},
            {"type": "image", "src": "i.png", "alt": HOSTILE, "width": 32},
        ]},
        {"i.png": b"\x89PNG..."},
    )  # fmt: skip
    assert checked["title"] == HOSTILE
    assert checked["nodes"][0] == {"type": "text", "text": HOSTILE, "style": "body"}
    assert checked["nodes"][1]["items"] == [HOSTILE, "2"]
    assert checked["nodes"][2]["rows"] == [["1.5"], ["true"], [""]]
    assert checked["nodes"][3]["items"] == [["k", HOSTILE]]
    image = checked["nodes"][4]
    assert image["src"] == "i.png" and image["alt"] == HOSTILE and len(image["digest"]) == 32
    assert check_projection([{"type": "text", "text": "a bare list"}], {})["nodes"][0]["text"] == "a bare list"


@pytest.mark.parametrize(
    ("projection", "where"),
    [
        ("text", "must be a record"),
        ({"nodes": [{"type": "html", "html": "<b>"}]}, "nodes[0].type"),
        ({"nodes": [{"type": "text", "text": "x", "onclick": "y"}]}, "unknown field 'onclick'"),
        ({"nodes": [{"type": "text", "text": "x", "style": "red"}]}, "nodes[0].style"),
        ({"nodes": [{"type": "image", "src": "logo.svg"}]}, "nodes[0].src"),
        ({"nodes": [{"type": "image", "src": "missing.png"}]}, "nodes[0].src"),
        ({"nodes": [{"type": "image", "src": "https://evil.example/x.png"}]}, "nodes[0].src"),
        ({"nodes": [{"type": "text", "text": "\u202eevil"}]}, "control character"),
        ({"nodes": [{"type": "kv", "items": [["only one"]]}]}, "[key, value] pair"),
        ({"nodes": [{"type": "text", "text": "x"}] * (MAX_NODES + 1)}, "more than"),
        ({"nodes": [{"type": "text", "text": {"nested": 1}}]}, "a string or number"),
    ],
)
def test_a_projection_the_host_cannot_draw_is_refused_in_one_line(projection: Any, where: str) -> None:
    with pytest.raises(ProjectionError) as info:
        check_projection(projection, {"logo.svg": b"<svg/>"})
    assert where in str(info.value) and "\n" not in str(info.value)


def test_a_projection_only_weblet_needs_a_backend_and_native_is_not_installable() -> None:
    with pytest.raises(BundleError, match="needs a backend"):
        read_bundle(zip_bundle({"weblet.json": json.dumps({"title": "t", "kind": "projection-only"})}))
    bundle = read_bundle(folder_zip(EXAMPLES / "tally"))
    assert bundle.manifest.kind == "projection-only" and "index.html" not in bundle.files


# ---- a real daemon ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory):
    d = DaemonProcess(tmp_path_factory.mktemp("kinds") / "home", port=0)
    d.home.mkdir()
    d.start()
    try:

        async def install() -> None:
            async with d.connect() as (host, _, _):
                await E(host).install_weblet(folder_zip(EXAMPLES / "tally"), "tally", "NONE")
                await E(host).install_weblet(folder_zip(EXAMPLES / "external-docs"), "docs", "NONE")
                await E(host).install_weblet(folder_zip(EXAMPLES / "counter"), "counter", "NONE")

        trio.run(install)
        yield d
    finally:
        d.stop()


async def panel_of(d: DaemonProcess, name: str) -> dict[str, Any]:
    async with d.connect() as (host, _, _):
        m = await E(host).weblets()
        entry = next(e for e in await E(m).list() if e["name"] == name)
        return {"kind": entry["kind"], **await E(m).create_instance(entry["id"], {})}


async def test_an_external_panel_serves_only_its_wrapper_with_the_wrappers_csp(daemon: DaemonProcess) -> None:
    port = daemon.gateway_port
    panel = await panel_of(daemon, "docs")
    assert panel["kind"] == "iframe-external"
    label, url = panel["label"], panel["url"]
    assert url == f"http://{label}.localhost:{port}/" and "?" not in url and "python" not in url
    host = f"{label}.localhost:{port}"
    status, headers, body = await http(port, "/", host)
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    page = body.decode()
    assert f'<iframe src="{ENTRY}" sandbox="allow-scripts allow-forms" referrerpolicy="no-referrer"' in page
    assert "allow-same-origin" not in page and "<script" not in page
    csp = [p.strip() for p in headers["content-security-policy"].split(";")]
    assert "default-src 'none'" in csp and "frame-src https://docs.python.org" in csp
    assert f"frame-ancestors http://localhost:{port}" in csp
    assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "no-referrer"
    # nothing else: no SDK, no bundle files, and no CapTP for the external page, not even from its own origin
    for path in ("/_ocapd/weblet.js", "/_ocapd/captp.js", "/weblet.json", "/index.html"):
        status, _, _ = await http(port, path, host)
        assert status == 404, path
    with pytest.raises(ConnectionRejected) as info:
        async with websocket(port, host, f"http://{host}"):
            pass
    assert info.value.status_code == 403


async def test_a_projection_only_weblet_answers_its_checked_projection_and_images(daemon: DaemonProcess) -> None:
    panel = await panel_of(daemon, "tally")
    assert panel["kind"] == "projection-only"
    status, _, _ = await http(daemon.gateway_port, "/", f"{panel['label']}.localhost:{daemon.gateway_port}")
    assert status == 404  # no page: the host draws it
    async with daemon.connect() as (host, _, _):
        tally = await E(host).lookup("tally")
        first = await E(tally).projection()
        assert first["title"] == "Tally" and [n["type"] for n in first["nodes"]] == ["image", "text", "kv", "table", "list", "text"]
        assert first["nodes"][1]["text"] == "0 marks"
        image = await E(tally).projection_image("tally.png")
        assert image["mime"] == "image/png" and bytes(image["bytes"]) == (EXAMPLES / "tally" / "tally.png").read_bytes()
        for bad in ("backend.py", "weblet.json", "../x.png"):
            with pytest.raises(RemoteError):
                await E(tally).projection_image(bad)
        counter = await E(host).lookup("counter")
        with pytest.raises(RemoteError, match="has a page, not a projection"):
            await E(counter).projection()
