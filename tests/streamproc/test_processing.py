"""Per-key state transitions: every event counts once, however often it arrives."""

from __future__ import annotations

from streamproc.processing import apply_terminal_event, apply_user_event, new_terminal_state, new_user_state

DAY_MS = 86_400_000


def transaction(n: int, amount: float = 10.0) -> dict:
    return {"event_id": f"tx{n}", "user_id": "u1", "item_id": "t1", "kind": "transaction", "action": "payment",
            "ts_ms": 1_530_000_000_000 + n * 60_000, "amount": amount}


def day_counts(state: dict) -> int:
    return sum(bucket[0] for bucket in state["v"]["d"].values())


def test_terminal_counts_a_transaction_once_when_the_routing_stage_resends_it():
    state = new_terminal_state()
    for n in range(5):
        apply_terminal_event(state, transaction(n), 0, "transactions:2", 100 + n)
    # the routing stage crashed after sending 100..104 and committed only 102: it re-sends 102..104
    for n in range(2, 5):
        apply_terminal_event(state, transaction(n), 0, "transactions:2", 100 + n)
    assert day_counts(state) == 5
    apply_terminal_event(state, transaction(5), 0, "transactions:2", 105)
    apply_terminal_event(state, transaction(6), 0, "transactions:0", 3)  # another input partition
    assert day_counts(state) == 7
    assert state["o"] == {"transactions:2": 105, "transactions:0": 3}


def test_user_window_ignores_a_redelivered_offset_and_a_duplicate_event_id():
    state = new_user_state()
    apply_user_event(state, transaction(1), "clicks:0", 7, 50, 30 * DAY_MS)
    apply_user_event(state, transaction(1), "clicks:0", 7, 50, 30 * DAY_MS)  # Kafka redelivery
    apply_user_event(state, transaction(1), "user-events:1", 3, 50, 30 * DAY_MS)  # re-sent under a new offset
    window, _ = apply_user_event(state, transaction(2), "clicks:0", 8, 50, 30 * DAY_MS)
    assert [e["event_id"] for e in window] == ["tx1", "tx2"]
