"""Zero-shot scores of the aligned smol model on its general tasks, with larger test sets than the
benchmark's (per caption dataset, every held-out LM fact, 60 held-out prose passages), through
cltune's own evaluation, written to zero_shot.json beside this script. Run from the repository root:

    CLTUNE_DATA_DIR=../shared/data python reports/smol-mixed-vqa/zero_shot.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from cltune.data.encode import Encoder
from cltune.data.sources.captions import captions
from cltune.data.sources.lm_facts import lm_facts
from cltune.data.sources.lm_text import lm_text
from cltune.data.task import Task
from cltune.evaluation.evaluator import evaluate
from cltune.models.loading import load_model
from cltune.strategies.config import TrainConfig
from cltune.strategies.template import Template

# chance: one of 10 digits, one of 10 CIFAR classes, one of 8 colours × 3 shapes; none for text
CHANCE = {"captions/digits": 10.0, "captions/cifar10": 10.0, "captions/easyvqa": 100 / 24}


def tasks() -> list[Task]:
    caption_tasks = [
        Task(f"captions/{d}", captions("train", 4, 7, d), captions("test", 60, 7, d))
        for d in ("digits", "cifar10", "easyvqa")
    ]
    return [
        *caption_tasks,
        Task("lm_facts", lm_facts("train", None, 0), lm_facts("test", None, 0)),
        Task("lm_text", lm_text("train", 8, 0), lm_text("test", 60, 0), metric="token_accuracy"),
    ]


def main() -> None:
    start = time.perf_counter()
    model, processor = load_model("smol")
    strategy = Template(model, Encoder(processor, "smol"), TrainConfig(eval_batch_size=20), progress=False)
    results = {
        score.task: {"score": score.score, "n": len(score.predictions), "chance": CHANCE.get(score.task)}
        for score in evaluate(strategy, tasks())
    }
    results["seconds"] = time.perf_counter() - start
    text = json.dumps(results, indent=1)
    Path(__file__).with_name("zero_shot.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
