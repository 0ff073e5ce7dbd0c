"""Synthetic stream: deterministic, time-ordered, labelled fraud, contract-shaped records."""

from __future__ import annotations

from models.data import synthetic

SPEC = {"n_users": 20, "n_items": 50, "n_terminals": 20, "days": 30, "seed": 0}


def test_same_seed_same_stream_in_event_time_order() -> None:
    first = list(synthetic.generate(**SPEC))
    assert first == list(synthetic.generate(**SPEC))
    assert first != list(synthetic.generate(**(SPEC | {"seed": 8})))
    times = [msg["ts"] for _, msg in first]
    assert times == sorted(times)
    assert {topic for topic, _ in first} == {"clicks", "transactions"}
    assert len({msg["event_id"] for _, msg in first}) == len(first)


def test_transactions_carry_fraud_and_clicks_follow_the_funnel() -> None:
    stream = list(synthetic.generate(**SPEC))
    tx = [msg for topic, msg in stream if topic == "transactions"]
    assert 0 < sum(msg["label"] for msg in tx) < len(tx)
    assert all(msg["label"] == 1 for msg in tx if msg["amount"] > synthetic.FRAUD_AMOUNT)
    clicks = [msg for topic, msg in stream if topic == "clicks"]
    assert {"view", "click", "cart", "purchase"} <= {msg["action"] for msg in clicks}
    assert all(msg["title"] and msg["category"] in synthetic.CATEGORY_NOUNS for msg in clicks)
    shoppers = {msg["user_id"] for msg in clicks} & {msg["user_id"] for msg in tx}
    assert shoppers  # the same users shop and pay


def test_to_record_maps_wire_fields_to_the_contract() -> None:
    stream = synthetic.generate(**SPEC)
    click = next(msg for topic, msg in stream if topic == "clicks")
    tx = next(msg for topic, msg in stream if topic == "transactions")
    record = synthetic.to_record("transactions", tx)
    assert record == {
        "event_id": tx["event_id"],
        "kind": "transaction",
        "user_id": tx["user_id"],
        "ts_ms": tx["ts"],
        "item_id": tx["terminal_id"],
        "action": "transaction",
        "amount": tx["amount"],
        "value": None,
        "title": None,
        "category": tx["category"],
    }
    assert "label" not in record
    record = synthetic.to_record("clicks", click)
    assert record["kind"] == "click" and record["item_id"] == click["item_id"] and record["amount"] is None
    assert (record["title"], record["category"], record["ts_ms"]) == (
        click["title"],
        click["category"],
        click["ts"],
    )
