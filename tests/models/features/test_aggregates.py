"""Leakage guard: the aggregates of a transaction never see the future or labels inside the delay; recent velocity."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.features.aggregates import (
    DAY_MS,
    LABEL_DELAY_DAYS,
    MINUTE_MS,
    TERMINAL_FEATURES,
    TERMINAL_HISTORY_FEATURES,
    TERMINAL_RECENT_FEATURES,
    customer_recent_features,
    new_state,
    terminal_features,
    terminal_history,
    terminal_recent_features,
    update,
)
from models.features.replay import replay_aggregates

T0 = 1_735_689_600_000


@st.composite
def transactions(draw: st.DrawFn) -> tuple[list[dict], dict[str, int]]:
    """Transactions of a few users and terminals at distinct times over ~50 days, with labels."""
    n = draw(st.integers(2, 40))
    offsets = draw(st.lists(st.integers(0, 50 * DAY_MS), min_size=n, max_size=n, unique=True))
    records, labels = [], {}
    for i, offset in enumerate(sorted(offsets)):
        event_id = f"tx{i}"
        records.append(
            {
                "event_id": event_id,
                "kind": "transaction",
                "user_id": draw(st.sampled_from(["u1", "u2"])),
                "ts_ms": T0 + offset,
                "item_id": draw(st.sampled_from(["t1", "t2"])),
                "action": "transaction",
                "amount": draw(st.floats(0, 500)),
            }
        )
        labels[event_id] = draw(st.integers(0, 1))
    return records, labels


@settings(max_examples=80, deadline=None)
@given(
    data=transactions(),
    cut=st.integers(0, 39),
    amounts=st.lists(st.floats(0, 5000), min_size=40, max_size=40),
)
def test_features_ignore_everything_after_the_event(
    data: tuple[list[dict], dict[str, int]], cut: int, amounts: list[float]
) -> None:
    records, labels = data
    cut = min(cut, len(records) - 1)
    later = [r | {"amount": a, "item_id": "t1"} for r, a in zip(records[cut + 1 :], amounts, strict=False)]
    flipped = {k: 1 - v for k, v in labels.items()}
    full = replay_aggregates(records, labels)
    changed = replay_aggregates(
        records[: cut + 1] + later, {**labels, **{r["event_id"]: flipped[r["event_id"]] for r in later}}
    )
    for record in records[: cut + 1]:
        assert changed[record["event_id"]] == full[record["event_id"]]


@settings(max_examples=80, deadline=None)
@given(
    data=transactions(),
    target=st.integers(0, 39),
    amounts=st.lists(st.floats(0, 5000), min_size=40, max_size=40),
)
def test_terminal_features_ignore_the_label_delay_period(
    data: tuple[list[dict], dict[str, int]], target: int, amounts: list[float]
) -> None:
    records, labels = data
    scored = records[min(target, len(records) - 1)]
    first_hidden_day = scored["ts_ms"] // DAY_MS - LABEL_DELAY_DAYS + 1
    recent = {i for i, r in enumerate(records) if r["ts_ms"] // DAY_MS >= first_hidden_day}
    perturbed = [r | {"amount": amounts[i]} if i in recent else r for i, r in enumerate(records)]
    relabelled = {
        r["event_id"]: 1 - labels[r["event_id"]] if i in recent else labels[r["event_id"]]
        for i, r in enumerate(records)
    }
    before = replay_aggregates(records, labels)[scored["event_id"]]
    after = replay_aggregates(perturbed, relabelled)[scored["event_id"]]
    terminal = TERMINAL_FEATURES + TERMINAL_HISTORY_FEATURES
    assert {k: before[k] for k in terminal} == {k: after[k] for k in terminal}


def test_terminal_history_reads_known_days_only() -> None:
    today = T0 // DAY_MS + 60
    state = {
        "d": {
            str(today - 40): [5, 50.0, 5],  # older than the 30 known days
            str(today - 20): [4, 40.0, 1],  # first known fraud
            str(today - 15): [6, 60.0, 0],
            str(today - 10): [2, 20.0, 2],  # last known fraud
            str(today - 3): [3, 30.0, 3],  # inside the label delay
        }
    }
    history = terminal_history(state, today * DAY_MS + 5)
    assert history == {
        "terminal_first_fraud_age_days": 20.0,
        "terminal_last_fraud_age_days": 10.0,
        "terminal_fraud_days": 2.0,
        "terminal_frauds_since_first": 3.0,
        "terminal_nb_tx_since_first": 12.0,
        "terminal_risk_since_first": 0.25,
    }
    assert terminal_features(state, today * DAY_MS)["terminal_risk_since_first"] == 0.25
    assert terminal_history({"d": {str(today - 3): [3, 30.0, 3]}}, today * DAY_MS) == dict.fromkeys(
        TERMINAL_HISTORY_FEATURES, 0.0
    )


@settings(max_examples=100, deadline=None)
@given(
    gaps=st.lists(st.integers(0, 3 * 3_600_000), min_size=1, max_size=60),
    amounts=st.lists(st.floats(0, 500), min_size=60, max_size=60),
)
def test_recent_velocity_is_the_sliding_hour_and_days_up_to_each_event(gaps, amounts):
    """Events in time order: after each, the recent features equal a brute-force sum over the events so far."""
    state, seen, ts = new_state(), [], T0
    for gap, amount in zip(gaps, amounts, strict=False):
        ts += gap
        update(state, ts, amount)
        seen.append((ts, amount))
        minute, today = ts // MINUTE_MS, ts // DAY_MS
        hour = [a for t, a in seen if minute - 60 < t // MINUTE_MS <= minute]
        week = [a for t, a in seen if today - 7 < t // DAY_MS <= today]
        day = [a for t, a in seen if t // DAY_MS == today]
        assert customer_recent_features(state, ts) == pytest.approx(
            {"customer_nb_tx_1h": len(hour), "customer_amount_1h": sum(hour)}
        )
        assert terminal_recent_features(state, ts) == pytest.approx(
            {
                "terminal_recent_nb_tx_1h": len(hour),
                "terminal_recent_amount_1h": sum(hour),
                "terminal_recent_nb_tx_1d": len(day),
                "terminal_recent_amount_1d": sum(day),
                "terminal_recent_nb_tx_7d": len(week),
                "terminal_recent_amount_7d": sum(week),
            }
        )
        assert len(state["m"]) <= 60  # minute buckets of the newest hour only
    assert set(terminal_recent_features(state, ts)) == set(TERMINAL_RECENT_FEATURES)


def test_a_late_event_counts_in_its_hour_while_the_state_holds_it_and_in_its_day_always():
    state = new_state()
    update(state, T0 + 3 * 3_600_000, 10.0)
    update(state, T0 + 3 * 3_600_000 - 30 * MINUTE_MS, 5.0)  # 30 minutes late: inside the newest hour
    update(state, T0, 7.0)  # 3 hours late: its day, not its hour
    assert customer_recent_features(state, T0 + 3 * 3_600_000) == {
        "customer_nb_tx_1h": 2.0,
        "customer_amount_1h": 15.0,
    }
    assert terminal_recent_features(state, T0 + 3 * 3_600_000)["terminal_recent_amount_1d"] == 22.0
    assert customer_recent_features({"d": {}}, T0) == {"customer_nb_tx_1h": 0.0, "customer_amount_1h": 0.0}
