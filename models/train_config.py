"""What a training run is configured with: TrainConfig, the synthetic presets, each data set's default
settings (chosen on validation), and --set overrides."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from models.risk_trees import BAGS as RISK_TREES_BAGS
from models.risk_trees import HEAD_WEIGHT as RISK_HEAD_WEIGHT
from models.risk_trees import PARAMS as RISK_TREES_PARAMS


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
    max_steps: int = 3000
    max_seconds: float = 100.0
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
    # early stopping and the kept model: the validation loss (lower is better) or item_ndcg10 (higher):
    # on sparse catalogues the item cross-entropy turns up (over-confidence) while the ranking still improves
    select_on: Literal["loss", "item_ndcg10"] = "loss"
    # risk: also fit gradient-boosted trees (models.risk_trees) on the labelled training events; the
    # checkpoint carries them and the Scorer blends their log-odds with the head's (head weight below)
    risk_trees: bool = False
    risk_trees_params: dict[str, float | int] = field(default_factory=lambda: dict(RISK_TREES_PARAMS))
    risk_trees_bags: int = RISK_TREES_BAGS
    risk_head_weight: float = RISK_HEAD_WEIGHT
    # text encoder: 0 keeps it frozen; N trains its top N layers with the head (models.text_finetune) at
    # encoder_lr, and the checkpoint then carries the tuned encoder for the scorer
    finetune_layers: int = 0
    encoder_lr: float = 5e-5


PRESETS: dict[str, tuple[dict[str, int], TrainConfig]] = {
    "tiny": (
        {"n_users": 30, "n_items": 60, "n_terminals": 30, "days": 20, "seed": 0},
        TrainConfig(
            d_model=32,
            n_layers=1,
            max_len=20,
            batch_size=32,
            max_steps=60,
            eval_every=30,
            val_windows=300,
            max_seconds=30.0,
            risk_trees=True,
        ),
    ),
    # the pipeline's default checkpoint: risk from the head and trees, and no item or terminal ids as input,
    # as chosen on the fraud data's validation folds (terminal ids invite memorising the training stream's
    # compromised terminals: on the demo's own stream, seed 7, fraud AP 0.529 with ids, 0.776 without)
    "demo": (
        {"n_users": 300, "n_items": 400, "n_terminals": 200, "days": 60, "seed": 0},
        # a step count, not the 100 s clock, ends training, so that the checkpoint does not depend on the
        # machine's load (1,400 steps: about 100 s on this machine's two idle cores)
        TrainConfig(risk_trees=True, use_item_ids=False, max_steps=1400, max_seconds=900.0),
    ),
}


DEFAULT_PRESET = "demo"  # the synthetic stream trained when neither --preset nor --dataset is given


# Each data set's default configuration (TrainConfig overrides, before the command line's --set): the
# setting chosen on validation, within about 15 minutes of this machine's two CPU cores (ML-1M 865 s,
# Beauty 686 s, 2026-11-30). docs/results.md gives its figures.
_NEXT_ITEM_ONLY = [
    "use_text=false",
    "loss_weights.action=0",
    "loss_weights.time=0",
    "loss_weights.risk=0",
    "d_model=64",
    "n_layers=2",
    "n_heads=2",
    "lr=3e-3",
    "batch_size=128",
    "lr_decay=linear",
    "warmup_steps=50",
    "patience=100",
    "select_on=item_ndcg10",
]


DATASET_DEFAULTS: dict[str, list[str]] = {
    "ml-1m": [
        *_NEXT_ITEM_ONLY,
        "max_len=50",
        "dropout=0.2",
        "sampling=event",
        "max_steps=2700",
        "max_seconds=1200",
        "eval_every=300",
        "val_windows=6040",
    ],
    "amazon-beauty": [
        *_NEXT_ITEM_ONLY,
        "max_len=50",
        "dropout=0.5",
        "sampling=user_last",
        "max_steps=3000",
        "max_seconds=1200",
        "eval_every=200",
        "val_windows=5000",
    ],
    # chosen on validation among 6 runs of 450 steps (docs/results.md, v7); keeps the time-to-next head
    "movielens-small": [
        *_NEXT_ITEM_ONLY,
        "loss_weights.time=0.2",
        "max_len=50",
        "dropout=0.3",
        "sampling=user_last",
        "max_steps=450",
        "max_seconds=1200",
        "eval_every=75",
        "val_windows=610",
    ],
    # as chosen on the fraud validation folds (models.evaluate, docs/results.md): no terminal ids, risk trees
    "fraud-handbook": ["use_item_ids=false", "risk_trees=true", "use_text=false"],
}


DATASET_LOADERS = {  # --dataset name -> loader in models.datasets taking the data path
    "ml-1m": "load_ml1m",
    "amazon-beauty": "load_beauty",
    "movielens-small": "load_movielens_small",
    "fraud-handbook": "load_fraud_handbook",
    "yoochoose": "load_yoochoose",
    "taobao": "load_taobao",
}


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
