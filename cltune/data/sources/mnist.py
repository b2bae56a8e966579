"""MNIST (LeCun et al. 1998) as "which digit is this?", from ``$CLTUNE_DATA_DIR`` or the Hub."""

from __future__ import annotations

from functools import cache

import numpy as np

from cltune.data.sources import register_source
from cltune.data.sources._common import local_data_file, select_classes, subset_rows, vqa_dataset

CLASS_NAMES = [str(d) for d in range(10)]
LOCAL_FILE = "mnist_from_png.npz"
HUB_ID = "ylecun/mnist"


@cache
def _arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    path = local_data_file(LOCAL_FILE)
    if path is not None:
        with np.load(path) as data:
            return data[f"x_{split}"], data[f"y_{split}"]
    import datasets

    hub = datasets.load_dataset(HUB_ID, split=split)
    return np.stack([np.asarray(im) for im in hub["image"]]), np.asarray(hub["label"])


@register_source("mnist")
def mnist(
    split: str,
    size: int | None,
    seed: int,
    classes: list | None = None,
    question: str = "which digit is this?",
):
    """MNIST digits of ``classes`` (default all ten)."""
    images, labels = _arrays(split)
    rows = subset_rows(select_classes(labels, CLASS_NAMES, classes), size, seed, f"mnist/{split}")
    return vqa_dataset(images[rows], labels[rows], CLASS_NAMES, question)
