"""Prompt features of the base model: the input to task routing."""

from __future__ import annotations

import datasets
import torch
from torch import nn

from cltune.data.encode import Encoder, collate


@torch.no_grad()
def prompt_features(
    model: nn.Module,
    encoder: Encoder,
    data: datasets.Dataset,
    key: str,
    batch_size: int,
    device: torch.device,
    layer: int = -1,
) -> torch.Tensor:
    """``(rows, hidden)``: hidden states ``layer`` averaged over each prompt's tokens, float32 on CPU.

    ``layer`` indexes the model's ``hidden_states`` output: 0 is what the language model receives
    (token embeddings with the projected image features in place), -1 its last layer.
    Every row is encoded as a generation prompt (question and image, no answer), so train and test
    rows give comparable features; ``key`` names the rows in the encoder's cache (it must differ
    between two splits of one task). The caller chooses the model (e.g. the base model with every
    adapter disabled).
    """
    was_training = model.training
    model.eval()
    pooled = []
    for start in range(0, len(data), batch_size):
        features = [
            encoder.encode(data, i, key, train=False)
            for i in range(start, min(len(data), start + batch_size))
        ]
        batch = {k: v.to(device) for k, v in collate(features, encoder.pad_id).items()}
        states = model(**batch, output_hidden_states=True).hidden_states
        if not -len(states) <= layer < len(states):
            raise ValueError(
                f"feature layer {layer} does not exist: the model gives {len(states)} hidden states"
            )
        hidden = states[layer].float()
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled.append(((hidden * mask).sum(dim=1) / mask.sum(dim=1)).cpu())
    model.train(was_training)
    return torch.cat(pooled)
