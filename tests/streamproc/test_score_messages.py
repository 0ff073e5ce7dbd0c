"""The scoring worker's output messages: risk and next action always, an alert at or above the threshold."""

from __future__ import annotations

from models.scorer import Scores
from streamproc.kafka.consumers import format_alert
from streamproc.scoring.messages import score_messages

UPDATE = {
    "user_id": "u1",
    "event_id": "tx9",
    "event_ts_ms": 1_530_000_000_000,
    "lineage": {"topic": "transactions", "partition": 2, "offset": 41, "ingest_ts_ms": 1_530_000_000_005},
    "emitted_ts_ms": 1_530_000_000_050,
    "window": [{"event_id": "tx9", "kind": "transaction", "item_id": "t7", "amount": 912.5}],
    "aggregates": {
        "customer_nb_tx_1h": 3.0,
        "customer_amount_1h": 1200.0,
        "customer_avg_amount_7d": 40.0,
        "terminal_recent_nb_tx_1h": 55.0,
        "terminal_risk_30d": 0.25,
        "terminal_risk_1d": 0.0,
    },
}


def scores(risk: float) -> Scores:
    return Scores(
        risk=risk,
        top_items=[("i1", 2.0), ("i2", 1.0)],
        next_action={"view": 0.75, "payment": 0.25},
        time_to_next_s=60.0,
        model_version="v1",
    )


def test_below_the_threshold_there_is_no_alert():
    out = score_messages(UPDATE, scores(0.49), scored_ts_ms=1_530_000_000_100, alert_threshold=0.5)
    assert set(out) == {"risk", "next_action"}
    assert out["risk"]["risk"] == 0.49 and out["risk"]["lineage"]["offset"] == 41
    assert (
        out["risk"]["lineage"]["emitted_ts_ms"]
        == out["next_action"]["lineage"]["emitted_ts_ms"]
        == 1_530_000_000_050
    )
    assert out["next_action"]["top_items"] == [
        {"item_id": "i1", "score": 2.0},
        {"item_id": "i2", "score": 1.0},
    ]


def test_at_the_threshold_the_alert_names_the_transaction():
    out = score_messages(UPDATE, scores(0.5), scored_ts_ms=1_530_000_000_100, alert_threshold=0.5)
    alert = out["alert"]
    assert (alert["event_id"], alert["risk"], alert["threshold"]) == ("tx9", 0.5, 0.5)
    assert (alert["kind"], alert["item_id"], alert["amount"]) == ("transaction", "t7", 912.5)
    assert alert["velocity"] == {
        "customer_nb_tx_1h": 3.0,
        "customer_amount_1h": 1200.0,
        "terminal_recent_nb_tx_1h": 55.0,
        "terminal_risk_30d": 0.25,
    }
    assert "velocity" not in out["risk"]


def test_an_analyst_reads_the_alert_with_the_velocity_it_carries():
    alert = score_messages(UPDATE, scores(0.9), scored_ts_ms=1_530_000_000_100, alert_threshold=0.5)["alert"]
    line = format_alert(alert)
    assert "risk 0.900" in line and "at t7" in line and "event tx9" in line and "95 ms after ingest" in line
    assert "user 1h: 3 tx 1200.00" in line
    assert "terminal 1h" not in line  # its amount is missing: nothing half-said
    assert format_alert({k: v for k, v in alert.items() if k != "velocity"}).count(" 1h: ") == 0
