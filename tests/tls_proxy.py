"""A TLS front for the embedded broker in tests: Tansu 0.6.0's own TLS listener does not complete a
handshake, so clients speak TLS to this proxy, which relays the bytes to the broker's plain listener.
The broker advertises the proxy's address, so every connection a client opens goes through TLS."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import threading
from pathlib import Path

from streamproc.broker import free_port


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


class TlsProxy:
    """Accepts TLS on a free loopback port and relays each connection to 127.0.0.1:upstream_port."""

    def __init__(self, upstream_port: int, cert: Path, key: Path) -> None:
        self.port, self.upstream_port = free_port(), upstream_port
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(str(cert), str(key))
        self.loop = asyncio.new_event_loop()
        self.connections = 0
        started = threading.Event()
        self.thread = threading.Thread(target=self._serve, args=(started,), name="tls-proxy", daemon=True)
        self.thread.start()
        if not started.wait(10):
            raise RuntimeError("the TLS proxy did not start")

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
            self.connections += 1
            broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
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
        async def shutdown() -> None:  # on the proxy's loop: stop accepting, then end every relay
            self.server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop)
        self.thread.join(10)
