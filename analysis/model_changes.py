"""What a run changed in the model: weight drift per layer, representation drift (linear CKA)
on the general tasks, importance map of each task and the overlap of the tasks' top-5% masks.

    python analysis/model_changes.py runs/default-naive-seed0

The trained model is rebuilt from the run's last checkpoint as the run built it
(``cltune.experiment.load_trained_model``); the base is the model the run started from.
"""

from __future__ import annotations

import sys

import pandas as pd

from cltune.analysis import (
    drift_by,
    importance_map,
    importance_masks,
    load_run,
    mask_overlap,
    representation_drift,
    task_batches,
    weight_drift,
)
from cltune.experiment import load_trained_model
from cltune.models.loading import load_model

pd.set_option("display.width", 160)
pd.set_option("display.precision", 4)


def main(path: str) -> None:
    run = load_run(path)
    tuned, processor, stream = load_trained_model(run.path)
    base, _ = load_model(run.model, pretrain_tasks=stream.general, seed=stream.seed)

    drift = weight_drift(base, tuned)
    print(f"{run.name}: weight drift ‖Δθ‖/‖θ‖ per layer")
    print(drift_by(drift, "layer")[["layer", "numel", "relative"]].to_string(index=False))

    for task in stream.general:
        batches = task_batches(task, processor, split="test", n_examples=32)
        print(f"\nlinear CKA with the base on {task.name} (1 = unchanged)")
        print(representation_drift(base, tuned, batches).to_string(index=False))

    maps = {
        task.name: importance_map(tuned, task_batches(task, processor, n_examples=32), "gradient")
        for task in stream.tasks
    }
    first = next(iter(maps))
    print(f"\nmean gradient importance per layer × module type on {first}")
    print(maps[first].table("mean"))
    if len(maps) > 1:
        print("\nJaccard overlap of the tasks' top-5% importance masks")
        print(mask_overlap(importance_masks(maps, 0.05)))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
