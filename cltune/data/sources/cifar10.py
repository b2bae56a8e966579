"""CIFAR-10 (Krizhevsky 2009) as "what is in the image?", from ``$CLTUNE_DATA_DIR`` or the Hub."""

from __future__ import annotations

import io
import zipfile
from functools import cache

import numpy as np
from PIL import Image

from cltune.data.sources import register_source
from cltune.data.sources._common import local_data_file, select_classes, subset_rows, vqa_dataset

CLASS_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]
LOCAL_FILE = "cifar10_jpg.zip"
HUB_ID = "uoft-cs/cifar10"


@cache
def _index(split: str) -> tuple[tuple[str, ...], np.ndarray]:
    """Member names of ``split`` in the local zip (sorted, so row order is fixed) and labels."""
    path = local_data_file(LOCAL_FILE)
    with zipfile.ZipFile(path) as zf:
        names = sorted(n for n in zf.namelist() if n.startswith(f"{split}/") and n.endswith(".jpg"))
    labels = np.array([CLASS_NAMES.index(n.split("/")[1]) for n in names])
    return tuple(names), labels


def _read_local(split: str, rows: np.ndarray) -> list[Image.Image]:
    names, _ = _index(split)
    with zipfile.ZipFile(local_data_file(LOCAL_FILE)) as zf:
        return [Image.open(io.BytesIO(zf.read(names[i]))).convert("RGB") for i in rows]


@register_source("cifar10")
def cifar10(
    split: str,
    size: int | None,
    seed: int,
    classes: list | None = None,
    question: str = "what is in the image?",
):
    """CIFAR-10 images of ``classes`` (names or indices; default all ten)."""
    what = f"cifar10/{split}"
    if local_data_file(LOCAL_FILE) is not None:
        _, labels = _index(split)
        rows = subset_rows(select_classes(labels, CLASS_NAMES, classes), size, seed, what)
        return vqa_dataset(_read_local(split, rows), labels[rows], CLASS_NAMES, question)
    import datasets

    hub = datasets.load_dataset(HUB_ID, split=split)
    labels = np.asarray(hub["label"])
    rows = subset_rows(select_classes(labels, CLASS_NAMES, classes), size, seed, what)
    images = hub.select(rows.tolist())["img"]
    return vqa_dataset(images, labels[rows], CLASS_NAMES, question)
