"""A TLS and SASL front for the embedded broker in tests, so that every client's security settings meet
a real check.

Tansu 0.6.0's own TLS listener does not complete a handshake, and its SASL users live in its storage
engine, which the in-memory engine cannot be given from outside. So clients connect to this gate
instead, which the broker advertises as its only address. With a certificate the gate speaks TLS.
With users it acts as a Kafka SASL listener for PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, as
Kafka runs it: two SaslAuthenticate round trips): a connection may ask for ApiVersions (forwarded; the
broker's answer lists SaslHandshake and SaslAuthenticate), must then authenticate (SaslHandshake,
then SaslAuthenticate with a known user and password, both answered by the gate), and is closed if it
sends anything else first or gives a wrong password. After that the gate relays bytes.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import shutil
import ssl
import struct
import subprocess
import threading
from pathlib import Path

from streamproc.broker import free_port

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
UNSUPPORTED_SASL_MECHANISM, SASL_AUTHENTICATION_FAILED = 33, 58
SCRAM_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
MECHANISMS = ("PLAIN", *SCRAM_HASHES)
SCRAM_ITERATIONS = 4096  # Kafka's default for SCRAM credentials


def self_signed_certificate(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """(certificate, key) for `host`, made with the openssl command line; the certificate is its own CA."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the TLS tests need the openssl command (Debian package openssl)")
    cert, key = folder / "broker.pem", folder / "broker.key"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={host}",
                    "-addext", f"subjectAltName=IP:{host}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def _uvarint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def _frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(size)


def _to_uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _handshake_response(correlation_id: int, error: int) -> bytes:
    """SaslHandshake v0/v1: error code and the enabled mechanisms."""
    body = struct.pack(">ihi", correlation_id, error, len(MECHANISMS))
    return body + b"".join(struct.pack(">h", len(m)) + m.encode() for m in MECHANISMS)


def _authenticate_response(correlation_id: int, version: int, error: int, message: str | None,
                           server_bytes: bytes = b"") -> bytes:
    """SaslAuthenticate v0-v2: error code, message, the server's SASL bytes, (v1+) no session lifetime."""
    text = None if message is None else message.encode()
    if version >= 2:  # flexible: response header v1, compact strings and bytes, tagged fields
        compact = b"\x00" if text is None else _to_uvarint(len(text) + 1) + text
        return (struct.pack(">ibh", correlation_id, 0, error) + compact + _to_uvarint(len(server_bytes) + 1)
                + server_bytes + struct.pack(">qb", 0, 0))
    body = struct.pack(">ih", correlation_id, error)
    body += struct.pack(">h", -1) if text is None else struct.pack(">h", len(text)) + text
    body += struct.pack(">i", len(server_bytes)) + server_bytes
    return body + (struct.pack(">q", 0) if version >= 1 else b"")


def _auth_bytes(frame: bytes, version: int, body_at: int) -> bytes:
    """The client's SASL bytes in a SaslAuthenticate request."""
    if version >= 2:
        _tags, at = _uvarint(frame, body_at)  # the request header's tagged fields (none expected)
        size, at = _uvarint(frame, at)
        return frame[at:at + size - 1]
    (size,) = struct.unpack(">i", frame[body_at:body_at + 4])
    return frame[body_at + 4:body_at + 4 + size]


def _plain_credentials(token: bytes) -> tuple[str, str]:
    """(user, password) from a PLAIN token: authzid NUL user NUL password."""
    parts = token.split(b"\x00")
    if len(parts) != 3:
        return "", ""
    return parts[1].decode(), parts[2].decode()


def _scram_attributes(message: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in message.split(",") if "=" in part)


class ScramExchange:
    """The server side of one SCRAM login (RFC 5802): `first` answers the client-first message, `final`
    checks the client's proof and returns the server's signature (None: wrong password)."""

    def __init__(self, mechanism: str, users: dict[str, str]) -> None:
        self.hash = SCRAM_HASHES[mechanism]
        self.users = users
        self.user = ""
        self.nonce: str | None = None  # the client's nonce and ours, set by `first`
        self.salt = b""
        self.client_first_bare = self.server_first = ""

    def _hmac(self, key: bytes, data: bytes) -> bytes:
        return hmac.new(key, data, self.hash).digest()

    def first(self, client_first: bytes) -> bytes | None:
        """The server-first message, or None for an unknown user."""
        gs2_header, _, bare = client_first.decode().partition(",,")  # "n,," (no channel binding, no authzid)
        attributes = _scram_attributes(bare)
        self.user = attributes.get("n", "").replace("=2C", ",").replace("=3D", "=")
        if gs2_header not in ("n", "y") or self.user not in self.users or "r" not in attributes:
            return None
        self.salt = secrets.token_bytes(16)
        self.nonce = attributes["r"] + secrets.token_urlsafe(18)
        self.client_first_bare = bare
        self.server_first = f"r={self.nonce},s={base64.b64encode(self.salt).decode()},i={SCRAM_ITERATIONS}"
        return self.server_first.encode()

    def final(self, client_final: bytes) -> bytes | None:
        """The server-final message when the client proved the password, else None."""
        message = client_final.decode()
        without_proof, _, proof_part = message.rpartition(",p=")
        if self.nonce is None or _scram_attributes(without_proof).get("r") != self.nonce or not proof_part:
            return None
        salted = hashlib.pbkdf2_hmac(self.hash, self.users[self.user].encode(), self.salt, SCRAM_ITERATIONS)
        client_key = self._hmac(salted, b"Client Key")
        auth_message = f"{self.client_first_bare},{self.server_first},{without_proof}".encode()
        signature = self._hmac(hashlib.new(self.hash, client_key).digest(), auth_message)
        proof = base64.b64decode(proof_part)
        if len(proof) != len(signature):
            return None
        if not hmac.compare_digest(bytes(a ^ b for a, b in zip(proof, signature, strict=True)), client_key):
            return None
        server_signature = self._hmac(self._hmac(salted, b"Server Key"), auth_message)
        return b"v=" + base64.b64encode(server_signature)


class KafkaGate:
    """Accepts connections on a free loopback port and relays them to 127.0.0.1:upstream_port: TLS when
    given `cert` and `key`, a SASL login first (PLAIN or SCRAM, as the client asks) when given `users`
    ({name: password})."""

    def __init__(self, upstream_port: int, cert: Path | None = None, key: Path | None = None,
                 users: dict[str, str] | None = None) -> None:
        self.port, self.upstream_port = free_port(), upstream_port
        self.users = users
        self.context: ssl.SSLContext | None = None
        if cert is not None:
            self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.context.load_cert_chain(str(cert), str(key))
        self.loop = asyncio.new_event_loop()
        self.authenticated: list[tuple[str, str, str]] = []  # (user, client id, mechanism) of each login
        self.refused: list[str] = []  # why each connection was closed before it authenticated
        started = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(started,), name="kafka-gate", daemon=True)
        self.thread.start()
        if not started.wait(10):
            raise RuntimeError("the Kafka gate did not start")

    async def _authenticate(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter,
                            broker_reader: asyncio.StreamReader, broker_writer: asyncio.StreamWriter) -> bool:
        """Serve one connection's requests until it has authenticated (True) or must be closed (False)."""
        assert self.users is not None
        mechanism, scram = "", None
        while True:
            frame = await _read_frame(client_reader)
            api_key, version, correlation_id, id_size = struct.unpack(">hhih", frame[:10])
            client_id = frame[10:10 + max(id_size, 0)].decode()
            body_at = 10 + max(id_size, 0)
            if api_key == API_VERSIONS:
                broker_writer.write(_frame(frame))
                client_writer.write(_frame(await _read_frame(broker_reader)))
            elif api_key == SASL_HANDSHAKE:
                (size,) = struct.unpack(">h", frame[body_at:body_at + 2])
                mechanism = frame[body_at + 2:body_at + 2 + size].decode()
                if mechanism not in MECHANISMS:
                    client_writer.write(_frame(_handshake_response(correlation_id, UNSUPPORTED_SASL_MECHANISM)))
                    self.refused.append(f"{client_id}: mechanism {mechanism}")
                    return False
                scram = ScramExchange(mechanism, self.users) if mechanism in SCRAM_HASHES else None
                client_writer.write(_frame(_handshake_response(correlation_id, 0)))
            elif api_key == SASL_AUTHENTICATE:
                token = _auth_bytes(frame, version, body_at)
                if mechanism == "PLAIN":
                    user, password = _plain_credentials(token)
                    admitted, reply = user in self.users and self.users[user] == password, b""
                elif scram is not None and scram.nonce is None:  # the client-first message
                    server_first = scram.first(token)
                    user = scram.user
                    if server_first is not None:
                        client_writer.write(_frame(_authenticate_response(correlation_id, version, 0, None, server_first)))
                        await client_writer.drain()
                        continue
                    admitted, reply = False, b""
                else:  # the client-final message, with the proof
                    assert scram is not None
                    user, server_final = scram.user, scram.final(token)
                    admitted, reply = server_final is not None, server_final or b""
                if admitted:
                    client_writer.write(_frame(_authenticate_response(correlation_id, version, 0, None, reply)))
                    self.authenticated.append((user, client_id, mechanism))
                    return True
                client_writer.write(_frame(_authenticate_response(
                    correlation_id, version, SASL_AUTHENTICATION_FAILED, "Authentication failed: Invalid username or password")))
                self.refused.append(f"{client_id}: wrong user or password for {user!r} ({mechanism})")
                return False
            else:
                self.refused.append(f"{client_id}: request {api_key} before authenticating")
                return False
            await client_writer.drain()

    def _serve(self, started: threading.Event) -> None:
        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(1 << 16):
                    writer.write(data)
                    await writer.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                writer.close()

        async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
            broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            if self.users is not None:
                try:
                    admitted = await self._authenticate(client_reader, client_writer, broker_reader, broker_writer)
                    await client_writer.drain()
                except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
                    admitted = False
                if not admitted:
                    client_writer.close()
                    broker_writer.close()
                    return
            await asyncio.gather(relay(client_reader, broker_writer), relay(broker_reader, client_writer))

        async def main() -> None:
            self.server = await asyncio.start_server(handle, "127.0.0.1", self.port, ssl=self.context)
            started.set()
            async with self.server:
                await self.server.serve_forever()

        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(main())
        except asyncio.CancelledError:
            pass

    def close(self) -> None:
        async def shutdown() -> None:  # on the gate's loop: stop accepting, then end every relay
            self.server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop)
        self.thread.join(10)
