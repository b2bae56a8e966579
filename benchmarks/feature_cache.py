"""The frozen vision tower's memo (:mod:`cltune.models.feature_cache`): on against off, same process.

On the default stream's tasks, with the model's vision tower frozen (the ``language_model`` scope):

- evaluation: cltune's evaluation of every test row of every task with the memo off, on and cold
  (the first pass, which computes and stores every image), and on and warm (every image stored),
  interleaved and in a rotating order; the answers must be identical;
- training: ``naive`` for ``--epochs`` epochs over ``--rows`` rows of the first task, from the same
  weights, memo off against on (the first epoch stores, the later ones read); the trained weights
  must be identical.

It reports wall times, the speed-up (off / on), the tower's share of an uncached evaluation, and the
bytes the memo keeps per image. Run by hand:
``python benchmarks/feature_cache.py --model smol --out reports/PERFORMANCE-feature-cache.md``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import time
from pathlib import Path

import torch
from _common import emit, load_average, machine, rotated

from cltune.data.encode import Encoder
from cltune.data.recipe import load_stream
from cltune.data.task import Task
from cltune.evaluation.generate import generate_answers
from cltune.models.feature_cache import cache_tower_features
from cltune.models.loading import load_model
from cltune.models.scopes import set_trainable
from cltune.strategies.config import TrainConfig
from cltune.strategies.experience import Experience
from cltune.strategies.template import Template

SCOPE = "language_model"
MODES = ("off", "on")


def evaluation(strategy: Template, tasks: list[Task]) -> tuple[float, list[str]]:
    started = time.perf_counter()
    answers = [a for task in tasks for a in generate_answers(strategy, task, progress=False)]
    return time.perf_counter() - started, answers


def training(base: torch.nn.Module, encoder: Encoder, task: Task, config: TrainConfig, memo: bool):
    """Wall time of one experience from ``base``'s weights, and the trained weights."""
    model = copy.deepcopy(base)  # a copy's memo starts empty: the first epoch computes every image
    set_trainable(model, SCOPE)
    started = time.perf_counter()
    strategy = Template(model, encoder, dataclasses.replace(config, feature_memo=memo), progress=False)
    strategy.train(Experience(1, [task]))
    seconds = time.perf_counter() - started
    return seconds, {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    stream = load_stream("default")
    model, processor = load_model(args.model, pretrain_tasks=stream.general, seed=stream.seed)
    encoder = Encoder(processor, args.model)
    set_trainable(model, SCOPE)
    cache = cache_tower_features(model)
    tasks = [
        Task(t.name, t.train, t.test.select(range(min(args.rows, len(t.test)))), t.metric)
        for t in (*stream.tasks, *stream.general)
    ]
    strategy = Template(
        model, encoder, TrainConfig(eval_batch_size=args.batch_size, device="cpu"), progress=False
    )
    cache.enabled = False
    _, reference = evaluation(strategy, tasks)  # warm-up: encodes every row once, for every mode
    cache.enabled = True
    cache.clear()
    cold, cold_answers = evaluation(strategy, tasks)
    images = len(cache)
    evals: dict[str, list[float]] = {mode: [] for mode in MODES}
    same = cold_answers == reference
    for rep in range(args.reps):
        for mode in rotated(MODES, rep):
            cache.enabled = mode == "on"
            seconds, answers = evaluation(strategy, tasks)
            evals[mode].append(seconds)
            same = same and answers == reference
            print(f"eval rep {rep + 1}/{args.reps} memo {mode:<3} {seconds:.2f} s", flush=True)

    source = stream.tasks[0]
    task = Task(source.name, source.train.select(range(args.train_rows)), source.test, source.metric)
    config = TrainConfig(batch_size=args.train_batch, epochs=args.epochs, lr=1e-4, scope=SCOPE, device="cpu")
    trains: dict[str, list[float]] = {mode: [] for mode in MODES}
    weights: dict[str, dict] = {}
    for rep in range(args.reps):
        for mode in rotated(MODES, rep):
            seconds, weights[mode] = training(model, encoder, task, config, mode == "on")
            trains[mode].append(seconds)
            print(f"train rep {rep + 1}/{args.reps} memo {mode:<3} {seconds:.2f} s", flush=True)
    identical = all(torch.equal(weights["off"][n], weights["on"][n]) for n in weights["off"])
    return {
        "evals": evals,
        "cold": cold,
        "trains": trains,
        "rows": sum(len(t.test) for t in tasks),
        "images": images,
        "bytes_per_image": cache.rows.nbytes / max(images, 1),
        "answers_identical": same,
        "weights_identical": identical,
    }


def _ratios(off: list[float], on: list[float]) -> str:
    speed = [a / b for a, b in zip(off, on, strict=True)]
    return f"{statistics.median(speed):.2f}× [{min(speed):.2f}–{max(speed):.2f}]"


def report(results: dict, args: argparse.Namespace) -> str:
    evals, trains = results["evals"], results["trains"]
    off, train_off, train_on = (statistics.median(v) for v in (evals["off"], trains["off"], trains["on"]))
    answers = "identical" if results["answers_identical"] else "DIFFER"
    weights = "identical" if results["weights_identical"] else "DIFFER"
    rows = [
        "| phase | memo off (s, median) | memo on (s, median) | speed-up (off / on, median [min–max]) "
        "| same result |",
        "|---|---|---|---|---|",
        f"| evaluation, {results['rows']} test rows | {off:.2f} | {statistics.median(evals['on']):.2f} | "
        f"{_ratios(evals['off'], evals['on'])} | answers {answers} |",
        f"| evaluation, first pass (stores every image) | {off:.2f} | {results['cold']:.2f} | "
        f"{off / results['cold']:.2f}× | — |",
        f"| training, {args.epochs} epochs of {args.train_rows} rows | {train_off:.2f} | "
        f"{train_on:.2f} | {_ratios(trains['off'], trains['on'])} | weights {weights} |",
    ]
    notes = [
        f"The memo holds {results['images']} images at {results['bytes_per_image'] / 1024:.1f} KiB each "
        f"({results['images'] * results['bytes_per_image'] / 2**20:.1f} MiB).",
    ]
    return "\n".join(rows) + "\n\n" + "\n".join(f"- {n}" for n in notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="tiny (default) or smol (its parts installed)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rows", type=int, default=60, help="test rows per task (at most its split)")
    parser.add_argument("--batch-size", type=int, default=TrainConfig().eval_batch_size)
    parser.add_argument("--train-rows", type=int, default=64)
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: steadiest)")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown section here")
    args = parser.parse_args()
    results = run(args)
    command = (
        f"python benchmarks/feature_cache.py --model {args.model} --reps {args.reps} --rows {args.rows} "
        f"--batch-size {args.batch_size} --train-rows {args.train_rows} --train-batch {args.train_batch} "
        f"--epochs {args.epochs} --threads {args.threads}"
    )
    emit(
        [
            f"## Vision feature memo ({args.model})",
            f"`{command}` on {machine()}; load average {load_average()} (1/5/15 min) at the end; "
            f"{args.reps} interleaved repetitions, the vision tower frozen (scope `{SCOPE}`).",
            report(results, args),
        ],
        args.out,
    )


if __name__ == "__main__":
    main()
