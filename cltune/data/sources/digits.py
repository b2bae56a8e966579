"""scikit-learn's digits: 1,797 real 8×8 handwritten digits (UCI), as "which digit is this?"."""

from __future__ import annotations

from functools import cache

import numpy as np

from cltune.data.sources import register_source
from cltune.data.sources._common import select_classes, subset_rows, vqa_dataset
from cltune.utils import unknown_name_error

CLASS_NAMES = [str(d) for d in range(10)]
# Question types: each asks something else about the same digit images, so they conflict.
QUESTIONS = {
    "label": ("which digit is this?", lambda d: str(d)),
    "parity": ("is this digit even or odd?", lambda d: "even" if d % 2 == 0 else "odd"),
    "plus_one": ("what is this digit plus one?", lambda d: str(d + 1)),
    "greater_than_4": ("is this digit greater than 4?", lambda d: "yes" if d > 4 else "no"),
}
TEST_FRACTION = 0.25


@cache
def _split(split: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    order = np.random.default_rng(0).permutation(len(images))  # fixed train/test partition
    n_test = int(len(images) * TEST_FRACTION)
    rows = order[:n_test] if split == "test" else order[n_test:]
    return images[rows], digits.target[rows]


@register_source("digits")
def digits(
    split: str,
    size: int | None,
    seed: int,
    classes: list | None = None,
    question_type: str = "label",
):
    """Digits of ``classes`` (default all ten) asked with ``question_type`` (see QUESTIONS).

    The 1,797 images are split once into a fixed 75/25 train/test partition.
    """
    if question_type not in QUESTIONS:
        raise unknown_name_error("digits question_type", question_type, QUESTIONS)
    images, labels = _split(split)
    rows = subset_rows(select_classes(labels, CLASS_NAMES, classes), size, seed, f"digits/{split}")
    question, answer = QUESTIONS[question_type]
    return vqa_dataset(images[rows], labels[rows], [answer(d) for d in range(10)], question)
