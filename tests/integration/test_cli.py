"""The command line as a person runs it: the demo with --limit, and the output-topic consumers."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamproc.broker import EmbeddedBroker, create_topics, free_port
from streamproc.config import Settings
from streamproc.demo import settings_env
from streamproc.kafka_check import KafkaUnreachable, check_kafka
from streamproc.replay import read_events, replay
from streamproc.tansu_compat import fetch_high_watermarks
from tests.integration.conftest import make_settings
from tests.kafka_gate import KafkaGate, self_signed_certificate

pytestmark = pytest.mark.integration


def test_demo_with_limit_exits_zero_after_every_event_is_scored(tiny_checkpoint, tmp_path):
    env_ports = ["--checkpoint", str(tiny_checkpoint), "--data-dir", str(tmp_path / "var")]
    result = subprocess.run(
        [sys.executable, "-m", "streamproc.cli", "demo", "--limit", "400", "--rate", "0", *env_ports],
        capture_output=True, text=True, timeout=400,
        env={**__import__("os").environ, "STREAMPROC_WORKER_METRICS_PORT": str(free_port()),
             "STREAMPROC_SCORER_METRICS_PORT": str(free_port())},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    last = result.stdout.strip().splitlines()[-1]
    counts = dict(re.findall(r"(\S+)=(\d+)", last))
    assert int(counts["risk-scores"]) >= 400 and int(counts["next-action-scores"]) >= 400, last
    assert "streamproc.dead-letters" in counts and "fraud-alerts" in counts


def test_demo_stops_its_replay_at_the_broker_memory_budget_and_scores_what_was_sent(tiny_checkpoint, tmp_path):
    # The broker starts at about 18 MiB and grows by 1.5 KB (the pipeline behind the replay, writing little)
    # to 4.5 KB (keeping up, writing every output) per replayed event: 40 MiB is reached after 5,000 to
    # 15,000 of the 30,000 events asked for.
    args = ["--checkpoint", str(tiny_checkpoint), "--data-dir", str(tmp_path / "var"),
            "--limit", "30000", "--rate", "2000", "--broker-max-rss-mib", "40"]
    result = subprocess.run(
        [sys.executable, "-m", "streamproc.cli", "demo", *args], capture_output=True, text=True, timeout=400,
        env={**__import__("os").environ, "STREAMPROC_WORKER_METRICS_PORT": str(free_port()),
             "STREAMPROC_SCORER_METRICS_PORT": str(free_port())},
    )
    assert result.returncode == 3, result.stdout[-3000:] + result.stderr[-3000:]
    assert "stopped the replay after" in result.stderr and "over its budget of 40 MiB" in result.stderr
    produced = int(re.search(r"stopped the replay after (\d+) events", result.stderr).group(1))
    assert 1000 < produced < 30000, result.stderr
    summary = [line for line in result.stdout.splitlines() if line.startswith("--- produced")][-1]
    scored, dead = (int(x) for x in re.search(r"scored (\d+)\s+dead-lettered (\d+)", summary).groups())
    assert f"produced {produced} " in summary and scored + dead >= produced, summary
    assert "broker memory" in result.stdout
    counts = dict(re.findall(r"(\S+)=(\d+)", result.stdout.strip().splitlines()[-1]))
    assert int(counts["risk-scores"]) >= scored


USERS = {"streamproc": "demo-secret"}


@pytest.fixture
def secure_kafka(tmp_path: Path) -> Iterator[tuple[EmbeddedBroker, KafkaGate, Path]]:
    """An embedded broker reachable only through TLS with a SASL login (PLAIN or SCRAM), as a bank's Kafka is:
    (broker, gate, the certificate that verifies it)."""
    cert, key = self_signed_certificate(tmp_path)
    port = free_port()
    gate = KafkaGate(port, cert, key, users=USERS)
    broker = EmbeddedBroker(port=port, advertised=f"127.0.0.1:{gate.port}", log_path=tmp_path / "tansu.log")
    with broker:
        yield broker, gate, cert
    gate.close()


def secure_settings(broker: EmbeddedBroker, gate: KafkaGate, cert: Path | None, tmp_path: Path, checkpoint: Path,
                    password: str = USERS["streamproc"], mechanism: str = "PLAIN") -> Settings:
    return make_settings(broker, tmp_path, checkpoint).with_overrides(
        bootstrap_servers=f"127.0.0.1:{gate.port}", security_protocol="SASL_SSL", ssl_ca_location=cert,
        sasl_mechanism=mechanism, sasl_username="streamproc", sasl_password=password)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_each_sasl_mechanism_logs_in_with_the_password_and_is_refused_without_it(mechanism, secure_kafka,
                                                                                 tiny_checkpoint, tmp_path):
    # librdkafka against the gate's own SASL server (the Faust worker's aiokafka logs in with SCRAM in the
    # demo test below): the gate must accept exactly the right password, or the other tests prove nothing.
    broker, gate, cert = secure_kafka
    right = secure_settings(broker, gate, cert, tmp_path, tiny_checkpoint, mechanism=mechanism)
    assert check_kafka(right.kafka_common(), timeout_s=30) == 1
    assert ("streamproc", right.app_id, mechanism) in gate.authenticated
    wrong = secure_settings(broker, gate, cert, tmp_path, tiny_checkpoint, password="demo-secreT", mechanism=mechanism)
    with pytest.raises(KafkaUnreachable, match="authentication failed"):
        check_kafka(wrong.kafka_common(), timeout_s=30)
    assert any(f"wrong user or password for 'streamproc' ({mechanism})" in r for r in gate.refused), gate.refused


def test_demo_on_a_tls_and_sasl_kafka_with_earlier_input_counts_only_its_own_events(secure_kafka, tiny_checkpoint,
                                                                                    tmp_path, reader):
    # The demo, pointed at a Kafka that takes TLS with a SASL (SCRAM-SHA-512) login only and already holds
    # the same 300 events (replayed before, never scored): its worker scores those too, and it must count
    # only its own replay's outputs.
    broker, gate, cert = secure_kafka
    configured = secure_settings(broker, gate, cert, tmp_path, tiny_checkpoint, mechanism="SCRAM-SHA-512")
    settings = configured.namespaced("demo")  # the demo's own topics on a real Kafka
    create_topics(settings.kafka_common(), settings.all_topics(), settings.partitions)
    assert replay(settings, read_events(None), limit=300, progress=False) == 300
    inputs = [(t, p) for t in (settings.clicks_topic, settings.transactions_topic) for p in range(settings.partitions)]
    since = fetch_high_watermarks(settings.kafka_common(), inputs)
    assert sum(since.values()) == 300

    result = subprocess.run(
        [sys.executable, "-m", "streamproc.cli", "demo", "--limit", "300", "--rate", "0", "--data-dir", str(tmp_path / "var")],
        capture_output=True, text=True, timeout=400, env=settings_env(configured),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"Kafka at {settings.bootstrap_servers}, topics {settings.clicks_topic}," in result.stdout
    assert "embedded broker" not in result.stdout
    assert (tmp_path / "var" / f"faust-127.0.0.1_{gate.port}").is_dir()
    counts = dict(re.findall(r"(\S+)=(\d+)", result.stdout.strip().splitlines()[-1]))
    risk = reader(settings, [settings.risk_scores_topic])
    risk.read_to_end(settings.risk_scores_topic, deadline_s=60)
    scores = risk.messages[settings.risk_scores_topic]
    own = [s for s in scores if s["lineage"]["offset"] >= since[(s["lineage"]["topic"], s["lineage"]["partition"])]]
    # every event of the demo's replay was scored before the demo exited, and its count is of those alone
    assert len({s["event_id"] for s in own}) == 300, (len(own), len(scores))
    assert int(counts[settings.risk_scores_topic]) == len(own) < len(scores)
    # every kind of client logged in: the Faust worker's aiokafka, its librdkafka output producers, and
    # the scoring worker's, replay's and readers' librdkafka clients; none was refused
    clients = {client for _user, client, mechanism in gate.authenticated if mechanism == "SCRAM-SHA-512"}
    assert any(c.startswith("faust-") for c in clients), clients
    assert {f"{settings.app_id}-user-windows", settings.app_id} <= clients, clients
    assert not [r for r in gate.refused if "password" in r], gate.refused
    # nothing reached the configured pipeline's topics
    untouched = [(t, p) for t in (configured.clicks_topic, configured.risk_scores_topic) for p in range(configured.partitions)]
    create_topics(configured.kafka_common(), (configured.clicks_topic, configured.risk_scores_topic), configured.partitions)
    assert set(fetch_high_watermarks(configured.kafka_common(), untouched).values()) == {0}


@pytest.mark.parametrize("command", ["worker", "score"])  # the two that retried for ever; all go through one check
def test_a_command_stops_at_once_with_the_reason_when_kafka_refuses_its_login(command, secure_kafka, tiny_checkpoint,
                                                                             tmp_path):
    # Without the check, librdkafka retries for ever and the Faust worker hangs: a wrong password showed
    # only as log lines and, 30 s later, "Broker transport failure". The check waits 120 s for a Kafka
    # that does not answer, so a message naming the refusal can only come from the refusal itself.
    broker, gate, cert = secure_kafka
    settings = secure_settings(broker, gate, cert, tmp_path, tiny_checkpoint, password="not-the-password")
    result = subprocess.run([sys.executable, "-m", "streamproc.cli", command], capture_output=True, text=True,
                            timeout=100, env=settings_env(settings) | {"STREAMPROC_KAFKA_CHECK_TIMEOUT_S": "120"})
    assert result.returncode == 2, result.stderr[-2000:]
    assert (f"streamproc {command}: Kafka at 127.0.0.1:{gate.port} (SASL_SSL) refused the connection: "
            "authentication failed") in result.stderr
    assert "Invalid username or password" in result.stderr
    assert "Traceback" not in result.stderr and gate.authenticated == []


def test_a_command_names_an_untrusted_certificate_and_a_kafka_that_does_not_answer(secure_kafka, tiny_checkpoint,
                                                                                   tmp_path):
    broker, gate, _cert = secure_kafka
    untrusted = secure_settings(broker, gate, None, tmp_path, tiny_checkpoint)  # the system's CAs only
    result = subprocess.run([sys.executable, "-m", "streamproc.cli", "worker"], capture_output=True, text=True,
                            timeout=100, env=settings_env(untrusted) | {"STREAMPROC_KAFKA_CHECK_TIMEOUT_S": "120"})
    assert result.returncode == 2 and "refused the connection: TLS failed" in result.stderr, result.stderr[-2000:]
    assert "certificate verify failed" in result.stderr

    nobody = make_settings(broker, tmp_path, tiny_checkpoint).with_overrides(bootstrap_servers=f"127.0.0.1:{free_port()}")
    result = subprocess.run([sys.executable, "-m", "streamproc.cli", "alerts"], capture_output=True, text=True,
                            timeout=100, env=settings_env(nobody) | {"STREAMPROC_KAFKA_CHECK_TIMEOUT_S": "3"})
    assert result.returncode == 2, result.stderr[-2000:]
    assert "streamproc alerts: Kafka at 127.0.0.1:" in result.stderr and "did not answer within 3 s" in result.stderr
    assert "Connection refused" in result.stderr
