"""Cost of the selective strategies against ``naive``, measured in one process, interleaved.

For each repetition every strategy trains one experience (the first default-stream task, ``--rows``
rows, ``--steps`` AdamW updates of ``--batch-size``) on a fresh copy of the pre-trained tiny model;
the strategies' order rotates between repetitions. Per strategy it reports

- step time: the median CPU time of the process per training iteration (forward, backward, the
  plugins' hooks, optimizer step; ``--threads`` torch threads), after ``--warmup`` iterations, as
  a ratio to ``naive`` of the same repetition (the wall-clock ratio beside it), and the CPU time
  spent in the strategy's own per-iteration hooks;
- setup: the experience's CPU time outside the iterations (importance pre-pass, LT-SFT's first
  fine-tune, Model Tailor's patch), in units of naive's step time;
- peak memory: the peak resident memory while training the experience, above the resident
  memory before it (the loaded model), as a ratio to ``naive``'s. Linux only: the peak is reset
  through ``/proc/self/clear_refs`` and read from ``VmHWM``; glibc is told to serve every block
  over 64 KiB by mmap, so freed tensors leave the resident set at once;
- extra state: bytes of tensors the strategy's plugins hold in the middle of the experience, per
  trainable parameter (the model's own parameters and the optimizer's state are not counted;
  the optimizer's state is reported beside it, since HFT shrinks it).

Run by hand (not by CI): ``python benchmarks/selective_overhead.py --out reports/SELECTIVE_BENCHMARK.md``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from _common import machine, pretrained_tiny, reset_peak, rotated, rss_bytes, serve_large_blocks_by_mmap
from torch import nn

from cltune.data.encode import Encoder
from cltune.data.task import Task
from cltune.strategies.config import TrainConfig
from cltune.strategies.experience import Experience
from cltune.strategies.plugin import TRAINING_HOOKS, Plugin
from cltune.strategies.registry import build_preset
from cltune.strategies.template import Template

STRATEGIES = ("naive", "gmt", "importance-mask", "magnitude-mask", "hft", "spider", "lt-sft", "model-tailor")
ITERATION_HOOKS = TRAINING_HOOKS[TRAINING_HOOKS.index("before_training_iteration") : -2]
GRADIENT_MASK = ("gmt", "importance-mask", "magnitude-mask", "lt-sft")
KEEP_FROM = "<!-- default-stream results -->"  # a hand-written section after the table survives a rerun
NOTES = """\
Reading the table:

- *step time* is one training iteration (forward, backward, the plugins' hooks, AdamW step),
  measured as the process's CPU time, steadier than wall-clock time on a shared machine (the
  wall-clock ratio is shown beside it). The mask strategies add one masked fill of the gradients
  per iteration; HFT's frozen matrices get no gradient and no AdamW state; SPIDER recomputes its
  update shares for every tensor after each step.
- *plugin hooks* is the time spent inside the strategy's own per-iteration hooks, per step, in
  units of naive's step time: the part of the overhead that does not depend on the noise of a
  shared machine (it leaves out what a strategy changes inside backward, e.g. HFT's fewer gradients).
- *setup* is the experience's work outside the iterations: gmt and importance-mask score the
  entries with one forward and backward pass over the experience's batches (about one epoch of
  extra work, once per experience); lt-sft runs a whole first fine-tune; model-tailor collects the
  layer-input Hessians on calibration batches and solves the OBS compensation at the end.
- *extra state* counts the tensors the strategy's plugins hold during training, per trainable
  parameter: the mask strategies keep one bool per entry (1 B) plus the previous experience's mask
  packed to 1 bit (0.125 B), for the overlap statistics; the importance scores (bf16) exist only
  while the mask is chosen. SPIDER keeps θ_pre and the running gradient sum (4 + 4 B for fp32
  weights, against 12 B for three fp32 copies); model-tailor keeps θ_pre (4 B).
- *peak memory* is the process's peak resident memory while the experience trains, above the
  resident memory before it. On the tiny model activations dominate it.
"""


def held_bytes(obj: Any, skip: set[int], seen: set[int] | None = None) -> int:
    """Bytes of the tensors reachable from ``obj`` (dicts, sequences, plain objects), each storage
    once; parameters, modules, optimizers and storages in ``skip`` are not counted."""
    seen = set() if seen is None else seen
    if isinstance(obj, nn.Parameter | nn.Module | torch.optim.Optimizer | Template):
        return 0
    if isinstance(obj, torch.Tensor):
        storage = obj.untyped_storage()
        key = storage.data_ptr()
        if key in skip or key in seen or storage.nbytes() == 0:
            return 0
        seen.add(key)
        return storage.nbytes()
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, dict):
        return sum(held_bytes(v, skip, seen) for v in obj.values())
    if isinstance(obj, list | tuple | set):
        return sum(held_bytes(v, skip, seen) for v in obj)
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        return sum(held_bytes(v, skip, seen) for v in vars(obj).values())
    return 0


class Probe(Plugin):
    """Times every training iteration; in the middle of the experience, counts the plugins' state."""

    def __init__(self, plugins: list[Plugin], middle: int) -> None:
        self.plugins = plugins
        self.middle = middle
        self.steps: list[float] = []  # CPU time of the process per iteration
        self.wall_steps: list[float] = []
        self.plugin_bytes = 0
        self.optimizer_bytes = 0
        self.hook_s = 0.0

    def time_hooks(self, plugin: Plugin) -> None:
        """Wrap ``plugin``'s per-iteration hooks so that their time adds up in ``hook_s``."""
        for hook in ITERATION_HOOKS:
            method = getattr(plugin, hook)

            def timed(strategy, method=method) -> None:
                started = time.process_time()
                method(strategy)
                self.hook_s += time.process_time() - started

            setattr(plugin, hook, timed)

    def before_training_iteration(self, strategy) -> None:
        self._start, self._wall = time.process_time(), time.perf_counter()

    def after_training_iteration(self, strategy) -> None:
        self.steps.append(time.process_time() - self._start)
        self.wall_steps.append(time.perf_counter() - self._wall)
        if len(self.steps) == self.middle:
            params = {p.untyped_storage().data_ptr() for p in strategy.model.parameters()}
            self.plugin_bytes = held_bytes(self.plugins, params)
            self.optimizer_bytes = held_bytes(dict(strategy.optimizer.state), params)


def measure(name: str, base: nn.Module, encoder: Encoder, experience: Experience, args) -> dict[str, float]:
    gc.collect()
    model = copy.deepcopy(base)
    preset = build_preset(name)
    model = preset.prepare(model, "language_model")
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    probe = Probe(preset.plugins, middle=args.steps // 2)
    for plugin in preset.plugins:
        probe.time_hooks(plugin)
    config = TrainConfig(batch_size=args.batch_size, max_steps=args.steps, lr=1e-3, weight_decay=0.0)
    template = Template(model, encoder, config, [*preset.plugins, probe], progress=False)
    gc.collect()
    before = rss_bytes()
    reset_peak()
    started = time.process_time()
    template.train(experience)
    total = time.process_time() - started
    peak = rss_bytes("VmHWM") - before
    step = statistics.median(probe.steps[args.warmup :])
    del template, model, preset
    return {
        "step_s": step,
        "wall_step_s": statistics.median(probe.wall_steps[args.warmup :]),
        "setup_s": total - sum(probe.steps),
        "hook_s": probe.hook_s / len(probe.steps),
        "peak_bytes": peak,
        "plugin_bytes_per_param": probe.plugin_bytes / n_trainable,
        "optimizer_bytes_per_param": probe.optimizer_bytes / n_trainable,
    }


def run(args) -> tuple[dict[str, list[dict[str, float]]], dict[str, Any]]:
    serve_large_blocks_by_mmap()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    stream, base, encoder = pretrained_tiny()
    source = stream.tasks[0]
    task = Task(source.name, source.train.select(range(args.rows)), source.test, source.metric)
    experience = Experience(1, [task])
    for i in range(args.rows):  # encode once, so that no strategy pays the encoder's memo
        encoder.encode(task.train, i, task.name, True)
    measure("naive", base, encoder, experience, args)  # a throwaway run: thread pools, first-use costs
    names = list(args.strategies)
    results: dict[str, list[dict[str, float]]] = defaultdict(list)
    for rep in range(args.reps):
        for name in rotated(names, rep):
            results[name].append(measure(name, base, encoder, experience, args))
            print(f"rep {rep + 1}/{args.reps} {name:<16} {results[name][-1]}", flush=True)
    return results, {"machine": machine()}


def ratios(results: dict[str, list[dict[str, float]]], key: str) -> dict[str, list[float]]:
    """Per repetition, the strategy's value over naive's value of the same repetition."""
    return {
        name: [r[key] / n[key] for r, n in zip(reps, results["naive"], strict=True)]
        for name, reps in results.items()
    }


def target(name: str, step_ratios: list[float], reps: list[dict[str, float]]) -> str:
    """For the gradient-mask methods: step time ≤ 1.10× naive and extra state ≤ ~2 bytes/param."""
    if name not in GRADIENT_MASK:
        return "—"
    fast = statistics.median(step_ratios) <= 1.10
    small = statistics.median(r["plugin_bytes_per_param"] for r in reps) <= 2.0
    return (
        "met" if fast and small else "missed"
    ) + f" (step {'≤' if fast else '>'} 1.10×, state {'≤' if small else '>'} 2 B)"


def table(results: dict[str, list[dict[str, float]]], args) -> str:
    step, peak, wall = (
        ratios(results, "step_s"),
        ratios(results, "peak_bytes"),
        ratios(results, "wall_step_s"),
    )
    naive_step = statistics.median(r["step_s"] for r in results["naive"])
    lines = [
        "| strategy | step CPU time / naive (median [min–max]) | step wall time / naive | "
        "plugin hooks, in naive steps | "
        "setup, in naive steps | "
        "peak memory / naive | peak above model (MiB) | extra state (bytes / trainable param) | "
        "optimizer state (bytes / trainable param) | targets (gradient-mask methods) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, reps in results.items():
        s, p = step[name], peak[name]
        setup = statistics.median(r["setup_s"] for r in reps) / naive_step
        hooks = statistics.median(r["hook_s"] for r in reps) / naive_step
        lines.append(
            f"| {name} | {statistics.median(s):.2f}× [{min(s):.2f}–{max(s):.2f}] | "
            f"{statistics.median(wall[name]):.2f}× | {hooks:.3f} | "
            f"{setup:.1f} | "
            f"{statistics.median(p):.2f}× | {statistics.median(r['peak_bytes'] for r in reps) / 2**20:.0f} | "
            f"{statistics.median(r['plugin_bytes_per_param'] for r in reps):.2f} | "
            f"{statistics.median(r['optimizer_bytes_per_param'] for r in reps):.2f} | "
            f"{target(name, s, reps)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", type=lambda s: s.split(","), default=list(STRATEGIES))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: steadiest)")
    parser.add_argument("--rows", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown table here")
    args = parser.parse_args()
    if "naive" not in args.strategies:
        args.strategies.insert(0, "naive")
    results, info = run(args)
    text = table(results, args)
    print(text)
    if args.out:
        command = (
            f"python benchmarks/selective_overhead.py --reps {args.reps} --steps {args.steps} "
            f"--rows {args.rows} --batch-size {args.batch_size} --threads {args.threads}"
        )
        kept = args.out.read_text() if args.out.is_file() else ""
        kept = kept[kept.index(KEEP_FROM) :] if KEEP_FROM in kept else ""
        args.out.write_text(
            "# Selective strategies: cost against naive\n\n"
            f"Measured with `{command}` on {info['machine']}; tiny LLaVA, language-model scope, "
            f"{args.reps} interleaved repetitions of {args.steps} steps.\n\n{text}\n\n{NOTES}"
            + (f"\n{kept}" if kept else "")
        )


if __name__ == "__main__":
    main()
