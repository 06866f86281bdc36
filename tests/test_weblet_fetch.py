"""Fetching a weblet from a URL: what is refused (SSRF), how a weblet is found, what comes back.

These tests never send a packet beyond 127.0.0.1. Every name resolves through
``resolver`` below (unknown names fail; nothing asks real DNS), and every
connection goes through ``Recorder.connect``, which logs it and fails the test
on anything but a loopback address -- so a broken guard makes a test fail
instead of reaching out. A canary server on 127.0.0.1 counts the connections
it gets; every refused case checks it got none.

The servers are real: h11 over trio sockets, with TLS from a throwaway CA that
only the tests' policy trusts.
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import io
import ipaddress
import json
import socket
import ssl
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import h11
import httpcore
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ocapd.daemon.weblet_fetch import (
    MAX_REDIRECTS,
    WELL_KNOWN_PATH,
    FetchError,
    FetchPolicy,
    Network,
    address_refusal,
    fetch_weblet,
    system_connect,
)

KiB = 1024

# ---- a throwaway CA and a certificate for the test names --------------------------------------
NAMES = ["weblets.test", "cdn.test", "sneaky.test"]


@dataclass(frozen=True)
class Pki:
    ca_pem: bytes
    cert_file: Path
    key_file: Path

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca_pem.decode())

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ocapd test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in NAMES]
    alt_names += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAMES[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("pki")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return Pki(ca.public_bytes(serialization.Encoding.PEM), folder / "cert.pem", folder / "key.pem")


# ---- a small real HTTP server ----------------------------------------------------------------
@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    chunks: int = 1  # >1: sent in that many pieces, without Content-Length (chunked)
    hang: bool = False  # never answer


Route = Callable[[], Reply]


class Server:
    """HTTP/1.1 on 127.0.0.1 (TLS if given a context), one request per connection, recording what it saw."""

    def __init__(self, tls: ssl.SSLContext | None) -> None:
        self.tls = tls
        self.routes: dict[str, Route] = {}
        self.connections = 0
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.port = 0

    async def start(self, nursery: trio.Nursery) -> None:
        listeners = await nursery.start(partial(trio.serve_tcp, self._handle, 0, host="127.0.0.1"))
        self.port = listeners[0].socket.getsockname()[1]

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]

    async def _handle(self, stream: trio.abc.Stream) -> None:
        self.connections += 1
        try:
            if self.tls is not None:
                stream = trio.SSLStream(stream, self.tls, server_side=True)
                await stream.do_handshake()
            await self._serve(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async def _serve(self, stream: trio.abc.Stream) -> None:
        conn = h11.Connection(h11.SERVER)
        request = None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.EndOfMessage):
                break
        assert request is not None
        path = request.target.decode()
        self.requests.append((path, {k.decode().lower(): v.decode() for k, v in request.headers}))
        route = self.routes.get(path)
        reply = route() if route is not None else Reply(404, b"not found")
        if reply.hang:
            await trio.sleep_forever()
        headers = [("connection", "close"), *reply.headers]
        if reply.chunks == 1:
            headers.append(("content-length", str(len(reply.body))))
        await stream.send_all(conn.send(h11.Response(status_code=reply.status, headers=headers)))
        size = -(-len(reply.body) // reply.chunks) or 1
        for start in range(0, len(reply.body), size):
            await stream.send_all(conn.send(h11.Data(data=reply.body[start : start + size])))
        await stream.send_all(conn.send(h11.EndOfMessage()))


# ---- names and the connect step the tests control --------------------------------------------
ADDRESSES = {
    "weblets.test": ["127.0.0.1"],  # the site; allowed by the test policy
    "cdn.test": ["127.0.0.1"],  # the site again, under another allowed name
    "sneaky.test": ["127.0.0.1"],  # not allowed
    "ipv6-loopback.test": ["::1"],
    "internal.test": ["10.0.0.1"],
    "mapped.test": ["::ffff:10.0.0.1"],
    "mapped-loopback.test": ["::ffff:127.0.0.1"],
    "metadata.test": ["169.254.169.254"],
    "mixed.test": ["8.8.8.8", "10.0.0.1"],  # one good address does not excuse a bad one
    "public.test": ["8.8.8.8"],  # passes the guard: the recorder must stop it
}


async def resolver(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    if host not in ADDRESSES:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return [ipaddress.ip_address(a) for a in ADDRESSES[host]]


class Recorder:
    """The connect step: logs every connection and fails the test on anything but loopback."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, int]] = []

    async def connect(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int, timeout: float | None) -> httpcore.AsyncNetworkStream:
        self.attempts.append((str(ip), port))
        if not (ip.version == 4 and ip in ipaddress.ip_network("127.0.0.0/8")) and str(ip) != "::1":
            raise AssertionError(f"the guard let a connection to {ip}:{port} through (a non-loopback address)")
        return await system_connect(ip, port, timeout)


# ---- the weblet the site serves --------------------------------------------------------------
MANIFEST = {"title": "Counter", "version": "1.2.0", "description": "Counts."}


def weblet_zip(manifest: dict = MANIFEST, padding: int = 0) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("weblet.json", json.dumps(manifest))
        zf.writestr("index.html", "<!doctype html><title>Counter</title>")
        if padding:
            zf.writestr("padding.bin", bytes(range(256)) * (padding // 256), compress_type=zipfile.ZIP_STORED)
    return out.getvalue()


BUNDLE = weblet_zip()
BUNDLE_SHA = hashlib.sha256(BUNDLE).hexdigest()
SINGLE_PAGE = b'<!doctype html><meta name="ocapd:weblet:title" content="One page"><p>hello</p>'


def published(bundle: str = "/counter.zip", sha: str | None = BUNDLE_SHA, **changes: object) -> bytes:
    doc: dict[str, object] = {**MANIFEST, **changes, "bundle": bundle}
    if sha is not None:
        doc["bundleSha256"] = sha
    return json.dumps(doc).encode()


def page(head: str) -> bytes:
    return f"<!doctype html><html><head>{head}<title>A weblet</title></head><body>hi</body></html>".encode()


def json_reply(body: bytes, **kw: object) -> Route:
    return lambda: Reply(200, body, [("content-type", "application/json")], **kw)  # type: ignore[arg-type]


def redirect(location: str, *extra: tuple[str, str]) -> Route:
    return lambda: Reply(302, b"", [("location", location), *extra])


@dataclass
class World:
    site: Server  # https on 127.0.0.1, reached as weblets.test / cdn.test
    canary: Server  # https on 127.0.0.1; nothing may ever reach it
    plain: Server  # http on 127.0.0.1, reached as weblets.test
    recorder: Recorder
    network: Network
    pki: Pki

    def url(self, path: str, host: str = "weblets.test") -> str:
        return f"https://{host}:{self.site.port}{path}"

    def policy(self, **kw: object) -> FetchPolicy:
        settings: dict[str, object] = {
            "allowed_hosts": frozenset({"weblets.test", "cdn.test"}),
            "ssl_context": self.pki.client_context(),
            "max_document_bytes": 64 * KiB,
            "max_bundle_bytes": 256 * KiB,
            "total_timeout": 10.0,
            **kw,
        }
        return FetchPolicy(**settings)  # type: ignore[arg-type]

    async def fetch(self, url: str, **kw: object):  # type: ignore[no-untyped-def]
        progress = kw.pop("progress", None)
        return await fetch_weblet(url, policy=self.policy(**kw), progress=progress, network=self.network)  # type: ignore[arg-type]

    def assert_nothing_reached_the_canary(self) -> None:
        assert self.canary.connections == 0
        assert all(port != self.canary.port for _, port in self.recorder.attempts), self.recorder.attempts


@pytest.fixture
async def world(nursery: trio.Nursery, pki: Pki) -> World:
    site, canary, plain = Server(pki.server_context()), Server(pki.server_context()), Server(None)
    for server in (site, canary, plain):
        await server.start(nursery)
    canary.routes = {path: json_reply(published()) for path in ("/", "/weblet.json", WELL_KNOWN_PATH)}
    p, c = site.port, canary.port
    big_bundle = weblet_zip(padding=300 * KiB)
    site.routes = {
        "/weblet.json": json_reply(published()),
        "/counter.zip": lambda: Reply(200, BUNDLE, [("content-type", "application/zip")], chunks=3),
        "/linked.html": lambda: Reply(200, page('<link rel="icon" href="/x.png"><link rel="Weblet-Manifest" href="weblet.json">')),
        "/": lambda: Reply(200, page("")),  # no link: the well-known manifest is tried
        WELL_KNOWN_PATH: json_reply(published()),
        "/single.html": lambda: Reply(200, SINGLE_PAGE, [("content-type", "text/html")]),
        "/cdn.json": json_reply(published(f"https://cdn.test:{p}/counter.zip")),
        **{f"/hop{n}": redirect(f"/hop{n - 1}" if n > 1 else "/weblet.json") for n in range(1, MAX_REDIRECTS + 2)},
        "/cookie": redirect("/cookie-2", ("set-cookie", "session=secret; Path=/")),
        "/cookie-2": redirect("/weblet.json", ("set-cookie", "other=secret2; Domain=weblets.test; Path=/")),
        "/to-loopback": redirect(f"https://127.0.0.1:{c}/weblet.json"),
        "/to-ipv6-loopback": redirect(f"https://[::1]:{c}/weblet.json"),
        "/to-sneaky": redirect(f"https://sneaky.test:{c}/weblet.json"),
        "/to-internal": redirect(f"https://internal.test:{c}/weblet.json"),
        "/to-http": redirect(f"http://weblets.test:{p}/weblet.json"),
        "/to-userinfo": redirect(f"https://user:secret@weblets.test:{p}/weblet.json"),
        "/bundle-on-loopback.json": json_reply(published(f"https://127.0.0.1:{c}/counter.zip")),
        "/bundle-on-sneaky.json": json_reply(published(f"https://sneaky.test:{c}/counter.zip")),
        "/bundle-over-http.json": json_reply(published(f"http://weblets.test:{p}/counter.zip")),
        "/bundle-with-userinfo.json": json_reply(published(f"https://u:p@weblets.test:{p}/counter.zip")),
        "/big.json": json_reply(published(description="x" * 2000) + b" " * (70 * KiB)),
        "/big.zip": lambda: Reply(200, big_bundle),
        "/big-chunked.zip": lambda: Reply(200, big_bundle, chunks=40),
        "/big-bundle.json": json_reply(published("/big-chunked.zip", sha=None)),
        "/bad-sha.json": json_reply(published(sha="0" * 64)),
        "/mismatch.json": json_reply(published(version="9.9.9")),
        "/no-bundle.json": json_reply(json.dumps(MANIFEST).encode()),
        "/bad-manifest.json": json_reply(published(title="")),
        "/gzip.json": lambda: Reply(200, gzip.compress(published()), [("content-encoding", "gzip")]),
        "/hang": lambda: Reply(hang=True),
        "/not-a-weblet.txt": lambda: Reply(200, b"just text", [("content-type", "text/plain")]),
    }
    plain.routes = {"/weblet.json": json_reply(published()), "/counter.zip": lambda: Reply(200, BUNDLE)}
    recorder = Recorder()
    return World(site, canary, plain, recorder, Network(resolve=resolver, connect=recorder.connect), pki)


# ---- the address check -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%1", "scoped"),
        ("fd00::1", "unique-local"),
        ("fc00::1", "unique-local"),
        ("224.0.0.1", "multicast"),
        ("239.1.2.3", "multicast"),
        ("ff02::1", "multicast"),
        ("ff0e::1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("192.0.0.9", "reserved"),
        ("192.0.2.1", "documentation"),
        ("203.0.113.7", "documentation"),
        ("2001:db8::1", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("2001::1", "Teredo"),
        ("::ffff:127.0.0.1", "loopback address (embedded"),
        ("::ffff:10.0.0.1", "private address (embedded"),
        ("::ffff:169.254.169.254", "link-local address (embedded"),
        ("2002:7f00:1::", "loopback address (embedded"),  # 6to4 of 127.0.0.1
        ("2002:a00:1::", "private address (embedded"),  # 6to4 of 10.0.0.1
        ("64:ff9b::a00:1", "private address (embedded"),  # NAT64 of 10.0.0.1
        ("64:ff9b:1::1", "local-use NAT64"),
        ("::7f00:1", "IPv4-compatible"),
        ("100::1", "discard-only"),
    ],
)
def test_addresses_that_are_not_public_unicast_are_refused_with_the_reason(address: str, why: str) -> None:
    refusal = address_refusal(ipaddress.ip_address(address))
    assert refusal is not None and why in refusal


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.215.14", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1", "64:ff9b::808:808"])
def test_public_unicast_addresses_pass(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None


# ---- refused before any packet leaves ---------------------------------------------------------
REFUSED = [
    ("https://127.0.0.1:{canary}/weblet.json", "refused: 127.0.0.1 is a loopback address"),
    ("https://[::1]:{canary}/weblet.json", "refused: ::1 is a loopback address"),
    ("https://[::ffff:127.0.0.1]:{canary}/weblet.json", r"refused: ::ffff:127.0.0.1 is a loopback address \(embedded"),
    ("https://169.254.169.254/latest/meta-data/", "refused: 169.254.169.254 is a link-local address"),
    ("https://0.0.0.0:{canary}/", "refused: 0.0.0.0 is an unspecified address"),
    ("https://sneaky.test:{canary}/weblet.json", "refused: sneaky.test resolves to 127.0.0.1, which is a loopback address"),
    ("https://ipv6-loopback.test:{canary}/", "refused: ipv6-loopback.test resolves to ::1, which is a loopback address"),
    ("https://internal.test/", "refused: internal.test resolves to 10.0.0.1, which is a private address"),
    ("https://mapped.test/", r"refused: mapped.test resolves to ::ffff:10.0.0.1, which is a private address \(embedded"),
    ("https://mapped-loopback.test:{canary}/", r"refused: mapped-loopback.test resolves to ::ffff:127.0.0.1, which is a loopback address \(embedded"),
    ("https://metadata.test/", "refused: metadata.test resolves to 169.254.169.254, which is a link-local address"),
    ("https://mixed.test/", "refused: mixed.test resolves to 10.0.0.1, which is a private address"),
    ("http://example.com/weblet.json", r"refused: http:// URLs are not allowed"),
    ("http://weblets.test:{canary}/weblet.json", r"refused: http:// URLs are not allowed"),
    ("http://127.0.0.1:{canary}/", r"refused: http:// URLs are not allowed"),
    ("ftp://weblets.test/x.zip", "refused: ftp: is not allowed"),
    ("file:///etc/passwd", "refused: file: is not allowed"),
    ("weblets.test/weblet.json", "refused: URLs without a scheme is not allowed"),
    ("https://user:secret@weblets.test:{canary}/weblet.json", "refused: URLs with a user name or password are not allowed"),
    ("https://user@weblets.test:{canary}/weblet.json", "refused: URLs with a user name or password are not allowed"),
    ("https://nowhere.test/", "cannot resolve nowhere.test"),
    ("https://weblets.test/" + "a" * 3000, "longer than 2048 characters"),
]


@pytest.mark.parametrize(("template", "message"), REFUSED)
async def test_urls_that_point_inside_are_refused_before_connecting(world: World, template: str, message: str) -> None:
    with pytest.raises(FetchError, match=message):
        await world.fetch(template.format(canary=world.canary.port))
    assert world.recorder.attempts == []
    world.assert_nothing_reached_the_canary()


async def test_the_positive_url_is_refused_without_the_operator_setting(world: World) -> None:
    with pytest.raises(FetchError, match="refused: weblets.test resolves to 127.0.0.1, which is a loopback address"):
        await world.fetch(world.url("/weblet.json"), allowed_hosts=frozenset())
    assert world.recorder.attempts == [] and world.site.connections == 0


async def test_the_operator_setting_names_hosts_exactly(world: World) -> None:
    with pytest.raises(FetchError, match="refused: cdn.test resolves to 127.0.0.1"):
        await world.fetch(world.url("/weblet.json", host="cdn.test"), allowed_hosts=frozenset({"WEBLETS.test", "test", ".cdn.test"}))
    assert world.recorder.attempts == []


async def test_a_name_that_passes_the_guard_reaches_only_the_recorder(world: World) -> None:
    # The recorder is what keeps these tests off the network: prove it stops a public address.
    with pytest.raises(AssertionError, match="non-loopback"):
        await world.fetch("https://public.test/weblet.json")
    assert world.recorder.attempts == [("8.8.8.8", 443)]


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/to-loopback", "refused: 127.0.0.1 is a loopback address"),
        ("/to-ipv6-loopback", "refused: ::1 is a loopback address"),
        ("/to-sneaky", "refused: sneaky.test resolves to 127.0.0.1, which is a loopback address"),
        ("/to-internal", "refused: internal.test resolves to 10.0.0.1, which is a private address"),
        ("/to-http", "refused: http:// URLs are not allowed"),
        ("/to-userinfo", "refused: URLs with a user name or password are not allowed"),
        (f"/hop{MAX_REDIRECTS + 1}", f"refused: more than {MAX_REDIRECTS} redirects"),
    ],
)
async def test_every_redirect_is_checked_again(world: World, path: str, message: str) -> None:
    with pytest.raises(FetchError, match=message):
        await world.fetch(world.url(path))
    world.assert_nothing_reached_the_canary()
    assert {ip for ip, _ in world.recorder.attempts} == {"127.0.0.1"}


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/bundle-on-loopback.json", "refused: 127.0.0.1 is a loopback address"),
        ("/bundle-on-sneaky.json", "refused: sneaky.test resolves to 127.0.0.1, which is a loopback address"),
        ("/bundle-over-http.json", "refused: the manifest at .* names a bundle that is neither https:// nor on the manifest's origin"),
        ("/bundle-with-userinfo.json", "refused: URLs with a user name or password are not allowed"),
    ],
)
async def test_the_bundle_url_a_manifest_names_goes_through_the_same_guard(world: World, path: str, message: str) -> None:
    with pytest.raises(FetchError, match=message):
        await world.fetch(world.url(path))
    world.assert_nothing_reached_the_canary()
    assert "/counter.zip" not in world.site.paths()


# ---- caps ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/big.json", "the document at .* is larger than 64 KiB"),
        ("/big.zip", "the bundle is larger than 256 KiB"),  # announced by Content-Length
        ("/big-bundle.json", "the bundle is larger than 256 KiB"),  # chunked: counted while streaming
    ],
)
async def test_bodies_over_their_cap_are_refused(world: World, path: str, message: str) -> None:
    with pytest.raises(FetchError, match=message):
        await world.fetch(world.url(path))


async def test_a_manifest_larger_than_its_cap_is_refused_even_when_a_bundle_would_fit(world: World) -> None:
    with pytest.raises(FetchError, match="the document at .* is larger than 100 bytes"):
        await world.fetch(world.url("/weblet.json"), max_document_bytes=100)


async def test_compressed_bodies_are_refused(world: World) -> None:
    with pytest.raises(FetchError, match="gzip-compressed body, which is not accepted"):
        await world.fetch(world.url("/gzip.json"))
    assert world.site.requests[0][1]["accept-encoding"] == "identity"


async def test_a_server_that_never_answers_runs_into_the_total_time_cap(world: World) -> None:
    with pytest.raises(FetchError, match="timed out"):
        await world.fetch(world.url("/hang"), total_timeout=0.3)


# ---- the positive paths ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "found_by", "manifest_path"),
    [
        ("/weblet.json", "manifest", "/weblet.json"),
        ("/linked.html", "link", "/weblet.json"),
        ("/", "well-known", WELL_KNOWN_PATH),
        ("/nothing-here", "well-known", WELL_KNOWN_PATH),  # a 404 at the URL: the well-known manifest still counts
        ("/not-a-weblet.txt", "well-known", WELL_KNOWN_PATH),
        ("/counter.zip", "bundle", None),
        (f"/hop{MAX_REDIRECTS}", "manifest", "/weblet.json"),
    ],
)
async def test_a_weblet_is_found_and_its_bundle_fetched(world: World, path: str, found_by: str, manifest_path: str | None) -> None:
    fetched = await world.fetch(world.url(path))
    assert fetched.found_by == found_by
    assert fetched.bundle == BUNDLE and fetched.sha256 == BUNDLE_SHA and fetched.size == len(BUNDLE)
    assert fetched.manifest.title == "Counter" and fetched.manifest.version == "1.2.0"
    assert fetched.url == world.url(path)
    assert fetched.bundle_url == world.url("/counter.zip")
    assert fetched.manifest_url == (world.url(manifest_path) if manifest_path else None)
    world.assert_nothing_reached_the_canary()
    assert world.recorder.attempts and all(a == ("127.0.0.1", world.site.port) for a in world.recorder.attempts)


async def test_a_single_file_weblet_page_is_its_own_bundle(world: World) -> None:
    fetched = await world.fetch(world.url("/single.html"))
    assert (fetched.found_by, fetched.bundle, fetched.manifest.title) == ("page", SINGLE_PAGE, "One page")


async def test_a_bundle_on_another_https_origin(world: World) -> None:
    fetched = await world.fetch(world.url("/cdn.json"))
    assert fetched.bundle_url == world.url("/counter.zip", host="cdn.test")
    assert fetched.bundle == BUNDLE


async def test_download_progress_is_reported_up_to_the_size(world: World) -> None:
    calls: list[tuple[int, int | None]] = []
    await world.fetch(world.url("/weblet.json"), progress=lambda got, total: calls.append((got, total)))
    assert calls[0] == (0, None)  # sent chunked: no size announced
    assert calls[-1] == (len(BUNDLE), None)
    assert len(calls) >= 3 and [got for got, _ in calls] == sorted({got for got, _ in calls})


async def test_progress_is_reported_when_the_url_is_the_bundle(world: World) -> None:
    calls: list[tuple[int, int | None]] = []
    await world.fetch(world.url("/counter.zip"), progress=lambda got, total: calls.append((got, total)))
    assert calls[0] == (0, None) and calls[-1] == (len(BUNDLE), None)


async def test_no_progress_is_reported_for_pages_and_manifests(world: World) -> None:
    world.site.routes["/counter.zip"] = lambda: Reply(200, BUNDLE)
    calls: list[tuple[int, int | None]] = []
    await world.fetch(world.url("/linked.html"), progress=lambda got, total: calls.append((got, total)))
    assert {total for _, total in calls} == {len(BUNDLE)}


async def test_progress_carries_the_announced_size(world: World) -> None:
    world.site.routes["/counter.zip"] = lambda: Reply(200, BUNDLE)
    calls: list[tuple[int, int | None]] = []
    await world.fetch(world.url("/weblet.json"), progress=lambda got, total: calls.append((got, total)))
    assert calls[0] == (0, len(BUNDLE)) and calls[-1] == (len(BUNDLE), len(BUNDLE))


async def test_no_cookies_credentials_or_proxies_are_used(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    canary = f"http://127.0.0.1:{world.canary.port}"
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, canary)
    netrc = world.pki.cert_file.parent / "netrc"
    netrc.write_text("machine weblets.test login user password secret\n")
    monkeypatch.setenv("NETRC", str(netrc))
    fetched = await world.fetch(world.url("/cookie"))
    assert fetched.bundle == BUNDLE
    assert world.site.paths() == ["/cookie", "/cookie-2", "/weblet.json", "/counter.zip"]
    for _, headers in world.site.requests:
        assert "cookie" not in headers and "authorization" not in headers and "proxy-authorization" not in headers
        assert headers["host"] == f"weblets.test:{world.site.port}"
    world.assert_nothing_reached_the_canary()


async def test_plain_http_only_for_hosts_the_operator_names(world: World) -> None:
    url = f"http://weblets.test:{world.plain.port}/weblet.json"
    with pytest.raises(FetchError, match="refused: http:// URLs are not allowed"):
        await world.fetch(url)
    assert world.plain.connections == 0
    fetched = await world.fetch(url, http_hosts=frozenset({"weblets.test"}))
    assert fetched.bundle == BUNDLE and fetched.bundle_url == f"http://weblets.test:{world.plain.port}/counter.zip"


# ---- what the manifest must say --------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/bad-sha.json", "refused: the bundle at .* does not match the sha256 its manifest gives"),
        ("/mismatch.json", "refused: the published manifest and the bundle's weblet.json differ .field 'version'"),
        ("/no-bundle.json", 'names no bundle: add "bundle"'),
        ("/bad-manifest.json", "the manifest at .*: title: "),
        ("/not-there.json", r"no weblet at .* \(HTTP 404\), and .*/.well-known/ocapd-weblet.json gave HTTP 404"),
    ],
)
async def test_manifests_that_do_not_hold_are_refused(world: World, path: str, message: str) -> None:
    del world.site.routes[WELL_KNOWN_PATH]
    with pytest.raises(FetchError, match=message):
        await world.fetch(world.url(path))


async def test_a_certificate_the_policy_does_not_trust_is_refused(world: World) -> None:
    with pytest.raises(FetchError, match=r"cannot fetch .*: the server's certificate is not trusted \(unable to get local issuer certificate\)"):
        await world.fetch(world.url("/weblet.json"), ssl_context=ssl.create_default_context())
