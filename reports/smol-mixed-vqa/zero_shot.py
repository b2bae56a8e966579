"""Zero-shot accuracy of the aligned smol model on its general tasks, with larger test sets than
the benchmark's (per caption dataset, and every LM fact). Run from the repository root:

    CLTUNE_DATA_DIR=../shared/data python reports/smol-mixed-vqa/zero_shot.py
"""

from __future__ import annotations

import json
import time

import torch

from cltune.data.encode import Encoder, collate
from cltune.data.sources.captions import captions
from cltune.data.sources.lm_facts import lm_facts
from cltune.evaluation.metrics import exact_match
from cltune.models.loading import load_model

# chance: one of 10 digits, one of 10 CIFAR classes, one of 8 colours × 3 shapes
TASKS = {
    "captions/digits": (lambda: captions("test", 40, 7, dataset="digits"), 1 / 10),
    "captions/cifar10": (lambda: captions("test", 40, 7, dataset="cifar10"), 1 / 10),
    "captions/easyvqa": (lambda: captions("test", 40, 7, dataset="easyvqa"), 1 / 24),
    "lm_facts": (lambda: lm_facts("test", None, 0), 0.0),
}


def main() -> None:
    start = time.perf_counter()
    model, processor = load_model("smol")
    encoder = Encoder(processor, "smol")
    results = {}
    for name, (make, chance) in TASKS.items():
        data = make()
        budget = max(len(processor.tokenizer(a)["input_ids"]) for a in data["answer"]) + 2
        scores = []
        for s in range(0, len(data), 20):
            rows = range(s, min(s + 20, len(data)))
            batch = collate([encoder.encode(data, i, name, False) for i in rows], encoder.pad_id, left=True)
            with torch.no_grad():
                out = model.generate(
                    **batch, max_new_tokens=budget, do_sample=False, pad_token_id=encoder.pad_id
                )
            texts = processor.tokenizer.batch_decode(
                out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True
            )
            scores += [exact_match(t.strip(), data[i]["answer"]) for t, i in zip(texts, rows, strict=True)]
        results[name] = {
            "accuracy": 100 * sum(scores) / len(scores),
            "n": len(scores),
            "chance": 100 * chance,
        }
        print(name, results[name], flush=True)
    results["seconds"] = time.perf_counter() - start
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
