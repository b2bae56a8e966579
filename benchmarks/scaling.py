"""How a run's cost grows with the number of tasks T (2, 4, 8) for ``naive`` and ``lora-isolation``.

The T-task streams ask the digits questions of the default stream (parity, plus one, greater
than 4) about subsets of the digits, ``--train-size``/``--test-size`` rows per task, plus the
default stream's general task (so the cached tiny model is reused). For each T the strategies run
one after another in one process through :func:`cltune.experiment.run_experiment`; ``lora-isolation``
runs twice, with and without evaluation reuse. Reported per run: wall time, its training and
evaluation parts (results.json ``timings``, wall clock), the process's CPU time (steadier on a
shared machine: the growth exponents use it), the peak resident memory above the one before the run
(Linux ``VmHWM``), and the task evaluations computed against the ``T · (T + G)`` a run without
reuse computes after its T experiences (G general tasks; row 0 is computed once and not counted).

Run by hand (not by CI): ``python benchmarks/scaling.py --out reports/PERFORMANCE-scaling.md``.
"""

from __future__ import annotations

import argparse
import gc
import math
import tempfile
import time
from pathlib import Path

import torch
from _common import emit, load_average, machine, reset_peak, rss_bytes, serve_large_blocks_by_mmap

from cltune.experiment import InvocationCache, RunSpec, run_experiment

# (name, question type, digit classes): the first T make the T-task stream.
TASKS = [
    ("parity_low", "parity", [0, 1, 2, 3, 4]),
    ("plus_one_high", "plus_one", [5, 6, 7, 8, 9]),
    ("greater_low", "greater_than_4", [0, 1, 2, 3, 6]),
    ("parity_high", "parity", [5, 6, 7, 8, 9]),
    ("plus_one_low", "plus_one", [0, 1, 2, 3, 4]),
    ("greater_high", "greater_than_4", [4, 5, 7, 8, 9]),
    ("parity_mixed", "parity", [0, 2, 5, 7, 9]),
    ("plus_one_mixed", "plus_one", [1, 3, 4, 6, 8]),
]
GENERAL = """
[[general]]
name = "digit"
source = "digits"
question_type = "label"
train_size = 1300
test_size = {test_size}
"""
RUNS = (("naive", True), ("lora-isolation", True), ("lora-isolation", False))


def recipe(count: int, train_size: int, test_size: int) -> str:
    """A TOML stream recipe of the first ``count`` tasks of :data:`TASKS` and the general task."""
    tasks = "".join(
        f'\n[[tasks]]\nname = "{name}"\nsource = "digits"\nquestion_type = "{question}"\n'
        f"classes = {classes}\n"
        for name, question, classes in TASKS[:count]
    )
    return (
        f'name = "digits-{count}"\nseed = 0\n\n[defaults]\n'
        f"train_size = {train_size}\ntest_size = {test_size}\n"
        f"{tasks}{GENERAL.format(test_size=test_size)}\n[train]\nlr = 1e-3\nepochs = 1\nbatch_size = 16\n"
    )


def measure(path: Path, strategy: str, reuse: bool, out: Path) -> dict[str, float]:
    gc.collect()
    before = rss_bytes()
    reset_peak()
    started, cpu = time.perf_counter(), time.process_time()
    result = run_experiment(
        RunSpec.from_recipe(path, strategy),
        out,
        shared=InvocationCache(),
        progress=False,
        reuse_evaluations=reuse,
    )
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    stages = result.results["timings"]["stages"][1:]
    matrix = result.matrix
    evaluations = result.results["extra"].get("evaluations", {})
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "train_s": sum(s["train_s"] for s in stages),
        "eval_s": sum(s["eval_s"] for s in stages),
        "peak_mib": (rss_bytes("VmHWM") - before) / 2**20,
        "computed": evaluations.get("computed", len(stages) * len(matrix.columns)),
        "full": len(stages) * len(matrix.columns),
    }


def run(args: argparse.Namespace) -> dict[tuple[int, str], dict[str, float]]:
    serve_large_blocks_by_mmap()
    torch.set_num_threads(args.threads)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for count in args.tasks:
            path = Path(folder) / f"digits-{count}.toml"
            path.write_text(recipe(count, args.train_size, args.test_size))
            for strategy, reuse in RUNS:
                label = strategy if reuse else f"{strategy} (no reuse)"
                results[(count, label)] = measure(path, strategy, reuse, Path(folder) / label)
                print(f"T={count} {label}: {results[(count, label)]}", flush=True)
    return results


def growth(results: dict, label: str, key: str, tasks: list[int]) -> str:
    """The exponent k of ``cost ∝ T^k`` between the smallest and the largest T."""
    low, high = results[(tasks[0], label)][key], results[(tasks[-1], label)][key]
    return f"{math.log(high / low) / math.log(tasks[-1] / tasks[0]):.2f}"


def table(results: dict, tasks: list[int]) -> str:
    lines = [
        "| T | strategy | CPU time (s) | wall (s) | training (wall s) | evaluation (wall s) | "
        "evaluations computed / without reuse | peak memory above start (MiB) |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for (count, label), r in results.items():
        lines.append(
            f"| {count} | {label} | {r['cpu_s']:.1f} | {r['wall_s']:.1f} | {r['train_s']:.1f} | "
            f"{r['eval_s']:.1f} | "
            f"{r['computed']} / {r['full']} | {r['peak_mib']:.0f} |"
        )
    labels = dict.fromkeys(label for _, label in results)
    lines += ["", f"Growth exponents k (cost ∝ T^k between T = {tasks[0]} and T = {tasks[-1]}):", ""]
    lines += [
        f"- {label}: training {growth(results, label, 'train_s', tasks)}, evaluation "
        f"{growth(results, label, 'eval_s', tasks)}, evaluations computed "
        f"{growth(results, label, 'computed', tasks)}, CPU time {growth(results, label, 'cpu_s', tasks)}"
        for label in labels
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="2,4,8", help="comma-separated T values (at most 8)")
    parser.add_argument("--train-size", type=int, default=64)
    parser.add_argument("--test-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown section here")
    args = parser.parse_args()
    args.tasks = [int(t) for t in args.tasks.split(",")]
    if max(args.tasks) > len(TASKS) or min(args.tasks) < 1:
        parser.error(f"--tasks: each T must lie in 1..{len(TASKS)}")
    results = run(args)
    command = (
        f"python benchmarks/scaling.py --tasks {','.join(map(str, args.tasks))} --train-size "
        f"{args.train_size} --test-size {args.test_size} --threads {args.threads}"
    )
    emit(
        [
            "## How cost grows with the number of tasks",
            f"`{command}` on {machine()}; load average {load_average()} (1/5/15 min) at the end; tiny "
            "model, one general task, one epoch per task.",
            table(results, args.tasks),
        ],
        args.out,
    )


if __name__ == "__main__":
    main()
