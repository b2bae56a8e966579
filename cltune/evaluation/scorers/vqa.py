"""VQA answers scored as TextVQA, VizWiz and VQAv2 are scored in CoIN and MCITlib.

Sources: ``m4c_evaluator.py`` (``EvalAIAnswerProcessor``, ``TextVQAAccuracyEvaluator``) as shipped in
zackschen/CoIN @ 4122465 (``ETrain/Eval/LLaVA/CoIN/m4c_evaluator.py``) and Ghy0501/MCITlib @ 2956dfd
(``*/llava/eval/m4c_evaluator.py``), itself copied from facebookresearch/mmf's EvalAI processor; CoIN's
``eval_textvqa.py`` calls it, while its ``eval_vizwiz.py`` and ``eval_vqav2.py`` do not (see
:func:`coin_exact`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_APOSTROPHE_WORDS = (
    "ain't aren't can't could've couldn't didn't doesn't don't hadn't hasn't haven't he'd he's how'd "
    "how'll how's I'm I've isn't it'd it'll ma'am mightn't might've mustn't must've needn't not've "
    "o'clock oughtn't shan't should've shouldn't somebody'll somebody's someone'd someone'll "
    "someone's something'd something'll that's there'd there're there's they'd they'll they're "
    "they've 'twas wasn't we've weren't what'll what're what's what've when's where'd where's "
    "where've who'd who'll who's who've why'll why're why's won't would've wouldn't y'all you'd "
    "you'll you're you've"
)
# EvalAI's contraction table: a word written without its apostrophes gets them back ...
CONTRACTIONS = {
    **{w.replace("'", ""): w for w in _APOSTROPHE_WORDS.split()},
    # ... and these entries, which are not of that form (some map the other way, as in EvalAI).
    "couldn'tve": "couldn't've",
    "couldnt've": "couldn't've",
    "hadnt've": "hadn't've",
    "hadn'tve": "hadn't've",
    "hed've": "he'd've",
    "he'dve": "he'd've",
    "Id've": "I'd've",
    "I'dve": "I'd've",
    "itd've": "it'd've",
    "it'dve": "it'd've",
    "let's": "let's",
    "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've",
    "ow's'at": "'ow's'at",
    "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at",
    "shed've": "she'd've",
    "she'dve": "she'd've",
    "she's": "she's",
    "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've",
    "someoned've": "someone'd've",
    "someone'dve": "someone'd've",
    "somethingd've": "something'd've",
    "something'dve": "something'd've",
    "thered've": "there'd've",
    "there'dve": "there'd've",
    "theyd've": "they'd've",
    "they'dve": "they'd've",
    "wed've": "we'd've",
    "we'dve": "we'd've",
    "whod've": "who'd've",
    "who'dve": "who'd've",
    "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've",
    "yall'll": "y'all'll",
    "y'allll": "y'all'll",
    "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've",
    "youd've": "you'd've",
    "you'dve": "you'd've",
}
NUMBER_WORDS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
ARTICLES = {"a", "an", "the"}
PUNCTUATION = ';/[]"{}()=+\\_-><@`,?!'
# EvalAI's PERIOD_STRIP: its lookbehind is written ``(?!<=\d)``, a typo for ``(?<!\d)``, so a period
# is dropped unless a digit follows it ("3.5" stays, "5." becomes "5", "a.m" becomes "am").
PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_BETWEEN_DIGITS = re.compile(r"(?<=\d)(\,)+(?=\d)")


def normalize_vqa_answer(text: str) -> str:
    """EvalAI's answer normalisation (``EvalAIAnswerProcessor.__call__``), step for step.

    Lower-case, drop ``,`` and ``?``, split off ``'s``; then each punctuation mark is deleted when it
    touches a space (or the text has a comma between digits), else replaced by a space; periods not
    followed by a digit go (the first 32 of them: EvalAI passes ``re.UNICODE`` where ``sub`` takes
    its count); number words become digits (``none`` → 0), articles go, contractions get
    their apostrophe back.
    """
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    spaced = text
    for mark in PUNCTUATION:
        joined = mark + " " in spaced or " " + mark in spaced or COMMA_BETWEEN_DIGITS.search(spaced)
        text = text.replace(mark, "" if joined else " ")
    text = PERIOD_STRIP.sub("", text, count=re.UNICODE)  # EvalAI passes re.UNICODE (32) as the count
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def textvqa(prediction: str, answer: str, answers: Sequence[str] | None = None, **_: object) -> float:
    """TextVQA soft accuracy: mean over the n leave-one-out subsets of min(#matches / 3, 1).

    ``TextVQAAccuracyEvaluator._compute_answer_scores``: both sides normalised by
    :func:`normalize_vqa_answer`; each of the n annotator answers is left out in turn and the
    prediction scores min(#remaining annotators who gave it / 3, 1); the n scores are averaged. The
    official code asserts n = 10; here any n ≥ 1 is accepted (a lone ``answer`` is n = 1, whose only
    subset is empty, so it scores 0 — pass ``answers``).
    """
    refs = [normalize_vqa_answer(a) for a in (answers if answers else [answer])]
    pred = normalize_vqa_answer(prediction)
    matches = sum(r == pred for r in refs)
    if matches == 0:
        return 0.0
    # Leaving out a matching annotator leaves matches − 1; leaving out another leaves matches.
    subsets = matches * min((matches - 1) / 3, 1.0) + (len(refs) - matches) * min(matches / 3, 1.0)
    return subsets / len(refs)


def coin_exact(prediction: str, answer: str, **_: object) -> float:
    """1 if ``prediction.upper() == answer.upper()``: CoIN's VizWiz and VQAv2 rule.

    zackschen/CoIN @ 4122465, ``ETrain/Eval/LLaVA/CoIN/eval_vizwiz.py`` and ``eval_vqav2.py``,
    ``eval_single``: they import the m4c evaluator but compare the raw output with the single
    ``answer`` of the CoIN instruction file, upper-cased, with no other normalisation ("Two" ≠ "2",
    "yes." ≠ "yes"). The soft accuracy over the ten annotators is :func:`textvqa`.
    """
    return float(prediction.upper() == answer.upper())
