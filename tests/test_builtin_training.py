"""The built-in models' own training (tiny's pre-training, smol's projector alignment): transformers'
cosine schedule, and a cache key that changes with the recipe."""

from __future__ import annotations

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook
from transformers import get_cosine_schedule_with_warmup

from cltune.data.encode import Encoder
from cltune.models import tiny
from cltune.models.smol import align
from cltune.models.tiny_build import build_processor, build_random_model, build_tokenizer


def recorded_learning_rates(run) -> list[float]:
    """The learning rate of every optimizer step that ``run()`` takes (a real optimizer hook)."""
    seen: list[float] = []
    handle = register_optimizer_step_pre_hook(lambda opt, *_: seen.append(opt.param_groups[0]["lr"]))
    try:
        run()
    finally:
        handle.remove()
    return seen


def transformers_cosine(lr: float, warmup: int, steps: int) -> list[float]:
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    schedule = get_cosine_schedule_with_warmup(optimizer, warmup, steps)
    values = []
    for _ in range(steps):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return values


def test_pretraining_follows_transformers_cosine_schedule(monkeypatch, default_stream):
    monkeypatch.setitem(tiny.PRETRAIN, "steps", 6)
    monkeypatch.setitem(tiny.PRETRAIN, "warmup", 2)
    monkeypatch.setitem(tiny.PRETRAIN, "batch_size", 2)
    tokenizer = build_tokenizer(tiny._corpus())
    model = build_random_model(tokenizer, seed=0)
    encoder = Encoder(build_processor(tokenizer), "tiny")
    seen = recorded_learning_rates(lambda: tiny.pretrain(model, encoder, default_stream.general, 0, False))
    expected = transformers_cosine(tiny.PRETRAIN["lr"], 2, 6)
    assert seen == pytest.approx(expected, rel=1e-12, abs=0)
    # The hand-written schedule it replaces started at lr / warmup and used pi = 3.1416.
    assert seen[0] == 0.0 and seen[2] == tiny.PRETRAIN["lr"]


def test_the_cache_key_changes_with_the_pretraining_recipe(monkeypatch, default_stream):
    key = tiny._cache_key(default_stream.general, 0)
    monkeypatch.setitem(tiny.PRETRAIN, "version", tiny.PRETRAIN["version"] + 1)
    assert tiny._cache_key(default_stream.general, 0) != key


def test_alignment_follows_transformers_cosine_schedule(smol, monkeypatch):
    model, processor = smol
    before = {k: v.clone() for k, v in model.state_dict().items()}
    monkeypatch.setitem(align.ALIGN, "warmup", 2)
    monkeypatch.setitem(align.ALIGN, "batch_size", 1)
    monkeypatch.setitem(align.ALIGN, "train_size", 8)
    try:
        seen = recorded_learning_rates(lambda: align.align_projector(model, processor, 0, 5, False))
    finally:
        model.load_state_dict(before)
    assert seen == pytest.approx(transformers_cosine(align.ALIGN["lr"], 2, 5), rel=1e-12, abs=0)
    assert seen[0] == 0.0 and seen[2] == align.ALIGN["lr"]


def test_the_alignment_cache_key_changes_with_the_recipe(monkeypatch):
    key = align.cache_key(0)
    monkeypatch.setitem(align.ALIGN, "version", align.ALIGN["version"] + 1)
    assert align.cache_key(0) != key and align.cache_key(1) != key
