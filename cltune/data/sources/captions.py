"""Short captions of real images ("a photo of a cat", "a handwritten digit 7", "a red circle").

The general mixture that the built-in ``smol`` model's projector is aligned on (LLaVA's stage-1
recipe: caption-style pairs teach the projector, the LM stays frozen; Liu et al., NeurIPS 2023),
and, on the test splits, a general task that measures what alignment gave it. Streams ask other
questions (which digit, which animal, what colour) about images of the same kinds.
"""

from __future__ import annotations

from functools import cache

import datasets
import numpy as np

from cltune.data.sources import register_source
from cltune.data.sources._common import VQA_FEATURES, subset_rows

QUESTION = "Describe the image in a few words."
DATASETS = ("digits", "cifar10", "easyvqa")


@cache
def _easyvqa_captions(split: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """One caption per easy-VQA image: its colour and shape, read off the image's own questions."""
    from cltune.data.sources.easyvqa import COLOURS, SHAPES, _questions

    questions, answers, images = _questions(split)
    colour: dict[str, str] = {}
    shape: dict[str, str] = {}
    for q, a, image in zip(questions, answers, images, strict=True):
        if a in COLOURS and q.startswith("what color"):
            colour[image] = a
        elif a in SHAPES and q.startswith("what") and "shape" in q:
            shape[image] = a
    paths = sorted(set(colour) & set(shape))
    return tuple(paths), tuple(f"a {colour[p]} {shape[p]}" for p in paths)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _one(dataset: str, split: str, size: int | None, seed: int) -> datasets.Dataset:
    if dataset == "digits":
        from cltune.data.sources.digits import digits

        data = digits(split, size, seed)
        return data.map(lambda r: {"answer": f"a handwritten digit {r['answer']}"})
    if dataset == "cifar10":
        from cltune.data.sources.cifar10 import cifar10

        data = cifar10(split, size, seed)
        return data.map(lambda r: {"answer": f"a photo of {_article(r['answer'])} {r['answer']}"})
    if dataset == "easyvqa":
        paths, captions = _easyvqa_captions(split)
        rows = subset_rows(np.arange(len(paths)), size, seed, f"captions/easyvqa/{split}")
        return datasets.Dataset.from_dict(
            {
                "image": [paths[i] for i in rows],
                "question": [""] * len(rows),
                "answer": [captions[i] for i in rows],
            },
            features=VQA_FEATURES,
        )
    raise ValueError(f"captions: unknown dataset {dataset!r}; use one of {list(DATASETS)} or 'mix'")


@register_source("captions")
def captions(split: str, size: int | None, seed: int, dataset: str = "mix") -> datasets.Dataset:
    """Captions of ``dataset`` images (``digits``, ``cifar10``, ``easyvqa``), or an equal ``mix``."""
    names = list(DATASETS) if dataset == "mix" else [dataset]
    sizes = (
        [None] * len(names)
        if size is None
        else [size // len(names) + (i < size % len(names)) for i in range(len(names))]
    )
    parts = [_one(name, split, n, seed + i) for i, (name, n) in enumerate(zip(names, sizes, strict=True))]
    data = datasets.concatenate_datasets(parts).cast(VQA_FEATURES)
    data = data.map(lambda _: {"question": QUESTION})
    order = np.random.default_rng(seed).permutation(len(data))  # interleave the datasets
    return data.select(order.tolist())
