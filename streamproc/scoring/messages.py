"""The scoring worker's messages, apart from Kafka's clients: a sequence update decoded into the model's
input (or a dead letter's reason), and scores into the messages of the output topics."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Message

from models.features import aggregates
from models.serving.scorer import Scores, Window
from streamproc.core.events import InvalidEvent, decode

# what an analyst reads beside an alert: the customer's and the terminal's velocity now, and the terminal's
# known fraud rate
ALERT_VELOCITY = frozenset(
    (
        *aggregates.CUSTOMER_RECENT_FEATURES,
        "customer_nb_tx_1d",
        *aggregates.TERMINAL_RECENT_FEATURES,
        "terminal_risk_30d",
    )
)


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Pending:
    """One consumed sequence update waiting for its batch."""

    message: Message
    update: dict[str, Any] | None  # None: malformed, goes to dead letters
    error: InvalidEvent | None = None


def window_of(pending: Pending) -> Window:
    """The model's input from a decoded sequence update (malformed ones never get here)."""
    if pending.update is None:
        raise ValueError("a malformed sequence update has no window")
    return Window(events=pending.update["window"], aggregates=pending.update.get("aggregates") or {})


def decode_update(message: Message) -> Pending:
    try:
        raw = message.value()
        if raw is None:
            raise ValueError("no value (a tombstone)")
        update = decode(raw)  # orjson: the stdlib parser was a tenth of the worker's time
        if not isinstance(update, dict) or not isinstance(update.get("window"), list) or not update["window"]:
            raise ValueError("not a sequence update with a non-empty window")
        return Pending(message, update)
    except (TypeError, ValueError) as exc:
        return Pending(message, None, InvalidEvent("bad_sequence_update", str(exc)))


def finite_scores(scores: Scores) -> bool:
    """Whether every number of the scores is finite (a model fed an input it was never trained on can give
    NaN or infinity; such a score is dead-lettered, never published)."""
    return (
        math.isfinite(scores.risk)
        and math.isfinite(scores.time_to_next_s)
        and all(math.isfinite(s) for _, s in scores.top_items)
        and all(math.isfinite(p) for p in scores.next_action.values())
    )


def score_messages(
    update: dict[str, Any], scores: Scores, scored_ts_ms: int, alert_threshold: float
) -> dict[str, dict[str, Any]]:
    """The output messages for one scored update, by output kind: risk, next_action and maybe alert."""
    lineage = dict(update.get("lineage") or {})
    if "emitted_ts_ms" in update:  # when the Faust worker emitted the sequence update: latency per stage
        lineage["emitted_ts_ms"] = update["emitted_ts_ms"]
    common = {
        "user_id": update["user_id"],
        "event_id": update["event_id"],
        "model_version": scores.model_version,
        "event_ts_ms": update["event_ts_ms"],
        "scored_ts_ms": scored_ts_ms,
        "lineage": lineage,
    }
    risk = {**common, "risk": float(scores.risk)}
    out = {
        "risk": risk,
        "next_action": {
            **common,
            "top_items": [{"item_id": item, "score": float(score)} for item, score in scores.top_items],
            "next_action": {name: float(p) for name, p in scores.next_action.items()},
            "time_to_next_s": float(scores.time_to_next_s),
        },
    }
    if scores.risk >= alert_threshold:
        last = update["window"][-1]
        out["alert"] = {
            **risk,
            "threshold": alert_threshold,
            "kind": last.get("kind"),
            "item_id": last.get("item_id"),
            "amount": last.get("amount"),
            "velocity": {
                name: value
                for name, value in (update.get("aggregates") or {}).items()
                if name in ALERT_VELOCITY
            },
        }
        if scores.explanation is not None:
            out["alert"]["explanation"] = scores.explanation
    return out
