"""Held-out real English text, scored by the language model's next-token accuracy.

A general task for the language model itself: after tuning on short visual answers, does the model
still predict ordinary prose? Rows are text-only passages in the ``answer`` column (``question`` is
empty); the task's metric is :func:`cltune.evaluation.likelihood.token_accuracy` (teacher-forced
top-1 next-token accuracy over the passage, in percent), the accuracy form of held-out perplexity,
the language-modelling measure of WikiText (Merity et al., "Pointer Sentinel Mixture Models",
ICLR 2017).

Corpora:

- ``pydoc`` (default, offline): the prose paragraphs of the Python language reference that ships
  with every Python (``pydoc_data.topics``); no download, never part of any cltune stream.
- ``wikitext``: WikiText-2's raw paragraphs from the Hugging Face Hub
  (``Salesforce/wikitext``), for users who are online.

Train and test splits never share a passage: ``pydoc`` splits its distinct paragraphs by a hash of
their text (topics repeat some), ``wikitext`` uses its own train and test splits.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from functools import cache

import datasets
import numpy as np

from cltune.data.sources import register_source
from cltune.data.sources._common import TEXT_FEATURES, subset_rows

CORPORA = ("pydoc", "wikitext")
MIN_CHARS, MAX_CHARS = 200, 500


def prose_paragraphs(text: str) -> list[str]:
    """Paragraphs of plain prose: one sentence or more, 200–500 characters, no code or tables."""
    kept = []
    for block in re.split(r"\n\s*\n", text):
        if block.startswith((" ", "\t")):  # indented: code, grammar or a table
            continue
        paragraph = " ".join(block.split())
        if not MIN_CHARS <= len(paragraph) <= MAX_CHARS:
            continue
        letters = sum(c.isalpha() or c == " " for c in paragraph)
        if letters / len(paragraph) >= 0.9 and paragraph[0].isupper() and paragraph.endswith("."):
            kept.append(paragraph)
    return kept


def _in_test_split(paragraph: str) -> bool:
    """A fixed half of the paragraphs (by hash of their text) is the test split."""
    return hashlib.sha256(paragraph.encode()).digest()[0] % 2 == 0


@cache
def _pydoc(split: str) -> tuple[str, ...]:
    from pydoc_data.topics import topics

    paragraphs = dict.fromkeys(p for t in sorted(topics) for p in prose_paragraphs(topics[t]))
    return tuple(p for p in paragraphs if _in_test_split(p) == (split == "test"))


def _wikitext(split: str) -> tuple[str, ...]:
    rows = datasets.load_dataset("Salesforce/wikitext", "wikitext-2-raw-v1", split=split)["text"]
    return tuple(p for text in rows if not text.lstrip().startswith("=") for p in prose_paragraphs(text))


def _dataset(passages: Iterable[str]) -> datasets.Dataset:
    passages = list(passages)
    return datasets.Dataset.from_dict({"question": [""] * len(passages), "answer": passages}, TEXT_FEATURES)


@register_source("lm_text", metric="token_accuracy")
def lm_text(split: str, size: int | None, seed: int, corpus: str = "pydoc") -> datasets.Dataset:
    """Held-out prose passages (text-only) from ``corpus`` (``pydoc`` offline, ``wikitext`` Hub)."""
    if corpus not in CORPORA:
        raise ValueError(f"lm_text: unknown corpus {corpus!r}; use one of {list(CORPORA)}")
    pool = _pydoc(split) if corpus == "pydoc" else _wikitext(split)
    rows = subset_rows(np.arange(len(pool)), size, seed, f"lm_text/{corpus}/{split}")
    return _dataset(pool[i] for i in rows)
