"""The benchmarks' own scorers (CoIN, UCIT / MCITlib), protocol-exact, registered by task metric name.

A row scorer is ``scorer(prediction, answer, **row_fields) -> float`` like every task metric; a corpus
scorer is ``scorer(predictions, references) -> float`` over the whole test split (``references`` is
each row's ``answers``, or ``[answer]``). Where a published scorer is lenient or odd, its name keeps
the published rule and a ``*_strict`` variant sits beside it. docs/BENCHMARKS.md lists each with its
source and the quirks kept.
"""

from __future__ import annotations

from collections.abc import Callable

from cltune.evaluation.scorers.caption import cider
from cltune.evaluation.scorers.choice import scienceqa
from cltune.evaluation.scorers.grounding import coin_grounding, grounding_strict
from cltune.evaluation.scorers.match import coin_imagenet, coin_ocrvqa, imagenet_strict, mcitlib_exact
from cltune.evaluation.scorers.vqa import coin_exact, textvqa

ROW_SCORERS: dict[str, Callable[..., float]] = {
    # CoIN (zackschen/CoIN, ETrain/Eval/LLaVA/CoIN/eval_*.py)
    "scienceqa": scienceqa,
    "textvqa": textvqa,
    "imagenet": coin_imagenet,
    "imagenet_strict": imagenet_strict,
    "vizwiz": coin_exact,
    "grounding": coin_grounding,
    "grounding_strict": grounding_strict,
    "vqav2": coin_exact,
    "ocrvqa": coin_ocrvqa,
    # UCIT (Ghy0501/MCITlib, */llava/eval/CoIN/eval_deepseek_r1.py)
    "imagenet_r": mcitlib_exact,
    "arxivqa": mcitlib_exact,
    "iconqa": mcitlib_exact,
    "clevr_math": mcitlib_exact,
}

# UCIT's VizWiz-caption and Flickr30k (Ghy0501/MCITlib, */llava/eval/CoIN/eval_caption.py)
CORPUS_SCORERS: dict[str, Callable[..., float]] = {"cider": cider}
