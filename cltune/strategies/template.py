"""The Avalanche-style training template: one loop, plugins on named hooks.

The template owns ``model``, ``optimizer``, the current ``experience``, the minibatch
(``mb_examples`` as rows, ``mbatch`` as a dict of tensors), ``mb_output`` and ``loss``.
Every mechanism of a strategy (replay, regularizers, masks, adapters, merging) is a plugin.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from cltune import distributed
from cltune.data.encode import Encoder, collate
from cltune.data.task import Task
from cltune.strategies.config import TrainConfig
from cltune.strategies.experience import Experience
from cltune.strategies.plugin import Plugin
from cltune.utils import derive_seed, fault_point, seed_everything


class NonFiniteLoss(FloatingPointError):
    """The loss became NaN or infinite during an experience."""


def make_adamw(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """A fresh AdamW (``lr``, ``weight_decay``) over the parameters of ``model`` that require grad."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"nothing to train: no parameter of scope {config.scope!r} requires grad")
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Hugging Face gradient checkpointing (non-reentrant, so frozen inputs need no gradient)."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(target, "supports_gradient_checkpointing", False):
        raise ValueError(
            f"{type(target).__name__} does not support gradient checkpointing; "
            "set gradient_checkpointing = false"
        )
    kwargs = {"use_reentrant": False}
    if hasattr(target, "activation_checkpointing_enable"):  # transformers >= 5 renamed it
        target.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        target.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


class Template:
    """Trains a model on one experience at a time, calling its plugins at each hook."""

    def __init__(
        self,
        model: nn.Module,
        encoder: Encoder,
        config: TrainConfig,
        plugins: Sequence[Plugin] = (),
        progress: bool = True,
    ):
        self.config = config
        self.device = distributed.device(config.resolved_device())
        config.check_precision(self.device.type)
        self.model = model.to(self.device)
        self.forward_model = self.model  # the training forward pass: the model or its wrapper
        if config.gradient_checkpointing:
            enable_gradient_checkpointing(self.model)
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.encoder = encoder
        self.plugins = list(plugins)
        self.progress = progress
        self.optimizer: torch.optim.Optimizer | None = None
        self.experience: Experience | None = None
        self.eval_task: Task | None = None
        self.mb_examples: list[tuple[Task, int]] = []
        self.mbatch: dict[str, torch.Tensor] = {}
        self.mb_output: Any = None
        self.mb_weight = 1.0  # this process's share of the minibatch loss (1 in one process)
        self.loss: torch.Tensor | None = None
        self.epoch = 0
        self.iteration = 0
        self.update_step = 0
        self.micro_step = 0
        self.touched: set[str] = set()  # every parameter that has been trainable in this run
        self.extra_results: dict[str, Any] = {}  # plugins' own results, saved in results.json "extra"
        self.run_dir: Path | None = None  # the run directory, where plugins may save artefacts

    def call(self, hook: str) -> None:
        fault_point(hook)
        for plugin in self.plugins:
            getattr(plugin, hook)(self)

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def touched_parameters(self) -> dict[str, nn.Parameter]:
        """Parameters that may differ from the loaded model: what a checkpoint must keep."""
        touched = {n: p for n, p in self.model.named_parameters() if n in self.touched}
        return distributed.full_parameters(touched)

    def make_optimizer(self) -> torch.optim.Optimizer:
        self.touched.update(self.trainable_parameters())
        return make_adamw(self.model, self.config)

    def autocast(self) -> torch.autocast:
        """The forward passes' autocast: bfloat16 with ``precision="bf16"``, else disabled."""
        bf16 = self.config.precision == "bf16"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16)

    def make_scheduler(self, updates: int) -> torch.optim.lr_scheduler.LRScheduler | None:
        """The learning-rate schedule of one experience of ``updates`` optimizer steps (None when the
        rate is constant without warm-up, so the plain AdamW runs)."""
        if self.config.lr_schedule == "constant" and not self.config.warmup_steps:
            return None
        from transformers import get_scheduler

        name = "constant_with_warmup" if self.config.lr_schedule == "constant" else self.config.lr_schedule
        return get_scheduler(name, self.optimizer, self.config.warmup_steps, max(updates, 1))

    def to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device) for k, v in batch.items()}

    def encode_rows(self, rows: Sequence[tuple[Task, int]], train: bool) -> list[dict]:
        return [
            self.encoder.encode(task.train if train else task.test, i, task.name, train) for task, i in rows
        ]

    def _epoch_batches(self, rows: list[tuple[Task, int]], generator: torch.Generator) -> Iterator[list]:
        order = torch.randperm(len(rows), generator=generator).tolist()
        size = self.config.batch_size
        for start in range(0, len(order), size):
            yield [rows[i] for i in order[start : start + size]]

    def train(self, experience: Experience) -> None:
        """Train on one experience; a fresh optimizer, seeded from (seed, experience index)."""
        self.experience = experience
        seed = derive_seed(self.config.seed, "experience", experience.index)
        seed_everything(seed)
        generator = torch.Generator().manual_seed(seed)
        self.call("adapt_model")
        self.optimizer = self.make_optimizer()
        self.forward_model, self.optimizer = distributed.prepare(self.model, self.optimizer, self.config)
        self.model.train()
        self.call("before_training_exp")
        rows = experience.rows
        epochs, updates = self.config.planned_updates(len(rows))
        self.scheduler = self.make_scheduler(updates)
        bar = tqdm(
            total=updates,
            desc=f"train {experience.name}",
            unit="step",
            disable=not self.progress,
            leave=False,
        )
        self.update_step = self.micro_step = 0
        for epoch in range(epochs):
            self.epoch = epoch
            self.call("before_training_epoch")
            for iteration, examples in enumerate(self._epoch_batches(rows, generator)):
                if self.update_step >= updates:
                    break
                self.iteration, self.mb_examples = iteration, examples
                self._training_iteration(bar)
            self.call("after_training_epoch")
            if self.update_step >= updates:
                break
        bar.close()
        self.optimizer.zero_grad(set_to_none=True)  # drop a partial accumulation
        self.forward_model = self.model
        distributed.release()
        self.call("after_training_exp")
        self.model.eval()

    def _training_iteration(self, bar: tqdm) -> None:
        self.call("before_training_iteration")
        self.mb_examples, self.mb_weight = distributed.minibatch_share(self.mb_examples)
        self.mbatch = self.to_device(collate(self.encode_rows(self.mb_examples, True), self.encoder.pad_id))
        self.call("before_forward")
        with self.autocast():
            self.mb_output = self.forward_model(**self.mbatch)
        self.call("after_forward")
        self.loss = self.mb_output.loss
        self.call("before_backward")
        if not distributed.all_finite(self.loss):
            raise NonFiniteLoss(
                f"loss is {self.loss.item()} at epoch {self.epoch}, iteration {self.iteration} of "
                f"experience {self.experience.name!r}; lower the learning rate ({self.config.lr}) or "
                "check the data. Finished experiences are kept in results.json"
            )
        loss = self.loss if self.mb_weight == 1.0 else self.loss * self.mb_weight
        distributed.backward(loss / self.config.grad_accum)
        self.call("after_backward")
        self.micro_step += 1  # counted across epochs, so accumulation never straddles a reset
        if self.micro_step % self.config.grad_accum == 0:
            if self.config.max_grad_norm:
                distributed.clip_grad_norm_(
                    list(self.trainable_parameters().values()), self.config.max_grad_norm
                )
            self.call("before_update")
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            self.call("after_update")
            self.optimizer.zero_grad(set_to_none=True)
            self.update_step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{self.loss.item():.3f}", refresh=False)
        self.call("after_training_iteration")
