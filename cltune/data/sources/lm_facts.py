"""Factual questions that SmolLM2-135M-Instruct answers correctly before any tuning.

A general task for the language model's own knowledge, so that forgetting of the LM itself is
measured beside forgetting of the visual tasks. The list was curated once: of 40 capital-city
questions asked through ``smol``'s chat template with greedy decoding, these are the
26 that the untuned LM answers with exactly the reference sentence (its own phrasing,
"The capital of France is Paris."), so the zero-shot score is ~100 % and a drop is forgetting —
of the fact or of the answer style. Text-only rows (no image).
"""

from __future__ import annotations

import datasets
import numpy as np

from cltune.data.sources import register_source
from cltune.data.sources._common import TEXT_FEATURES, subset_rows

FACTS = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("What is the capital of Italy?", "The capital of Italy is Rome."),
    ("What is the capital of Germany?", "The capital of Germany is Berlin."),
    ("What is the capital of Spain?", "The capital of Spain is Madrid."),
    ("What is the capital of England?", "The capital of England is London."),
    ("What is the capital of Russia?", "The capital of Russia is Moscow."),
    ("What is the capital of China?", "The capital of China is Beijing."),
    ("What is the capital of Egypt?", "The capital of Egypt is Cairo."),
    ("What is the capital of Canada?", "The capital of Canada is Ottawa."),
    ("What is the capital of Greece?", "The capital of Greece is Athens."),
    ("What is the capital of Poland?", "The capital of Poland is Warsaw."),
    ("What is the capital of Sweden?", "The capital of Sweden is Stockholm."),
    ("What is the capital of Norway?", "The capital of Norway is Oslo."),
    ("What is the capital of Kenya?", "The capital of Kenya is Nairobi."),
    ("What is the capital of Australia?", "The capital of Australia is Canberra."),
    ("What is the capital of India?", "The capital of India is New Delhi."),
    ("What is the capital of Mexico?", "The capital of Mexico is Mexico City."),
    ("What is the capital of Thailand?", "The capital of Thailand is Bangkok."),
    ("What is the capital of Peru?", "The capital of Peru is Lima."),
    ("What is the capital of Hungary?", "The capital of Hungary is Budapest."),
    ("What is the capital of the Netherlands?", "The capital of the Netherlands is Amsterdam."),
    ("What is the capital of Chile?", "The capital of Chile is Santiago."),
    ("What is the capital of Colombia?", "The capital of Colombia is Bogota."),
    ("What is the capital of Vietnam?", "The capital of Vietnam is Hanoi."),
    ("What is the capital of Switzerland?", "The capital of Switzerland is Bern."),
]
TRAIN_ROWS = 6  # a fixed partition: the first 6 facts are the train split, the rest the test split


@register_source("lm_facts")
def lm_facts(split: str, size: int | None, seed: int) -> datasets.Dataset:
    """Capital-city questions with the LM's own sentence answers (text-only)."""
    pool = FACTS[:TRAIN_ROWS] if split == "train" else FACTS[TRAIN_ROWS:]
    rows = subset_rows(np.arange(len(pool)), size, seed, f"lm_facts/{split}")
    return datasets.Dataset.from_dict(
        {"question": [pool[i][0] for i in rows], "answer": [pool[i][1] for i in rows]},
        features=TEXT_FEATURES,
    )
