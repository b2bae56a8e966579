"""LLaVA-style JSON, the on-disk format of CoIN, UCIT, MLLM-CL and MCITlib.

Two kinds of record, one file of either kind per task and split:

- conversation records (training files): ``{"id": ..., "image": "rel/path.jpg", "conversations":
  [{"from": "human", "value": "<image>\\nQuestion"}, {"from": "gpt", "value": "Answer"}, ...]}``;
  every human/gpt pair becomes one example (the record's image goes with each);
- question records (the packs' ``test.json`` / ``question.jsonl``, read by their ``model_*.py``):
  ``{"question_id": ..., "image": "rel/path.jpg", "text": "Question", "answer": "A"}``; the answer
  may instead come from an answer file keyed by ``question_id`` (see ``answer_files``).

Records without ``image`` are text-only. Image paths are relative to the image folder.
"""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from cltune.data.sources import register_source
from cltune.data.sources._common import subset_rows
from cltune.data.sources.answer_files import read_answer_file, read_json_records

IMAGE_TOKEN = "<image>"


def _conversation_examples(record: dict, where: str) -> list[dict]:
    turns = record["conversations"]
    if not isinstance(turns, list) or not turns or not all(isinstance(t, dict) for t in turns):
        raise ValueError(
            f'{where}: \'conversations\' must be a non-empty list of {{"from": ..., "value": ...}} turns'
        )
    if record.get("image") and not any(
        IMAGE_TOKEN in str(t.get("value", "")) for t in turns if t.get("from") == "human"
    ):
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
        question = str(turn.get("value", "")).replace(IMAGE_TOKEN, "").strip()
        examples.append({"question": question, "answer": str(answer_turn.get("value", "")).strip()})
    if not examples:
        raise ValueError(f'{where}: no human turn; a conversation starts with a {{"from": "human"}} turn')
    return examples


def _question_example(record: dict, where: str, answers_later: bool) -> dict:
    if "answer" not in record and not answers_later:
        raise ValueError(
            f"{where}: no 'answer'; give each question record its answer, or set answer_file to the "
            f"pack's answer file (keyed by question_id)"
        )
    question = str(record["text"]).replace(IMAGE_TOKEN, "").strip()
    return {"question": question, "answer": str(record.get("answer", "")).strip()}


def _record_id(record: dict, where: str, is_question: bool) -> str | None:
    if is_question and "question_id" not in record:
        raise ValueError(
            f"{where}: no 'question_id'; every record of a question file needs one (the answer file "
            f"and the scorers join on it)"
        )
    key = "question_id" if is_question else "id"
    return str(record[key]) if key in record else None


def read_llava_json(
    path: str | Path, image_folder: str | Path | None = None, answer_file: str | Path | None = None
) -> list[dict]:
    """All question/answer examples of a LLaVA JSON (or JSON-lines) file, validated.

    Each example has ``id``, ``image`` (an absolute path or None), ``question``, ``answer``, and with
    ``answer_file`` also ``answers`` (every reference answer of its question).
    """
    path = Path(path)
    records = read_json_records(path, "LLaVA JSON file")
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a list of LLaVA records, got a JSON object; give the task's file")
    image_root = Path(image_folder) if image_folder else path.parent
    examples, seen, missing = [], {}, []
    for n, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"{path} record {n}: expected a JSON object, got {type(record).__name__}")
        is_question = "conversations" not in record
        where = f"{path} record {n} (id {record.get('question_id' if is_question else 'id', '?')})"
        if is_question and "text" not in record:
            raise ValueError(
                f"{where}: neither 'conversations' (a training record) nor 'text' (a question record); "
                f"give one of them"
            )
        record_id = _record_id(record, where, is_question)
        if record_id is not None and record_id in seen:
            raise ValueError(
                f"{where}: id {record_id!r} repeats (record {seen[record_id]} has it too); give each "
                f"record its own id"
            )
        seen[record_id] = n
        image = image_root / record["image"] if record.get("image") else None
        if image is not None and not image.is_file():
            missing.append((where, image))
        pairs = (
            [_question_example(record, where, answer_file is not None)]
            if is_question
            else _conversation_examples(record, where)
        )
        examples.extend({"id": record_id, "image": str(image) if image else None, **p} for p in pairs)
    if missing:
        where, image = missing[0]
        more = f" (and {len(missing) - 1} more records' images)" if len(missing) > 1 else ""
        raise FileNotFoundError(
            f"{where}: image {str(image)!r} does not exist{more}; set image_folder to the folder the "
            f"'image' paths are relative to"
        )
    if not examples:
        raise ValueError(f"{path} holds no examples; it needs at least one LLaVA record")
    if answer_file is not None:
        answers = read_answer_file(answer_file, [e["id"] for e in examples])
        for example in examples:
            example["answers"] = answers[example["id"]]
            example["answer"] = example["answer"] or _majority(example["answers"])
    return examples


def _majority(answers: list[str]) -> str:
    """The most frequent reference answer (the first of them on a tie)."""
    return max(answers, key=answers.count)


def check_image(path: str) -> None:
    """Raise a ValueError naming ``path`` unless it holds a whole, readable image."""
    try:
        with Image.open(path) as image:
            image.verify()
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(
            f"image {path!r} is not a readable image ({err}); replace the file or remove its record"
        ) from err


@register_source("llava_json")
def llava_json(
    split: str,
    size: int | None,
    seed: int,
    train_file: str,
    test_file: str,
    image_folder: str | None = None,
    test_image_folder: str | None = None,
    answer_file: str | None = None,
) -> datasets.Dataset:
    """A LLaVA-format task: ``train_file`` and ``test_file``, images relative to ``image_folder``.

    ``test_image_folder`` is the test file's image folder where it differs (MLLM-CL ability:
    ``OCR/`` and ``OCR_test/``); ``answer_file`` gives the test file's answers by ``question_id``.
    """
    if split == "train":
        examples = read_llava_json(train_file, image_folder)
    else:
        examples = read_llava_json(test_file, test_image_folder or image_folder, answer_file)
    rows = subset_rows(np.arange(len(examples)), size, seed, f"llava_json/{split}")
    chosen = [examples[i] for i in rows]
    for image in dict.fromkeys(e["image"] for e in chosen if e["image"]):
        check_image(image)
    columns = {key: [e[key] for e in chosen] for key in ("question", "answer")}
    features = {"question": datasets.Value("string"), "answer": datasets.Value("string")}
    if "answers" in chosen[0]:
        columns["answers"] = [e["answers"] for e in chosen]
        features["answers"] = datasets.Sequence(datasets.Value("string"))
    if any(e["image"] for e in chosen):
        columns["image"] = [e["image"] for e in chosen]
        features["image"] = datasets.Image()
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))
