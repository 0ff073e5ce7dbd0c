"""Where the risk and time heads start: at the training labels' base rate and the gaps' median."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from models.model.temporal import TemporalModel


def init_risk_bias(model: TemporalModel, risk: np.ndarray) -> None:
    """Start the risk logit at the log-odds of the training labels' base rate (nan: unlabelled).

    With rare positives (fraud: ~1 %) a zero start spends the first steps pushing every logit down,
    which on a short budget leaves the ranking at or below chance; starting at the prior does not.
    Without any labelled event (a recommender's data set) the head is never trained: it starts, and stays,
    at a risk of 1e-4 rather than at a random ~0.5 that would raise an alert on every other event.
    """
    labelled = risk[~np.isnan(risk)]
    rate = float(np.clip(labelled.mean(), 1e-4, 1 - 1e-4)) if len(labelled) else 1e-4
    with torch.no_grad():
        output: Any = model.risk_head[-1]  # the risk head's last Linear
        output.bias.fill_(float(np.log(rate / (1 - rate))))


def init_time_bias(model: TemporalModel, log_gap: np.ndarray, time_loss: str) -> None:
    """Start the time head at the training gaps' median (or mean) of log1p seconds (nan: no next event):
    from zero, Adam's steps of about lr each would spend most of a short budget reaching it."""
    known = log_gap[~np.isnan(log_gap)]
    if len(known):
        start = float(np.median(known) if time_loss == "median" else known.mean())
        with torch.no_grad():
            output: Any = model.time_head[-1]
            output.bias.fill_(start)
