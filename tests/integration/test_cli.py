"""The command line as a person runs it: the demo with --limit, and the output-topic consumers."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamproc.broker import EmbeddedBroker, create_topics, free_port
from streamproc.demo import settings_env
from streamproc.replay import read_events, replay
from streamproc.tansu_compat import fetch_high_watermarks
from tests.integration.conftest import make_settings
from tests.tls_proxy import TlsProxy, self_signed_certificate

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


@pytest.fixture
def tls_kafka(tmp_path: Path) -> Iterator[tuple[EmbeddedBroker, TlsProxy, Path]]:
    """An embedded broker reachable only through TLS: (broker, proxy, the certificate that verifies it)."""
    cert, key = self_signed_certificate(tmp_path)
    port = free_port()
    proxy = TlsProxy(port, cert, key)
    broker = EmbeddedBroker(port=port, advertised=f"127.0.0.1:{proxy.port}", log_path=tmp_path / "tansu.log")
    with broker:
        yield broker, proxy, cert
    proxy.close()


def test_demo_on_a_tls_kafka_with_earlier_input_counts_only_its_own_events(tls_kafka, tiny_checkpoint, tmp_path, reader):
    # The demo, pointed at a Kafka that takes TLS only and already holds the same 300 events (replayed
    # before, never scored): its worker scores those too, and it must count only its own replay's outputs.
    broker, proxy, cert = tls_kafka
    configured = make_settings(broker, tmp_path, tiny_checkpoint).with_overrides(
        bootstrap_servers=f"127.0.0.1:{proxy.port}", security_protocol="SSL", ssl_ca_location=cert)
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
    assert (tmp_path / "var" / f"faust-127.0.0.1_{proxy.port}").is_dir()
    counts = dict(re.findall(r"(\S+)=(\d+)", result.stdout.strip().splitlines()[-1]))
    risk = reader(settings, [settings.risk_scores_topic])
    risk.read_to_end(settings.risk_scores_topic, deadline_s=60)
    scores = risk.messages[settings.risk_scores_topic]
    own = [s for s in scores if s["lineage"]["offset"] >= since[(s["lineage"]["topic"], s["lineage"]["partition"])]]
    # every event of the demo's replay was scored before the demo exited, and its count is of those alone
    assert len({s["event_id"] for s in own}) == 300, (len(own), len(scores))
    assert int(counts[settings.risk_scores_topic]) == len(own) < len(scores)
    assert proxy.connections > 0
    # nothing reached the configured pipeline's topics
    untouched = [(t, p) for t in (configured.clicks_topic, configured.risk_scores_topic) for p in range(configured.partitions)]
    create_topics(configured.kafka_common(), (configured.clicks_topic, configured.risk_scores_topic), configured.partitions)
    assert set(fetch_high_watermarks(configured.kafka_common(), untouched).values()) == {0}
