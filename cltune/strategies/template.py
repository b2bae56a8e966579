"""The Avalanche-style training template: one loop, plugins on named hooks.

The template owns ``model``, ``optimizer``, the current ``experience``, the minibatch
(``mb_examples`` as rows, ``mbatch`` as a dict of tensors), ``mb_output`` and ``loss``.
Every mechanism of a strategy (replay, regularizers, masks, adapters, merging) is a plugin.

With ``grad_accum`` > 1 an optimizer update follows every ``grad_accum``-th micro-batch; its
``.grad`` is complete only after that micro-batch's backward. ``after_accumulation`` marks that
boundary: it runs once per update, when ``.grad`` holds the update's gradient summed over its
micro-batches, unscaled and not yet clipped, and only for an update that will step.
``before_update`` follows it after clipping, with the gradient the optimizer steps (SPIDER's ΣG,
as its authors read it). Neither needs a plugin to count micro-batches.

Under ``precision="fp16"`` the loss is scaled before backward (``scaler``), so at
``after_backward`` ``.grad`` holds the gradients times ``scaler.get_scale()``; they are unscaled
before ``after_accumulation`` and clipping, so ``before_update`` and ``after_update`` see the true
gradients. An update whose gradients overflowed is skipped (``skipped_updates`` counts them): no
``after_accumulation``, ``before_update``, optimizer step, scheduler step or ``after_update`` (it
still counts as one of the experience's updates, so the batches drawn are those of fp32).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from tqdm.auto import tqdm

from cltune import distributed
from cltune.data.encode import Encoder, collate
from cltune.data.task import Task
from cltune.models.feature_cache import use_feature_memo
from cltune.strategies.config import TrainConfig
from cltune.strategies.experience import Experience
from cltune.strategies.plugin import Plugin
from cltune.utils import derive_seed, fault_point, seed_everything

if TYPE_CHECKING:
    from cltune.rundir import RunDirectory


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
        use_feature_memo(self.model, config.feature_memo)
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
        self.encoder = encoder
        self.plugins = list(plugins)
        self.progress = progress
        self.optimizer: torch.optim.Optimizer | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self.skipped_updates = 0  # fp16 updates skipped for overflowed gradients, this experience
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
        self.extra_results: dict[str, Any] = {}  # plugins' own results, saved in results.json "extra"
        self.run_dir: RunDirectory | None = None  # where plugins save artefacts (its save_* methods)

    def call(self, hook: str) -> None:
        fault_point(hook)
        for plugin in self.plugins:
            getattr(plugin, hook)(self)

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def make_optimizer(self) -> torch.optim.Optimizer:
        return make_adamw(self.model, self.config)

    def autocast(self) -> torch.autocast:
        """The forward passes' autocast: bfloat16 with ``precision="bf16"``, float16 with ``"fp16"``,
        else disabled."""
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.config.precision)
        return torch.autocast(self.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)

    def make_scaler(self) -> torch.amp.GradScaler | None:
        """The loss scaler of one experience under ``precision="fp16"`` (None otherwise).

        One per experience, like the optimizer: every experience starts from the same scale (2^16),
        so its updates do not depend on how an earlier experience's gradients overflowed, and a run
        resumed from a checkpoint (which keeps no optimizer or scaler state) trains each remaining
        experience as an uninterrupted run does. The cost: the first updates of an experience whose
        gradients overflow at 2^16 are skipped while the scale halves.
        """
        return torch.amp.GradScaler(self.device.type) if self.config.precision == "fp16" else None

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

    def calibration_batches(
        self, max_batches: int | None = None, purpose: str = "calibration", shard: bool = False
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Up to ``max_batches`` training batches of the current experience (all of one epoch if None).

        Batches have the template's ``batch_size`` and are drawn in an order seeded from
        (seed, ``purpose``, experience index), so a run is reproducible and the order differs from
        the training order. Each batch is a ``model(**batch)`` dict on the template's device. With
        ``shard`` each of several processes gets every n-th of these batches.
        """
        if max_batches is not None and max_batches < 1:
            raise ValueError(f"max_batches must be a positive integer or None, got {max_batches!r}")
        seed = derive_seed(self.config.seed, purpose, self.experience.index)
        generator = torch.Generator().manual_seed(seed)
        rank, processes = (distributed.process_index(), distributed.num_processes()) if shard else (0, 1)
        for i, rows in enumerate(self._epoch_batches(self.experience.rows, generator)):
            if max_batches is not None and i >= max_batches:
                return
            if i % processes == rank:
                yield self.to_device(collate(self.encode_rows(rows, True), self.encoder.pad_id))

    def plain_fine_tune(self, experience: Experience) -> None:
        """Fine-tune ``model`` on ``experience`` as :meth:`train` does, without this template's plugins.

        For a plugin whose mechanism needs a preliminary fine-tune inside a hook (LT-SFT's first
        phase): the same loop, configuration and seed, with its own AdamW (and scaler and schedule);
        this template's optimizer, counters and minibatch are left as they are. The model is left in
        training mode, as a hook of :meth:`train` expects it.
        """
        Template(self.model, self.encoder, self.config, progress=self.progress).train(experience)
        self.model.train()

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
        self.scaler, self.skipped_updates = self.make_scaler(), 0
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
        loss = loss / self.config.grad_accum
        distributed.backward(loss if self.scaler is None else self.scaler.scale(loss))
        self.call("after_backward")
        self.micro_step += 1  # counted across epochs, so accumulation never straddles a reset
        if self.micro_step % self.config.grad_accum == 0:
            self._update()
            bar.update(1)
            postfix = {"loss": f"{self.loss.item():.3f}"}
            if self.skipped_updates:
                postfix["skipped"] = self.skipped_updates
            bar.set_postfix(postfix, refresh=False)
        self.call("after_training_iteration")

    def _update(self) -> None:
        """One optimizer update from the accumulated gradients (see the module docstring for fp16)."""
        params = list(self.trainable_parameters().values())
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        # Clipping keeps finite gradients finite and non-finite ones non-finite, so skipping is
        # decided before it, and after_accumulation sees the unclipped gradients.
        skipped = self.scaler is not None and not finite_gradients(p.grad for p in params)
        if not skipped:
            self.call("after_accumulation")
        if self.config.max_grad_norm:
            distributed.clip_grad_norm_(params, self.config.max_grad_norm)
        if not skipped:
            self.call("before_update")
        if self.scaler is None:
            self.optimizer.step()
        else:  # steps only if unscale_ found every gradient finite, then adapts the scale
            self.scaler.step(self.optimizer)
            self.scaler.update()
        if skipped:
            self.skipped_updates += 1
        else:
            if self.scheduler is not None:
                self.scheduler.step()
            self.call("after_update")
        self.optimizer.zero_grad(set_to_none=True)
        self.update_step += 1


def finite_gradients(grads: Iterable[torch.Tensor | None]) -> bool:
    """Whether every gradient in ``grads`` (None: no gradient) is finite (what the GradScaler's step
    checks)."""
    present = [g for g in grads if g is not None]
    return not present or bool(torch.stack([g.isfinite().all() for g in present]).all())
