"""Send a verdict on a past transaction to `fraud-labels`: what an analyst or a chargeback feed produces.

A fraud alert names the transaction (event_id), its terminal (item_id) and its time (event_ts_ms);
those three and the verdict are a label. The Faust worker counts it at that terminal on that day,
so the terminal's known-fraud features see it once the label delay has passed.
"""

from __future__ import annotations

import json
from typing import Any

from streamproc.config import Settings
from streamproc.kafka.clients import new_producer


def label_message(
    transaction_id: str, terminal_id: str, ts: int | str, fraud: bool = True, source: str | None = None
) -> dict[str, Any]:
    """The wire message (README, "Input messages", `fraud-labels`); its event_id is the same for the same verdict,
    so a label sent twice is recognisably one."""
    label = 1 if fraud else 0
    return {
        "event_id": f"label-{transaction_id}-{label}",
        "transaction_id": transaction_id,
        "terminal_id": terminal_id,
        "ts": ts,
        "label": label,
        "source": source,
    }


def send_label(settings: Settings, message: dict[str, Any], timeout_s: float = 30.0) -> None:
    """Produce one label, keyed by its terminal, and wait for the broker's acknowledgement."""
    producer = new_producer(settings, "labels")  # keyed by terminal with murmur2, as the replay's labels
    errors: list[str] = []
    producer.produce(
        settings.fraud_labels_topic,
        key=str(message["terminal_id"]).encode(),
        value=json.dumps(message).encode(),
        on_delivery=lambda error, _msg: errors.append(str(error)) if error else None,
    )
    if producer.flush(timeout_s) or errors:
        raise RuntimeError(f"the label was not acknowledged: {errors or 'timed out'}")
