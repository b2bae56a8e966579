"""The built-in ``tiny`` model: built offline, pre-trained on the general tasks, cached.

Pre-training teaches the random LLaVA the general tasks (the stream's ``[[general]]`` entries),
so that "general knowledge" exists before the stream and its loss can be measured. The result is
cached under ``$CLTUNE_CACHE/tiny-<key>`` where the key hashes the recipe of the general tasks,
the seed and :data:`PRETRAIN`; a second call loads it in a second.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import LlavaForConditionalGeneration, LlavaProcessor, get_cosine_schedule_with_warmup

from cltune.data.encode import Encoder, collate
from cltune.data.task import Task
from cltune.models.cache import cache_dir
from cltune.models.tiny_build import build_processor, build_random_model, build_tokenizer
from cltune.utils import atomic_dir, fault_point

PRETRAIN = {"version": 2, "steps": 500, "batch_size": 32, "lr": 2e-3, "warmup": 50}


def _corpus() -> list[str]:
    """Text the tokenizer is trained on: the built-in tasks' questions and answers."""
    from cltune.data.sources import cifar10, digits, easyvqa

    questions, answers, _ = easyvqa._questions("train")
    words = [
        *cifar10.CLASS_NAMES,
        *digits.CLASS_NAMES,
        "what is in the image?",
        "which digit is this?",
        "Answer with the option's text.",
        "yes",
        "no",
    ]
    return [*questions, *answers, *words]


def _cache_key(tasks: list[Task], seed: int) -> str:
    spec = {
        "pretrain": PRETRAIN,
        "seed": seed,
        "tasks": [(t.name, t.train._fingerprint, len(t.train)) for t in tasks],
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def pretrain(
    model: torch.nn.Module, encoder: Encoder, tasks: list[Task], seed: int, progress: bool = True
) -> None:
    """Train every parameter on the mixture of the tasks' train splits (AdamW; transformers'
    ``get_cosine_schedule_with_warmup``: linear warm-up, then cosine decay to 0), with a progress
    bar unless ``progress`` is False."""
    rows = [(t, i) for t in tasks for i in range(len(t.train))]
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=PRETRAIN["lr"], weight_decay=0.01)
    steps, warmup = PRETRAIN["steps"], PRETRAIN["warmup"]
    scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, steps)
    model.train()
    bar = tqdm(range(steps), desc="pre-training tiny model", unit="step", disable=not progress)
    for _ in bar:
        fault_point("pretrain")
        pick = torch.randint(len(rows), (PRETRAIN["batch_size"],), generator=generator).tolist()
        features = [encoder.encode(rows[j][0].train, rows[j][1], rows[j][0].name, True) for j in pick]
        loss = model(**collate(features, encoder.pad_id)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    model.eval()


def load_tiny(
    tasks: list[Task] | None, seed: int = 0, progress: bool = True
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """The pre-trained tiny model for ``tasks`` (the default stream's general tasks if None);
    ``progress``: the pre-training bar when it is not cached yet."""
    if tasks is None:
        from cltune.data.recipe import load_stream

        tasks = load_stream("default").general
    if not tasks:
        raise ValueError("the tiny model is pre-trained on the stream's general tasks; add [[general]]")
    folder = cache_dir() / f"tiny-{_cache_key(tasks, seed)}"
    if not (folder / "config.json").is_file():
        _build_and_cache(folder, tasks, seed, progress)
    model = LlavaForConditionalGeneration.from_pretrained(folder)
    processor = LlavaProcessor.from_pretrained(folder)
    model.eval()
    return model, processor


def _build_and_cache(folder: Path, tasks: list[Task], seed: int, progress: bool) -> None:
    start = time.perf_counter()
    tokenizer = build_tokenizer(_corpus())
    processor = build_processor(tokenizer)
    model = build_random_model(tokenizer, seed)
    pretrain(model, Encoder(processor, "tiny"), tasks, seed, progress)
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    print(f"pre-trained tiny model cached in {folder} ({time.perf_counter() - start:.0f} s)")
