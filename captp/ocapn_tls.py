"""The ``tls-ed25519`` netlayer: OCapN between real peers, over TLS 1.3.

Each peer has a long-lived Ed25519 key; its designator is that public key in
lowercase base32 (52 characters, like an onion service's), so a locator
names the key the peer must hold:
``ocapn://<base32 key>.tls-ed25519?host=192.0.2.7&port=9045``.

- **The listener proves its key in the TLS handshake.** Its certificate is
  self-signed and its key IS the Ed25519 key; TLS 1.3's CertificateVerify
  proves the listener holds it. The dialler does not judge the certificate
  by any authority: it takes the key out of it and compares it with the
  designator it dialled, and refuses the connection if they differ.
- **The dialler proves its key inside the channel.** Python's ``ssl`` cannot
  accept a self-signed client certificate (it has no verification callback,
  and OpenSSL refuses a chain it cannot anchor), and TLS 1.3 keeps client
  certificates private anyway. So right after the handshake the listener
  sends a fresh 32-byte nonce, and the dialler answers with its public key
  and an Ed25519 signature of (``CLIENT_PROOF_CONTEXT``, the listener's key,
  its own key, the nonce); the listener checks it and answers one byte,
  0x01. The listener's key in the signed text stops a listener that a
  client dialled from relaying the proof to a third peer to pass as that
  client; the nonce stops a replay.

Then both ``PeerConnection``s carry the other's designator (authenticated)
and the stream is the TLS stream. TLS 1.3 only; no session tickets; the
handshake and proof must finish within ``HANDSHAKE_TIMEOUT``, each in the
connection's own task, so a silent or garbage client delays no one else;
at most ``MAX_PENDING_HANDSHAKES`` are under way at once, and at most
``MAX_CONNECTIONS_PER_ADDRESS`` connections (handshaking or proved) come
from one address at once.

Why TLS 1.3 and not Noise: the standard library's ``ssl`` (OpenSSL) and
``cryptography`` are maintained, audited and already dependencies; the
Python Noise libraries on PyPI (``noiseprotocol``, ``dissononce``) have had
no release for years. See docs/ocapn.md.
"""

from __future__ import annotations

import base64
import datetime
import logging
import os
import re
import secrets
import ssl
import tempfile
from pathlib import Path

import trio
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from .ocapn_keys import public_key_bytes
from .ocapn_locators import PeerLocator
from .ocapn_netlayers import (
    Handler,
    NetlayerError,
    PeerConnection,
    address_groups,
    address_of,
    dial_tcp,
    host_and_port,
    run_handler,
    serve_tcp,
)

__all__ = [
    "CLIENT_PROOF_BYTES",
    "CLIENT_PROOF_CONTEXT",
    "HANDSHAKE_TIMEOUT",
    "MAX_CONNECTIONS_PER_ADDRESS",
    "MAX_PENDING_HANDSHAKES",
    "TLS_NETLAYER",
    "TlsNetlayer",
    "designator_for",
    "public_key_for",
    "sign_client_proof",
    "verify_client_proof",
]

log = logging.getLogger("captp.ocapn")

TLS_NETLAYER = "tls-ed25519"

#: Seconds from TCP accept (or connect) to a checked proof. A TLS 1.3
#: handshake and the proof are two round trips and a few signatures: well
#: under a second on any network ocapd runs on. A client that takes longer
#: is gone or stalling a slot on purpose.
HANDSHAKE_TIMEOUT = 10.0

#: Connections at once between accept and a checked proof; more are closed
#: at once. Peers connect once and keep the connection, so a daemon sees a
#: few handshakes at a time; the cap keeps a flood of silent connections
#: from taking the whole process's file descriptors (the CLI socket, the
#: gateway, the workers' pipes), at the price of new peers waiting out the
#: flood.
MAX_PENDING_HANDSHAKES = 64

#: Connections at once from one address (an IPv4 address, an IPv6 /64:
#: ``ocapn_netlayers.address_key``; and twice that from one IPv6 /48,
#: ``address_groups``), from accept until closed, handshakes included; more
#: are closed at once. A daemon keeps one connection per
#: peer (two for a moment while crossed hellos settle), so 16 leaves room
#: for several daemons behind one NAT, while one address alone can hold
#: only a quarter of the handshake slots above, and so cannot shut other
#: peers out by itself.
MAX_CONNECTIONS_PER_ADDRESS = 16

#: Domain separation for the dialler's signature: it can never be taken for
#: any other signature made with the same key.
CLIENT_PROOF_CONTEXT = b"ocapd tls-ed25519 client proof v1\x00"
_NONCE_BYTES = 32
_KEY_BYTES = 32
_SIGNATURE_BYTES = 64
#: The dialler's answer: its public key, then its signature.
CLIENT_PROOF_BYTES = _KEY_BYTES + _SIGNATURE_BYTES
_ACCEPTED = b"\x01"

_DESIGNATOR = re.compile(r"[a-z2-7]{52}\Z")
#: The certificate is never judged by dates (only its key counts), but it
#: must have some; these keep it valid for any clock a peer may have.
_CERT_NOT_BEFORE = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
_CERT_NOT_AFTER = datetime.datetime(9999, 12, 31, tzinfo=datetime.UTC)


def designator_for(key: Ed25519PublicKey) -> str:
    """The designator of a peer holding ``key``: its 32 bytes in lowercase base32, unpadded."""
    return base64.b32encode(public_key_bytes(key)).decode("ascii").rstrip("=").lower()


def public_key_for(designator: str) -> Ed25519PublicKey:
    """The key a ``tls-ed25519`` designator names; ``NetlayerError`` if it names none."""
    if not isinstance(designator, str) or not _DESIGNATOR.match(designator):
        raise NetlayerError(f"designator {designator[:60]!r} is not a {TLS_NETLAYER} key (52 base32 characters, a-z and 2-7)")
    raw = base64.b32decode(designator.upper() + "====")
    if designator_for(Ed25519PublicKey.from_public_bytes(raw)) != designator:
        raise NetlayerError(f"designator {designator!r} is not the canonical base32 of a key (its last character carries stray bits)")
    return Ed25519PublicKey.from_public_bytes(raw)


def _proof_text(server_key: Ed25519PublicKey, client_key: Ed25519PublicKey, nonce: bytes) -> bytes:
    return CLIENT_PROOF_CONTEXT + public_key_bytes(server_key) + public_key_bytes(client_key) + nonce


def sign_client_proof(client_key: Ed25519PrivateKey, server_key: Ed25519PublicKey, nonce: bytes) -> bytes:
    """The dialler's proof for the listener holding ``server_key`` that sent ``nonce``."""
    public = client_key.public_key()
    return public_key_bytes(public) + client_key.sign(_proof_text(server_key, public, nonce))


def verify_client_proof(proof: bytes, server_key: Ed25519PublicKey, nonce: bytes) -> Ed25519PublicKey:
    """The dialler's key, once its proof verifies; ``NetlayerError`` otherwise."""
    if len(proof) != CLIENT_PROOF_BYTES:
        raise NetlayerError(f"the client's proof is {len(proof)} bytes, not {CLIENT_PROOF_BYTES}")
    client_key = Ed25519PublicKey.from_public_bytes(proof[:_KEY_BYTES])
    try:
        client_key.verify(proof[_KEY_BYTES:], _proof_text(server_key, client_key, nonce))
    except InvalidSignature:
        raise NetlayerError("the client's proof of its key does not verify") from None
    return client_key


def _certificate_pem(key: Ed25519PrivateKey) -> bytes:
    """A self-signed certificate for ``key`` (subject: its designator), then the key, in PEM."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, designator_for(key.public_key()))])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_CERT_NOT_BEFORE)
        .not_valid_after(_CERT_NOT_AFTER)
        .sign(key, None)  # Ed25519 signs without a separate hash
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return certificate.public_bytes(serialization.Encoding.PEM) + key_pem


def _load_identity(context: ssl.SSLContext, pem: bytes) -> None:
    """Give ``context`` the certificate and key in ``pem``.

    ``ssl`` loads them only from a file. An anonymous memory file keeps the
    private key off the disk where Linux offers one; elsewhere a private
    temporary directory (mode 0700) holds it for the moment of loading.
    """
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None:
        fd = memfd_create("ocapd-tls-identity", os.MFD_CLOEXEC)
        try:
            os.write(fd, pem)
            context.load_cert_chain(f"/proc/self/fd/{fd}")
            return
        except OSError:
            pass  # no /proc: fall back below
        finally:
            os.close(fd)
    with tempfile.TemporaryDirectory(prefix="ocapd-tls-") as directory:
        path = Path(directory) / "identity.pem"
        path.touch(mode=0o600)
        path.write_bytes(pem)
        context.load_cert_chain(path)


def _certificate_key(der: bytes | None) -> Ed25519PublicKey:
    if der is None:
        raise NetlayerError("the peer sent no certificate")
    try:
        key = x509.load_der_x509_certificate(der).public_key()
    except ValueError:
        raise NetlayerError("the peer's certificate cannot be read") from None
    if not isinstance(key, Ed25519PublicKey):
        raise NetlayerError(f"the peer's certificate holds a {type(key).__name__}, not an Ed25519 key")
    return key


async def _receive_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        if not chunk:
            raise trio.BrokenResourceError("the stream ended")
        data += chunk
    return data


class TlsNetlayer:
    """The ``tls-ed25519`` netlayer for a peer holding ``key`` (see the module's docstring).

    ``key`` is the peer's long-lived identity, not an OCapN session key: keep
    it with the peer's state, since a new key is a new designator and every
    locator given out before names the old one. ``handshake_timeout`` bounds
    the handshake and the proof, both ways; ``max_pending_handshakes`` the
    incoming connections that have not yet proved their key;
    ``max_connections_per_address`` the incoming connections from one address.
    """

    name = TLS_NETLAYER

    def __init__(
        self,
        key: Ed25519PrivateKey,
        *,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        max_pending_handshakes: int = MAX_PENDING_HANDSHAKES,
        max_connections_per_address: int = MAX_CONNECTIONS_PER_ADDRESS,
    ) -> None:
        self._key = key
        self.handshake_timeout = handshake_timeout
        self._handshakes = trio.CapacityLimiter(max_pending_handshakes)
        self.max_connections_per_address = max_connections_per_address
        #: Incoming connections open now, by ``address_key`` (no entry: none).
        self._per_address: dict[str, int] = {}
        self.designator = designator_for(key.public_key())
        #: The location announced once ``serve`` has started.
        self.location: PeerLocator | None = None
        pem = _certificate_pem(key)
        self._server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._server_context.minimum_version = ssl.TLSVersion.TLSv1_3
        self._server_context.num_tickets = 0
        _load_identity(self._server_context, pem)
        self._client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._client_context.minimum_version = ssl.TLSVersion.TLSv1_3
        # The listener's key is checked against the designator after the
        # handshake; no authority or host name has a say.
        self._client_context.check_hostname = False
        self._client_context.verify_mode = ssl.CERT_NONE

    async def serve(
        self,
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[PeerLocator] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` (0: any free port) until cancelled; see ``ocapn_netlayers``.

        Only connections that complete the handshake and prove their key
        reach ``handler``; the others are logged (at INFO) and closed.
        """

        def location_for(bound_port: int) -> PeerLocator:
            self.location = PeerLocator(self.designator, TLS_NETLAYER, {"host": host, "port": str(bound_port)})
            return self.location

        async def accept(tcp: trio.SocketStream) -> None:
            await self._accept(tcp, handler)

        await serve_tcp(accept, host, port, location_for, task_status)

    async def _accept(self, tcp: trio.SocketStream, handler: Handler) -> None:
        address = address_of(tcp)
        if address is None:  # gone before we looked
            await trio.aclose_forcefully(tcp)
            return
        groups = address_groups(address)
        for group, scale in groups:
            held = self._per_address.get(group, 0)
            if held >= self.max_connections_per_address * scale:
                log.info("%s: refused a connection from %s: %s already has %d open", TLS_NETLAYER, address, group, held)
                await trio.aclose_forcefully(tcp)
                return
        for group, _ in groups:
            self._per_address[group] = self._per_address.get(group, 0) + 1
        try:
            await self._accept_from(tcp, address, handler)
        finally:
            for group, _ in groups:
                left = self._per_address[group] - 1
                if left:
                    self._per_address[group] = left
                else:
                    del self._per_address[group]

    async def _accept_from(self, tcp: trio.SocketStream, address: str, handler: Handler) -> None:
        try:
            self._handshakes.acquire_nowait()
        except trio.WouldBlock:
            log.info("%s: refused a connection: %d handshakes already in progress", TLS_NETLAYER, self._handshakes.total_tokens)
            await trio.aclose_forcefully(tcp)
            return
        try:
            accepted = await self._handshake(tcp)
        finally:
            self._handshakes.release()
        if accepted is None:
            return
        tls, client_key = accepted
        connection = PeerConnection(
            tls,
            TLS_NETLAYER,
            outbound=False,
            peer_designator=designator_for(client_key),
            remote_address=address,
            details={"public_key": public_key_bytes(client_key)},
        )
        await run_handler(handler, connection)

    async def _handshake(self, tcp: trio.SocketStream) -> tuple[trio.SSLStream[trio.SocketStream], Ed25519PublicKey] | None:
        """The TLS stream and the dialler's key once it has proved it, or None (and the connection closed)."""
        tls = trio.SSLStream(tcp, self._server_context, server_side=True)
        try:
            with trio.fail_after(self.handshake_timeout):
                await tls.do_handshake()
                nonce = secrets.token_bytes(_NONCE_BYTES)
                await tls.send_all(nonce)
                proof = await _receive_exactly(tls, CLIENT_PROOF_BYTES)
                client_key = verify_client_proof(proof, self._key.public_key(), nonce)
                await tls.send_all(_ACCEPTED)
        except (trio.BrokenResourceError, trio.TooSlowError, NetlayerError) as error:
            log.info("%s: refused a connection: %s", TLS_NETLAYER, _reason(error))
            await trio.aclose_forcefully(tls)
            return None
        except Exception:
            # Not a peer's doing we know of; still, one connection must not end the listener.
            log.exception("%s: a handshake failed unexpectedly; closing that connection", TLS_NETLAYER)
            await trio.aclose_forcefully(tls)
            return None
        return tls, client_key

    async def connect(self, locator: PeerLocator) -> PeerConnection:
        """A TLS stream to the peer ``locator`` names, once it has shown it holds the designator's key."""
        host, port = host_and_port(locator, TLS_NETLAYER)
        expected = public_key_for(locator.designator)
        tcp = await dial_tcp(locator, host, port)
        tls = trio.SSLStream(tcp, self._client_context, server_hostname=None)
        try:
            with trio.fail_after(self.handshake_timeout):
                try:
                    await tls.do_handshake()
                except trio.BrokenResourceError as error:
                    raise NetlayerError(f"cannot reach {locator.to_uri()}: the TLS handshake failed ({_reason(error)}); is it a {TLS_NETLAYER} peer?") from None
                peer_key = _certificate_key(tls.getpeercert(binary_form=True))
                if public_key_bytes(peer_key) != public_key_bytes(expected):
                    raise NetlayerError(
                        f"{host}:{port} answered, but it is not the peer {locator.to_uri()} names: it holds the key of {designator_for(peer_key)}"
                    )
                nonce = await _receive_exactly(tls, _NONCE_BYTES)
                await tls.send_all(sign_client_proof(self._key, expected, nonce))
                if await _receive_exactly(tls, len(_ACCEPTED)) != _ACCEPTED:
                    raise NetlayerError(f"{locator.to_uri()} did not accept this peer's proof of its key")
        except trio.TooSlowError:
            await trio.aclose_forcefully(tls)
            raise NetlayerError(f"cannot reach {locator.to_uri()}: the TLS handshake took more than {self.handshake_timeout:g} s") from None
        except trio.BrokenResourceError as error:
            await trio.aclose_forcefully(tls)
            raise NetlayerError(f"{locator.to_uri()} closed the connection while it was being set up ({_reason(error)})") from None
        except BaseException:
            await trio.aclose_forcefully(tls)
            raise
        return PeerConnection(
            tls,
            TLS_NETLAYER,
            outbound=True,
            peer_designator=locator.designator,
            remote_address=address_of(tcp),
            details={"public_key": public_key_bytes(peer_key)},
        )


def _reason(error: BaseException) -> str:
    """One line on why a TLS connection failed: the SSL error under trio's wrapper if there is one."""
    cause = error.__cause__ or error.__context__
    if isinstance(cause, ssl.SSLError):
        return cause.reason or str(cause).splitlines()[0]
    text = str(error).splitlines()[0] if str(error) else ""
    return text or type(error).__name__
