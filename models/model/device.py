"""Which torch device a training run or a scorer uses: "auto" picks CUDA when present, else the CPU."""

from __future__ import annotations

import torch


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """The device a name asks for: "auto", None or "" give cuda when torch sees a GPU, else cpu; an
    explicit CUDA device must exist."""
    if name is None or str(name) in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {str(name)!r} asked for, but torch sees no CUDA GPU (torch {torch.__version__})"
        )
    return device
