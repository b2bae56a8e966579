"""LLaVA-style instruction JSON, the format of CoIN, UCIT and MCITlib.

Each record is ``{"image": "rel/path.jpg", "conversations": [{"from": "human", "value":
"<image>\\nQuestion"}, {"from": "gpt", "value": "Answer"}, ...]}``; every human/gpt pair becomes
one example (the record's image goes with each). Records without ``image`` are text-only.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from cltune.data.sources import register_source
from cltune.data.sources._common import subset_rows

IMAGE_TOKEN = "<image>"


def _record_examples(record: dict, where: str, image_root: Path) -> list[dict]:
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise ValueError(f"{where}: no 'conversations' list; each record needs human/gpt turns")
    image = record.get("image")
    image_path = None
    if image:
        image_path = image_root / image
        if not image_path.is_file():
            raise FileNotFoundError(
                f"{where}: image {str(image_path)!r} does not exist; set image_folder to the "
                f"folder the 'image' paths are relative to"
            )
        if not any(IMAGE_TOKEN in str(t.get("value", "")) for t in turns if t.get("from") == "human"):
            raise ValueError(
                f"{where}: the record has an image but no human turn contains {IMAGE_TOKEN!r}; "
                f"put {IMAGE_TOKEN!r} where the image goes (LLaVA format)"
            )
    examples = []
    for i, turn in enumerate(turns):
        if turn.get("from") != "human":
            continue
        answer_turn = turns[i + 1] if i + 1 < len(turns) else None
        if answer_turn is None or answer_turn.get("from") != "gpt":
            raise ValueError(
                f"{where}: human turn {i} has no answer turn after it; add a "
                f'{{"from": "gpt", "value": ...}} turn'
            )
        question = str(turn["value"]).replace(IMAGE_TOKEN, "").strip()
        examples.append(
            {
                "image": str(image_path) if image_path else None,
                "question": question,
                "answer": str(answer_turn["value"]).strip(),
            }
        )
    return examples


def check_image(path: str) -> None:
    """Raise a ValueError naming ``path`` unless it holds a whole, readable image."""
    try:
        with Image.open(path) as image:
            image.verify()
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(
            f"image {path!r} is not a readable image ({err}); replace the file or remove its record"
        ) from err


def read_llava_json(path: str | Path, image_folder: str | Path | None = None) -> list[dict]:
    """All question/answer examples of a LLaVA JSON (or JSON-lines) file, validated."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LLaVA JSON file {str(path)!r} does not exist; check the path")
    text = path.read_text()
    try:
        records = (
            json.loads(text)
            if text.lstrip().startswith("[")
            else [json.loads(line) for line in text.splitlines() if line.strip()]
        )
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); expected a list of LLaVA records") from err
    image_root = Path(image_folder) if image_folder else path.parent
    examples = []
    for n, record in enumerate(records):
        where = f"{path} record {n} (id {record.get('id', '?')})"
        examples.extend(_record_examples(record, where, image_root))
    if not examples:
        raise ValueError(f"{path} holds no examples; it needs at least one LLaVA record")
    return examples


@register_source("llava_json")
def llava_json(
    split: str,
    size: int | None,
    seed: int,
    train_file: str,
    test_file: str,
    image_folder: str | None = None,
) -> datasets.Dataset:
    """A LLaVA-format task: ``train_file`` and ``test_file``, images relative to ``image_folder``."""
    examples = read_llava_json(train_file if split == "train" else test_file, image_folder)
    rows = subset_rows(np.arange(len(examples)), size, seed, f"llava_json/{split}")
    chosen = [examples[i] for i in rows]
    for image in dict.fromkeys(e["image"] for e in chosen if e["image"]):
        check_image(image)
    columns = {key: [e[key] for e in chosen] for key in ("question", "answer")}
    features = {"question": datasets.Value("string"), "answer": datasets.Value("string")}
    if any(e["image"] for e in chosen):
        columns["image"] = [e["image"] for e in chosen]
        features["image"] = datasets.Image()
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))
