"""Patches of third-party internals, each version-checked and installed once (`compat.patching`):

- `faust_seek_fix`: a Faust race after a rebalance that lost input events;
- `faust_commit_hook`: the write-behind flush, or the exactly-once transaction, inside Faust's commit;
- `faust_worker_consumer`: the aiokafka fetch wait, minimum and isolation level Faust hard-codes;
- `faust_recovery_highwaters`: table recovery that ends on changelogs written in transactions;
- `mode_sigusr2`: SIGUSR2 logs the consumer's state instead of starting pdb (per worker instance).

`install_faust_patches(settings)` installs all but the last; the Faust worker calls it before Faust starts.
Modules elsewhere that only read third-party internals (`observability.partition_gauges`,
`observability.stall_watch`, `stages.table_size`) say so in their docstrings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamproc.config import Settings


def install_faust_patches(settings: Settings) -> None:
    from streamproc.compat import (
        faust_commit_hook,
        faust_recovery_highwaters,
        faust_seek_fix,
        faust_worker_consumer,
    )
    from streamproc.compat.patching import check_supported

    check_supported("faust-streaming")
    check_supported("aiokafka")
    faust_seek_fix.install_seek_guard()
    faust_commit_hook.install()
    faust_worker_consumer.install(settings.faust_fetch_wait_ms, settings.fetch_min_bytes)
    faust_recovery_highwaters.install(settings.kafka_common())
