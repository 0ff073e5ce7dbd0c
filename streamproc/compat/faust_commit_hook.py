"""Faust's consumer runs `app.write_behind.flush()` between choosing the offsets to commit and committing
them (streamproc/stages/write_behind.py says why), as Kafka Streams and Quix Streams flush their stores.

A failed flush crashes the worker without committing: the inputs are redelivered after a restart.
"""

from __future__ import annotations

import logging
from typing import Any

from streamproc.compat.patching import replace_method

log = logging.getLogger(__name__)


def install() -> None:
    from faust.transport import consumer as faust_consumer

    def replacement(original_commit_offsets: Any) -> Any:
        async def _commit_offsets(self: Any, offsets: Any, start_new_transaction: bool = True) -> bool:
            write_behind = getattr(self.app, "write_behind", None)
            if write_behind is not None:
                try:
                    await write_behind.flush()
                except Exception as exc:
                    log.error("state flush failed; nothing committed: %r", exc)
                    await self.crash(exc)
                    return False
            return await original_commit_offsets(self, offsets, start_new_transaction=start_new_transaction)

        return _commit_offsets

    replace_method(faust_consumer.Consumer, "_commit_offsets", replacement, __name__)
