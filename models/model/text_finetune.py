"""Fine-tuning the text encoder's top layers together with the temporal head.

The frozen lower layers run once per distinct text (their output is kept); each training step runs
only the trained top layers, over the distinct texts of its batch, then pools them exactly as
models.model.encoder.TextEncoder does (attention-masked mean, L2 norm). The tuned encoder is saved as a
complete Hugging Face model folder inside the checkpoint, so the scorer encodes new texts with the
same weights through the same TextEncoder code as a frozen model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.model.encoder import load_model, mean_pool


class TopLayerTuner(nn.Module):
    """A BERT-family encoder (model.encoder.layer) whose top `n_layers` layers train; texts by index."""

    model: Any  # a Hugging Face model (its config, hidden states and layers)
    frozen: torch.Tensor  # buffers
    mask: torch.Tensor

    def __init__(
        self,
        path: str | Path,
        texts: list[str],
        n_layers: int,
        device: torch.device,
        max_tokens: int = 64,
        chunk: int = 256,
    ) -> None:
        super().__init__()
        self.tokenizer, self.model = load_model(Path(path), device, torch.float32)
        layers = getattr(getattr(self.model, "encoder", None), "layer", None)
        if not isinstance(layers, nn.ModuleList) or not 0 < n_layers <= len(layers):
            raise ValueError(
                f"fine-tuning {n_layers} top layers needs a BERT-family encoder with that many layers "
                f"(model.encoder.layer); {path!s} is {type(self.model).__name__}"
            )
        self.model.requires_grad_(False)
        self.top = layers[len(layers) - n_layers :]
        self.top.requires_grad_(True)
        self.chunk = chunk
        tokens = self.tokenizer(
            texts, padding="longest", truncation=True, max_length=max_tokens, return_tensors="pt"
        ).to(device)
        first_trained = len(layers) - n_layers
        frozen = []
        with torch.no_grad():  # not inference_mode: these tensors feed the trained layers' autograd
            for start in range(0, len(texts), chunk):
                part = {k: v[start : start + chunk] for k, v in tokens.items()}
                frozen.append(self.model(**part, output_hidden_states=True).hidden_states[first_trained])
        width = self.model.config.hidden_size
        self.register_buffer(
            "frozen", torch.cat(frozen) if frozen else torch.zeros(0, 1, width, device=device)
        )
        self.register_buffer("mask", tokens["attention_mask"])

    def forward(self, text_ids: torch.Tensor) -> torch.Tensor:
        """(n, hidden) pooled, L2-normalised embeddings of the texts text_ids (indices into `texts`)."""
        from transformers.masking_utils import create_bidirectional_mask

        mask = self.mask[text_ids]
        width = int(mask.sum(1).max()) if len(text_ids) else 1
        hidden, mask = self.frozen[text_ids, :width], mask[:, :width]
        attention = create_bidirectional_mask(
            config=self.model.config, inputs_embeds=hidden, attention_mask=mask
        )
        for layer in self.top:
            out = layer(hidden, attention_mask=attention)
            hidden = out[0] if isinstance(out, tuple) else out
        return mean_pool(hidden, mask)

    @torch.no_grad()
    def embed_all(self) -> torch.Tensor:
        """(U, hidden) embeddings of every text, as the current weights give them (dropout off)."""
        was_training = self.training
        self.eval()
        ids = torch.arange(len(self.mask), device=self.mask.device)
        table = (
            torch.cat([self(ids[s : s + self.chunk]) for s in range(0, len(ids), self.chunk)])
            if len(ids)
            else (torch.zeros(0, self.model.config.hidden_size, device=self.mask.device))
        )
        self.train(was_training)
        return table

    def train(self, mode: bool = True) -> TopLayerTuner:
        """Only the trained layers switch mode (dropout); the frozen part stays in eval."""
        self.training = mode
        self.model.eval()
        self.top.train(mode)
        return self

    def save(self, folder: str | Path) -> None:
        """A complete Hugging Face model folder (weights, config, tokenizer) for TextEncoder to load."""
        self.model.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))
