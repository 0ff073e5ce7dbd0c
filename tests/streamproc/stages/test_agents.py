"""One Faust agent run for real through Faust's `test_context()` (a channel instead of a topic, no broker):
the transaction router's batch loop takes what is put, re-keys the valid transaction by its terminal and
dead-letters the invalid one with its reason. The librdkafka client under the stage's OutputProducer is a
stand-in that records what it is given (the same agents run against a real broker in tests/integration)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest

from streamproc.config import Settings
from streamproc.kafka import output_producer
from streamproc.observability.metrics import create_metrics
from streamproc.stages.agents import register_agents
from streamproc.stages.app import create_app

TS = 1_735_689_600_000  # 2025-01-01


def transaction(event_id: str, amount: float) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "user_id": "u1",
        "amount": amount,
        "currency": "EUR",
        "terminal_id": "t7",
        "ts": TS,
        "label": 0,
    }


class RecordingClient:
    """What OutputProducer calls on its librdkafka producer; every record is recorded, none is sent."""

    def __init__(self, sent: list[tuple[str, bytes | None, dict[str, Any]]]) -> None:
        self.sent = sent

    def produce(self, topic: str, value: bytes, key: bytes | None, *_: Any, **__: Any) -> None:
        self.sent.append((topic, key, json.loads(value)))

    def poll(self, _timeout: float = 0) -> int:
        return 0

    def flush(self, _timeout: float = 0) -> int:
        return 0


async def route_two(settings: Settings, sent: list[tuple[str, bytes | None, dict[str, Any]]]) -> None:
    topo = create_app(settings)
    register_agents(topo, settings, create_metrics())
    agent = topo.app.agents["streamproc.route-transactions"]
    async with agent.test_context() as router:
        for event_id, amount in (("tx1", 20.5), ("tx2", -5.0)):
            # the agent yields nothing, so waiting for a processed value would never end
            await router.put(json.dumps(transaction(event_id, amount)).encode(), key=b"u1", wait=False)
        deadline = time.monotonic() + 30
        while len(sent) < 2:
            assert time.monotonic() < deadline, f"the agent sent {sent} within 30 s"
            await asyncio.sleep(0.05)


def test_the_router_agent_rekeys_a_valid_transaction_and_dead_letters_an_invalid_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[str, bytes | None, dict[str, Any]]] = []
    monkeypatch.setattr(output_producer, "new_producer", lambda *_: RecordingClient(sent))
    settings = Settings(data_dir=tmp_path, processing_guarantee="at_least_once")
    asyncio.run(route_two(settings, sent))

    by_topic = {topic: (key, value) for topic, key, value in sent}
    assert sorted(by_topic) == sorted([settings.tx_by_terminal_topic, settings.dead_letter_topic])
    key, routed = by_topic[settings.tx_by_terminal_topic]
    assert key == b"t7"
    assert routed["record"]["event_id"] == "tx1"
    assert routed["label"] == 0
    _, dead = by_topic[settings.dead_letter_topic]
    assert (dead["reason"], dead["offset"]) == ("bad_amount", 1)
    assert base64.b64decode(dead["raw_b64"]) == json.dumps(transaction("tx2", -5.0)).encode()
