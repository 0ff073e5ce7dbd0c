"""The training loop: multi-task training of the temporal model with early stopping on validation, and
`fit`, which trains it (and the risk trees) on contract event records and saves a checkpoint."""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from models.features.featurize import Vocab, catalogue_texts, event_columns
from models.features.replay import replay_aggregates
from models.model import risk_trees
from models.model.device import resolve_device
from models.model.encoder import TextEncoder
from models.model.temporal import TemporalConfig, TemporalInput, TemporalModel
from models.model.text_finetune import TopLayerTuner
from models.serving import checkpoint
from models.training.batching import (
    SequenceData,
    build_sequences,
    input_scale,
    make_batch,
    negative_sampling_probs,
    transition_counts,
)
from models.training.head_init import init_risk_bias, init_time_bias
from models.training.losses import multitask_loss
from models.training.train_config import TrainConfig
from models.training.validation import choose_transition_weight, evaluate

log = logging.getLogger(__name__)


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of config.lr before optimiser step `step` (0-based): linear warm-up, then constant or
    a linear decay that reaches 0 at max_steps."""
    warmup = min(1.0, (step + 1) / max(config.warmup_steps, 1))
    if config.lr_decay == "linear":
        return warmup * max(0.0, 1.0 - step / max(config.max_steps, 1))
    return warmup


def with_tuned_texts(inp: TemporalInput, tuner: TopLayerTuner) -> TemporalInput:
    """The batch's distinct texts embedded by the tuner (with gradients), text_index remapped to them."""
    has_text = inp.text_index >= 0
    ids, local = torch.unique(inp.text_index[has_text], return_inverse=True)
    index = inp.text_index.clone()
    index[has_text] = local
    return replace(inp, text_index=index, text_table=tuner(ids))


def vocab_item_text(records: Sequence[dict[str, Any]], vocab: Vocab, encoder: TextEncoder) -> torch.Tensor:
    """(n_items, text_dim) text embedding of each vocabulary item (featurize.item_text of its first record;
    zeros for padding, unknown and items without text)."""
    by_item = catalogue_texts(records)
    names = [vocab.item_name(i) for i in range(2, vocab.n_items)]
    known = [(i + 2, by_item[name]) for i, name in enumerate(names) if name in by_item]
    table = np.zeros((vocab.n_items, encoder.dim), np.float32)
    if known:
        table[[i for i, _ in known]] = encoder.encode([text for _, text in known])
    return torch.from_numpy(table).to(encoder.device)


def train(
    config: TrainConfig,
    train_data: SequenceData,
    val_data: SequenceData,
    val_ends: np.ndarray,
    vocab: Vocab,
    text_table: torch.Tensor,
    tuner: TopLayerTuner | None = None,
    item_text: torch.Tensor | None = None,
    transitions: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[TemporalModel, dict[str, Any]]:
    """Data-set agnostic training loop with early stopping on the validation loss; returns the best model.

    With a tuner the encoder's top layers train too (their best weights are kept with the model's).
    item_text (n_items, text_dim): the vocabulary's item text embeddings, for text item vectors;
    transitions: batching.transition_counts of the training data, for the transition prior."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model_config = TemporalConfig(
        n_items=vocab.n_items,
        n_actions=vocab.n_actions,
        d_model=config.d_model,
        n_layers=config.n_layers,
        n_heads=config.n_heads,
        max_len=config.max_len,
        dropout=config.dropout,
        kind=config.kind,
        use_text=config.use_text,
        use_item_ids=config.use_item_ids,
        text_dim=text_table.shape[1],
        n_aggregates=train_data.aggregates.shape[1],
        item_init_std=config.item_init_std,
        item_input_scale=config.item_input_scale or config.d_model**0.5,
        text_input_scale=config.text_input_scale,
        item_vectors=config.item_vectors,
        item_id_dropout=config.item_id_dropout,
        n_transitions=len(transitions[1]) if transitions is not None else 0,
        **input_scale(train_data),
    )
    model = TemporalModel(model_config).to(text_table.device)
    if model.item_text_proj is not None:
        if item_text is None:
            raise ValueError(f"item_vectors={config.item_vectors!r} needs the items' text embeddings")
        model.item_text.copy_(item_text)
    if transitions is not None:
        model.set_transitions(*transitions)
    init_risk_bias(model, train_data.risk)
    init_time_bias(model, train_data.next_log_gap, config.time_loss)
    groups: list[dict[str, Any]] = [{"params": list(model.parameters()), "lr": config.lr}]
    if tuner is not None:
        tuner.train()
        groups.append({"params": list(tuner.top.parameters()), "lr": config.encoder_lr})
    opt = torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, config))
    negative_probs = (
        negative_sampling_probs(train_data.next_item, vocab.n_items).to(text_table.device)
        if config.item_loss == "sampled"
        else None
    )
    user_last = np.flatnonzero(np.append(train_data.user_start[1:] != train_data.user_start[:-1], True))
    labelled = np.flatnonzero(~np.isnan(train_data.risk))

    def snapshot() -> dict[str, Any]:
        return copy.deepcopy(
            {"model": model.state_dict(), "tuner": tuner.top.state_dict() if tuner else None}
        )

    best: tuple[float, dict[str, Any], dict[str, Any]] = (float("inf"), {}, snapshot())
    history, bad, t0, stopped_by = [], 0, time.monotonic(), "max_steps"
    bar = tqdm(range(1, config.max_steps + 1), desc="train", mininterval=2.0)
    for step in bar:
        if config.sampling == "user_last":
            ends = user_last[rng.integers(0, len(user_last), config.batch_size)]
        elif config.sampling == "labelled":
            ends = labelled[rng.integers(0, len(labelled), config.batch_size)]
        else:
            ends = rng.integers(0, len(train_data.item), config.batch_size)
        batch = make_batch(train_data, ends, config.max_len, text_table, text_table.device)
        if tuner is not None:
            batch = replace(batch, inp=with_tuned_texts(batch.inp, tuner))
        loss, parts = multitask_loss(model, model.encode(batch.inp), batch, config, negative_probs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([q for g in groups for q in g["params"]], 1.0)
        opt.step()
        sched.step()
        bar.set_postfix({k: f"{v:.3f}" for k, v in parts.items()}, refresh=False)
        out_of_time = config.max_seconds is not None and time.monotonic() - t0 > config.max_seconds
        if step % config.eval_every == 0 or step == config.max_steps or out_of_time:
            table = tuner.embed_all() if tuner is not None else text_table
            metrics = {"step": step, "train_loss": loss.item()} | evaluate(
                model, val_data, val_ends, config, table
            )
            history.append(metrics)
            tqdm.write(json.dumps({k: round(v, 4) for k, v in metrics.items()}))
            score = metrics["loss"] if config.select_on == "loss" else -metrics.get(config.select_on, 0.0)
            if score < best[0]:
                best, bad = (score, metrics, snapshot()), 0
            else:
                bad += 1
            if bad >= config.patience or out_of_time:
                stopped_by = "max_seconds" if out_of_time else "patience"
                break
    model.load_state_dict(best[2]["model"])
    if tuner is not None:
        tuner.top.load_state_dict(best[2]["tuner"])
        tuner.eval()
    if stopped_by == "max_seconds":
        log.warning(
            "training stopped by its safety net, max_seconds=%s, after %d of %d steps: the result depends "
            "on this machine's speed and load",
            config.max_seconds,
            step,
            config.max_steps,
        )
    report = {"best": best[1], "history": history, "seconds": time.monotonic() - t0}
    return model.eval().cpu(), report | {"stopped_by": stopped_by, "steps": step}


def fit(
    records: Sequence[dict[str, Any]],
    labels: dict[str, int] | None,
    aggregates: dict[str, dict[str, float]] | None,
    config: TrainConfig,
    out: str | Path,
    train_ids: set[str] | None = None,
    val_ids: set[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train on contract event records (any data set), save a checkpoint to out, return a summary.

    Training sees the train_ids events only; validation scores the windows whose next event is in
    val_ids and the labelled val_ids events themselves. Default: a time split, the last val_fraction
    of the events (by time) is validation and everything before it is training.
    """
    t0 = time.monotonic()
    labels = labels or {}
    records = sorted(records, key=lambda r: (r["user_id"], r["ts_ms"]))
    aggregates = aggregates if aggregates is not None else replay_aggregates(records, labels)
    if val_ids is None:
        split = np.quantile([r["ts_ms"] for r in records], 1 - config.val_fraction)
        val_ids = {r["event_id"] for r in records if r["ts_ms"] >= split}
    train_ids = train_ids if train_ids is not None else {r["event_id"] for r in records} - val_ids
    train_records = [r for r in records if r["event_id"] in train_ids]
    vocab = Vocab.build(train_records)

    device = resolve_device(config.device)
    text_items = "text" in config.item_vectors
    if text_items and config.finetune_layers > 0:
        raise ValueError("text item vectors are embedded by the frozen encoder: set finetune_layers=0")
    encoder = TextEncoder(config.encoder, device=device) if config.use_text or text_items else None
    item_text = vocab_item_text(train_records, vocab, encoder) if text_items and encoder else None
    texts = (
        sorted({t for t in event_columns(records, vocab).texts if t is not None})
        if encoder and config.use_text
        else []
    )
    tuner = None
    if encoder is not None and config.finetune_layers > 0:
        tuner = TopLayerTuner(encoder.path, texts, config.finetune_layers, device, encoder.max_tokens)
        embeddings = tuner.embed_all().cpu().numpy()
    else:
        embeddings = encoder.encode(texts) if encoder else np.zeros((0, 384), np.float32)
    text_table = torch.from_numpy(embeddings).to(device)
    text_ids = {t: i for i, t in enumerate(texts)}

    train_data = build_sequences(train_records, labels, aggregates, vocab, text_ids)
    val_data = build_sequences(records, labels, aggregates, vocab, text_ids)
    is_val = np.array([r["event_id"] in val_ids for r in records])
    next_is_val = np.append(is_val[1:] & (val_data.user_start[1:] == val_data.user_start[:-1]), False)
    candidates = np.flatnonzero(next_is_val | (is_val & ~np.isnan(val_data.risk)))
    rng = np.random.default_rng(config.seed)
    val_ends = np.sort(rng.choice(candidates, min(config.val_windows, len(candidates)), replace=False))

    transitions = (
        transition_counts(train_data.item, train_data.next_item, vocab.n_items)
        if config.transition_prior
        else None
    )
    model, report = train(
        config, train_data, val_data, val_ends, vocab, text_table, tuner, item_text, transitions
    )
    if transitions is not None:
        table = tuner.embed_all().cpu() if tuner is not None else text_table.cpu()
        report["transition_prior"] = choose_transition_weight(model, val_data, val_ends, config, table)
    trees = (
        risk_trees.fit_records(
            train_records,
            labels,
            aggregates,
            config.risk_trees_params,
            config.seed,
            config.risk_trees_bags,
            config.risk_head_weight,
        )
        if config.risk_trees
        else None
    )
    encoder_name = encoder.name_or_path if encoder else None
    if tuner is not None:  # the scorer loads the tuned encoder; the catalogue is re-embedded by it
        tuner.save(checkpoint.tuned_encoder_folder(out))
        embeddings = TextEncoder(str(checkpoint.tuned_encoder_folder(out)), device=device).encode(texts)
        encoder_name = checkpoint.TUNED_ENCODER
    version = checkpoint.save(
        out,
        model,
        vocab,
        encoder_name,
        texts,
        embeddings,
        extra={
            "train_config": asdict(config),
            **({"tuned_from": encoder.name_or_path} if tuner is not None and encoder is not None else {}),
            # next-item recommendations list shop items only, never a payment terminal
            "recommendable_items": sorted({str(r["item_id"]) for r in train_records if r["kind"] == "click"}),
            **(extra or {}),
        },
        risk_trees=trees,
    )
    summary = {
        "model_version": version,
        "out": str(out),
        "events": len(records),
        "seconds": time.monotonic() - t0,
    }
    summary |= {
        "best": report["best"],
        "train_seconds": report["seconds"],
        "steps": report["steps"],
        "stopped_by": report["stopped_by"],
    }
    if "transition_prior" in report:
        summary["transition_prior"] = report["transition_prior"]
    (Path(out) / "metrics.json").write_text(json.dumps(summary | {"history": report["history"]}, indent=1))
    return summary
