"""mode's Worker answers SIGUSR2 by starting pdb on the worker's terminal; a service must not stop in a
debugger. This replaces that handler, on one worker instance, with `handler` (the consumer-state log)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def install(worker: Any, handler: Callable[[], None]) -> None:
    if not hasattr(worker, "_on_sigusr2"):
        raise RuntimeError(f"{type(worker).__qualname__} has no _on_sigusr2: {__name__} cannot install")
    worker._on_sigusr2 = handler
