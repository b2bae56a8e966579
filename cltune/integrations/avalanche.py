"""Avalanche interop: a cltune stream as an Avalanche benchmark, and Avalanche's Naive for HF models.

- :func:`to_avalanche` builds the benchmark with Avalanche's own constructors
  (``benchmark_from_datasets`` + ``with_task_labels``): ``train_stream`` and ``test_stream`` hold one
  experience per stream task, ``general_stream`` one per general task (test split only). Every
  experience has its task label and carries its cltune :class:`~cltune.data.task.Task` as
  ``experience.task``. Items are rows encoded by cltune's :class:`~cltune.data.encode.Encoder`
  (the whole conversation, labels on the answer only); the datasets' ``collate_fn`` pads them with
  cltune's ``collate`` into ``[inputs, labels, task_labels]`` minibatches, Avalanche's
  ``(x, y, t)``, where ``inputs`` is the dict of tensors the model takes.
- :class:`HuggingFaceNaive` is Avalanche's ``Naive`` with the overrides a Hugging Face model needs,
  trained the way cltune's template trains, so both give the same model on the same data and seed.
- :class:`GenerationEvaluation` (an Avalanche plugin) scores every task with cltune's generate-based
  evaluator before training and after each experience: the accuracy matrix.
- :func:`avalanche_metrics` computes forgetting, BWT and FWT of a matrix with Avalanche's metrics.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.scenarios.generic_scenario import CLScenario
from avalanche.benchmarks.scenarios.task_aware import with_task_labels
from avalanche.benchmarks.utils import AvalancheDataset, ConstantSequence, TaskLabels
from avalanche.evaluation.functional import forgetting as functional_forgetting
from avalanche.evaluation.metrics.forgetting_bwt import BWT, Forgetting
from avalanche.evaluation.metrics.forward_transfer import ForwardTransfer
from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin
from avalanche.training.supervised import Naive
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from cltune.data.encode import Encoder, collate
from cltune.data.task import Stream, Task
from cltune.evaluation.evaluator import evaluate
from cltune.matrix import AccuracyMatrix
from cltune.models.scopes import set_trainable
from cltune.strategies.config import TrainConfig
from cltune.strategies.template import Template, make_adamw
from cltune.utils import derive_seed, seed_everything

TASK_LABELS = "targets_task_labels"  # the key AvalancheDataset adds to dict items
# Training options the bridge's loop does not reproduce: they must keep TrainConfig's defaults.
UNMIRRORED_OPTIONS = ("lr_schedule", "warmup_steps", "precision", "gradient_checkpointing")


class EncodedRows(Dataset):
    """One split of a task, each row encoded as a training conversation (labels on the answer).

    Train rows use the key cltune's template uses, so they share the encoder's memo with it.
    """

    def __init__(self, task: Task, split: str, encoder: Encoder):
        self.data = task.train if split == "train" else task.test
        self.key = task.name if split == "train" else f"{task.name}/{split}"
        self.encoder = encoder

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        # A copy: AvalancheDataset adds the task label to the item, and the memo must stay clean.
        return dict(self.encoder.encode(self.data, index, self.key, train=True))


@dataclass(frozen=True)
class Collator:
    """Pads encoded rows with cltune's ``collate`` into ``[inputs, labels, task_labels]``.

    A frozen dataclass compares by value, so Avalanche can concatenate datasets that use it.
    """

    pad_id: int

    def __call__(self, items: list[dict[str, Any]]) -> list[Any]:
        task_labels = torch.tensor([int(item[TASK_LABELS]) for item in items])
        inputs = collate([{k: v for k, v in item.items() if k != TASK_LABELS} for item in items], self.pad_id)
        return [inputs, inputs["labels"], task_labels]


class EpochPermutation(Sampler[int]):
    """One ``torch.randperm`` of the rows per epoch from ``generator``: the template's order.

    (``RandomSampler`` with a generator draws a second, unused permutation per epoch, so from the
    second epoch on its order would differ from cltune's.)
    """

    def __init__(self, n: int, generator: torch.Generator):
        self.n, self.generator = n, generator

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        yield from torch.randperm(self.n, generator=self.generator).tolist()


def _dataset(task: Task, split: str, encoder: Encoder, label: int) -> AvalancheDataset:
    rows = EncodedRows(task, split, encoder)
    return AvalancheDataset(
        [rows],
        data_attributes=[TaskLabels(ConstantSequence(label, len(rows)))],
        collate_fn=Collator(encoder.pad_id),
    )


def to_avalanche(stream: Stream, encoder: Encoder | Any) -> CLScenario:
    """An Avalanche benchmark of ``stream``: ``train_stream``, ``test_stream``, ``general_stream``.

    ``encoder`` is a cltune :class:`Encoder` or the model's processor. Task labels are the task's
    position in the stream (general tasks follow the stream tasks); each experience carries its
    :class:`Task` as ``experience.task``.
    """
    encoder = encoder if isinstance(encoder, Encoder) else Encoder(encoder)
    n = len(stream.tasks)
    splits = {
        "train": [(t, "train", i) for i, t in enumerate(stream.tasks)],
        "test": [(t, "test", i) for i, t in enumerate(stream.tasks)],
        "general": [(t, "test", n + g) for g, t in enumerate(stream.general)],
    }
    benchmark = with_task_labels(
        benchmark_from_datasets(
            **{
                name: [_dataset(t, split, encoder, label) for t, split, label in parts]
                for name, parts in splits.items()
            }
        )
    )
    for name, parts in splits.items():
        for experience, (task, _, _) in zip(benchmark.streams[name], parts, strict=True):
            experience.task = task
    return benchmark


class HuggingFaceNaive(Naive):
    """Avalanche's ``Naive`` for a Hugging Face model, trained as cltune's template trains.

    Overrides for HF models: minibatches are ``[inputs, labels, task_labels]`` moved to the device
    (``_unpack_minibatch``); ``forward`` returns ``model(**inputs)`` (the HF output, with ``loss``
    and ``logits``); ``criterion`` is the model's own loss (cross-entropy on the answer tokens);
    the train loader batches with the dataset's ``collate_fn``.

    cltune's semantics (``cltune.strategies.template.Template.train``): each experience is seeded
    from ``(config.seed, experience index)``; its rows are shuffled each epoch by a generator with
    that seed (the template's permutations); a fresh AdamW (``lr``, ``weight_decay``) trains the
    parameters that require grad; gradients are clipped to ``max_grad_norm``; ``max_steps``, when
    set, caps the updates. Gradient accumulation is not supported here.
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        config: TrainConfig,
        plugins: Sequence[SupervisedPlugin] = (),
        evaluator: EvaluationPlugin | None = None,
    ):
        if config.grad_accum != 1:
            raise ValueError(
                f"HuggingFaceNaive trains without gradient accumulation; got grad_accum={config.grad_accum}, "
                "set it to 1 (or raise batch_size)"
            )
        plain = {key: getattr(TrainConfig(), key) for key in UNMIRRORED_OPTIONS}
        changed = {key: getattr(config, key) for key, value in plain.items() if getattr(config, key) != value}
        if changed:
            raise ValueError(
                f"HuggingFaceNaive mirrors cltune's plain loop; got {changed}, leave them at {plain}"
            )
        self.config = config
        self.max_updates = 0
        super().__init__(
            model=model,
            optimizer=make_adamw(model, config),
            train_mb_size=config.batch_size,
            train_epochs=config.epochs,
            eval_mb_size=config.eval_batch_size,
            device=config.resolved_device(),
            plugins=list(plugins),
            evaluator=evaluator or EvaluationPlugin(loggers=[]),
        )

    def make_optimizer(self, **kwargs: Any) -> None:
        """A fresh AdamW for every experience, as in cltune (no optimizer state crosses tasks)."""
        self.optimizer = make_adamw(self.model, self.config)

    def make_train_dataloader(self, **kwargs: Any) -> None:
        """Seed the experience and shuffle its rows with cltune's per-experience generator
        (cltune numbers experiences from 1, Avalanche from 0)."""
        seed = derive_seed(self.config.seed, "experience", self.experience.current_experience + 1)
        seed_everything(seed)
        data = self.adapted_dataset
        self.train_epochs, self.max_updates = self.config.planned_updates(len(data))
        self.dataloader = DataLoader(
            data,
            batch_size=self.train_mb_size,
            sampler=EpochPermutation(len(data), torch.Generator().manual_seed(seed)),
            collate_fn=data.collate_fn,
            # The loader draws a worker seed from this generator, leaving the global RNG untouched.
            generator=torch.Generator(),
        )

    def _unpack_minibatch(self) -> None:
        inputs, _, task_labels = self.mbatch
        inputs = {k: v.to(self.device, non_blocking=True) for k, v in inputs.items()}
        self.mbatch = [inputs, inputs["labels"], task_labels.to(self.device)]

    def forward(self) -> Any:
        return self.model(**self.mb_x)

    def criterion(self) -> torch.Tensor:
        return self.mb_output.loss

    def optimizer_step(self) -> None:
        if self.config.max_grad_norm:
            params = [p for p in self.model.parameters() if p.requires_grad]
            nn.utils.clip_grad_norm_(params, self.config.max_grad_norm)
        super().optimizer_step()

    def _after_training_iteration(self, **kwargs: Any) -> None:
        super()._after_training_iteration(**kwargs)
        if self.clock.train_exp_iterations >= self.max_updates:
            self.stop_training()


class GenerationEvaluation(SupervisedPlugin):
    """Scores every task of ``stream`` with cltune's generate-based evaluator before training and
    after each training experience; :attr:`matrix` is the accuracy matrix (row 0 zero-shot)."""

    def __init__(self, stream: Stream, encoder: Encoder, config: TrainConfig):
        super().__init__()
        self.stream, self.encoder, self.config = stream, encoder, config
        self.rows: list[list[float]] = []

    def before_training(self, strategy: Naive, **kwargs: Any) -> None:
        if not self.rows:
            self._score(strategy.model)

    def after_training_exp(self, strategy: Naive, **kwargs: Any) -> None:
        self._score(strategy.model)

    def _score(self, model: nn.Module) -> None:
        was_training = model.training
        tasks = [*self.stream.tasks, *self.stream.general]
        scores = evaluate(Template(model, self.encoder, self.config, progress=False), tasks, progress=False)
        self.rows.append([s.score for s in scores])
        model.train(was_training)

    @property
    def matrix(self) -> AccuracyMatrix:
        return AccuracyMatrix(
            values=np.array(self.rows, dtype=float).reshape(len(self.rows), -1),
            tasks=self.stream.task_names,
            general=self.stream.general_names,
            metrics={t.name: t.metric for t in (*self.stream.tasks, *self.stream.general)},
        )


def run_naive(stream: Stream, model: nn.Module, encoder: Encoder, config: TrainConfig) -> AccuracyMatrix:
    """Train :class:`HuggingFaceNaive` through ``to_avalanche(stream)``, fine-tuning ``config.scope``
    as cltune's ``naive`` does; returns the accuracy matrix of :class:`GenerationEvaluation`."""
    set_trainable(model, config.scope)
    evaluation = GenerationEvaluation(stream, encoder, config)
    strategy = HuggingFaceNaive(model=model, config=config, plugins=[evaluation])
    for experience in to_avalanche(stream, encoder).train_stream:
        strategy.train(experience, eval_streams=[])
    return evaluation.matrix


def avalanche_metrics(matrix: AccuracyMatrix) -> dict[str, float | None]:
    """Average forgetting, BWT and FWT of a sequential matrix, computed by Avalanche.

    Avalanche's standalone ``Forgetting`` and ``BWT`` get each task's score right after its own
    experience as the initial value and its final score as the last one (as its
    ``ExperienceForgetting`` plugin metric feeds them); ``ForwardTransfer`` gets the zero-shot score
    as the initial value and the score after the previous experience. ``forgetting_functional`` is
    ``avalanche.evaluation.functional.forgetting`` at the last stage. Each is averaged over the
    tasks cltune averages (``i < T``; ``i >= 2`` for FWT); keys are cltune's metric names. All are
    None when the matrix is not sequential or has fewer than two tasks.
    """
    names = ("forgetting_avalanche", "forgetting_functional", "bwt", "fwt")
    T = matrix.n_tasks
    if not matrix.is_sequential or T < 2:
        return dict.fromkeys(names)
    R = matrix.task_values
    forgetting, bwt, fwt = Forgetting(), BWT(), ForwardTransfer()
    for i in range(1, T + 1):
        for metric in (forgetting, bwt):
            metric.update(i, R[i, i - 1], initial=True)
            metric.update(i, R[T, i - 1])
        fwt.update(i, R[0, i - 1], initial=True)
        fwt.update(i, R[i - 1, i - 1])
    functional = functional_forgetting(R[1:])[-1, :-1]
    return {
        "forgetting_avalanche": float(np.mean([forgetting.result_key(i) for i in range(1, T)])),
        "forgetting_functional": float(np.mean(functional)),
        "bwt": float(np.mean([bwt.result_key(i) for i in range(1, T)])),
        "fwt": float(np.mean([fwt.result_key(i) for i in range(2, T + 1)])),
    }
