"""Multiple-choice answers scored as CoIN scores ScienceQA.

Source: zackschen/CoIN @ 4122465, ``ETrain/Eval/LLaVA/CoIN/eval_science_qa.py`` (its ``__main__``
block and ``get_pred_idx``). UCIT's multiple-choice tasks (ArxivQA, IconQA) extract no letter at
all: see :func:`cltune.evaluation.scorers.match.mcitlib_exact`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

OPTIONS = ("A", "B", "C", "D", "E")  # the script's default ``--options``
_SINGLE_CHARACTER_WORD = re.compile(r"\b(\w)\b")


def scienceqa_letter(prediction: str) -> str | None:
    """The option letter CoIN reads from an output, or ``None`` (its ``FAILED``).

    In order: the whole output is one of A–E; it starts with a letter of A–E and ". "; else the first
    single-character word (``\\b\\w\\b``: a letter, digit or underscore), upper-cased. So
    "The answer is (B)." gives B, but "a cat" gives A and "3 legs" gives 3 (an invalid option).
    """
    if prediction in OPTIONS:
        return prediction
    if len(prediction) >= 3 and prediction[0] in OPTIONS and prediction[1:3] == ". ":
        return prediction[0]
    words = _SINGLE_CHARACTER_WORD.findall(prediction)
    return words[0].upper() if words else None


def scienceqa(prediction: str, answer: str, choices: Sequence[str] | None = None, **_: object) -> float:
    """1 if the extracted letter (:func:`scienceqa_letter`) names the right option, else 0.

    ``answer`` is the right option's letter or its text (then found in ``choices``). As in
    ``get_pred_idx``, a letter past the last option (E for four choices) is wrong; a failed
    extraction is wrong (the script's random guess is dead code after a ``return -1``).
    """
    if not choices:
        raise ValueError("the scienceqa scorer needs the row's 'choices' column (the option texts)")
    letters = OPTIONS[: len(choices)]
    texts = list(choices[: len(letters)])
    right = answer if answer in letters else letters[texts.index(answer)] if answer in texts else None
    if right is None:
        raise ValueError(f"answer {answer!r} is neither an option letter {letters} nor one of the choices")
    return float(scienceqa_letter(prediction) == right)
