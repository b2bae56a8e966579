"""Per-answer scores of generated text against references, as used by VQA benchmarks."""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Sequence

from cltune.evaluation.scorers import CORPUS_SCORERS, ROW_SCORERS
from cltune.utils import unknown_name_error

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
    )
}
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, spell numbers as digits, squeeze whitespace.

    The normalisation of the VQA evaluation (Antol et al., ICCV 2015), simplified.
    """
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCT))
    return " ".join(_NUMBER_WORDS.get(w, w) for w in text.split())


def exact_match(prediction: str, answer: str, **_: object) -> float:
    """1 if the normalised prediction equals the normalised answer, else 0."""
    return float(normalize_answer(prediction) == normalize_answer(answer))


def vqa_accuracy(prediction: str, answer: str, answers: Sequence[str] | None = None, **_: object) -> float:
    """VQA soft accuracy (Antol et al. 2015): min(#annotators who gave the answer / 3, 1).

    Averaged over the 10 leave-one-out subsets of the annotators when ``answers`` lists them;
    with a single reference it reduces to exact match.
    """
    refs = [normalize_answer(a) for a in (answers or [answer])]
    pred = normalize_answer(prediction)
    if len(refs) < 2:
        return float(pred == refs[0])
    scores = []
    for left_out in range(len(refs)):
        others = refs[:left_out] + refs[left_out + 1 :]
        scores.append(min(sum(r == pred for r in others) / 3.0, 1.0))
    return sum(scores) / len(scores)


def choice_accuracy(prediction: str, answer: str, choices: Sequence[str] | None = None, **_: object) -> float:
    """1 if the prediction picks the right option, by its text or its letter (A, B, ...)."""
    if not choices:
        return exact_match(prediction, answer)
    pred = normalize_answer(prediction)
    letters = {chr(97 + i): c for i, c in enumerate(choices)}
    picked = letters.get(pred.rstrip(".)")) if len(pred.rstrip(".)")) == 1 else None
    if picked is None:
        picked = next((c for c in choices if normalize_answer(c) == pred), None)
    return float(picked is not None and normalize_answer(picked) == normalize_answer(answer))


def _levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def anls(prediction: str, answer: str, threshold: float = 0.5, **_: object) -> float:
    """Average Normalised Levenshtein Similarity (Biten et al., ICCV 2019, ST-VQA): 1 − NL if NL < τ."""
    pred, ref = prediction.strip().lower(), answer.strip().lower()
    longest = max(len(pred), len(ref)) or 1
    distance = _levenshtein(pred, ref) / longest
    return 1.0 - distance if distance < threshold else 0.0


def rouge_l(prediction: str, answer: str, beta: float = 1.2, **_: object) -> float:
    """ROUGE-L F-measure on tokens (Lin, 2004): LCS-based precision and recall."""
    p, r = normalize_answer(prediction).split(), normalize_answer(answer).split()
    if not p or not r:
        return float(p == r)
    table = [[0] * (len(r) + 1) for _ in range(len(p) + 1)]
    for i, tp in enumerate(p):
        for j, tr in enumerate(r):
            table[i + 1][j + 1] = table[i][j] + 1 if tp == tr else max(table[i][j + 1], table[i + 1][j])
    lcs = table[-1][-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


TASK_METRICS: dict[str, Callable[..., float]] = {
    "exact_match": exact_match,
    "vqa_accuracy": vqa_accuracy,
    "choice_accuracy": choice_accuracy,
    "anls": anls,
    "rouge_l": rouge_l,
    **ROW_SCORERS,  # the benchmarks' own scorers (cltune.evaluation.scorers)
}

# Scored over the whole test split at once (``metric(predictions, references)``), not row by row.
CORPUS_METRICS: dict[str, Callable[..., float]] = CORPUS_SCORERS


# Scored from the model's logits, not from generated answers (see cltune.evaluation.likelihood).
LIKELIHOOD_METRICS = ("token_accuracy",)


def get_metric(name: str) -> Callable[..., float]:
    """The row metric or the corpus metric called ``name``."""
    if name in CORPUS_METRICS:
        return CORPUS_METRICS[name]
    if name not in TASK_METRICS:
        raise unknown_name_error("task metric", name, [*TASK_METRICS, *CORPUS_METRICS, *LIKELIHOOD_METRICS])
    return TASK_METRICS[name]
