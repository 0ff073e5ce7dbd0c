"""Faust's table recovery waits until it has applied the changelog record at "end offset - 1"; on a changelog
written in transactions that offset is a commit marker, which a consumer never sees, so recovery would wait
for ever (Faust itself gives up after two 5 s timeouts, and only under its own exactly-once mode). This sets
each active changelog partition's highwater to the offset of its last committed record instead
(`kafka.admin.last_committed_offsets`, read with read_committed), so that recovery ends as soon as that record
is applied.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from streamproc.compat.patching import replace_method
from streamproc.kafka.admin import last_committed_offsets

log = logging.getLogger(__name__)
_KAFKA: dict[str, Any] = {}  # the librdkafka client config the lookups use, set by install


def install(kafka: dict[str, Any]) -> None:
    from faust.tables.recovery import Recovery

    _KAFKA.clear()
    _KAFKA.update(kafka)

    def replacement(original: Any) -> Any:
        async def _build_highwaters(self: Any, consumer: Any, tps: Any, destination: Any, title: str) -> None:
            await original(self, consumer, tps, destination, title)
            ends = {(tp.topic, tp.partition): tp for tp, value in destination.items() if value >= 0}
            if not ends:
                return
            last = await asyncio.to_thread(last_committed_offsets, dict(_KAFKA), list(ends))
            for key, tp in ends.items():
                if last[key] != destination[tp]:
                    log.info(
                        "%s: highwater %d is past the last committed record (%d): transaction markers or "
                        "aborted records follow it",
                        tp,
                        destination[tp],
                        last[key],
                    )
                    destination[tp] = last[key]

        return _build_highwaters

    replace_method(Recovery, "_build_highwaters", replacement, __name__)
