"""A paced replay sends at its rate from the first event on, against the real broker."""

from __future__ import annotations

import time

import pytest

from streamproc.feed.replay import replay
from streamproc.kafka.admin import create_topics
from tests.integration.helpers import make_settings

pytestmark = pytest.mark.integration


def test_the_first_send_wait_does_not_queue_a_burst(broker, tmp_path):
    # An idempotent producer's first send waits ~0.5 s for its producer id on this broker; pacing from
    # the start would send every event due meanwhile at once when the id arrives.
    s = make_settings(broker, tmp_path, tmp_path / "no-checkpoint")
    create_topics(s.bootstrap_servers, s.all_topics(), s.partitions)
    delivered_at: list[float] = []
    events = [
        (
            "clicks",
            {
                "event_id": f"e{n}",
                "user_id": "u1",
                "item_id": "i1",
                "action": "view",
                "ts": 1_700_000_000_000 + n,
            },
        )
        for n in range(40)
    ]
    assert (
        replay(
            s,
            iter(events),
            rate=100,
            progress=False,
            on_delivered=lambda _n: delivered_at.append(time.monotonic()),
        )
        == 40
    )
    # events 2..40 are due 10 ms apart after the first acknowledgement: about 0.39 s, not a burst
    assert delivered_at[-1] - delivered_at[1] > 0.25, [round(t - delivered_at[0], 3) for t in delivered_at]
