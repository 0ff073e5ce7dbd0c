"""What a training run is configured with: TrainConfig, the synthetic presets and each data set's default
settings (chosen on validation; both config files in models/training/presets/), and --set overrides."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from models.model.risk_trees import BAGS as RISK_TREES_BAGS
from models.model.risk_trees import HEAD_WEIGHT as RISK_HEAD_WEIGHT
from models.model.risk_trees import PARAMS as RISK_TREES_PARAMS


@dataclass
class TrainConfig:
    """Model and optimisation hyper-parameters of one training run."""

    d_model: int = 64
    n_layers: int = 1  # serving computes only the last position of the last layer: 1 layer is cheapest
    n_heads: int = 2
    max_len: int = 50
    dropout: float = 0.1
    kind: Literal["transformer", "gru"] = "transformer"
    device: str = "auto"  # "auto": cuda when available, else cpu; the checkpoint loads on either
    use_text: bool = True
    use_item_ids: bool = True  # False: the model never sees item ids (the item head still scores them)
    encoder: str | None = None  # None: the default all-MiniLM-L6-v2
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    max_steps: int = 3000  # the budget: a run's result does not depend on the machine's load
    # a safety net only (None: none): when the clock ends a run, its summary says so (stopped_by) and a
    # warning is printed, since the result then depends on how fast the machine was
    max_seconds: float | None = None
    eval_every: int = 200
    patience: int = 4
    val_fraction: float = 0.15
    val_windows: int = 5000
    full_softmax_max: int = 20_000
    sampled_negatives: int = 4096
    # "full": softmax over the catalogue (sampled as above past full_softmax_max); "sampled": each target
    # against sampled_negatives shared negatives drawn from training frequency**0.75, logQ-corrected:
    # far cheaper per step on long windows, where the full softmax is most of a step's cost
    item_loss: Literal["full", "sampled"] = "full"
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {"item": 1.0, "action": 1.0, "risk": 1.0, "time": 0.2}
    )
    # time to next event, on log1p seconds: "median" (absolute error: the head predicts the conditional
    # median, which minimises the MAE it is judged by, in hours as in log1p seconds) or "mean" (squared
    # error: the conditional mean of log1p seconds, the geometric mean of the gap; before 2026-12-05)
    time_loss: Literal["median", "mean"] = "median"
    seed: int = 0
    # "event": windows end at uniformly drawn events; "user_last": SASRec-style, windows end at a uniformly
    # drawn user's last training event (the loss covers every position of the window either way)
    # "labelled": windows end at uniformly drawn labelled (risk) events, for fraud training windows
    sampling: Literal["event", "user_last", "labelled"] = "event"
    warmup_steps: int = 100
    lr_decay: Literal["none", "linear"] = "none"  # linear: to 0 at max_steps (set max_steps to the budget)
    item_init_std: float | None = None  # std of the item-embedding init (None: 0.02); d_model**-0.5: norm ~1
    item_input_scale: float | None = None  # None: d_model**0.5, as SASRec scales its item embeddings
    text_input_scale: float = 1.0
    # what an item is to the next-item head (TemporalConfig.item_vectors): "ids", "text" or "ids+text"
    item_vectors: Literal["ids", "text", "ids+text"] = "ids"
    item_id_dropout: float = 0.0  # with ids+text: TemporalConfig.item_id_dropout
    # a first-order transition prior added to the next-item logits, its weight chosen on validation after
    # training (TemporalConfig.transition_weight; models.training.validation.TRANSITION_WEIGHTS)
    transition_prior: bool = False
    # early stopping and the kept model: the validation loss (lower is better) or item_ndcg10 (higher):
    # on sparse catalogues the item cross-entropy turns up (over-confidence) while the ranking still improves
    select_on: Literal["loss", "item_ndcg10"] = "loss"
    # risk: also fit gradient-boosted trees (models.model.risk_trees) on the labelled training events; the
    # checkpoint carries them and the Scorer blends their log-odds with the head's (head weight below)
    risk_trees: bool = False
    risk_trees_params: dict[str, float | int] = field(default_factory=lambda: dict(RISK_TREES_PARAMS))
    risk_trees_bags: int = RISK_TREES_BAGS
    risk_head_weight: float = RISK_HEAD_WEIGHT
    # text encoder: 0 keeps it frozen; N trains its top N layers with the head (models.model.text_finetune) at
    # encoder_lr, and the checkpoint then carries the tuned encoder for the scorer
    finetune_layers: int = 0
    encoder_lr: float = 5e-5


PRESETS_DIR = Path(__file__).resolve().parent / "presets"
DEFAULT_PRESET = "demo"  # the synthetic stream trained when neither --preset nor --dataset is given


def load_presets(folder: Path = PRESETS_DIR) -> dict[str, tuple[dict[str, int], TrainConfig]]:
    """Synthetic presets, one TOML file each (but datasets.toml): the stream's generator arguments and the
    TrainConfig fields it sets."""
    presets = {}
    for path in sorted(folder.glob("*.toml")):
        if path.stem == "datasets":
            continue
        spec = tomllib.loads(path.read_text())
        presets[path.stem] = (dict(spec["stream"]), TrainConfig(**spec.get("config", {})))
    return presets


def load_shared_settings(path: Path = PRESETS_DIR / "datasets.toml") -> dict[str, list[str]]:
    """The named --set lists under [shared] that data sets (and FRAUD_TEMPORAL) build on."""
    return dict(tomllib.loads(path.read_text()).get("shared", {}))


def load_dataset_defaults(path: Path = PRESETS_DIR / "datasets.toml") -> dict[str, list[str]]:
    """Each data set's default --set assignments: its `extends` lists from [shared] first, then its own."""
    spec = tomllib.loads(path.read_text())
    shared = spec.get("shared", {})
    return {
        name: [item for base in entry.get("extends", []) for item in shared[base]] + list(entry["settings"])
        for name, entry in spec["datasets"].items()
    }


PRESETS = load_presets()
DATASET_DEFAULTS = load_dataset_defaults()


def _number_or_text(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


def apply_overrides(config: TrainConfig, assignments: Sequence[str]) -> TrainConfig:
    """TrainConfig with FIELD=VALUE assignments applied (values cast to the field's current type);
    loss_weights.NAME=VALUE sets one loss weight."""
    changes: dict[str, Any] = {}
    weights = dict(config.loss_weights)
    for assignment in assignments:
        key, _, value = assignment.partition("=")
        if key.startswith("loss_weights."):
            weights[key.split(".", 1)[1]] = float(value)
            continue
        current = getattr(config, key)  # AttributeError for unknown fields
        if isinstance(current, bool):
            changes[key] = value.lower() in ("1", "true", "yes")
        elif current is None:
            changes[key] = None if value.lower() == "none" else _number_or_text(value)
        elif isinstance(current, str):
            changes[key] = value
        else:
            changes[key] = type(current)(float(value) if isinstance(current, int) else value)
    return replace(config, **changes, loss_weights=weights)


# the fraud evaluation's temporal models (models.evaluation.fraud's folds, models.evaluation.time_to_next's
# time model): the [shared] fraud-temporal shape; a fold trains on one week of labels against the clock
# (90 s), as when its settings were chosen (docs/results.md)
FRAUD_TEMPORAL = apply_overrides(
    TrainConfig(),
    [
        *load_shared_settings()["fraud-temporal"],
        "max_seconds=90",
        "patience=4",
        "val_windows=20000",
        "loss_weights.time=0",
    ],
)
