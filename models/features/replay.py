"""The one offline replay of the velocity features: models.features.aggregates over a record log in
event-time order, as the pipeline's stages apply it event by event (tests/streamproc/core/test_processing.py
checks that both give the same features). Training, the data sets, evaluation and the scripts all use
this one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from models.features import aggregates as agg


def replay_aggregates(
    records: Sequence[dict[str, Any]], labels: dict[str, int]
) -> dict[str, dict[str, float]]:
    """Aggregates of every event, replaying features.aggregates in event-time order as the pipeline does.

    A transaction first updates its customer and terminal states, then reads both feature sets; a click
    reads the customer features of its user's transaction state. Customer features are memoised until
    the user's next transaction or day, terminal features per (terminal, day): exact, because they only
    read days at least LABEL_DELAY_DAYS old, which no later update (in time order) touches. The recent
    velocity (last hour, today) changes with every event and is read for each.
    """
    users: dict[str, agg.VelocityState] = {}
    terminals: dict[str, agg.VelocityState] = {}
    customer_memo: dict[str, tuple[int, dict[str, float]]] = {}
    terminal_memo: dict[tuple[str, int], dict[str, float]] = {}
    out: dict[str, dict[str, float]] = {}
    for record in sorted(records, key=lambda r: r["ts_ms"]):
        ts, user, day = record["ts_ms"], record["user_id"], agg.day_index(record["ts_ms"])
        if record["kind"] == "transaction":
            agg.update(users.setdefault(user, agg.new_state()), ts, record["amount"])
            state = terminals.setdefault(record["item_id"], agg.new_state())
            agg.update(state, ts, record["amount"], labels.get(record["event_id"]))
            customer_memo.pop(user, None)
        memo = customer_memo.get(user)
        if memo is None or memo[0] != day:
            memo = (day, agg.customer_features(users.get(user, agg.new_state()), ts))
            customer_memo[user] = memo
        features = memo[1] | agg.customer_recent_features(users.get(user, agg.new_state()), ts)
        if record["kind"] == "transaction":
            terminal, key = terminals[record["item_id"]], (record["item_id"], day)
            if key not in terminal_memo:
                terminal_memo[key] = agg.terminal_features(terminal, ts)
            features |= terminal_memo[key] | agg.terminal_recent_features(terminal, ts)
        out[record["event_id"]] = features
    return out
