"""easy-VQA (Pinkerton 2020): 64×64 shape images with colour, shape and yes/no questions.

Installs with the project (the ``easy-vqa`` package), so the default stream works offline.
"""

from __future__ import annotations

from functools import cache

import datasets
import numpy as np

from cltune.data.sources import register_source
from cltune.data.sources._common import subset_rows

COLOURS = ("black", "blue", "brown", "gray", "green", "red", "teal", "yellow")
SHAPES = ("circle", "rectangle", "triangle")
QUESTION_TYPES = {"color": set(COLOURS), "shape": set(SHAPES), "yes_no": {"yes", "no"}}


@cache
def _questions(split: str) -> tuple[list[str], list[str], list[str]]:
    import easy_vqa

    if split == "train":
        questions, answers, ids = easy_vqa.get_train_questions()
        paths = easy_vqa.get_train_image_paths()
    else:
        questions, answers, ids = easy_vqa.get_test_questions()
        paths = easy_vqa.get_test_image_paths()
    return questions, answers, [paths[i] for i in ids]


@register_source("easyvqa")
def easyvqa(split: str, size: int | None, seed: int, question_type: str = "all") -> datasets.Dataset:
    """easy-VQA questions of one type: ``color``, ``shape``, ``yes_no`` or ``all``."""
    if question_type != "all" and question_type not in QUESTION_TYPES:
        raise ValueError(
            f"easyvqa: unknown question_type {question_type!r}; use one of {sorted(QUESTION_TYPES)} or 'all'"
        )
    questions, answers, images = _questions(split)
    matching = [
        i for i, a in enumerate(answers) if question_type == "all" or a in QUESTION_TYPES[question_type]
    ]
    keep = subset_rows(np.array(matching), size, seed, f"easyvqa/{question_type}/{split}").tolist()
    return datasets.Dataset.from_dict(
        {
            "image": [images[i] for i in keep],
            "question": [questions[i] for i in keep],
            "answer": [answers[i] for i in keep],
        },
        features=datasets.Features(
            {
                "image": datasets.Image(),
                "question": datasets.Value("string"),
                "answer": datasets.Value("string"),
            }
        ),
    )
