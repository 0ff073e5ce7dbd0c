"""create_app(settings): the Faust app, its topics and its RocksDB tables."""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass

import faust
from faust.types import TableT

from streamproc.config import Settings

USER_TABLE = "user-state"
TERMINAL_TABLE = "terminal-state"


@dataclass(frozen=True)
class Topology:
    app: faust.App
    clicks: faust.TopicT
    transactions: faust.TopicT
    tx_inputs: faust.TopicT  # transactions + fraud labels, both routed by terminal
    tx_by_terminal: faust.TopicT
    user_events: faust.TopicT  # validated events re-keyed by user_id (transactions with terminal aggregates)
    user_inputs: faust.TopicT  # clicks + user events, both keyed by user_id
    sequence_updates: faust.TopicT
    dead_letters: faust.TopicT
    users: TableT
    terminals: TableT


def tls_context(settings: Settings) -> ssl.SSLContext:
    """Verify the brokers against settings.ssl_ca_location (default: the system's CAs); present the
    client certificate when one is set (mutual TLS)."""
    ca = settings.ssl_ca_location
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    if settings.ssl_certificate_location and settings.ssl_key_location:
        context.load_cert_chain(str(settings.ssl_certificate_location), str(settings.ssl_key_location))
    return context


def broker_credentials(settings: Settings) -> faust.auth.Credentials | None:
    """The Faust (aiokafka) form of settings.security_protocol, as kafka_security() gives librdkafka."""
    protocol = settings.security_protocol
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(tls_context(settings))
    assert settings.sasl_password is not None  # Settings checks it
    return faust.SASLCredentials(
        username=settings.sasl_username,
        password=settings.sasl_password.get_secret_value(),
        mechanism=settings.sasl_mechanism,
        ssl_context=tls_context(settings) if protocol == "SASL_SSL" else None,
    )


def faust_internal_topics(settings: Settings) -> dict[str, tuple[int, dict[str, str]]]:
    """The topics Faust declares for itself (table changelogs, the assignor's leader topic): name ->
    (partitions, config). The worker creates them before Faust starts: a topic Faust creates while it
    joins its group can miss the group's first metadata, and its partitions are then assigned to nobody
    (seen on Kafka: "Ignoring missing topic: ...-terminal-state-changelog", and no terminal state)."""
    changelogs = {
        f"{settings.app_id}-{table}-changelog": (settings.partitions, {"cleanup.policy": "compact"})
        for table in (USER_TABLE, TERMINAL_TABLE)
    }
    return changelogs | {f"{settings.app_id}-__assignor-__leader": (1, {})}


def rocksdb_options(settings: Settings) -> dict[str, int]:
    """Each table partition's RocksDB memory: at most two memtables and a block cache (Faust's RocksDBOptions)."""
    return {
        "write_buffer_size": settings.rocksdb_write_buffer_mib * 2**20,
        "max_write_buffer_number": 2,
        "block_cache_size": settings.rocksdb_block_cache_mib * 2**20,
    }


def create_app(settings: Settings) -> Topology:
    """The Faust app with raw-bytes topics (we validate ourselves) and two RocksDB tables."""
    app = faust.App(
        settings.app_id,
        broker=",".join(f"kafka://{hp}" for hp in settings.bootstrap_servers.split(",")),
        broker_credentials=broker_credentials(settings),
        store="rocksdb://",
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        web_enabled=False,
        broker_session_timeout=settings.session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.heartbeat_interval_ms / 1000,
        broker_rebalance_timeout=settings.rebalance_timeout_ms / 1000,
        broker_commit_interval=settings.worker_commit_interval_ms() / 1000,
        # Faust also commits every 10,000 acknowledged messages, from inside its fetch loop, which then waits
        # for the commit (and so for the write-behind flush): commits on the interval alone, in their own task
        broker_commit_every=2**31 - 1,
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        producer_acks=-1,
        producer_linger_ms=5,
        stream_buffer_maxsize=8192,
        logging_config=None,
        loghandlers=[],
    )

    def raw_topic(name: str, *more: str) -> faust.TopicT:
        return app.topic(
            name, *more, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )

    return Topology(
        app=app,
        clicks=raw_topic(settings.clicks_topic),
        transactions=raw_topic(settings.transactions_topic),
        tx_inputs=raw_topic(settings.transactions_topic, settings.fraud_labels_topic),
        tx_by_terminal=raw_topic(settings.tx_by_terminal_topic),
        user_events=raw_topic(settings.user_events_topic),
        user_inputs=raw_topic(settings.clicks_topic, settings.user_events_topic),
        sequence_updates=raw_topic(settings.sequence_updates_topic),
        dead_letters=raw_topic(settings.dead_letter_topic),
        users=app.Table(
            USER_TABLE,
            key_type=bytes,
            value_type=bytes,
            partitions=settings.partitions,
            options=rocksdb_options(settings),
        ),
        terminals=app.Table(
            TERMINAL_TABLE,
            key_type=bytes,
            value_type=bytes,
            partitions=settings.partitions,
            options=rocksdb_options(settings),
        ),
    )


def quiet_faust_logging(level: int = logging.WARNING) -> None:
    """Keep Faust's spinner from putting the root logger at DEBUG (about 14% of the main thread here)."""
    logging.getLogger().setLevel(level)
    for name in ("faust", "mode", "aiokafka"):
        logging.getLogger(name).setLevel(level)
