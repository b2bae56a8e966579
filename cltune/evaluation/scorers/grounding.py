"""Referring-expression grounding scored as CoIN scores it: a box read from text, IoU against the answer.

Source: zackschen/CoIN @ 4122465, ``ETrain/Eval/LLaVA/CoIN/eval_grounding.py``, ``eval_single`` and
``calculate_iou`` (MCITlib's copy is the same). Boxes are ``[x1, y1, x2, y2]`` normalised to the image
padded to a square (LLaVA's ``expand2square``), as in the CoIN annotations' ``answer_bbox``. The script
multiplies both boxes by the longer image side before the IoU, which does not change it.
"""

from __future__ import annotations

import re

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_BOX = re.compile(rf"\[\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\]")


def box_iou(a: list[float], b: list[float]) -> float:
    """Intersection over union of ``[x1, y1, x2, y2]`` boxes; 0 when the union is not positive."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def coin_box(text: str) -> list[float] | None:
    """The box CoIN reads from an output, or ``None`` (the row then scores 0).

    Every ``[`` and ``]`` is deleted, then the first and last characters are dropped
    (``pred_bbox[1:-1]``) and the rest split on commas into four floats. The slice was meant for the
    brackets, which are already gone, so it eats a digit: "[0.1, 0.2, 0.3, 0.45]" reads as
    [0.1, 0.2, 0.3, 0.4], and any text around the box makes the parse fail.
    """
    inner = text.replace("[", "").replace("]", "")[1:-1]
    try:
        box = [float(x) for x in inner.split(",")]
    except ValueError:
        return None
    return box if len(box) == 4 else None


def coin_grounding(prediction: str, answer: str, **_: object) -> float:
    """1 if IoU(:func:`coin_box` of the output, the answer box) > 0.5 (strictly, as the script does)."""
    box = coin_box(prediction)
    return float(box is not None and box_iou(box, _answer_box(answer)) > 0.5)


def grounding_strict(prediction: str, answer: str, **_: object) -> float:
    """1 if the first ``[x1, y1, x2, y2]`` in the output has IoU ≥ 0.5 with the answer box.

    The usual referring-expression accuracy (Acc@0.5): the box is found anywhere in the text and read
    whole, unlike :func:`coin_box`.
    """
    found = _BOX.search(prediction)
    if found is None:
        return 0.0
    return float(box_iou([float(x) for x in found.groups()], _answer_box(answer)) >= 0.5)


def _answer_box(answer: str) -> list[float]:
    """The annotation's ``answer_bbox`` text "[x1, y1, x2, y2]", read as the script reads it."""
    try:
        box = [float(x) for x in answer.replace("[", "").replace("]", "").split(",")]
    except ValueError:
        box = []
    if len(box) != 4:
        raise ValueError(f"answer {answer!r} is not a box: write it as '[x1, y1, x2, y2]'")
    return box
