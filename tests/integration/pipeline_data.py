"""Test inputs: synthetic clicks and transactions plus crafted invalid messages, and a from-scratch reference."""

from __future__ import annotations

import json
from itertools import islice
from typing import Any

import pytest
from confluent_kafka import Producer

from models.data import synthetic
from models.features import aggregates
from streamproc.config import Settings
from streamproc.core.events import validate
from streamproc.core.windowing import insert_event, window_for_event
from streamproc.stages.app import TERMINAL_TABLE, USER_TABLE

INVALID: list[tuple[str, bytes, str]] = [  # (topic kind, raw bytes, expected reason)
    ("clicks", b"{not json", "invalid_json"),
    ("clicks", b'["a list"]', "not_an_object"),
    (
        "clicks",
        json.dumps(
            {
                "event_id": "bad-1",
                "user_id": "u00001",
                "item_id": "i1",
                "action": "teleport",
                "ts": 1_530_000_000_000,
            }
        ).encode(),
        "unknown_action",
    ),
    (
        "clicks",
        json.dumps(
            {"event_id": "bad-2", "user_id": "u00002", "action": "view", "ts": 1_530_000_000_000}
        ).encode(),
        "missing_field",
    ),
    (
        "transactions",
        json.dumps(
            {
                "event_id": "bad-3",
                "user_id": "u00003",
                "amount": -4,
                "currency": "EUR",
                "terminal_id": "t1",
                "ts": 1_530_000_000_000,
            }
        ).encode(),
        "bad_amount",
    ),
    (
        "transactions",
        json.dumps(
            {
                "event_id": "bad-4",
                "user_id": "u00004",
                "amount": 4,
                "currency": "EUR",
                "terminal_id": "t1",
                "ts": "not a time",
            }
        ).encode(),
        "bad_timestamp",
    ),
    (
        "transactions",
        json.dumps(
            {
                "event_id": "bad-5",
                "user_id": "u00005",
                "amount": 4,
                "currency": "??",
                "terminal_id": "t1",
                "ts": 1_530_000_000_000,
            }
        ).encode(),
        "bad_currency",
    ),
]


def synthetic_events(n: int, seed: int = 3, n_users: int = 150) -> list[tuple[str, dict[str, Any]]]:
    return list(islice(synthetic.generate(n_users=n_users, days=40, seed=seed), n))


def produce(
    settings: Settings, events: list[tuple[str, dict[str, Any]]], invalid_every: int = 0
) -> list[tuple[str, bytes, str]]:
    """Produce the events keyed by user (murmur2, as Faust); every invalid_every-th slot also an invalid one."""
    producer = Producer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "partitioner": "murmur2_random",
            "linger.ms": 5,
            "enable.idempotence": True,
        }
    )
    topics = {"clicks": settings.clicks_topic, "transactions": settings.transactions_topic}
    sent_invalid = []
    for n, (topic, msg) in enumerate(events):
        producer.produce(topics[topic], key=msg["user_id"].encode(), value=json.dumps(msg).encode())
        if invalid_every and n % invalid_every == 0:
            kind, raw, reason = INVALID[(n // invalid_every) % len(INVALID)]
            producer.produce(topics[kind], key=b"u00001", value=raw)
            sent_invalid.append((topics[kind], raw, reason))
        producer.poll(0)
    assert producer.flush(60) == 0
    return sent_invalid


def accepted_records(events: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The records the pipeline's validator makes of the events, in produce order."""
    return [
        validate("click" if t == "clicks" else "transaction", json.dumps(m).encode()).record
        for t, m in events
    ]


def reference_state(
    records: list[dict[str, Any]], max_events: int, max_age_ms: int
) -> dict[str, dict[str, Any]]:
    """Per user, from scratch: the final window and the customer velocity state."""
    users: dict[str, dict[str, Any]] = {}
    for r in records:
        state = users.setdefault(r["user_id"], {"w": [], "v": aggregates.new_state()})
        state["w"], _ = insert_event(state["w"], r, max_events, max_age_ms)
        if r["kind"] == "transaction":
            aggregates.update(state["v"], r["ts_ms"], r["amount"])
    return users


def reference_terminal_states(events: list[tuple[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per terminal, from scratch: the velocity state (per day: count, amount, frauds) of its transactions."""
    terminals: dict[str, Any] = {}
    for topic, message in events:
        if topic == "transactions":
            valid = validate("transaction", json.dumps(message).encode())
            state = terminals.setdefault(valid.record["item_id"], aggregates.new_state())
            aggregates.update(state, valid.record["ts_ms"], valid.record["amount"], valid.label)
    return terminals


def assert_windows_match_from_scratch(s, events, updates):
    """The last update emitted for each user shows the final state: compare it with a from-scratch fold.

    Transactions take two more hops than clicks, so the last update of a user need not be for the
    user's latest event; its window is the final window cut at its event, and its customer
    velocity is computed over everything the user did.
    """
    from tests.integration.helpers import last_value_per_key

    expected = reference_state(accepted_records(events), s.window_max_events, s.window_max_age_ms)
    last_update = {u["user_id"]: u for u in updates}  # in partition order: the last one emitted
    assert set(last_update) == set(expected)
    for user, update in last_update.items():
        scored = next(e for e in update["window"] if e["event_id"] == update["event_id"])
        want_window = window_for_event(expected[user]["w"], scored, s.window_max_events)
        assert [e["event_id"] for e in update["window"]] == [e["event_id"] for e in want_window], user
        assert update["window"] == want_window, f"window of {user} differs"
        want = aggregates.customer_features(expected[user]["v"], update["event_ts_ms"])
        assert {k: update["aggregates"][k] for k in want} == pytest.approx(want), (
            f"velocity of {user} differs"
        )
    users = last_value_per_key(s, f"{s.app_id}-{USER_TABLE}-changelog")  # the state a restart would restore
    assert set(users) == set(expected)
    for user, state in users.items():
        assert [e["event_id"] for e in state["w"]] == [e["event_id"] for e in expected[user]["w"]], (
            f"state of {user}"
        )
    terminals = last_value_per_key(s, f"{s.app_id}-{TERMINAL_TABLE}-changelog")
    expected_terminals = reference_terminal_states(events)
    assert set(terminals) == set(expected_terminals)
    for terminal, state in terminals.items():  # a transaction counted twice would show here
        days, want_days = state["v"]["d"], expected_terminals[terminal]["d"]
        assert sorted(days) == sorted(want_days), f"days of terminal {terminal} differ"
        for day, (count, amount, frauds) in days.items():
            assert (count, frauds) == (want_days[day][0], want_days[day][2]), (
                f"terminal {terminal} on day {day}"
            )
            assert amount == pytest.approx(want_days[day][1]), f"amount of terminal {terminal} on day {day}"
