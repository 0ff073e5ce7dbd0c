"""The command line as a person runs it: the demo with --limit, and every command on a TLS / SASL Kafka."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamproc.config import Settings
from streamproc.demo.processes import settings_env
from streamproc.feed.replay import read_events, replay
from streamproc.kafka.admin import create_topics, end_offsets
from streamproc.kafka.local_kafka import LocalKafka
from streamproc.kafka.reachability import KafkaUnreachable, check_kafka
from streamproc.kafka.runtime import free_port
from streamproc.kafka.security import SASL_MECHANISMS, ClientSecurity
from tests.integration.helpers import make_settings
from tests.integration.tls import self_signed_certificate

pytestmark = pytest.mark.integration


def test_demo_with_limit_exits_zero_after_every_event_is_scored(tiny_checkpoint, tmp_path):
    env_ports = ["--checkpoint", str(tiny_checkpoint), "--data-dir", str(tmp_path / "var")]
    result = subprocess.run(
        [sys.executable, "-m", "streamproc.cli", "demo", "--limit", "400", "--rate", "0", *env_ports],
        capture_output=True,
        text=True,
        timeout=400,
        env={
            **__import__("os").environ,
            "STREAMPROC_WORKER_METRICS_PORT": str(free_port()),
            "STREAMPROC_SCORER_METRICS_PORT": str(free_port()),
        },
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    counts = dict(re.findall(r"(\S+)=(\d+)", last))
    assert int(counts["risk-scores"]) >= 400 and int(counts["next-action-scores"]) >= 400, last
    assert "streamproc.dead-letters" in counts and "fraud-alerts" in counts


USERS = {"streamproc": "demo-secret"}


def secure_kafka(
    folder: Path,
    mechanisms: tuple[str, ...] = SASL_MECHANISMS,
    client_ca: Path | None = None,
    protocol: str = "SASL_SSL",
) -> tuple[LocalKafka, Path]:
    """Apache Kafka reachable by clients only through its own TLS listener with a SASL login (PLAIN or SCRAM;
    SCRAM users created when its storage is formatted), as a bank's Kafka is: (kafka, the certificate that
    verifies it)."""
    cert, key = self_signed_certificate(folder)
    security = ClientSecurity(
        protocol=protocol, certificate=cert, key=key, users=USERS, mechanisms=mechanisms, client_ca=client_ca
    )
    return LocalKafka(folder / "kafka", security=security).start(), cert


@pytest.fixture(scope="module")
def sasl_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalKafka, Path]]:
    kafka, cert = secure_kafka(tmp_path_factory.mktemp("sasl"))
    yield kafka, cert
    kafka.stop()


def secure_settings(
    kafka: LocalKafka,
    cert: Path | None,
    tmp_path: Path,
    checkpoint: Path,
    password: str = USERS["streamproc"],
    mechanism: str = "PLAIN",
) -> Settings:
    return make_settings(kafka, tmp_path, checkpoint).with_overrides(
        security_protocol="SASL_SSL",
        ssl_ca_location=cert,
        sasl_mechanism=mechanism,
        sasl_username="streamproc",
        sasl_password=password,
    )


def refused_logins(kafka: LocalKafka) -> str:
    """What the broker logged of failed logins."""
    return "\n".join(
        line
        for line in kafka.members[0].log_path.read_text(errors="replace").splitlines()
        if "Failed authentication" in line
    )


@pytest.mark.parametrize("mechanism", SASL_MECHANISMS)
def test_each_sasl_mechanism_logs_in_with_the_password_and_is_refused_without_it(
    mechanism, sasl_kafka, tiny_checkpoint, tmp_path
):
    # librdkafka against Kafka's own SASL_SSL listener (the Faust worker's aiokafka logs in with SCRAM in
    # the demo test below): the listener takes exactly the right password.
    kafka, cert = sasl_kafka
    right = secure_settings(kafka, cert, tmp_path, tiny_checkpoint, mechanism=mechanism)
    assert check_kafka(right.kafka_common(), timeout_s=30) == 1
    wrong = secure_settings(
        kafka, cert, tmp_path, tiny_checkpoint, password="demo-secreT", mechanism=mechanism
    )
    with pytest.raises(KafkaUnreachable, match="authentication failed"):
        check_kafka(wrong.kafka_common(), timeout_s=30)
    # the broker refused it (not the client giving up), naming the mechanism for SCRAM
    deadline = time.monotonic() + 10
    while mechanism not in refused_logins(kafka) and mechanism != "PLAIN":
        assert time.monotonic() < deadline, refused_logins(kafka)
        time.sleep(0.1)  # the broker's log file is written asynchronously
    assert "Failed authentication" in refused_logins(kafka)


def test_mutual_tls_admits_a_client_with_its_certificate_and_refuses_one_without(tiny_checkpoint, tmp_path):
    client_cert, client_key = self_signed_certificate(tmp_path, name="client")
    kafka, cert = secure_kafka(tmp_path, client_ca=client_cert, protocol="SSL")
    try:
        plain = make_settings(kafka, tmp_path, tiny_checkpoint).with_overrides(
            security_protocol="SSL", ssl_ca_location=cert
        )
        with_cert = plain.with_overrides(ssl_certificate_location=client_cert, ssl_key_location=client_key)
        assert check_kafka(with_cert.kafka_common(), timeout_s=30) == 1
        with pytest.raises(KafkaUnreachable):
            check_kafka(plain.kafka_common(), timeout_s=10)
    finally:
        kafka.stop()


def test_demo_on_a_tls_and_sasl_kafka_with_earlier_input_counts_only_its_own_events(
    tiny_checkpoint, tmp_path, reader
):
    # The demo, pointed at a Kafka that takes TLS with a SCRAM-SHA-512 login only and already holds the
    # same 300 events (replayed before, never scored): its worker scores those too, and it must count
    # only its own replay's outputs. The listener enables SCRAM-SHA-512 alone, so every client that
    # worked (the Faust worker's aiokafka, its librdkafka output producers, the scoring worker's,
    # replay's and readers' librdkafka clients) logged in with it.
    kafka, cert = secure_kafka(tmp_path, mechanisms=("SCRAM-SHA-512",))
    try:
        configured = secure_settings(kafka, cert, tmp_path, tiny_checkpoint, mechanism="SCRAM-SHA-512")
        settings = configured.namespaced("demo")  # the demo's own topics on a real Kafka
        create_topics(settings.kafka_common(), settings.all_topics(), settings.partitions)
        assert replay(settings, read_events(None), limit=300, progress=False) == 300
        inputs = [
            (t, p)
            for t in (settings.clicks_topic, settings.transactions_topic)
            for p in range(settings.partitions)
        ]
        since = end_offsets(settings.kafka_common(), inputs)
        assert sum(since.values()) == 300

        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "streamproc.cli",
                "demo",
                "--limit",
                "300",
                "--rate",
                "0",
                "--data-dir",
                str(tmp_path / "var"),
            ],
            capture_output=True,
            text=True,
            timeout=400,
            env=settings_env(configured),
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert f"Kafka at {settings.bootstrap_servers}, topics {settings.clicks_topic}," in result.stdout
        assert "local Apache Kafka" not in result.stdout
        assert (tmp_path / "var" / f"faust-127.0.0.1_{kafka.members[0].client_port}").is_dir()
        counts = dict(re.findall(r"(\S+)=(\d+)", result.stdout.strip().splitlines()[-1]))
        risk = reader(settings, [settings.risk_scores_topic])
        risk.read_to_end(settings.risk_scores_topic, deadline_s=60)
        scores = risk.messages[settings.risk_scores_topic]
        own = [
            s
            for s in scores
            if s["lineage"]["offset"] >= since[(s["lineage"]["topic"], s["lineage"]["partition"])]
        ]
        # every event of the demo's replay was scored before the demo exited, and its count is of those alone
        assert len({s["event_id"] for s in own}) == 300, (len(own), len(scores))
        assert int(counts[settings.risk_scores_topic]) == len(own) < len(scores)
        assert "Failed authentication" not in refused_logins(kafka)
        # nothing reached the configured pipeline's topics
        untouched = [
            (t, p)
            for t in (configured.clicks_topic, configured.risk_scores_topic)
            for p in range(configured.partitions)
        ]
        create_topics(
            configured.kafka_common(),
            (configured.clicks_topic, configured.risk_scores_topic),
            configured.partitions,
        )
        assert set(end_offsets(configured.kafka_common(), untouched).values()) == {0}
    finally:
        kafka.stop()


@pytest.mark.parametrize(
    "command", ["worker", "score"]
)  # the two that retried for ever; all go through one check
def test_a_command_stops_at_once_with_the_reason_when_kafka_refuses_its_login(
    command, sasl_kafka, tiny_checkpoint, tmp_path
):
    # Without the check, librdkafka retries for ever and the Faust worker hangs: a wrong password showed
    # only as log lines and, 30 s later, "Broker transport failure". The check waits 120 s for a Kafka
    # that does not answer, so a message naming the refusal can only come from the refusal itself.
    kafka, cert = sasl_kafka
    settings = secure_settings(kafka, cert, tmp_path, tiny_checkpoint, password="not-the-password")
    result = subprocess.run(
        [sys.executable, "-m", "streamproc.cli", command],
        capture_output=True,
        text=True,
        timeout=100,
        env=settings_env(settings) | {"STREAMPROC_KAFKA_CHECK_TIMEOUT_S": "120"},
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert (
        f"streamproc {command}: Kafka at {kafka.bootstrap_servers} (SASL_SSL) refused the connection: "
        "authentication failed"
    ) in result.stderr
    assert "Invalid username or password" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_command_names_an_untrusted_certificate_and_a_kafka_that_does_not_answer(
    sasl_kafka, tiny_checkpoint, tmp_path
):
    kafka, _cert = sasl_kafka
    untrusted = secure_settings(kafka, None, tmp_path, tiny_checkpoint)  # the system's CAs only
    result = subprocess.run(
        [sys.executable, "-m", "streamproc.cli", "worker"],
        capture_output=True,
        text=True,
        timeout=100,
        env=settings_env(untrusted) | {"STREAMPROC_KAFKA_CHECK_TIMEOUT_S": "120"},
    )
    assert result.returncode == 2 and "refused the connection: TLS failed" in result.stderr, result.stderr[
        -2000:
    ]
    assert "certificate verify failed" in result.stderr

    nobody = make_settings(kafka, tmp_path, tiny_checkpoint).with_overrides(
        bootstrap_servers=f"127.0.0.1:{free_port()}"
    )
    result = subprocess.run(
        [sys.executable, "-m", "streamproc.cli", "alerts"],
        capture_output=True,
        text=True,
        timeout=100,
        env=settings_env(nobody) | {"STREAMPROC_KAFKA_CHECK_TIMEOUT_S": "3"},
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert (
        "streamproc alerts: Kafka at 127.0.0.1:" in result.stderr
        and "did not answer within 3 s" in result.stderr
    )
    assert "Connection refused" in result.stderr
