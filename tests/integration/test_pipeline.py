"""The live pipeline on a real Apache Kafka: replay, dead letters, crash and restart recovery."""

from __future__ import annotations

import base64
import shutil
from collections import Counter

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from scipy.special import logit

from models.serving.scorer import Scorer, Window
from streamproc.kafka.consumers import follow_alerts, latest_scores_for, show_recommendations
from streamproc.observability.readiness import read_metrics
from streamproc.stages.app import TERMINAL_TABLE, USER_TABLE
from tests.integration.helpers import last_value_per_key, make_settings, wait_until_worker_caught_up
from tests.integration.pipeline_data import (
    accepted_records,
    assert_windows_match_from_scratch,
    produce,
    reference_state,
    synthetic_events,
)

pytestmark = pytest.mark.integration


def ids(messages):
    return Counter(m["event_id"] for m in messages)


def table_keys(port: int) -> dict[str, float]:
    """streamproc_table_keys by table, as the worker's /metrics serves it now."""
    page = read_metrics(f"http://127.0.0.1:{port}/metrics") or ""
    return {
        sample.labels["table"]: sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
        if sample.name == "streamproc_table_keys"
    }


@pytest.mark.parametrize("guarantee", ["exactly_once", "at_least_once"])
def test_replay_scores_every_accepted_event_once_and_dead_letters_every_invalid_one(
    broker, tiny_checkpoint, tmp_path, processes, reader, guarantee
):
    events = synthetic_events(5000)
    s = make_settings(
        broker,
        tmp_path,
        tiny_checkpoint,
        processing_guarantee=guarantee,
        alert_threshold=_low_risk_quantile(tiny_checkpoint, events),
        alert_explanations_per_batch=1_000,  # every alert explained (a batch holds at most 256)
    )
    worker, scorer = processes("worker", s), processes("score", s)
    invalid = produce(s, events, invalid_every=50)
    accepted = {m["event_id"] for _, m in events}
    r = reader(s, [s.risk_scores_topic, s.next_action_topic, s.dead_letter_topic, s.fraud_alerts_topic])
    r.poll_until(
        lambda: (
            set(ids(r.messages[s.risk_scores_topic])) >= accepted
            and set(ids(r.messages[s.next_action_topic])) >= accepted
            and len(r.messages[s.dead_letter_topic]) >= len(invalid)
        ),
        deadline_s=600,
        watch=[worker, scorer],
    )
    risk, nxt = ids(r.messages[s.risk_scores_topic]), ids(r.messages[s.next_action_topic])
    assert set(risk) == accepted and set(risk.values()) == {1}
    assert set(nxt) == accepted and set(nxt.values()) == {1}
    for m in r.messages[s.risk_scores_topic]:
        assert 0.0 <= m["risk"] <= 1.0
        assert m["lineage"]["topic"] in (s.clicks_topic, s.transactions_topic)
    for m in r.messages[s.next_action_topic]:
        assert m["top_items"] and abs(sum(m["next_action"].values()) - 1.0) < 1e-3
    alerted = {m["event_id"] for m in r.messages[s.risk_scores_topic] if m["risk"] >= s.alert_threshold}
    r.poll_until(lambda: len(r.messages[s.fraud_alerts_topic]) >= len(alerted), deadline_s=60)
    assert alerted and {m["event_id"] for m in r.messages[s.fraud_alerts_topic]} == alerted
    for alert in r.messages[s.fraud_alerts_topic]:  # each says why, and what it says adds up to its risk
        why, trees = alert["explanation"], alert["explanation"]["trees"]
        assert why["log_odds"] == pytest.approx(logit(alert["risk"]), abs=1e-6)
        parts = trees["bias"] + sum(p["contribution"] for p in trees["top"]) + trees["others"]
        assert parts == pytest.approx(trees["log_odds"], abs=1e-9) and len(trees["top"]) == 5
    dead = r.messages[s.dead_letter_topic]
    assert sorted((d["source_topic"], base64.b64decode(d["raw_b64"]), d["reason"]) for d in dead) == sorted(
        invalid
    )
    # the state a restart would restore: each user's window in the changelog, written per batch or per commit
    wait_until_worker_caught_up(s)
    expected = reference_state(accepted_records(events), s.window_max_events, s.window_max_age_ms)
    restored = last_value_per_key(s, f"{s.app_id}-{USER_TABLE}-changelog")
    assert {user: [e["event_id"] for e in state["w"]] for user, state in restored.items()} == {
        user: [e["event_id"] for e in state["w"]] for user, state in expected.items()
    }
    assert all(d["detail"] for d in dead)
    # the worker's table sizes, counted in slices from RocksDB (streamproc.stages.table_size), every 10 s
    terminals = {m["terminal_id"] for topic, m in events if topic == "transactions"}
    want = {USER_TABLE: float(len(expected)), TERMINAL_TABLE: float(len(terminals))}
    r.poll_until(lambda: table_keys(s.worker_metrics_port) == want, deadline_s=30, watch=[worker])

    # the small consumers the teams build on: an analyst's alert feed and a user's latest recommendations
    for user, chunk in (
        (events[-1][1]["user_id"], 5000),
        (events[0][1]["user_id"], 16),
    ):  # 16: many steps back
        latest = latest_scores_for(s, user, chunk=chunk)
        last_published = [m for m in r.messages[s.next_action_topic] if m["user_id"] == user][
            -1
        ]  # one partition
        assert latest == last_published, (user, chunk)
    assert latest_scores_for(s, "no-such-user", chunk=64) is None
    assert follow_alerts(s, from_beginning=True, max_alerts=3) == 0
    assert show_recommendations(s, user) == 0


def _low_risk_quantile(checkpoint, events, q=0.1):
    """A threshold most events' risk reaches (the tiny model's risks sit in a narrow band): alerts get exercised."""
    scorer = Scorer.load(checkpoint, device="cpu")
    windows = [Window(events=[record], aggregates={}) for record in accepted_records(events[:300])]
    return float(np.quantile([score.risk for score in scorer.score(windows)], q))


@pytest.mark.parametrize(
    ("state_flush", "guarantee"), [("commit", "exactly_once"), ("batch", "at_least_once")]
)
def test_worker_stopped_and_killed_mid_stream_recovers_state_from_rocksdb_and_from_the_changelog(
    broker, tiny_checkpoint, tmp_path, processes, reader, state_flush, guarantee
):
    s = make_settings(
        broker, tmp_path, tiny_checkpoint, state_flush=state_flush, processing_guarantee=guarantee
    )
    events = synthetic_events(3200, seed=5)
    quarters = [events[i : i + 800] for i in range(0, len(events), 800)]
    r = reader(s, [s.sequence_updates_topic, s.risk_scores_topic])
    scorer = processes("score", s)
    worker = processes("worker", s)
    produce(s, quarters[0])
    r.poll_until(lambda: len(r.messages[s.sequence_updates_topic]) >= 400, deadline_s=300, watch=[worker])
    assert (
        worker.stop() == 0
    )  # SIGTERM mid-stream (a rolling deploy): the batch in hand is not committed undone
    produce(s, quarters[1])
    worker = processes("worker", s)
    r.poll_until(
        lambda: len(ids(r.messages[s.sequence_updates_topic])) >= 1200, deadline_s=300, watch=[worker]
    )
    worker.kill()  # SIGKILL mid-stream: RocksDB directory kept
    produce(s, quarters[2])
    worker = processes("worker", s)
    r.poll_until(
        lambda: len(ids(r.messages[s.sequence_updates_topic])) >= 2000, deadline_s=300, watch=[worker]
    )
    worker.kill()
    shutil.rmtree(s.data_dir)  # the worker's disk is lost: state comes back from the changelog topics
    produce(s, quarters[3])
    worker = processes("worker", s)
    accepted = {m["event_id"] for _, m in events}
    r.poll_until(
        lambda: set(ids(r.messages[s.risk_scores_topic])) >= accepted, deadline_s=300, watch=[worker, scorer]
    )
    # Every event is scored, but re-delivered events may still be re-emitting updates: let the worker
    # finish, then read its updates to the end, so that each user's last update shows its final state.
    wait_until_worker_caught_up(s)
    r.read_to_end(s.sequence_updates_topic, deadline_s=120)
    assert_windows_match_from_scratch(s, events, r.messages[s.sequence_updates_topic])


def _restart_scorer_mid_stream(broker, tiny_checkpoint, tmp_path, processes, reader, seed, stop):
    """Replay 3,000 events, stop the scoring worker with `stop(process)` once 500 are scored, start another
    and read until every sequence update is scored; returns (settings, events, reader)."""
    s = make_settings(broker, tmp_path, tiny_checkpoint, batch_max_size=64)
    events = synthetic_events(3000, seed=seed)
    worker, scorer = processes("worker", s), processes("score", s)
    produce(s, events)
    r = reader(s, [s.sequence_updates_topic, s.risk_scores_topic])
    r.poll_until(lambda: len(r.messages[s.risk_scores_topic]) >= 500, deadline_s=400, watch=[worker, scorer])
    stop(scorer)
    scorer = processes("score", s)
    r.poll_until(
        lambda: (
            len(r.messages[s.sequence_updates_topic]) >= len(events)
            and set(ids(r.messages[s.risk_scores_topic])) >= set(ids(r.messages[s.sequence_updates_topic]))
        ),
        deadline_s=600,
        watch=[worker, scorer],
    )
    return s, events, r


def test_scoring_worker_sigterm_drains_its_batch_and_commits_so_nothing_is_scored_twice(
    broker, tiny_checkpoint, tmp_path, processes, reader
):
    # A graceful stop scores and commits the batch in hand; the next scoring worker starts after the last
    # scored update (SIGKILLs: test_exactly_once.py).
    def graceful(scorer):
        assert scorer.stop(timeout_s=60) == 0, scorer.log()

    s, events, r = _restart_scorer_mid_stream(
        broker, tiny_checkpoint, tmp_path, processes, reader, seed=10, stop=graceful
    )
    scored = [m["event_id"] for m in r.messages[s.risk_scores_topic]]
    assert sorted(scored) == sorted(m["event_id"] for _, m in events)  # each exactly once
