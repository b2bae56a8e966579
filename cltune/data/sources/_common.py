"""Turn arrays of labelled images into a VQA ``datasets.Dataset``; find the data folder."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

DATA_DIR_ENV = "CLTUNE_DATA_DIR"
VQA_FEATURES = datasets.Features(
    {"image": datasets.Image(), "question": datasets.Value("string"), "answer": datasets.Value("string")}
)
TEXT_FEATURES = datasets.Features({"question": datasets.Value("string"), "answer": datasets.Value("string")})


def local_data_file(filename: str) -> Path | None:
    """``$CLTUNE_DATA_DIR/filename`` if the variable is set, else None (load from the Hub).

    A set variable that points at a folder without the file is an error, not a silent Hub download.
    """
    folder = os.environ.get(DATA_DIR_ENV)
    if not folder:
        return None
    path = Path(folder) / filename
    if not path.is_file():
        raise FileNotFoundError(
            f"{DATA_DIR_ENV}={folder} has no {filename}: put the file there, point "
            f"{DATA_DIR_ENV} at the folder that has it, or unset it to load from the Hugging Face Hub"
        )
    return path


def select_classes(labels: np.ndarray, class_names: Sequence[str], classes: Sequence | None) -> np.ndarray:
    """Indices of the rows whose label is in ``classes`` (names or ints); all rows if None."""
    if classes is None:
        return np.arange(len(labels))
    wanted = []
    for c in classes:
        if isinstance(c, str):
            if c not in class_names:
                raise ValueError(f"unknown class {c!r}; known classes: {list(class_names)}")
            wanted.append(list(class_names).index(c))
        else:
            wanted.append(int(c))
    return np.flatnonzero(np.isin(labels, wanted))


def subset_rows(rows: np.ndarray, size: int | None, seed: int, what: str) -> np.ndarray:
    """A seeded random choice of ``size`` of ``rows`` (all of them, shuffled, if ``size`` is None)."""
    if size is not None and size > len(rows):
        raise ValueError(
            f"{what}: asked for {size} samples but only {len(rows)} exist; "
            f"lower the size (the recipe's train_size or test_size) to at most {len(rows)}"
        )
    chosen = np.random.default_rng(seed).permutation(len(rows))[:size]
    return np.asarray(rows)[np.sort(chosen)]


def vqa_dataset(
    images: Sequence[Image.Image | np.ndarray],
    labels: Sequence[int],
    class_names: Sequence[str],
    question: str,
) -> datasets.Dataset:
    pil = [im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im)) for im in images]
    return datasets.Dataset.from_dict(
        {
            "image": pil,
            "question": [question] * len(pil),
            "answer": [class_names[int(y)] for y in labels],
        },
        features=VQA_FEATURES,
    )
