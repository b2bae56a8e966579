"""Align ``smol``'s projector once on a general caption mixture, and cache the result.

Stage 1 of LLaVA (Liu et al., "Visual Instruction Tuning", NeurIPS 2023): the vision tower and the
language model stay frozen, only the projector learns, with the LM's next-token loss on caption
answers. The mixture is fixed (captions of scikit-learn digits, CIFAR-10 train images and easy-VQA
train images, see :mod:`cltune.data.sources.captions`), so every stream shares one aligned model,
cached under ``$CLTUNE_CACHE/smol-<key>`` with the key hashing :data:`ALIGN` and the seed.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import LlavaProcessor, get_cosine_schedule_with_warmup

from cltune.data.encode import Encoder, collate
from cltune.models.cache import cache_dir
from cltune.models.feature_cache import cache_tower_features
from cltune.models.smol.modeling import CltuneSmolForConditionalGeneration
from cltune.utils import atomic_dir

ALIGN = {"version": 3, "train_size": 1500, "steps": 300, "batch_size": 8, "lr": 1e-3, "warmup": 20}


def cache_key(seed: int) -> str:
    from cltune.models.smol.build import CHAT_TEMPLATE, GRID, IMAGE_SIZE
    from cltune.models.smol.parts import LM_FILE

    spec = {
        "align": ALIGN,
        "seed": seed,
        "lm": LM_FILE,
        "grid": GRID,
        "size": IMAGE_SIZE,
        "chat": CHAT_TEMPLATE,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def align_projector(
    model: CltuneSmolForConditionalGeneration,
    processor: LlavaProcessor,
    seed: int,
    steps: int | None = None,
    progress: bool = True,
) -> list[float]:
    """Train the projector alone on the caption mixture (AdamW; transformers'
    ``get_cosine_schedule_with_warmup``: linear warm-up, then cosine decay to 0).

    Returns the per-step losses; ``progress``: show the step bar.
    """
    from cltune.data.sources.captions import captions

    steps = steps or ALIGN["steps"]
    data = captions("train", ALIGN["train_size"], seed)
    encoder = Encoder(processor, "smol")
    cache_tower_features(model)  # the tower is frozen: each caption image runs through it once
    for p in model.parameters():
        p.requires_grad_(False)
    projector = model.model.multi_modal_projector
    for p in projector.parameters():
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(projector.parameters(), lr=ALIGN["lr"], weight_decay=0.0)
    scheduler = get_cosine_schedule_with_warmup(optimizer, ALIGN["warmup"], steps)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    losses = []
    progress = tqdm(range(steps), desc="aligning smol's projector", unit="step", disable=not progress)
    for _ in progress:
        pick = torch.randint(len(data), (ALIGN["batch_size"],), generator=generator).tolist()
        loss = model(**collate([encoder.encode(data, i, "align", True) for i in pick], encoder.pad_id)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(projector.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        progress.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return losses


def build_and_cache(folder: Path, seed: int, progress: bool = True) -> None:
    from cltune.models.smol.build import assemble

    start = time.perf_counter()
    model, processor = assemble(cache_dir(), seed)
    losses = align_projector(model, processor, seed, progress=progress)
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "alignment.json").write_text(
            json.dumps(
                {
                    "align": ALIGN,
                    "seed": seed,
                    "threads": torch.get_num_threads(),  # the sums' order, so the last bits, depend on it
                    "torch": torch.__version__,
                    "losses": losses,
                    "seconds": time.perf_counter() - start,
                }
            )
        )
    print(f"aligned smol model cached in {folder} ({time.perf_counter() - start:.0f} s)")


def load_smol(
    seed: int = 0, progress: bool = True
) -> tuple[CltuneSmolForConditionalGeneration, LlavaProcessor]:
    """The aligned ``smol`` model and its processor (aligned and cached on first use, with a step
    bar unless ``progress`` is False)."""
    folder = cache_dir() / f"smol-{cache_key(seed)}"
    if not (folder / "config.json").is_file():
        build_and_cache(folder, seed, progress)
    model = CltuneSmolForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
    processor = LlavaProcessor.from_pretrained(folder)
    model.eval()
    return model, processor
