"""How every patch in `streamproc.compat` replaces a third-party method: once per process, only on the
versions it was written for, and never silently when the method it replaces is gone."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import version
from typing import Any

# distribution -> the version prefixes whose internals the patches were written against and tested on
SUPPORTED = {"faust-streaming": ("0.15.",), "aiokafka": ("0.10.", "0.11.", "0.12.", "0.13.", "0.14.")}


def check_supported(distribution: str) -> str:
    """The installed version of `distribution`; RuntimeError when the patches were not written for it."""
    installed = version(distribution)
    if not installed.startswith(SUPPORTED[distribution]):
        raise RuntimeError(
            f"{distribution} {installed} is installed; streamproc.compat patches its internals as of "
            f"{', '.join(p + 'x' for p in SUPPORTED[distribution])}: re-check each patch against the new "
            "version's source before widening streamproc/compat/patching.py SUPPORTED"
        )
    return installed


def replace_method(cls: type, name: str, make_replacement: Callable[[Any], Any], patch: str) -> bool:
    """Replace `cls.name` by `make_replacement(original)` unless this process did already; False then.

    `patch` (the patching module's name) goes into the error raised when `cls` lacks `name`."""
    marker = f"_streamproc_replaced_{name}"
    if cls.__dict__.get(marker):
        return False
    if not hasattr(cls, name):
        raise RuntimeError(f"{cls.__module__}.{cls.__qualname__} has no {name}: {patch} cannot install")
    setattr(cls, name, make_replacement(getattr(cls, name)))
    setattr(cls, marker, True)
    return True
