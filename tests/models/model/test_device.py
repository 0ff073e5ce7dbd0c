"""Device choice: "auto" follows torch's view of CUDA; training on a GPU gives a checkpoint the CPU scores."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from models import train
from models.model.device import resolve_device
from models.serving.scorer import Scorer
from models.training import loop, train_config


def test_auto_picks_cuda_only_when_torch_sees_it() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == resolve_device(None).type == resolve_device("").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_asking_for_a_missing_gpu_fails_clearly() -> None:
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_the_device_flag_reaches_the_training_config() -> None:
    args = train.parse_args(["--preset", "tiny", "--out", "x", "--device", "cpu"])
    assert train.config_for(args).device == "cpu"
    assert train.config_for(train.parse_args(["--preset", "tiny", "--out", "x"])).device == "auto"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_checkpoint_trained_on_the_gpu_scores_alike_on_cpu_and_gpu(tmp_path: Path, tiny_windows) -> None:
    spec, config = train_config.PRESETS["tiny"]
    records, labels = train.synthetic_records(spec)
    loop.fit(
        records, labels, None, replace(config, max_steps=30, eval_every=30, device="cuda"), tmp_path / "gpu"
    )
    on_cpu = Scorer.load(tmp_path / "gpu", device="cpu").score(tiny_windows)
    on_gpu = Scorer.load(tmp_path / "gpu", device="cuda").score(tiny_windows)
    for a, b in zip(on_cpu, on_gpu, strict=True):
        assert a.risk == pytest.approx(b.risk, abs=1e-3)
        assert a.top_items[0][0] == b.top_items[0][0] or a.top_items[0][1] == pytest.approx(
            b.top_items[0][1], abs=1e-3
        )
