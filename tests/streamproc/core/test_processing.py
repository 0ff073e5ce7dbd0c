"""Per-key state transitions: every event and every fraud label counts once, however often it arrives."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from models.features import aggregates
from models.features.replay import replay_aggregates
from models.training import train_config
from streamproc.core.events import FraudLabel
from streamproc.core.processing import (
    apply_fraud_label,
    apply_terminal_event,
    apply_user_event,
    is_new_user_event,
    label_delay_days,
    new_terminal_state,
    new_user_state,
)

DAY_MS = 86_400_000


def transaction(n: int, amount: float = 10.0) -> dict:
    return {
        "event_id": f"tx{n}",
        "user_id": "u1",
        "item_id": "t1",
        "kind": "transaction",
        "action": "payment",
        "ts_ms": 1_530_000_000_000 + n * 60_000,
        "amount": amount,
    }


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
    assert is_new_user_event(state, transaction(1), "clicks:0", 7)
    apply_user_event(state, transaction(1), "clicks:0", 7, 50, 30 * DAY_MS)
    assert not is_new_user_event(state, transaction(1), "clicks:0", 7)  # what the accepted count skips
    assert not is_new_user_event(state, transaction(1), "user-events:1", 3)
    assert is_new_user_event(state, transaction(2), "clicks:0", 8)
    apply_user_event(state, transaction(1), "clicks:0", 7, 50, 30 * DAY_MS)  # Kafka redelivery
    apply_user_event(state, transaction(1), "user-events:1", 3, 50, 30 * DAY_MS)  # re-sent under a new offset
    window, _ = apply_user_event(state, transaction(2), "clicks:0", 8, 50, 30 * DAY_MS)
    assert [e["event_id"] for e in window] == ["tx1", "tx2"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 12), st.sampled_from(["clicks:0", "user-events:1"]), st.integers(0, 30)),
        max_size=60,
    )
)
def test_a_caller_that_asked_is_new_user_event_gets_the_same_state_as_one_that_did_not(arrivals):
    """The agent passes is_new_user_event's answer on (one scan of the recent ids); nothing may differ."""
    asked, not_asked = new_user_state(), new_user_state()
    for n, source, offset in arrivals:
        record = transaction(n)
        is_new = is_new_user_event(asked, record, source, offset)
        assert is_new == is_new_user_event(not_asked, record, source, offset)
        got = apply_user_event(asked, record, source, offset, 5, 30 * DAY_MS, is_new)
        assert got == apply_user_event(not_asked, record, source, offset, 5, 30 * DAY_MS)
        assert asked == not_asked


def fraud_label(n: int, label: int = 1, terminal: str = "t1") -> FraudLabel:
    return FraudLabel(f"label-{n}-{label}", f"tx{n}", terminal, transaction(n)["ts_ms"], label, "chargeback")


def known_frauds(state: dict) -> int:
    return sum(bucket[2] for bucket in state["v"]["d"].values())


def test_a_late_fraud_label_counts_once_on_its_transactions_day_and_a_genuine_verdict_retracts_it():
    state = new_terminal_state()
    for n in range(4):
        apply_terminal_event(state, transaction(n), None, "transactions:0", n)
    outcomes = [apply_fraud_label(state, fraud_label(n)) for n in (1, 2, 1)]
    assert outcomes == ["counted", "counted", "duplicate"]
    assert known_frauds(state) == 2 and state["f"] == {"tx1": 17708, "tx2": 17708}
    assert apply_fraud_label(state, fraud_label(2, label=0)) == "retracted"
    assert apply_fraud_label(state, fraud_label(2, label=0)) == "not_counted"
    assert apply_fraud_label(state, fraud_label(3, label=0)) == "not_counted"
    assert known_frauds(state) == 1 and state["f"] == {"tx1": 17708}


def test_a_label_for_a_transaction_labelled_inline_is_a_duplicate_and_can_be_retracted():
    state = new_terminal_state()
    apply_terminal_event(state, transaction(0), 1, "transactions:0", 0)
    apply_terminal_event(state, transaction(0), 1, "transactions:0", 0)  # redelivered: not counted again
    assert apply_fraud_label(state, fraud_label(0)) == "duplicate"
    assert known_frauds(state) == 1
    assert apply_fraud_label(state, fraud_label(0, label=0)) == "retracted"
    assert known_frauds(state) == 0


def test_a_label_without_a_transaction_left_to_count_on_its_day_changes_nothing():
    state = new_terminal_state()
    apply_terminal_event(state, transaction(0), None, "transactions:0", 0)
    far_day = FraudLabel("l", "tx-other-day", "t1", transaction(0)["ts_ms"] - 3 * DAY_MS, 1)
    assert apply_fraud_label(state, far_day) == "unmatched"
    assert apply_fraud_label(state, fraud_label(0)) == "counted"
    second = FraudLabel("l2", "tx-unseen-same-day", "t1", transaction(0)["ts_ms"], 1)
    assert apply_fraud_label(state, second) == "unmatched"  # one transaction that day, already a fraud
    assert known_frauds(state) == 1 and list(state["f"]) == ["tx0"]


def test_a_labels_delay_is_read_on_its_terminals_event_time_clock():
    state = new_terminal_state()
    assert label_delay_days(state, fraud_label(0)) is None  # no transaction: no clock
    late = dict(transaction(0), event_id="tx-late", ts_ms=transaction(0)["ts_ms"] + 9 * DAY_MS + 30_000)
    for n, record in enumerate([transaction(0), transaction(1), late]):
        apply_terminal_event(state, record, None, "transactions:0", n)
    # the newest transaction's minute, 9 days and 30 s after tx0: 9 days to the minute
    assert label_delay_days(state, fraud_label(0)) == 9.0
    assert label_delay_days(state, fraud_label(1)) == 9.0 - 60_000 / DAY_MS
    newer_than_clock = FraudLabel("l", "tx-late", "t1", late["ts_ms"], 1)
    assert label_delay_days(state, newer_than_clock) == 0.0  # never negative
    legacy = {"v": {"d": {str(late["ts_ms"] // DAY_MS): [1, 10.0, 0]}}}  # a state from before minute buckets
    late_day_start = late["ts_ms"] // DAY_MS * DAY_MS  # its clock: the newest day's start
    assert label_delay_days(legacy, fraud_label(0)) == (late_day_start - transaction(0)["ts_ms"]) / DAY_MS > 8


def test_fraud_ids_are_forgotten_with_the_days_velocity_drops():
    state = new_terminal_state()
    apply_terminal_event(state, transaction(0), 1, "transactions:0", 0)
    later = transaction(1) | {
        "event_id": "tx-late",
        "ts_ms": transaction(0)["ts_ms"] + aggregates.KEEP_DAYS * DAY_MS,
    }
    apply_terminal_event(state, later, 1, "transactions:0", 1)
    assert state["f"] == {"tx-late": later["ts_ms"] // DAY_MS}


def test_a_state_written_before_labels_existed_takes_labels():
    state = {"o": {}, "v": aggregates.new_state()}  # no "f"
    apply_terminal_event(state, transaction(0), None, "transactions:0", 0)
    assert apply_fraud_label(state, fraud_label(0)) == "counted"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.sampled_from([0, 1])), max_size=30))
def test_known_frauds_are_the_transactions_whose_last_verdict_is_fraud(verdicts):
    """However labels repeat and flip, the count is that of transactions whose latest verdict is 1."""
    state = new_terminal_state()
    for n in range(6):
        apply_terminal_event(state, transaction(n), None, "transactions:0", n)
    last: dict[int, int] = {}
    for n, label in verdicts:
        apply_fraud_label(state, fraud_label(n, label))
        last[n] = label
    fraud = {f"tx{n}" for n, label in last.items() if label == 1}
    assert set(state["f"]) == fraud and known_frauds(state) == len(fraud)


def test_training_replays_the_aggregates_the_pipeline_serves():
    """One feature path: the pipeline's per-key transitions, applied in event-time order, give every event
    the aggregates (handbook, terminal history and recent velocity alike) that training replays."""
    from models import train

    records, labels = train.synthetic_records(train_config.PRESETS["tiny"][0])
    records = sorted(records, key=lambda r: r["ts_ms"])
    users: dict[str, dict] = {}
    terminals: dict[str, dict] = {}
    served: dict[str, dict[str, float]] = {}
    for offset, record in enumerate(records):
        terminal = {}
        if record["kind"] == "transaction":
            state = terminals.setdefault(record["item_id"], new_terminal_state())
            terminal = apply_terminal_event(state, record, labels.get(record["event_id"]), "tx:0", offset)
        user = users.setdefault(record["user_id"], new_user_state())
        _window, customer = apply_user_event(user, record, "in:0", offset, max_events=50, max_age_ms=10**12)
        served[record["event_id"]] = customer | terminal
    transactions = [r for r in records if r["kind"] == "transaction"]
    assert len(transactions) > 100 and len(transactions) < len(records) and sum(labels.values()) > 0
    assert any(a["terminal_recent_nb_tx_7d"] > 1 and a["customer_nb_tx_1h"] > 1 for a in served.values())
    assert replay_aggregates(records, labels) == served
    assert replay_aggregates(transactions, labels) == {
        r["event_id"]: served[r["event_id"]] for r in transactions
    }


def test_an_event_id_sent_twice_is_a_duplicate_but_a_redelivered_offset_is_not():
    from streamproc.core.processing import is_duplicate_user_event

    state = new_user_state()
    apply_user_event(state, transaction(1), "clicks:0", 7, 50, 30 * DAY_MS)
    assert is_duplicate_user_event(state, transaction(1), "clicks:0", 8)  # the producer sent it again
    assert is_duplicate_user_event(state, transaction(1), "user-events:1", 3)
    assert not is_duplicate_user_event(
        state, transaction(1), "clicks:0", 7
    )  # redelivered after a crash: rescored
    assert not is_duplicate_user_event(state, transaction(2), "clicks:0", 8)


def test_a_terminal_counts_a_transaction_sent_twice_by_its_producer_once():
    state = new_terminal_state()
    apply_terminal_event(state, transaction(1), 0, "transactions:0", 10)
    apply_terminal_event(state, transaction(1), 0, "transactions:0", 11)  # the same transaction, a new offset
    apply_terminal_event(state, transaction(1), 0, "transactions:3", 4)  # and through another partition
    apply_terminal_event(state, transaction(2), 0, "transactions:0", 12)
    assert day_counts(state) == 2
    assert state["o"] == {"transactions:0": 12, "transactions:3": 4}
    old = {"o": {}, "v": aggregates.new_state(), "f": {}}  # a state written before duplicates were caught
    apply_terminal_event(old, transaction(1), 0, "transactions:0", 10)
    assert day_counts(old) == 1 and old["s"] == ["tx1"]
