"""Short answers scored by string matching, as the CoIN and UCIT (MCITlib) scripts do it."""

from __future__ import annotations


def mcitlib_exact(prediction: str, answer: str, **_: object) -> float:
    """1 if ``prediction.upper() == answer.upper()``: UCIT's ImageNet-R, ArxivQA, IconQA, CLEVR-Math rule.

    Ghy0501/MCITlib @ 2956dfd, ``*/llava/eval/CoIN/eval_deepseek_r1.py``, ``eval_single`` (the seven
    method folders carry the same file; ``scripts/*/Eval_UCIT/eval_{imagenet,arxivqa,iconqa,clevr}.sh``
    call it; its LLM-judge score is commented out). No letter extraction and no number parsing:
    "The answer is (B)." scores 0 against "B", and "3.0" scores 0 against "3".
    """
    return float(prediction.upper() == answer.upper())


def coin_imagenet(prediction: str, answer: str, **_: object) -> float:
    """1 if the label is a substring of the output or the output of the label (case-sensitive).

    zackschen/CoIN @ 4122465, ``ETrain/Eval/LLaVA/CoIN/eval_ImagetNet.py``, ``eval_single``:
    ``(text in label['text']) or (label['text'] in text)``, no casing or stripping. Lenient: an empty
    output is in every label and scores 1, and so does "dog" for "hot dog". The script pairs outputs
    and labels by line order; here rows are paired by the evaluator. See :func:`imagenet_strict`.
    """
    return float(answer in prediction or prediction in answer)


def imagenet_strict(prediction: str, answer: str, **_: object) -> float:
    """:func:`coin_imagenet` without its two loopholes: case-insensitive, and an empty output scores 0."""
    pred, label = prediction.strip().lower(), answer.strip().lower()
    return float(bool(pred) and (label in pred or pred in label))


def coin_ocrvqa(prediction: str, answer: str, **_: object) -> float:
    """1 if the lower-cased output equals the lower-cased answer, unless it contains "Unanswerable".

    zackschen/CoIN @ 4122465, ``ETrain/Eval/LLaVA/CoIN/eval_ocrvqa.py``, ``eval_single`` (MCITlib's
    copy is the same rule): an output containing "Unanswerable" (case-sensitive) is skipped but still
    counted in the total, so it scores 0 even against the answer "Unanswerable".
    """
    if "Unanswerable" in prediction:
        return 0.0
    return float(prediction.lower() == answer.lower())
