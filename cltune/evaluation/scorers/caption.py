"""Captions scored over the whole test split with pycocoevalcap, as UCIT scores VizWiz-caption and Flickr30k.

Source: Ghy0501/MCITlib @ 2956dfd, ``*/llava/eval/CoIN/eval_caption.py``, ``eval_single``: COCO-style
ground truth and results through ``pycocoevalcap``'s ``COCOEvalCap``, which tokenises both sides with
the Stanford PTB tokenizer (lower-cased, punctuation dropped) and reports each metric × 100. The
script numbers the outputs 1…N in file order as ``image_id`` and so relies on the annotation file
numbering its images the same way; here each output is paired with its own row's references.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence


def _tokenized(captions: Sequence[Sequence[str]]) -> dict[int, list[str]]:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    if shutil.which("java") is None:
        raise RuntimeError(
            "captioning scores tokenise with pycocoevalcap's Stanford PTB tokenizer, which runs on Java: "
            "install a Java runtime (e.g. `apt-get install default-jre-headless`) and put `java` on PATH"
        )
    return PTBTokenizer().tokenize({i: [{"caption": c} for c in caps] for i, caps in enumerate(captions)})


def cider(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """CIDEr-D of the outputs against each row's reference captions (Vedantam et al., CVPR 2015).

    Corpus-level: the n-gram document frequencies come from all rows' references, so the score of a
    row depends on the others; ``pycocoevalcap.cider.Cider`` (n ≤ 4, σ = 6, the ×10 scale, the length
    penalty and clipping of CIDEr-D). Returns the mean over rows (UCIT prints it × 100).
    """
    from pycocoevalcap.cider.cider import Cider

    if len(predictions) != len(references) or not predictions:
        raise ValueError(
            f"cider needs one output per row: got {len(predictions)} outputs, {len(references)} rows"
        )
    empty = [i for i, refs in enumerate(references) if not refs]
    if empty:
        raise ValueError(f"rows {empty} have no reference caption (fill their 'answers' or 'answer')")
    score, _ = Cider().compute_score(_tokenized(references), _tokenized([[p] for p in predictions]))
    return float(score)
