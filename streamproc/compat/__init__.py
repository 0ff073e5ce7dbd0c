"""Patches of third-party internals, each version-checked and installed once (`compat.patching`):

- `faust_seek_fix`: a Faust race after a rebalance that lost input events;
- `faust_commit_hook`: the write-behind flush inside Faust's commit;
- `faust_fetch_wait`: the aiokafka fetch wait and minimum Faust hard-codes;
- `mode_sigusr2`: SIGUSR2 logs the consumer's state instead of starting pdb (per worker instance).

`install_faust_patches(settings)` installs the first three; the Faust worker calls it before Faust starts.
Modules elsewhere that only read third-party internals (`observability.partition_gauges`,
`observability.stall_watch`, `stages.table_size`) say so in their docstrings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamproc.config import Settings


def install_faust_patches(settings: Settings) -> None:
    from streamproc.compat import faust_commit_hook, faust_fetch_wait, faust_seek_fix
    from streamproc.compat.patching import check_supported

    check_supported("faust-streaming")
    check_supported("aiokafka")
    faust_seek_fix.install_seek_guard()
    faust_commit_hook.install()
    faust_fetch_wait.install(settings.faust_fetch_wait_ms, settings.fetch_min_bytes)
