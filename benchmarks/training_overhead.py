"""Training-loop overhead: cltune's ``naive`` against the loops people would write or use instead.

Every repetition trains, interleaved and in a rotating order, a fresh copy of the same pre-trained
model (language-model scope, AdamW at ``--lr``, gradients clipped to 1.0) for ``--steps`` updates on
the same batches of the first default-stream task (rows pre-encoded once, shared by all):

- ``bare``: a plain PyTorch loop over the collated batches: forward, backward, clip, AdamW step;
- ``cltune``: the template with the ``naive`` preset (it collates its own batches, calls its hooks);
- ``avalanche``: Avalanche's ``Naive`` through cltune's ``HuggingFaceNaive`` (its DataLoader);
- ``hf-trainer``: the Hugging Face ``Trainer`` on the same batches in the same order (a dataset of
  batches, constant learning rate, no logging, saving or evaluation).

A step is the time from one iteration's start to the next one's (everything the loop does), as
CPU time of the process (steadier on a shared machine) and wall time, after ``--warmup`` steps;
each is reported as a ratio to ``bare`` in the same repetition. The whole experience's CPU time
(set-up included) and whether the trained weights equal the bare loop's are shown beside.

Run by hand (not by CI): ``python benchmarks/training_overhead.py --out reports/PERFORMANCE-training.md``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from _common import StepClock, emit, load_average, machine, pretrained_tiny, rotated
from torch import nn

from cltune.data.encode import Encoder, collate
from cltune.data.task import Stream, Task
from cltune.models.scopes import set_trainable
from cltune.strategies.config import TrainConfig
from cltune.strategies.experience import Experience
from cltune.strategies.plugin import Plugin
from cltune.strategies.template import Template
from cltune.utils import derive_seed, seed_everything

COMPETITORS = ("bare", "cltune", "avalanche", "hf-trainer")
SCOPE = "language_model"


def template_batches(task: Task, encoder: Encoder, config: TrainConfig) -> list[dict[str, torch.Tensor]]:
    """The collated batches of experience 1 in the template's order (its seeded permutation)."""
    generator = torch.Generator().manual_seed(derive_seed(config.seed, "experience", 1))
    order = torch.randperm(len(task.train), generator=generator).tolist()
    size = config.batch_size
    return [
        collate([encoder.encode(task.train, i, task.name, True) for i in order[s : s + size]], encoder.pad_id)
        for s in range(0, config.max_steps * size, size)
    ]


def bare(model: nn.Module, batches: list[dict], config: TrainConfig, clock: StepClock, **_) -> None:
    seed_everything(derive_seed(config.seed, "experience", 1))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    model.train()
    for batch in batches:
        clock.tick()
        loss = model(**batch).loss
        loss.backward()
        nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    clock.tick()


class Tick(Plugin):
    def __init__(self, clock: StepClock) -> None:
        self.clock = clock

    def before_training_iteration(self, strategy) -> None:
        self.clock.tick()

    def after_training_exp(self, strategy) -> None:
        self.clock.tick()


def cltune(
    model: nn.Module, task: Task, encoder: Encoder, config: TrainConfig, clock: StepClock, **_
) -> None:
    Template(model, encoder, config, [Tick(clock)], progress=False).train(Experience(1, [task]))


def avalanche(model: nn.Module, task: Task, encoder: Encoder, config: TrainConfig, clock: StepClock, **_):
    from avalanche.training.plugins import SupervisedPlugin

    from cltune.integrations.avalanche import HuggingFaceNaive, to_avalanche

    class AvalancheTick(SupervisedPlugin):
        def before_training_iteration(self, strategy, **kwargs) -> None:
            clock.tick()

        def after_training_exp(self, strategy, **kwargs) -> None:
            clock.tick()

    experience = to_avalanche(Stream("bench", [task]), encoder).train_stream[0]
    HuggingFaceNaive(model=model, config=config, plugins=[AvalancheTick()]).train(experience, eval_streams=[])


def hf_trainer(model: nn.Module, batches: list[dict], config: TrainConfig, clock: StepClock, **_) -> None:
    from torch.utils.data import SequentialSampler
    from transformers import Trainer, TrainerCallback, TrainingArguments

    class HFTick(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs) -> None:
            clock.tick()

        def on_train_end(self, args, state, control, **kwargs) -> None:
            clock.tick()

    class InOrder(Trainer):  # the batches in the given order, as the other loops see them
        def _get_train_sampler(self, train_dataset=None) -> SequentialSampler:
            return SequentialSampler(self.train_dataset)

    with tempfile.TemporaryDirectory() as folder:
        arguments = TrainingArguments(
            output_dir=folder,
            per_device_train_batch_size=1,  # one item = one pre-collated batch
            max_steps=len(batches),
            learning_rate=config.lr,
            weight_decay=config.weight_decay,
            lr_scheduler_type="constant",
            max_grad_norm=config.max_grad_norm,
            optim="adamw_torch",
            logging_strategy="no",
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=True,
            dataloader_num_workers=0,
            dataloader_pin_memory=False,
            remove_unused_columns=False,
            seed=derive_seed(config.seed, "experience", 1),
        )
        trainer = InOrder(
            model=model,
            args=arguments,
            train_dataset=batches,
            data_collator=lambda items: items[0],
            callbacks=[HFTick()],
        )
        trainer.train()


LOOPS: dict[str, Callable[..., None]] = {
    "bare": bare,
    "cltune": cltune,
    "avalanche": avalanche,
    "hf-trainer": hf_trainer,
}


def measure(name: str, base: nn.Module, warmup: int, **inputs) -> dict[str, object]:
    gc.collect()
    model = copy.deepcopy(base)
    set_trainable(model, SCOPE)
    clock = StepClock()
    started = time.process_time()
    LOOPS[name](model, clock=clock, **inputs)
    total = time.process_time() - started
    cpu, wall = clock.steps(warmup)
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return {
        "step_s": statistics.median(cpu),
        "wall_s": statistics.median(wall),
        "total_s": total,
        "weights": trained,
    }


def run(args: argparse.Namespace) -> tuple[dict[str, list[dict]], dict[str, str]]:
    torch.set_num_threads(args.threads)
    stream, base, encoder = pretrained_tiny()
    source = stream.tasks[0]
    rows = args.steps * args.batch_size
    task = Task(source.name, source.train.select(range(rows)), source.test, source.metric)
    config = TrainConfig(batch_size=args.batch_size, max_steps=args.steps, lr=1e-3, scope=SCOPE, device="cpu")
    batches = template_batches(task, encoder, config)  # also fills the encoder's memo for every loop
    inputs = {"task": task, "encoder": encoder, "config": config, "batches": batches}
    for name in args.competitors:  # a throwaway round: thread pools, first-use costs
        measure(name, base, 0, **inputs)
    results: dict[str, list[dict]] = {name: [] for name in args.competitors}
    for rep in range(args.reps):
        for name in rotated(args.competitors, rep):
            results[name].append(measure(name, base, args.warmup, **inputs))
            print(
                f"rep {rep + 1}/{args.reps} {name:<10} step {results[name][-1]['step_s'] * 1e3:.1f} ms",
                flush=True,
            )
    return results, {"machine": machine(), "load": load_average()}


def weights_note(trained: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> str:
    diff = max((trained[n] - reference[n]).abs().max().item() for n in reference)
    return "identical" if diff == 0 else f"max |Δ| {diff:.1e}"


def table(results: dict[str, list[dict]]) -> str:
    lines = [
        "| loop | step CPU time / bare (median [min–max]) | step wall time / bare | step CPU time (ms) | "
        "experience CPU time / bare (set-up included) | trained weights vs bare |",
        "|---|---|---|---|---|---|",
    ]
    reference = results["bare"]
    for name, reps in results.items():
        ratio = {
            key: [r[key] / b[key] for r, b in zip(reps, reference, strict=True)]
            for key in ("step_s", "wall_s", "total_s")
        }
        step = ratio["step_s"]
        weights = weights_note(reps[-1]["weights"], reference[-1]["weights"])
        lines.append(
            f"| {name} | {statistics.median(step):.3f}× [{min(step):.3f}–{max(step):.3f}] | "
            f"{statistics.median(ratio['wall_s']):.3f}× | "
            f"{statistics.median(r['step_s'] for r in reps) * 1e3:.1f} | "
            f"{statistics.median(ratio['total_s']):.2f}× | {weights} |"
        )
    return "\n".join(lines)


def verdict(results: dict[str, list[dict]]) -> str:
    """The targets: cltune within 3 % of the bare loop, and no slower than Avalanche's loop."""

    def median_ratio(name: str, to: str) -> float:
        pairs = zip(results[name], results[to], strict=True)
        return statistics.median(r["step_s"] / b["step_s"] for r, b in pairs)

    parts = [f"cltune / bare = {median_ratio('cltune', 'bare'):.3f} (target ≤ 1.03)"]
    if "avalanche" in results:
        parts.append(f"cltune / avalanche = {median_ratio('cltune', 'avalanche'):.3f} (target ≤ 1.00)")
    return "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--competitors", type=lambda s: s.split(","), default=list(COMPETITORS))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: steadiest)")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown section here")
    args = parser.parse_args()
    args.competitors = list(dict.fromkeys(["bare", "cltune", *args.competitors]))
    results, info = run(args)
    command = (
        f"python benchmarks/training_overhead.py --competitors {','.join(args.competitors)} "
        f"--reps {args.reps} --steps {args.steps} --warmup {args.warmup} --batch-size {args.batch_size} "
        f"--threads {args.threads}"
    )
    emit(
        [
            "## Training-loop overhead",
            f"`{command}` on {info['machine']}; load average {info['load']} (1/5/15 min) at the end; "
            f"tiny LLaVA, {args.reps} interleaved repetitions of {args.steps} steps of "
            f"{args.batch_size} rows.",
            table(results),
            verdict(results),
        ],
        args.out,
    )


if __name__ == "__main__":
    main()
