"""Apache Kafka on loopback, started by the project for the demo, the tests and the benchmarks.

KRaft mode, every node both broker and controller, from the official jars that Maven fetches once
(`deploy/kafka/pom.xml` -> `var/kafka/lib`). The log lives on disk under the cluster's folder: a
cluster stopped and started again over the same folder keeps its topics, offsets and SCRAM users
(the storage is formatted once). One node is the local broker; three make a cluster with replication
factor 3 and min.insync.replicas 2, for the tests and the demo that lose a broker.

Clients reach each node on its CLIENT listener: PLAINTEXT, or TLS and/or SASL (PLAIN, SCRAM-SHA-256,
SCRAM-SHA-512) with a certificate and users given here; brokers talk to each other and to the
controllers on plaintext listeners of their own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from streamproc.kafka.runtime import KafkaError, die_with_parent, ensure_kafka_jars, find_java, free_port
from streamproc.kafka.security import ClientSecurity

JVM_OPTIONS = [  # as Kafka's own kafka-run-class.sh sets them
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
    "-Djava.awt.headless=true",
]


@dataclass(frozen=True)
class Retention:
    """Broker-wide retention of the topics that are not compacted (changelogs are: their size follows their
    keys): a demo runs for hours within about partitions x bytes_per_partition of disk, the heaviest topic
    (sequence updates, a 50-event window each) keeping its last few minutes at 1,000 events/s."""

    hours: float = 6.0
    bytes_per_partition: int = 128 * 2**20
    segment_bytes: int = 16 * 2**20


@dataclass
class Node:
    """One KRaft node (broker and controller) of a LocalKafka."""

    node_id: int
    folder: Path
    client_port: int
    internal_port: int
    controller_port: int
    process: subprocess.Popen[bytes] | None = None
    log_offset: int = 0  # the size of its log when it was last launched: its start is logged after that

    @property
    def log_path(self) -> Path:
        return self.folder / "server.log"

    def started(self) -> bool:
        """Whether the node has logged "Kafka Server started" since its last launch."""
        try:
            with open(self.log_path, "rb") as log:
                size = log.seek(0, os.SEEK_END)
                log.seek(self.log_offset if size >= self.log_offset else 0)  # rolled over: from the start
                return b"Kafka Server started" in log.read()
        except FileNotFoundError:
            return False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class LocalKafka:
    """A Kafka cluster of `nodes` KRaft nodes on loopback, its storage and logs under `folder`.

    `start()` fetches the jars and formats the storage on first use, starts every node and returns once
    each is in the cluster's metadata; `stop()` shuts them down cleanly (SIGTERM, then SIGKILL). Nodes can
    be killed, paused and restarted one by one (`kill`, `pause`, `resume`, `restart`) to test faults.
    """

    folder: Path
    nodes: int = 1
    port: int = 0  # the first node's client port; 0: free ports
    host: str = "127.0.0.1"
    heap_mb: int = 512
    security: ClientSecurity = field(default_factory=ClientSecurity)
    retention: Retention = field(default_factory=Retention)
    partitions: int = 4  # default for topics created without a count
    extra_properties: Mapping[str, str] = field(default_factory=dict)
    members: list[Node] = field(default_factory=list, init=False)
    started_in_s: float | None = field(default=None, init=False)

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"{self.host}:{n.client_port}" for n in self.members)

    @property
    def replication_factor(self) -> int:
        return min(3, self.nodes)

    @property
    def min_insync_replicas(self) -> int:
        return min(2, self.nodes)

    def client_options(self) -> dict[str, Any]:
        """librdkafka options that reach this cluster over PLAINTEXT (its internal listener if the client
        listener is secured): what the project's own checks and admin calls use."""
        if self.security.protocol == "PLAINTEXT":
            return {"bootstrap.servers": self.bootstrap_servers}
        return {"bootstrap.servers": ",".join(f"{self.host}:{n.internal_port}" for n in self.members)}

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self, timeout_s: float = 120.0) -> LocalKafka:
        """Start every node; on failure (a node exits, or not ready in `timeout_s`) stop those that run."""
        if any(node.alive() for node in self.members):
            raise KafkaError(
                f"Kafka in {self.folder} is already started (use `with LocalKafka(...)` or start(), not both)"
            )
        started = time.monotonic()
        java = find_java()
        lib = ensure_kafka_jars()
        self.folder.mkdir(parents=True, exist_ok=True)
        self._plan_nodes()
        cluster = self._cluster_id()
        for node in self.members:
            self._write_config(node)
        formatting = [
            self._format(java, lib, node, cluster)
            for node in self.members
            if not (node.folder / "log" / "meta.properties").exists()
        ]
        for proc, node in formatting:
            out, _ = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise KafkaError(
                    f"formatting node {node.node_id}'s storage failed: {out.decode(errors='replace')[-2000:]}"
                )
        try:
            for node in self.members:
                self._launch(java, lib, node)
            self.wait_ready(timeout_s - (time.monotonic() - started))
        except BaseException:
            self.stop()  # a node that did start must not outlive the failed start (nothing else would stop it)
            raise
        self.started_in_s = time.monotonic() - started
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop every node: SIGTERM (a controlled shutdown), SIGKILL what is left after `timeout_s`."""
        for node in self.members:
            if node.alive():
                assert node.process is not None
                os.killpg(node.process.pid, signal.SIGCONT)  # a paused node cannot shut down
                node.process.terminate()
        deadline = time.monotonic() + timeout_s
        for node in self.members:
            if node.process is None:
                continue
            try:
                node.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(node.process.pid, signal.SIGKILL)
                node.process.wait(10)
            node.process = None

    def kill(self, index: int) -> None:
        """SIGKILL node `index` (0-based): no controlled shutdown, as a machine that loses power."""
        node = self.members[index]
        if node.alive():
            assert node.process is not None
            os.killpg(node.process.pid, signal.SIGKILL)
            node.process.wait(10)

    def pause(self, index: int = 0) -> None:
        """SIGSTOP node `index`: it keeps its connections but answers nothing (a long GC pause, a frozen VM)."""
        process = self.members[index].process
        assert process is not None, f"node {index} is not running"
        os.killpg(process.pid, signal.SIGSTOP)

    def resume(self, index: int = 0) -> None:
        process = self.members[index].process
        assert process is not None, f"node {index} is not running"
        os.killpg(process.pid, signal.SIGCONT)

    def restart(self, index: int, timeout_s: float = 120.0, wait: bool = True) -> None:
        """Start node `index` again over its storage (after `kill`); returns once it is back in the metadata
        (at once with wait=False)."""
        node = self.members[index]
        if node.alive():
            raise KafkaError(f"node {node.node_id} is running")
        self._launch(find_java(), ensure_kafka_jars(), node)
        if wait:
            self.wait_ready(timeout_s)

    def dead(self) -> list[Node]:
        """The nodes whose process has exited (a broker that died by itself, or was killed)."""
        return [n for n in self.members if n.process is not None and n.process.poll() is not None]

    def pids(self) -> list[int]:
        return [n.process.pid for n in self.members if n.process is not None]

    def wait_ready(self, timeout_s: float) -> None:
        """Return once every running node is in the cluster's metadata; raise with its log when one exits."""
        deadline = time.monotonic() + max(timeout_s, 1.0)
        admin = AdminClient(
            {**self.client_options(), "log_level": 2}
        )  # "connection refused" until it listens
        want = {n.node_id for n in self.members if n.alive()}
        seen: set[int] = set()
        while time.monotonic() < deadline:
            for node in self.dead():
                raise KafkaError(
                    f"Kafka node {node.node_id} exited with code {node.process.returncode}; "  # type: ignore[union-attr]
                    f"its log ({node.log_path}) ends:\n{self.log_tail(node)}"
                )
            # A node killed and started again stays in the others' metadata until its session expires:
            # its own "started" line says that this incarnation serves.
            if all(n.started() for n in self.members if n.alive()):
                try:
                    seen = set(admin.list_topics(timeout=1.0).brokers)
                    if want <= seen:
                        return
                except Exception:  # noqa: BLE001 - not answering yet
                    pass
            time.sleep(0.1)
        raise KafkaError(
            f"Kafka on {self.bootstrap_servers} not ready in {timeout_s:.0f} s (nodes in the metadata: "
            f"{sorted(seen)} of {sorted(want)}); log of node {self.members[0].node_id}:\n"
            f"{self.log_tail(self.members[0])}"
        )

    def log_tail(self, node: Node, chars: int = 3000) -> str:
        text = ""
        for path in (node.folder / "stdout.log", node.log_path):
            if path.exists():
                text += path.read_text(errors="replace")[-chars:]
        return text

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- set-up --------------------------------------------------------------------------------------
    def _plan_nodes(self) -> None:
        """Ports of every node: kept from the cluster's last start (its nodes know each other by them)."""
        if self.members:
            return
        saved_path = self.folder / "cluster.json"
        saved = json.loads(saved_path.read_text()) if saved_path.exists() else {}
        ports = saved.get("ports") if saved.get("nodes") == self.nodes else None
        if ports is None or (self.port and ports[0][0] != self.port):
            ports = [
                [
                    self.port + i if self.port else free_port(self.host),
                    free_port(self.host),
                    free_port(self.host),
                ]
                for i in range(self.nodes)
            ]
        self.members = [Node(i + 1, self.folder / f"node-{i + 1}", *ports[i]) for i in range(self.nodes)]
        saved_path.write_text(json.dumps({**saved, "nodes": self.nodes, "ports": ports}))

    def _cluster_id(self) -> str:
        saved_path = self.folder / "cluster.json"
        saved = json.loads(saved_path.read_text())
        if "cluster_id" not in saved:
            # a KRaft cluster id: 16 random bytes, base64url without padding (what `kafka-storage random-uuid` prints)
            import base64

            saved["cluster_id"] = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            saved_path.write_text(json.dumps(saved))
        return str(saved["cluster_id"])

    def properties(self, node: Node) -> dict[str, str]:
        voters = ",".join(f"{n.node_id}@{self.host}:{n.controller_port}" for n in self.members)
        rf, isr = str(self.replication_factor), str(self.min_insync_replicas)
        props = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": (
                f"CLIENT://{self.host}:{node.client_port},INTERNAL://{self.host}:{node.internal_port},"
                f"CONTROLLER://{self.host}:{node.controller_port}"
            ),
            "advertised.listeners": f"CLIENT://{self.host}:{node.client_port},INTERNAL://{self.host}:{node.internal_port}",
            "listener.security.protocol.map": f"CLIENT:{self.security.protocol},INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "INTERNAL",
            "controller.listener.names": "CONTROLLER",
            "log.dirs": str(node.folder / "log"),
            "num.partitions": str(self.partitions),
            "default.replication.factor": rf,
            "min.insync.replicas": isr,
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": "8",  # 50 by default: slower to create, more to load on a restart
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": isr,
            "transaction.state.log.num.partitions": "8",
            # A node killed and started again cannot register until its old registration's session expires
            # (9 s by default); on loopback, heartbeats do not get lost.
            "broker.session.timeout.ms": "5000",
            "broker.heartbeat.interval.ms": "1000",
            "group.initial.rebalance.delay.ms": "0",  # a lone test consumer need not wait 3 s for others
            "auto.create.topics.enable": "false",  # streamproc creates its topics with their partition count
            "log.retention.ms": str(int(self.retention.hours * 3_600_000)),
            "log.retention.bytes": str(self.retention.bytes_per_partition),
            "log.segment.bytes": str(self.retention.segment_bytes),
            "log.retention.check.interval.ms": "60000",
            # a loopback machine of 2 cores: fewer threads than a server's defaults
            "num.network.threads": "2",
            "num.io.threads": "4",
            "background.threads": "4",
            "num.recovery.threads.per.data.dir": "2",
        }
        props |= self.security.listener_properties(node.folder)
        props |= dict(self.extra_properties)
        return props

    def _write_config(self, node: Node) -> None:
        node.folder.mkdir(parents=True, exist_ok=True)
        lines = [f"{k}={v}" for k, v in self.properties(node).items()]
        (node.folder / "server.properties").write_text("\n".join(lines) + "\n")
        (node.folder / "log4j.properties").write_text(LOG4J.format(log=node.log_path))

    def _format(self, java: str, lib: Path, node: Node, cluster: str) -> tuple[subprocess.Popen[bytes], Node]:
        argv = [
            java,
            f"-Dlog4j.configuration=file:{node.folder / 'log4j.properties'}",
            "-cp",
            f"{lib}/*",
            "kafka.tools.StorageTool",
            "format",
            "--ignore-formatted",
            f"--cluster-id={cluster}",
            "-c",
            str(node.folder / "server.properties"),
            *self.security.scram_format_args(),
        ]
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT), node

    def _launch(self, java: str, lib: Path, node: Node) -> None:
        argv = [
            java,
            f"-Xmx{self.heap_mb}m",
            f"-Xms{min(self.heap_mb, 256)}m",
            *JVM_OPTIONS,
            f"-Dlog4j.configuration=file:{node.folder / 'log4j.properties'}",
            f"-Dkafka.logs.dir={node.folder}",
            "-cp",
            f"{lib}/*",
            "kafka.Kafka",
            str(node.folder / "server.properties"),
        ]
        node.log_offset = node.log_path.stat().st_size if node.log_path.exists() else 0
        with open(node.folder / "stdout.log", "ab") as out:
            node.process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent
            )


LOG4J = """\
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File={log}
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.kafka.log.LogCleaner=INFO
log4j.logger.state.change.logger=WARN
log4j.logger.org.apache.kafka.storage.internals.log=WARN
log4j.logger.kafka.log=WARN
log4j.logger.org.apache.kafka.controller=INFO
"""
