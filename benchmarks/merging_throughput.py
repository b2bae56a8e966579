"""Merging throughput: each merge method on T task vectors of N parameters, against a memory copy.

The task vectors are state dicts of ``N / 2^18`` float32 matrices of 512 × 512 (a transformer
layer's shape). Each repetition times, interleaved and in a rotating order,

- ``copy``: cloning every task vector once (reads and writes the ``T · N · 4`` bytes the merge must
  at least read), the baseline;
- each method of :data:`cltune.merging.MERGE_METHODS` through :func:`cltune.merging.merge_state_dicts`
  with its defaults (density 0.2 where it has one).

It reports the median wall time per merge, the throughput in input GB/s, and the throughput as a
fraction of the copy's in the same repetition (1.0 = as fast as copying the inputs once).

Run by hand (not by CI): ``python benchmarks/merging_throughput.py --out reports/MERGING_BENCHMARK.md``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _common import machine, rotated

from cltune.merging import MERGE_METHODS, merge_state_dicts

SIDE = 512
OPTIONS: dict[str, dict] = {"dare_linear": {"rng": 0}, "dare_ties": {"rng": 0}}


def task_vectors(count: int, params: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """``count`` random task-vector state dicts of ``params`` float32 entries in 512 × 512 blocks."""
    generator = torch.Generator().manual_seed(seed)
    blocks = max(1, params // (SIDE * SIDE))
    return [
        {f"layer{k}.weight": torch.randn(SIDE, SIDE, generator=generator) * 1e-3 for k in range(blocks)}
        for _ in range(count)
    ]


def copy_all(deltas: list[dict[str, torch.Tensor]]) -> None:
    for delta in deltas:
        for tensor in delta.values():
            tensor.clone()


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(count: int, params: int, repeats: int, methods: list[str]) -> dict[str, list[float]]:
    """Per competitor (``copy`` first, then ``methods``), its wall time in each repetition."""
    deltas = task_vectors(count, params, seed=count)
    competitors: dict[str, Callable[[], object]] = {"copy": lambda: copy_all(deltas)}
    for name in methods:
        competitors[name] = lambda name=name: merge_state_dicts(deltas, name, **OPTIONS.get(name, {}))
    for fn in competitors.values():  # warm-up: allocator, SVD workspaces
        fn()
    names = list(competitors)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repeats):
        for name in rotated(names, rep):
            times[name].append(timed(competitors[name]))
    return times


def table(results: dict[tuple[int, int], dict[str, list[float]]]) -> str:
    lines = [
        "| T | N | method | median time (ms) | input GB/s | throughput / copy's |",
        "| ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for (count, params), times in results.items():
        nbytes = count * params * 4
        for name, values in times.items():
            ratio = statistics.median(c / v for c, v in zip(times["copy"], values, strict=True))
            median = statistics.median(values)
            lines.append(
                f"| {count} | {params / 1e6:.1f}M | {name} | {median * 1e3:.1f} | "
                f"{nbytes / median / 1e9:.2f} | {ratio:.3g} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="2,4,8", help="comma-separated T values")
    parser.add_argument("--params", type=float, default=4.0, help="N in millions (default 4)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--methods", default=",".join(MERGE_METHODS), help="comma-separated methods")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown report here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    params = int(args.params * 1e6) // (SIDE * SIDE) * SIDE * SIDE
    results = {
        (count, params): measure(count, params, args.repeats, args.methods.split(","))
        for count in map(int, args.tasks.split(","))
    }
    report = "\n\n".join(
        [
            "# Merging throughput",
            f"Machine: {machine()}. Command: `python benchmarks/merging_throughput.py "
            f"--tasks {args.tasks} --params {args.params} --repeats {args.repeats} "
            f"--methods {args.methods}`.",
            __doc__.split("\n\n", 1)[1].rsplit("\n\nRun by hand", 1)[0],
            table(results),
        ]
    )
    print(report)
    if args.out is not None:
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
