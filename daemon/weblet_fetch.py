"""Fetching a weblet from a URL, without letting the URL reach inside the network.

:func:`fetch_weblet` takes the URL a user pasted and returns the weblet's
bundle bytes with their provenance (:class:`FetchedWeblet`), ready for the
atomic ``install_weblet``. It does no installing and keeps no state.

**The guard.** A URL from a user (or from a page that user was shown) must not
make the daemon talk to itself, the local network or a cloud metadata service
(server-side request forgery). So every TCP connection goes through
:class:`_GuardedBackend`, an httpcore network backend plugged into httpx's
connection pool: it resolves the host name itself, refuses the connection if
*any* resolved address is not a public unicast address (:func:`address_refusal`),
and then connects to one of the addresses it checked -- never to the name,
so there is no second resolution an attacker's DNS could answer differently.
TLS still verifies the certificate against the name, and the ``Host`` header
still carries it. Redirects are followed here, one hop at a time (at most
:data:`MAX_REDIRECTS`), each new URL checked like the first and each new
connection guarded like the first.

Only ``https://`` is accepted, no user names or passwords in URLs, no cookies
kept, no proxies or ``.netrc`` taken from the environment, no compression
(sizes are counted on the bytes as sent), and every body is streamed and
counted against a cap. The operator's :class:`FetchPolicy` may name hosts
whose addresses are exempt from the check (an intranet store; the tests'
local server) and hosts that may use plain ``http://``.

**Discovery.** The URL may be the bundle itself (a zip), a published manifest
(``weblet.json`` plus ``"bundle"``: the bundle's URL, and optionally
``"bundleSha256"``), an HTML page linking one with ``<link
rel="weblet-manifest" href="...">``, or a single-file weblet page (``<meta
name="ocapd:weblet...">``). Failing those, ``/.well-known/ocapd-weblet.json``
on the same origin is tried. A published manifest must match the bundle's own
``weblet.json``: what the user was shown is what gets installed.

Every refusal or failure is one exception type, :class:`FetchError`, whose
message is one line fit to show a user as is.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any, Literal

import httpcore
import httpx
import trio

from ocapd.workers.archive import MAX_ARCHIVE_SIZE

from .weblet import MAX_MANIFEST_SIZE, BundleError, WebletManifest, parse_manifest, read_bundle

__all__ = [
    "FetchError", "FetchPolicy", "FetchedWeblet", "FoundBy", "Network", "Progress", "fetch_weblet", "fetch_document", "address_refusal",
    "system_resolve", "system_connect", "SYSTEM_NETWORK",
    "MAX_REDIRECTS", "MAX_URL_LENGTH", "WELL_KNOWN_PATH", "LINK_REL", "BUNDLE_FIELD", "BUNDLE_SHA256_FIELD",
]  # fmt: skip

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

KiB = 1024
MiB = 1024 * KiB

# ---- limits ----------------------------------------------------------------------------------
#: Redirects followed per download. Publishers move a file once or twice
#: (http->https is refused anyway, a CDN hop, a versioned path); more is a
#: loop or a probe. Same number the issue and most SSRF guidance give.
MAX_REDIRECTS = 3
#: Characters in a URL: browsers and servers commonly stop near 2 KiB, and a
#: URL is echoed in messages and stored as the weblet's source.
MAX_URL_LENGTH = 2048
#: Bytes of a page or a published manifest: a manifest is at most
#: MAX_MANIFEST_SIZE (the bundle reader's cap); a page that links one has no
#: reason to be larger (a single-file weblet larger than this ships as a zip).
DEFAULT_MAX_DOCUMENT_BYTES = MAX_MANIFEST_SIZE
#: Bytes of a bundle: what the bundle reader accepts from a file, so that
#: anything installable from a file is installable from its URL.
DEFAULT_MAX_BUNDLE_BYTES = MAX_ARCHIVE_SIZE
#: Seconds to open one connection (DNS, TCP and TLS): a reachable server
#: answers in well under a second; ten covers a slow mobile link.
DEFAULT_CONNECT_TIMEOUT = 10.0
#: Seconds for the whole fetch, every hop included: the largest bundle (18 MiB) at 1 MB/s is
#: under half a minute; a user waiting longer than a minute has given up.
DEFAULT_TOTAL_TIMEOUT = 60.0

WELL_KNOWN_PATH = "/.well-known/ocapd-weblet.json"
LINK_REL = "weblet-manifest"
#: The fields a published manifest adds to weblet.json.
BUNDLE_FIELD = "bundle"
BUNDLE_SHA256_FIELD = "bundleSha256"
_META_NAME = "ocapd:weblet"  # a single-file weblet page (see weblet/single_html.py)
_USER_AGENT = "ocapd-weblet-fetch"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_SNIFF_BYTES = 4  # enough to tell a zip from text
_SHA256 = re.compile(r"[0-9a-f]{64}")


class FetchError(Exception):
    """A URL was refused or the weblet behind it could not be fetched; the message is one line."""


#: ``progress(received, total)``: bytes of the bundle received so far, and the
#: size the server announced (None if it did not). Called at least once with
#: 0 and once with the final size.
Progress = Callable[[int, int | None], None]


@dataclass(frozen=True)
class FetchPolicy:
    """The operator's settings for fetching weblets. The defaults are the safe ones.

    ``allowed_hosts``: host names (as written in URLs, compared case-
    insensitively) whose addresses are *not* checked: an intranet store, or a
    test server on 127.0.0.1. ``http_hosts``: host names that may be fetched
    over plain ``http://`` (still address-checked unless also allowed). Both
    name hosts exactly: ``example.com`` does not allow ``www.example.com``.
    ``ssl_context``: whom to trust for TLS (None: the public CAs of certifi).
    """

    allowed_hosts: frozenset[str] = frozenset()
    http_hosts: frozenset[str] = frozenset()
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    total_timeout: float = DEFAULT_TOTAL_TIMEOUT
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES
    max_bundle_bytes: int = DEFAULT_MAX_BUNDLE_BYTES
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed_hosts", frozenset(h.lower() for h in self.allowed_hosts))
        object.__setattr__(self, "http_hosts", frozenset(h.lower() for h in self.http_hosts))


#: How the weblet was found: the URL was its bundle (a zip), its published
#: manifest, a page linking the manifest, a single-file weblet page, or none of
#: these and the origin's well-known manifest was used.
FoundBy = Literal["bundle", "manifest", "link", "page", "well-known"]


@dataclass(frozen=True)
class FetchedWeblet:
    """A weblet's bundle and where it came from.

    ``bundle`` is the bytes as downloaded (a zip or a single HTML file) and
    ``sha256`` their hex digest; ``manifest`` is the bundle's own, validated
    manifest (already compared with the published one, if any). URLs are the
    final ones, after redirects; ``manifest_url`` is None when the URL was the
    bundle itself. ``found_by`` says how discovery went.
    """

    url: str
    bundle: bytes
    sha256: str
    manifest: WebletManifest
    bundle_url: str
    manifest_url: str | None
    found_by: FoundBy

    @property
    def size(self) -> int:
        return len(self.bundle)


# ---- which addresses are refused --------------------------------------------------------------
def _nets(*specs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(s) for s in specs)


# (networks, what they are). First match wins. Python's is_global is not
# enough on its own: on 3.11 it calls multicast, 6to4 and NAT64 global.
_REFUSED: tuple[tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...], str], ...] = (
    (_nets("0.0.0.0/8", "::/128"), "an unspecified address"),
    (_nets("127.0.0.0/8", "::1/128"), "a loopback address"),
    (_nets("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"), "a private address"),
    (_nets("100.64.0.0/10"), "a shared (carrier-grade NAT) address"),
    (_nets("169.254.0.0/16", "fe80::/10"), "a link-local address"),
    (_nets("fc00::/7"), "a unique-local address"),
    (_nets("fec0::/10"), "a site-local address"),
    (_nets("224.0.0.0/4", "ff00::/8"), "a multicast address"),
    (_nets("255.255.255.255/32"), "the broadcast address"),
    (_nets("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", "3fff::/20"), "a documentation address"),
    (_nets("198.18.0.0/15", "2001:2::/48"), "a benchmarking address"),
    (_nets("2001::/32"), "a Teredo tunnel address"),
    (_nets("64:ff9b:1::/48"), "a local-use NAT64 address"),
    (_nets("::/96"), "an IPv4-compatible IPv6 address (deprecated)"),
    (_nets("100::/64"), "a discard-only address"),
    (_nets("192.0.0.0/24", "240.0.0.0/4", "2001::/23"), "a reserved address"),
)
# IPv6 forms that carry an IPv4 address: judged by the address they carry.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def address_refusal(ip: IPAddress) -> str | None:
    """Why a connection to ``ip`` is refused ("a private address"), or None if it is a public unicast address.

    IPv6 forms that embed an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``,
    6to4 ``2002::/16``, NAT64 ``64:ff9b::/96``) are judged by the IPv4
    address they embed.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            return "a scoped (interface-local) address"
        embedded = ip.ipv4_mapped or ip.sixtofour or (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None)
        if embedded is not None:
            inner = address_refusal(embedded)
            return f"{inner} (embedded in an IPv6 address)" if inner else None
    for networks, what in _REFUSED:
        if any(ip.version == net.version and ip in net for net in networks):
            return what
    if not ip.is_global:
        return "a reserved address"
    return None


# ---- the network: name resolution and the connect step -------------------------------------------
Resolver = Callable[[str], Awaitable[Sequence[IPAddress]]]
Connector = Callable[[IPAddress, int, float | None], Awaitable[httpcore.AsyncNetworkStream]]


async def system_resolve(host: str) -> list[IPAddress]:
    """The host's addresses from the system resolver (getaddrinfo), in its order, without repeats."""
    infos = await trio.socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


_TRIO_BACKEND = httpcore.TrioBackend()


async def system_connect(ip: IPAddress, port: int, timeout: float | None) -> httpcore.AsyncNetworkStream:
    """Open a TCP connection to exactly ``ip``: an address literal, so nothing is resolved again."""
    return await _TRIO_BACKEND.connect_tcp(str(ip), port, timeout=timeout)


@dataclass(frozen=True)
class Network:
    """How names are resolved and connections opened; tests replace both."""

    resolve: Resolver = system_resolve
    connect: Connector = system_connect


SYSTEM_NETWORK = Network()


def _shown(ip: IPAddress) -> str:
    """``ip`` as people write it: IPv4-mapped addresses as ``::ffff:10.0.0.1`` (Python 3.11 says ``::ffff:a00:1``)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return f"::ffff:{ip.ipv4_mapped}"
    return str(ip)


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's connect step with the SSRF guard in it: resolve, check every address, connect to a checked one."""

    def __init__(self, policy: FetchPolicy, network: Network) -> None:
        self._policy = policy
        self._network = network

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._addresses(host)
        exempt = host.lower() in self._policy.allowed_hosts
        if not exempt:
            for ip in addresses:
                why = address_refusal(ip)
                if why is not None:
                    shown = _shown(ip) if _literal(host) == ip else f"{host} resolves to {_shown(ip)}, which"
                    raise FetchError(f"refused: {shown} is {why}")
        last: Exception | None = None
        for ip in addresses:
            try:
                stream = await self._network.connect(ip, port, timeout)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                last = e
                continue
            _check_peer(stream, ip)
            return stream
        raise FetchError(f"cannot connect to {host}:{port}: {_reason(last)}")

    async def _addresses(self, host: str) -> list[IPAddress]:
        literal = _literal(host)
        if literal is not None:
            return [literal]
        try:
            found = list(await self._network.resolve(host))
        except OSError as e:
            raise FetchError(f"cannot resolve {host}: {e.strerror or e}") from None
        if not found:
            raise FetchError(f"cannot resolve {host}: no addresses")
        return found

    async def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise FetchError("refused: Unix sockets are not fetched")  # never configured; refused all the same

    async def sleep(self, seconds: float) -> None:
        await trio.sleep(seconds)


def _check_peer(stream: httpcore.AsyncNetworkStream, ip: IPAddress) -> None:
    # The connector was handed a checked literal; make sure that is where the socket went.
    peer = stream.get_extra_info("server_addr")
    if peer is not None and ipaddress.ip_address(peer[0]) != ip:
        raise FetchError(f"refused: connected to {peer[0]} instead of the checked {ip}")


def _reason(error: BaseException | None) -> str:
    """One line saying why ``error`` happened, from the first exception in its chain that says anything."""
    chain: list[BaseException] = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    for e in chain:
        if isinstance(e, ssl.SSLCertVerificationError):
            return f"the server's certificate is not trusted ({e.verify_message})"
    for e in chain:
        if str(e).strip():
            return str(e).strip().splitlines()[0][:200]
    return type(chain[0]).__name__ if chain else "unknown error"


class _GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport, with its connection pool built on :class:`_GuardedBackend`.

    httpx does not take a network backend as a parameter, so the pool it
    builds (no proxy: ``_pool`` is an ``httpcore.AsyncConnectionPool``) is
    replaced by one with the same settings and the guarded backend. The
    request/response mapping and error mapping stay httpx's.
    """

    def __init__(self, policy: FetchPolicy, network: Network, ssl_context: ssl.SSLContext) -> None:
        super().__init__(verify=ssl_context, trust_env=False, http1=True, http2=False, retries=0)
        if not isinstance(self._pool, httpcore.AsyncConnectionPool):  # pragma: no cover - an httpx change
            raise RuntimeError("httpx's transport changed shape: the fetch guard cannot be installed")
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context, max_connections=4, http1=True, http2=False, retries=0, network_backend=_GuardedBackend(policy, network)
        )


# ---- URLs ------------------------------------------------------------------------------------
def _show(url: httpx.URL | str) -> str:
    text = str(url)
    return text if len(text) <= 120 else text[:117] + "..."


def _check_url(url: httpx.URL | str, policy: FetchPolicy) -> httpx.URL:
    """``url`` parsed and checked before any connection: scheme, credentials, literal addresses."""
    text = str(url)
    if len(text) > MAX_URL_LENGTH:
        raise FetchError(f"refused: the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(text.strip())
    except httpx.InvalidURL as e:
        raise FetchError(f"not a URL: {_show(text)} ({e})") from None
    scheme = parsed.scheme
    host = parsed.raw_host.decode("ascii").lower()  # what the connect step sees: IDNA, no brackets
    if scheme == "http":
        if host not in policy.http_hosts:
            raise FetchError("refused: http:// URLs are not allowed (use https://)")
    elif scheme != "https":
        raise FetchError(f"refused: {scheme + ':' if scheme else 'URLs without a scheme'} is not allowed (use https://)")
    if not host:
        raise FetchError(f"not a URL: {_show(text)} has no host")
    if parsed.userinfo:
        raise FetchError("refused: URLs with a user name or password are not allowed")
    literal = _literal(host)
    if literal is not None and host not in policy.allowed_hosts:
        why = address_refusal(literal)
        if why is not None:
            raise FetchError(f"refused: {_shown(literal)} is {why}")
    return parsed.copy_with(fragment=None)


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return (url.scheme, url.host, url.port)


# ---- downloading -----------------------------------------------------------------------------
Kind = Literal["document", "bundle", "any"]


@dataclass
class _Body:
    url: httpx.URL  # final, after redirects
    status: int
    content_type: str
    data: bytes


def _size(n: int) -> str:
    if n >= MiB and n % MiB == 0:
        return f"{n // MiB} MiB"
    if n >= KiB and n % KiB == 0:
        return f"{n // KiB} KiB"
    return f"{n} bytes"


def _is_zip(data: bytes) -> bool:
    return data.startswith(_ZIP_MAGIC)


class _Fetcher:
    """One fetch: a client, its policy, the progress callback; every download goes through :meth:`get`."""

    def __init__(self, client: httpx.AsyncClient, policy: FetchPolicy, progress: Progress | None) -> None:
        self._client = client
        self._policy = policy
        self._progress = progress

    async def get(self, url: httpx.URL, kind: Kind, what: str) -> _Body:
        """GET ``url``, following at most MAX_REDIRECTS checked redirects; the body of a 2xx is read within its cap."""
        for _hop in range(MAX_REDIRECTS + 1):
            url = _check_url(url, self._policy)
            request = self._client.build_request("GET", url)
            try:
                response = await self._client.send(request, stream=True, follow_redirects=False)
            except httpx.TimeoutException:
                raise FetchError(f"timed out connecting to {url.host}") from None
            except httpx.HTTPError as e:
                raise FetchError(f"cannot fetch {_show(url)}: {_reason(e)}") from None
            try:
                if response.status_code in _REDIRECTS and "location" in response.headers:
                    try:
                        url = url.join(response.headers["location"])
                    except httpx.InvalidURL:
                        raise FetchError(f"{_show(url)} redirects to an invalid URL") from None
                    continue
                if not 200 <= response.status_code < 300:
                    return _Body(url, response.status_code, "", b"")
                data = await self._read(response, url, kind, what)
                return _Body(url, response.status_code, response.headers.get("content-type", "").lower(), data)
            finally:
                # Closes the connection, also when a cap stopped the body midway. (httpx's
                # own chain of body generators is then left unfinished for the garbage
                # collector, which Python reports as a ResourceWarning, ignored by default.)
                await response.aclose()
        raise FetchError(f"refused: more than {MAX_REDIRECTS} redirects fetching {what}")

    async def _read(self, response: httpx.Response, url: httpx.URL, kind: Kind, what: str) -> bytes:
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise FetchError(f"{_show(url)} sent a {encoding}-compressed body, which is not accepted")
        announced = _content_length(response)
        # Until the first bytes tell a zip from a page, the larger (bundle) cap holds.
        decided: Kind | None = None if kind == "any" else kind
        reported = -1

        def cap() -> int:
            return self._cap(decided or "bundle")

        def check(size: int | None) -> None:
            if size is not None and size > cap():
                raise FetchError(f"{what} is larger than {_size(cap())}")

        def report(size: int) -> None:
            nonlocal reported
            if decided == "bundle" and self._progress is not None and size != reported:
                reported = size
                self._progress(size, announced)

        if decided is not None:  # else checked once the first bytes say which cap applies
            check(announced)
        report(0)
        data = bytearray()
        try:
            async for chunk in response.aiter_raw():
                data += chunk
                if decided is None and len(data) >= _SNIFF_BYTES:
                    decided = "bundle" if _is_zip(bytes(data)) else "document"
                    what = "the bundle" if decided == "bundle" else what
                    check(announced)
                    report(0)  # the bundle's download starts here, as far as progress goes
                check(len(data))
                report(len(data))
        except httpx.TimeoutException:
            raise FetchError(f"timed out reading {_show(url)}") from None
        except httpx.HTTPError as e:
            raise FetchError(f"the download of {_show(url)} failed: {_reason(e)}") from None
        if decided is None:  # fewer bytes than it takes to sniff: not a zip
            decided = "document"
            check(len(data))
        report(len(data))
        return bytes(data)

    def _cap(self, kind: Kind) -> int:
        return self._policy.max_bundle_bytes if kind == "bundle" else self._policy.max_document_bytes


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length")
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


# ---- discovery -------------------------------------------------------------------------------
class _PageScan(HTMLParser):
    """The first ``<link rel="weblet-manifest" href>`` and whether the page declares itself a weblet."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.manifest_href: str | None = None
        self.is_weblet = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k.lower(): v or "" for k, v in attrs}
        if tag == "link" and self.manifest_href is None and LINK_REL in values.get("rel", "").lower().split():
            href = values.get("href", "").strip()
            if href:
                self.manifest_href = href
        elif tag == "meta":
            name = values.get("name", "").strip()
            if name == _META_NAME or name.startswith(_META_NAME + ":"):
                self.is_weblet = True


def _scan_page(data: bytes) -> _PageScan:
    scan = _PageScan()
    try:
        scan.feed(data.decode("utf-8-sig", "replace"))
        scan.close()
    except Exception:  # noqa: BLE001 - html.parser signals broken markup with assorted types; then nothing was found
        pass
    return scan


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


@dataclass(frozen=True)
class _Published:
    url: httpx.URL  # the manifest's own (final) URL
    manifest: WebletManifest
    bundle_url: httpx.URL
    sha256: str | None


def _read_published(body: _Body, policy: FetchPolicy) -> _Published:
    where = f"the manifest at {_show(body.url)}"
    try:
        data = json.loads(body.data.decode("utf-8-sig"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as e:
        raise FetchError(f"{where} is not valid JSON: {str(e).splitlines()[0][:120]}") from None
    if not isinstance(data, dict):
        raise FetchError(f"{where} is not a JSON object")
    bundle = data.pop(BUNDLE_FIELD, None)
    sha256 = data.pop(BUNDLE_SHA256_FIELD, None)
    if not isinstance(bundle, str) or not bundle.strip():
        raise FetchError(f'{where} names no bundle: add "{BUNDLE_FIELD}": "<the URL of the weblet\'s zip>"')
    if sha256 is not None and (not isinstance(sha256, str) or not _SHA256.fullmatch(sha256)):
        raise FetchError(f'{where}: "{BUNDLE_SHA256_FIELD}" must be 64 lowercase hex digits')
    try:
        manifest = parse_manifest(data, where=where)
    except BundleError as e:
        raise FetchError(str(e)) from None
    try:
        bundle_url = body.url.join(bundle.strip())
    except httpx.InvalidURL:
        raise FetchError(f"{where}: {BUNDLE_FIELD!r} is not a URL") from None
    # Same origin, or https anywhere: an https manifest never sends us to plain http.
    if bundle_url.scheme != "https" and _origin(bundle_url) != _origin(body.url):
        raise FetchError(f"refused: {where} names a bundle that is neither https:// nor on the manifest's origin")
    return _Published(body.url, manifest, _check_url(bundle_url, policy), sha256)


def _looks_like(body: _Body) -> Literal["zip", "json", "html", "other"]:
    if _is_zip(body.data):
        return "zip"
    head = body.data[:512].removeprefix(b"\xef\xbb\xbf").lstrip()
    mime = body.content_type.split(";")[0].strip()
    if head.startswith(b"{") or mime == "application/json" or mime.endswith("+json"):
        return "json"
    if head.startswith(b"<") or mime in ("text/html", "application/xhtml+xml"):
        return "html"
    return "other"


async def _discover(fetcher: _Fetcher, url: httpx.URL, policy: FetchPolicy) -> tuple[FoundBy, _Body | None, _Published | None]:
    """How the weblet at ``url`` was found, and either its bundle's body or its published manifest."""
    first = await fetcher.get(url, "any", f"the document at {_show(url)}")
    if 200 <= first.status < 300:
        shape = _looks_like(first)
        if shape == "zip":
            return "bundle", first, None
        if shape == "json":
            return "manifest", None, _read_published(first, policy)
        if shape == "html":
            scan = _scan_page(first.data)
            if scan.manifest_href is not None:
                try:
                    linked = first.url.join(scan.manifest_href)
                except httpx.InvalidURL:
                    raise FetchError(f"the page at {_show(first.url)} links a manifest with an invalid URL") from None
                body = await fetcher.get(linked, "document", f"the manifest at {_show(linked)}")
                if not 200 <= body.status < 300:
                    raise FetchError(f"the manifest linked from {_show(first.url)} gave HTTP {body.status}")
                return "link", None, _read_published(body, policy)
            if scan.is_weblet:
                return "page", first, None
    well_known = first.url.copy_with(path=WELL_KNOWN_PATH, query=None, fragment=None)
    if first.url.path == WELL_KNOWN_PATH:
        raise FetchError(f"no weblet at {_show(first.url)} (HTTP {first.status})")
    body = await fetcher.get(well_known, "document", f"the manifest at {_show(well_known)}")
    if not 200 <= body.status < 300:
        said = f"HTTP {first.status}" if not 200 <= first.status < 300 else "not a manifest, a bundle or a page linking one"
        raise FetchError(f"no weblet at {_show(url)} ({said}), and {_show(well_known)} gave HTTP {body.status}")
    if _looks_like(body) != "json":
        raise FetchError(f"{_show(body.url)} is not a JSON manifest")
    return "well-known", None, _read_published(body, policy)


def _first_difference(a: dict[str, Any], b: dict[str, Any]) -> str:
    return next((key for key in sorted(a.keys() | b.keys()) if a.get(key) != b.get(key)), "?")


async def fetch_weblet(url: str, *, policy: FetchPolicy, progress: Progress | None = None, network: Network = SYSTEM_NETWORK) -> FetchedWeblet:
    """Find and download the weblet at ``url`` (see the module docstring); raise :class:`FetchError` if refused or not found.

    Nothing is installed or stored. The bundle is checked with the bundle
    reader (in a worker thread) before it is returned, so a returned bundle
    is one ``install_weblet`` accepts as far as the bundle goes.
    """
    start = _check_url(url, policy)
    context = policy.ssl_context if policy.ssl_context is not None else httpx.create_ssl_context(trust_env=False)
    transport = _GuardedTransport(policy, network, context)
    timeout = httpx.Timeout(policy.total_timeout, connect=policy.connect_timeout)
    # A cookie jar that keeps nothing: no Set-Cookie ever comes back on a later
    # hop. Handed over as the jar itself: httpx copies an httpx.Cookies into a
    # fresh jar with the default (accept-all) policy.
    jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity", "Accept": "*/*"}
    with trio.move_on_after(policy.total_timeout) as scope:
        async with httpx.AsyncClient(transport=transport, trust_env=False, timeout=timeout, cookies=jar, headers=headers, follow_redirects=False) as client:
            fetcher = _Fetcher(client, policy, progress)
            found_by, body, published = await _discover(fetcher, start, policy)
            manifest_url: str | None = None
            if published is not None:
                manifest_url = str(published.url)
                body = await fetcher.get(published.bundle_url, "bundle", "the bundle")
                if not 200 <= body.status < 300:
                    raise FetchError(f"the bundle at {_show(published.bundle_url)} gave HTTP {body.status}")
    if scope.cancelled_caught:
        raise FetchError(f"timed out: fetching {_show(start)} took longer than {policy.total_timeout:g} s")
    assert body is not None
    digest = hashlib.sha256(body.data).hexdigest()
    if published is not None and published.sha256 is not None and published.sha256 != digest:
        raise FetchError(f"refused: the bundle at {_show(body.url)} does not match the sha256 its manifest gives")
    try:
        bundle = await trio.to_thread.run_sync(read_bundle, body.data)
    except BundleError as e:
        raise FetchError(f"the bundle at {_show(body.url)} is not a valid weblet: {e}") from None
    if published is not None:
        ours, theirs = published.manifest.model_dump(mode="json"), bundle.manifest.model_dump(mode="json")
        if ours != theirs:
            raise FetchError(f"refused: the published manifest and the bundle's weblet.json differ (field {_first_difference(ours, theirs)!r})")
    return FetchedWeblet(
        url=str(start),
        bundle=body.data,
        sha256=digest,
        manifest=bundle.manifest,
        bundle_url=str(body.url),
        manifest_url=manifest_url,
        found_by=found_by,
    )


async def fetch_document(url: str, *, policy: FetchPolicy, what: str = "the document", network: Network = SYSTEM_NETWORK) -> tuple[str, bytes]:
    """GET a small document (a store's catalogue, say) through the same guard: ``(final URL, body)``.

    The same checks as :func:`fetch_weblet` (https only unless the policy
    says otherwise, every address and redirect checked, no cookies or
    credentials, the time cap) and the document cap
    (``policy.max_document_bytes``). Raises :class:`FetchError` for a refusal,
    a failure, or a status other than 2xx.
    """
    start = _check_url(url, policy)
    context = policy.ssl_context if policy.ssl_context is not None else httpx.create_ssl_context(trust_env=False)
    transport = _GuardedTransport(policy, network, context)
    timeout = httpx.Timeout(policy.total_timeout, connect=policy.connect_timeout)
    jar = CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity", "Accept": "application/json, */*"}
    body: _Body | None = None
    with trio.move_on_after(policy.total_timeout) as scope:
        async with httpx.AsyncClient(transport=transport, trust_env=False, timeout=timeout, cookies=jar, headers=headers, follow_redirects=False) as client:
            body = await _Fetcher(client, policy, None).get(start, "document", f"{what} at {_show(start)}")
    if scope.cancelled_caught or body is None:
        raise FetchError(f"timed out: fetching {_show(start)} took longer than {policy.total_timeout:g} s")
    if not 200 <= body.status < 300:
        raise FetchError(f"{what} at {_show(body.url)} gave HTTP {body.status}")
    return str(body.url), body.data
