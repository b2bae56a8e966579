"""Evaluation throughput: cltune's ``generate_answers`` against the loops people would use instead.

Every repetition evaluates every test row of the default stream's tasks and general task (greedy,
the same token budget per task, rows pre-encoded once), interleaved and in a rotating order:

- ``cltune``: :func:`cltune.evaluation.generate.generate_answers` (rows sorted by prompt length,
  batches of ``--batch-size``, left-padded);
- ``raw-batched``: a plain ``model.generate`` loop over the rows in their order, same batch size;
- ``batch-1``: one row at a time, as the LLaVA-derived evaluation scripts of the MLLM
  continual-learning repositories (CoIN, MCITlib) run it: their data loaders assert a batch size of 1.

It reports each loop's wall and CPU time, cltune's throughput as a multiple of each loop's, and
how many answers equal cltune's. Beside it: the vision tower's share of an evaluation, and the cost
of the fingerprint that decides whether a task's last evaluation can be reused
(:mod:`cltune.evaluation.reuse`), per task alone and per task in a pass, against generating it.
The vision tower's memo is off here, so that every loop runs the tower; ``feature_cache.py``
measures the memo.

Run by hand (not by CI): ``python benchmarks/eval_throughput.py --out reports/PERFORMANCE-eval.md``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
from _common import emit, load_average, machine, pretrained_tiny, rotated

from cltune.data.encode import collate
from cltune.data.task import Task
from cltune.evaluation.generate import answer_token_budget, generate_answers
from cltune.evaluation.reuse import TensorDigests, answer_fingerprint
from cltune.strategies.config import TrainConfig
from cltune.strategies.template import Template

LOOPS = ("cltune", "raw-batched", "batch-1")


def raw_answers(strategy: Template, task: Task, batch_size: int) -> list[str]:
    """A plain batched ``generate`` loop over the rows in order (left padding, same budget)."""
    encoder, model = strategy.encoder, strategy.model
    budget = answer_token_budget(encoder, task, strategy.config.max_new_tokens)
    features = [encoder.encode(task.test, i, task.name, train=False) for i in range(len(task.test))]
    answers = []
    with torch.no_grad():
        for start in range(0, len(features), batch_size):
            batch = collate(features[start : start + batch_size], encoder.pad_id, left=True)
            out = model.generate(**batch, max_new_tokens=budget, do_sample=False, pad_token_id=encoder.pad_id)
            new = out[:, batch["input_ids"].shape[1] :]
            answers += [
                text.strip() for text in encoder.tokenizer.batch_decode(new, skip_special_tokens=True)
            ]
    return answers


def timed(fn: Callable[[], list[str]]) -> tuple[float, float, list[str]]:
    cpu, wall = time.process_time(), time.perf_counter()
    answers = fn()
    return time.process_time() - cpu, time.perf_counter() - wall, answers


def vision_tower_seconds(strategy: Template, tasks: list[Task]) -> float:
    """Wall time of the vision tower (and projector) on every test image, in evaluation batches."""
    model, encoder, size = strategy.model, strategy.encoder, strategy.config.eval_batch_size
    started = time.perf_counter()
    with torch.no_grad():
        for task in tasks:
            features = [encoder.encode(task.test, i, task.name, train=False) for i in range(len(task.test))]
            for start in range(0, len(features), size):
                pixels = collate(features[start : start + size], encoder.pad_id, left=True)["pixel_values"]
                model.get_image_features(pixel_values=pixels)
    return time.perf_counter() - started


def run(args: argparse.Namespace) -> tuple[dict, dict]:
    torch.set_num_threads(args.threads)
    stream, model, encoder = pretrained_tiny()
    if args.model != "tiny":
        from cltune.data.encode import Encoder
        from cltune.models.loading import load_model

        model, processor = load_model(args.model)
        encoder = Encoder(processor, args.model)
    tasks = [
        Task(t.name, t.train, t.test.select(range(min(args.rows, len(t.test)))), t.metric)
        for t in (*stream.tasks, *stream.general)
    ]
    config = TrainConfig(eval_batch_size=args.batch_size, device="cpu", feature_memo=False)
    strategy = Template(model, encoder, config, progress=False)
    loops: dict[str, Callable[[Task], list[str]]] = {
        "cltune": lambda task: generate_answers(strategy, task, progress=False),
        "raw-batched": lambda task: raw_answers(strategy, task, args.batch_size),
        "batch-1": lambda task: raw_answers(strategy, task, 1),
    }
    for task in tasks:  # encode every row once and warm up: no loop pays the encoder's memo
        loops["cltune"](task)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in loops}
    answers: dict[str, list[str]] = {}
    for rep in range(args.reps):
        for name in rotated(list(loops), rep):
            runs = [timed(partial(loops[name], task)) for task in tasks]
            times[name].append((sum(r[0] for r in runs), sum(r[1] for r in runs)))
            answers[name] = [a for r in runs for a in r[2]]
            print(f"rep {rep + 1}/{args.reps} {name:<12} {times[name][-1][1]:.2f} s", flush=True)
    extras = {
        "rows": sum(len(t.test) for t in tasks),
        "tasks": len(tasks),
        "tower_s": vision_tower_seconds(strategy, tasks),
    }
    alone = []
    for task in tasks:
        started = time.perf_counter()
        answer_fingerprint(strategy, task)
        alone.append(time.perf_counter() - started)
    tensors, started = TensorDigests(), time.perf_counter()
    for task in tasks:  # one evaluation pass: each tensor hashed once
        answer_fingerprint(strategy, task, tensors)
    extras["fingerprint_s"] = statistics.mean(alone)
    extras["fingerprint_pass_s"] = (time.perf_counter() - started) / len(tasks)
    return {"times": times, "answers": answers, **extras}, {"machine": machine(), "load": load_average()}


def report(results: dict) -> str:
    times, answers = results["times"], results["answers"]
    reference = answers["cltune"]
    lines = [
        "| loop | wall time per evaluation (s, median) | CPU time (s) | rows / s | cltune's speed "
        "(its throughput / this loop's, median [min–max]) | answers identical to cltune's |",
        "|---|---|---|---|---|---|",
    ]
    for name, reps in times.items():
        speed = [other[1] / own[1] for own, other in zip(times["cltune"], reps, strict=True)]
        wall = statistics.median(r[1] for r in reps)
        same = sum(a == b for a, b in zip(answers[name], reference, strict=True))
        lines.append(
            f"| {name} | {wall:.2f} | {statistics.median(r[0] for r in reps):.2f} | "
            f"{results['rows'] / wall:.0f} | {statistics.median(speed):.2f}× "
            f"[{min(speed):.2f}–{max(speed):.2f}] | {same} / {len(reference)} |"
        )
    cltune_wall = statistics.median(r[1] for r in times["cltune"])
    notes = [
        f"Vision tower and projector on every test image: {results['tower_s']:.2f} s, "
        f"{100 * results['tower_s'] / cltune_wall:.0f} % of cltune's evaluation (the most a cache of "
        "image features could save here; `feature_cache.py` measures it).",
        f"Reuse fingerprint: {results['fingerprint_s'] * 1e3:.1f} ms for a task alone, "
        f"{results['fingerprint_pass_s'] * 1e3:.1f} ms per task in a pass over the {results['tasks']} "
        f"tasks (each tensor hashed once), against {cltune_wall / results['tasks'] * 1e3:.0f} ms to "
        "generate an average task here.",
    ]
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="tiny (default) or smol (its parts installed)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--rows", type=int, default=150, help="test rows per task (at most its split)")
    parser.add_argument("--batch-size", type=int, default=TrainConfig().eval_batch_size)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: steadiest)")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown section here")
    args = parser.parse_args()
    results, info = run(args)
    command = (
        f"python benchmarks/eval_throughput.py --model {args.model} --reps {args.reps} --rows {args.rows} "
        f"--batch-size {args.batch_size} --threads {args.threads}"
    )
    emit(
        [
            "## Evaluation throughput",
            f"`{command}` on {info['machine']}; load average {info['load']} (1/5/15 min) at the end; "
            f"{args.model} model, {results['rows']} test rows over the default stream's {results['tasks']} "
            "tasks per "
            f"evaluation, {args.reps} interleaved repetitions.",
            report(results),
        ],
        args.out,
    )


if __name__ == "__main__":
    main()
