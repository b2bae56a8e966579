"""Any ``datasets`` dataset, from a folder written by ``save_to_disk`` or from the Hub."""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np

from cltune.data.sources import register_source
from cltune.data.sources._common import subset_rows


def _load_split(path: str, name: str | None, split: str) -> datasets.Dataset:
    local = Path(path)
    if local.exists():
        try:
            loaded = datasets.load_from_disk(str(local))
        except IndexError as err:  # datasets cannot read back a saved dataset of zero rows
            raise ValueError(f"hf dataset {path!r} is empty (no rows to load); give it rows") from err
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ValueError(f"{path} has splits {list(loaded)}, not {split!r}; set split names")
            return loaded[split]
        return loaded
    return datasets.load_dataset(path, name, split=split)


@register_source("hf")
def hf(
    split: str,
    size: int | None,
    seed: int,
    path: str,
    name: str | None = None,
    train_split: str = "train",
    test_split: str = "test",
    image_column: str = "image",
    question_column: str = "question",
    answer_column: str = "answer",
    question: str | None = None,
) -> datasets.Dataset:
    """A dataset with image/question/answer columns (renamed from the given column names).

    For a classification dataset, give ``question`` (one fixed question) and the label column as
    ``answer_column``: class indices become class names through its ``ClassLabel`` feature.
    """
    data = _load_split(path, name, train_split if split == "train" else test_split)
    missing = [
        c for c in (answer_column, *([] if question else [question_column])) if c not in data.column_names
    ]
    if missing:
        raise ValueError(
            f"hf dataset {path!r}: no column(s) {missing} (columns: {data.column_names}); "
            "set question_column/answer_column, or question for a fixed question"
        )
    rows = subset_rows(np.arange(len(data)), size, seed, f"hf:{path}/{split}")
    data = data.select(rows.tolist())
    answer_feature = data.features[answer_column]
    answers = data[answer_column]
    if isinstance(answer_feature, datasets.ClassLabel):
        answers = [answer_feature.int2str(int(a)) for a in answers]
    columns = {
        "question": [question] * len(data) if question else data[question_column],
        "answer": [str(a) for a in answers],
    }
    features = {"question": datasets.Value("string"), "answer": datasets.Value("string")}
    if image_column in data.column_names:
        columns["image"] = data.cast_column(image_column, datasets.Image())[image_column]
        features["image"] = datasets.Image()
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))
