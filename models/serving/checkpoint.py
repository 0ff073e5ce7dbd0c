"""Checkpoint folder: safetensors weights, config.json, cached catalogue text embeddings, optional risk
trees (LightGBM text model), an optional tuned text encoder (a Hugging Face folder), model_version."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file, save_file

from models.features.featurize import FEATURIZATION_VERSION, Vocab
from models.model import risk_trees as trees
from models.model.temporal import TemporalConfig, TemporalModel

WEIGHTS, CONFIG, TEXTS = "model.safetensors", "config.json", "texts.safetensors"
FORMAT = 1
# config.json's "encoder" when training tuned the encoder (models.model.text_finetune): a Hugging Face model
# folder inside the checkpoint, part of model_version
TUNED_ENCODER = "<checkpoint>/encoder"


def tuned_encoder_folder(folder: str | Path) -> Path:
    return Path(folder) / "encoder"


@dataclass
class Checkpoint:
    """Everything a scorer needs, rebuilt from a checkpoint folder."""

    model: TemporalModel
    config: TemporalConfig
    vocab: Vocab
    encoder: str | None  # encoder name or local path; None when the model uses no text
    texts: list[str]  # catalogue texts whose embeddings are cached
    text_embeddings: np.ndarray  # (len(texts), text_dim) float32
    model_version: str
    extra: dict[str, Any]
    risk_trees: trees.RiskTrees | None = None  # blended into the risk score when present


def model_version(folder: str | Path) -> str:
    """Short sha256 over the weights file, config.json and (when present) the risk trees' and the tuned
    encoder's bytes."""
    digest = hashlib.sha256()
    tuned = sorted(tuned_encoder_folder(folder).glob("*.safetensors"))
    for path in (Path(folder) / WEIGHTS, Path(folder) / CONFIG, *trees.files(folder), *tuned):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def save(
    folder: str | Path,
    model: TemporalModel,
    vocab: Vocab,
    encoder: str | None,
    texts: list[str] | None = None,
    text_embeddings: np.ndarray | None = None,
    extra: dict[str, Any] | None = None,
    risk_trees: trees.RiskTrees | None = None,
) -> str:
    """Write the checkpoint folder and return its model_version."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in trees.files(folder):  # a folder re-used by a run without trees
        stale.unlink()
    if encoder != TUNED_ENCODER and tuned_encoder_folder(folder).exists():  # ... or without a tuned encoder
        shutil.rmtree(tuned_encoder_folder(folder))
    if risk_trees is not None:
        trees.save(risk_trees, folder)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS))
    texts = texts or []
    config = {
        "format": FORMAT,
        "featurization_version": FEATURIZATION_VERSION,
        "temporal": model.config.to_dict(),
        "vocab": vocab.to_dict(),
        "encoder": encoder,
        "texts": texts,
        "extra": extra or {},
    }
    (folder / CONFIG).write_text(json.dumps(config, indent=1, sort_keys=True))
    embeddings = (
        np.zeros((0, model.config.text_dim), np.float32) if text_embeddings is None else text_embeddings
    )
    save_numpy({"embeddings": np.ascontiguousarray(embeddings, dtype=np.float32)}, str(folder / TEXTS))
    return model_version(folder)


def set_new_item_bonus(folder: str | Path, bonus: float, report: dict[str, Any]) -> str:
    """Record in a saved checkpoint the new-item bonus chosen after training (TemporalConfig.new_item_bonus)
    and how it was chosen (extra["new_item_bonus"]); returns the new model_version."""
    path = Path(folder) / CONFIG
    raw = json.loads(path.read_text())
    raw["temporal"]["new_item_bonus"] = float(bonus)
    raw["extra"]["new_item_bonus"] = report
    path.write_text(json.dumps(raw, indent=1, sort_keys=True))
    return model_version(folder)


def load(folder: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model (eval mode, on device) and its vocabularies from a checkpoint folder."""
    folder = Path(folder)
    if not (folder / CONFIG).is_file():
        raise FileNotFoundError(f"no checkpoint at {folder!s} (missing {CONFIG})")
    raw = json.loads((folder / CONFIG).read_text())
    if raw["featurization_version"] != FEATURIZATION_VERSION:
        raise ValueError(
            f"checkpoint {folder!s} uses featurization v{raw['featurization_version']}, "
            f"this code is v{FEATURIZATION_VERSION}"
        )
    config = TemporalConfig(**raw["temporal"])
    model = TemporalModel(config)
    model.load_state_dict(load_file(str(folder / WEIGHTS)))
    return Checkpoint(
        model=model.to(device).eval(),
        config=config,
        vocab=Vocab.from_dict(raw["vocab"]),
        encoder=str(tuned_encoder_folder(folder)) if raw["encoder"] == TUNED_ENCODER else raw["encoder"],
        texts=list(raw["texts"]),
        text_embeddings=load_numpy(str(folder / TEXTS))["embeddings"],
        model_version=model_version(folder),
        extra=raw["extra"],
        risk_trees=trees.load(folder),
    )
