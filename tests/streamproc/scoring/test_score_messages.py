"""The scoring worker's output messages: risk and next action always, an alert at or above the threshold."""

from __future__ import annotations

from dataclasses import replace

from models.serving.scorer import Scores
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


EXPLANATION = {
    "log_odds": 2.0,
    "head": {
        "weight": 0.2,
        "log_odds": 1.0,
        "events": [
            {"event_id": "tx8", "kind": "transaction", "item_id": "t7", "amount": 450.0, "effect": 0.75},
            {"event_id": "c3", "kind": "click", "item_id": "i12", "effect": -0.25},
        ],
    },
    "trees": {
        "weight": 0.8,
        "log_odds": 2.25,
        "bias": -3.0,
        "top": [
            {"feature": "terminal_risk_30d", "value": 0.25, "contribution": 3.5},
            {"feature": "TX_AMOUNT", "value": None, "contribution": 1.5},
        ],
        "others": 0.25,
    },
}


def test_an_alert_carries_its_explanation_and_the_analyst_reads_why() -> None:
    explained = replace(scores(0.9), explanation=EXPLANATION)
    out = score_messages(UPDATE, explained, scored_ts_ms=1_530_000_000_100, alert_threshold=0.5)
    assert out["alert"]["explanation"] == EXPLANATION
    assert "explanation" not in out["risk"] and "explanation" not in out["next_action"]
    first, trees, head = format_alert(out["alert"]).split("\n")
    assert "risk 0.900" in first
    assert trees == (
        "    why, trees (80%): +2.25 = bias -3.00, terminal_risk_30d=0.25 +3.50, TX_AMOUNT=missing +1.50, "
        "others +0.25"
    )
    assert head == (
        "    why, sequence model (20%): +1.00; past events that moved it most: "
        "tx8 transaction at t7 amount 450.00 +0.75, c3 click at i12 -0.25"
    )
    unexplained = score_messages(UPDATE, scores(0.9), 0, 0.5)["alert"]
    assert "\n" not in format_alert(unexplained)  # nothing to explain, nothing printed
