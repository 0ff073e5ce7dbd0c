"""A TLS and SASL front for the embedded broker in tests, so that every client's security settings meet
a real check.

Tansu 0.6.0's own TLS listener does not complete a handshake, and its SASL users live in its storage
engine, which the in-memory engine cannot be given from outside. So clients connect to this gate
instead, which the broker advertises as its only address. With a certificate the gate speaks TLS.
With users it acts as a Kafka SASL/PLAIN listener: a connection may ask for ApiVersions (forwarded;
the broker's answer lists SaslHandshake and SaslAuthenticate), must then authenticate
(SaslHandshake, then SaslAuthenticate with a known user and password, both answered by the gate), and
is closed if it sends anything else first or gives a wrong password. After that the gate relays bytes.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import struct
import subprocess
import threading
from pathlib import Path

from streamproc.broker import free_port

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
UNSUPPORTED_SASL_MECHANISM, SASL_AUTHENTICATION_FAILED = 33, 58


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


def _handshake_response(correlation_id: int, error: int) -> bytes:
    """SaslHandshake v0/v1: error code and the enabled mechanisms."""
    return struct.pack(">ihih", correlation_id, error, 1, 5) + b"PLAIN"


def _authenticate_response(correlation_id: int, version: int, error: int, message: str | None) -> bytes:
    """SaslAuthenticate v0-v2: error code, message, no server bytes, (v1+) no session lifetime."""
    text = None if message is None else message.encode()
    if version >= 2:  # flexible: response header v1, compact strings and bytes, tagged fields
        compact = b"\x00" if text is None else bytes([len(text) + 1]) + text  # messages here are < 127 bytes
        return struct.pack(">ibh", correlation_id, 0, error) + compact + b"\x01" + struct.pack(">qb", 0, 0)
    body = struct.pack(">ih", correlation_id, error)
    body += struct.pack(">h", -1) if text is None else struct.pack(">h", len(text)) + text
    body += struct.pack(">i", 0)
    return body + (struct.pack(">q", 0) if version >= 1 else b"")


def _plain_credentials(frame: bytes, version: int, body_at: int) -> tuple[str, str]:
    """(user, password) from a SaslAuthenticate request's PLAIN token: authzid NUL user NUL password."""
    if version >= 2:
        _tags, at = _uvarint(frame, body_at)  # the request header's tagged fields (none expected)
        size, at = _uvarint(frame, at)
        token = frame[at:at + size - 1]
    else:
        (size,) = struct.unpack(">i", frame[body_at:body_at + 4])
        token = frame[body_at + 4:body_at + 4 + size]
    parts = token.split(b"\x00")
    if len(parts) != 3:
        return "", ""
    return parts[1].decode(), parts[2].decode()


class KafkaGate:
    """Accepts connections on a free loopback port and relays them to 127.0.0.1:upstream_port: TLS when
    given `cert` and `key`, SASL/PLAIN first when given `users` ({name: password})."""

    def __init__(self, upstream_port: int, cert: Path | None = None, key: Path | None = None,
                 users: dict[str, str] | None = None) -> None:
        self.port, self.upstream_port = free_port(), upstream_port
        self.users = users
        self.context: ssl.SSLContext | None = None
        if cert is not None:
            self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.context.load_cert_chain(str(cert), str(key))
        self.loop = asyncio.new_event_loop()
        self.authenticated: list[tuple[str, str]] = []  # (user, client id) of each authenticated connection
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
                if mechanism != "PLAIN":
                    client_writer.write(_frame(_handshake_response(correlation_id, UNSUPPORTED_SASL_MECHANISM)))
                    self.refused.append(f"{client_id}: mechanism {mechanism}")
                    return False
                client_writer.write(_frame(_handshake_response(correlation_id, 0)))
            elif api_key == SASL_AUTHENTICATE:
                user, password = _plain_credentials(frame, version, body_at)
                if user in self.users and self.users[user] == password:
                    client_writer.write(_frame(_authenticate_response(correlation_id, version, 0, None)))
                    self.authenticated.append((user, client_id))
                    return True
                client_writer.write(_frame(_authenticate_response(
                    correlation_id, version, SASL_AUTHENTICATION_FAILED, "Authentication failed: Invalid username or password")))
                self.refused.append(f"{client_id}: wrong user or password for {user!r}")
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
