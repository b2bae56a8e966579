"""Answer files of the benchmark packs: the reference answers of a question file, by ``question_id``.

The layouts the packs' evaluation scripts read (MCITlib ``llava/eval/CoIN/eval_*.py``, CoIN
``ETrain/Eval/LLaVA/CoIN/eval_*.py``, MLLM-CL's copies of them):

- TextVQA (``TextVQA_0.5.1_val.json``): ``{"data": [{"question_id", "answers": [10 strings]}]}``;
- VQA v2 / VizWiz: ``{"annotations": [{"question_id", "answers": [{"answer": ...}, ...],
  "multiple_choice_answer"}]}``;
- a list or JSON-lines of ``{"question_id", "answer"}`` or ``{"question_id", "answers": [...]}``;
- COCO captions (VizWiz-caption, Flickr30k): ``{"images": [{"id"}], "annotations": [{"image_id",
  "caption"}]}``. MCITlib's ``eval_caption.py`` numbers the predictions 1, 2, ... in the order of the
  question file, so the n-th question's references are the captions of image id n.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

Answers = dict[str, list[str]]


def read_json_records(path: Path, what: str) -> object:
    """A JSON document, or the list of records of a JSON-lines file."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist; check the path")
    text = path.read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        try:
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError:
            raise ValueError(
                f"{path}: not valid JSON ({err}); expected a JSON document or JSON lines"
            ) from err


def read_answer_file(path: str | Path, question_ids: list[str]) -> Answers:
    """The reference answers of each of ``question_ids`` (in that order) from an answer file.

    Raises a ValueError naming the file when a question has no answer, an id repeats, or a COCO
    caption file's image count differs from the number of questions.
    """
    path = Path(path)
    document = read_json_records(path, "answer file")
    if isinstance(document, dict) and "images" in document and "annotations" in document:
        return _coco_captions(path, document, question_ids)
    if isinstance(document, dict):
        rows = document.get("data", document.get("annotations"))
        if not isinstance(rows, list):
            raise ValueError(
                f"{path}: an answer file object needs a 'data' list (TextVQA), an 'annotations' list "
                f"(VQA v2, VizWiz) or 'images' and 'annotations' (COCO captions); it has {sorted(document)}"
            )
    else:
        rows = document
    answers: Answers = {}
    for n, row in enumerate(rows):
        if not isinstance(row, dict) or "question_id" not in row:
            raise ValueError(
                f"{path} row {n}: no 'question_id'; every answer row needs the id of its question"
            )
        qid = str(row["question_id"])
        if qid in answers:
            raise ValueError(f"{path} row {n}: question_id {qid!r} repeats; keep one row per question")
        answers[qid] = _row_answers(row, f"{path} row {n} (question_id {qid})")
    missing = [q for q in question_ids if q not in answers]
    if missing:
        raise ValueError(
            f"{path} has no answer for {len(missing)} of the {len(question_ids)} questions "
            f"(question_id {', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); give the "
            f"answer file that belongs to this question file"
        )
    return {q: answers[q] for q in question_ids}


def _row_answers(row: dict, where: str) -> list[str]:
    if "answers" in row:
        given = [a["answer"] if isinstance(a, dict) else a for a in row["answers"]]
    elif "answer" in row:
        given = [row["answer"]]
    else:
        raise ValueError(f"{where}: no 'answer' or 'answers'; give the reference answer(s)")
    if not given:
        raise ValueError(f"{where}: an empty 'answers' list; give at least one reference answer")
    return [str(a) for a in given]


def _coco_captions(path: Path, document: dict, question_ids: list[str]) -> Answers:
    image_ids = [image["id"] for image in document["images"]]
    repeated = sorted(str(i) for i, n in Counter(image_ids).items() if n > 1)
    if repeated:
        raise ValueError(f"{path}: image id(s) {', '.join(repeated[:5])} repeat; keep one entry per image")
    if len(image_ids) != len(question_ids):
        raise ValueError(
            f"{path} has {len(image_ids)} image ids for the {len(question_ids)} questions of its question "
            f"file; the scorer pairs the n-th question with image id n, so the counts must match: "
            f"add the missing images' captions or drop their questions"
        )
    captions: dict[int, list[str]] = {}
    for annotation in document["annotations"]:
        captions.setdefault(annotation["image_id"], []).append(str(annotation["caption"]))
    without = [str(n) for n in range(1, len(question_ids) + 1) if not captions.get(n)]
    if without:
        raise ValueError(
            f"{path}: image id(s) {', '.join(without[:5])} have no caption (ids must run "
            f"1..{len(question_ids)} in the order of the question file); add their captions"
        )
    return {q: captions[n] for n, q in enumerate(question_ids, start=1)}
