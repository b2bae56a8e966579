"""Run one experiment (stream × strategy × seed) into its own run directory, resumably.

A run directory holds ``config.json`` (what was asked), ``results.json`` (the accuracy matrix so
far, summary metrics, timings, versions), ``events.jsonl``, ``predictions/stage-N.json`` and
``checkpoint/`` (the trained parameters and plugin state after the last finished stage). Every
file is written atomically; a run started again on the same directory continues after its last
finished experience and refuses to continue a different configuration. Inputs (strategy
parameters, data, model) are checked before anything is written, so a bad input leaves no
half-started run directory behind.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cltune import distributed
from cltune._version import __version__
from cltune.analysis.metrics import cl_metrics
from cltune.data.encode import Encoder
from cltune.data.recipe import build_stream, read_recipe
from cltune.data.task import Stream
from cltune.evaluation.evaluator import TaskScore, evaluate
from cltune.evaluation.reuse import EvalReuse, TensorDigests
from cltune.loggers import build_loggers, check_loggers
from cltune.matrix import ZERO_SHOT, AccuracyMatrix
from cltune.models.feature_cache import memo_summary
from cltune.models.loading import load_model
from cltune.rundir import (
    RESULTS_SCHEMA,
    WRITABLE_FIX,
    RunDirectory,
    finished_stages,
    read_config,
    read_results,
)
from cltune.strategies.config import TrainConfig
from cltune.strategies.experience import Experience
from cltune.strategies.registry import Preset, build_preset
from cltune.strategies.template import Template
from cltune.utils import cpu_description, derive_seed, ensure_writable_dir, seed_everything

DETERMINISTIC_ENV = "CLTUNE_DETERMINISTIC"


@dataclass
class RunSpec:
    """Everything that determines a run's results."""

    recipe: dict[str, Any]
    strategy: str
    model: str = "tiny"
    strategy_params: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    loggers: list[str] = field(default_factory=list)  # recorders only: not part of the configuration

    @classmethod
    def from_recipe(
        cls,
        recipe: str | Path | dict[str, Any] | None,
        strategy: str,
        model: str = "tiny",
        params: dict[str, Any] | None = None,
        seed: int = 0,
        loggers: str | list[str] | None = None,
        **train: Any,
    ) -> RunSpec:
        """A spec from a recipe (file, built-in name or parsed dict); its ``[train]`` and
        ``[strategy.<name>]`` tables are defaults that ``train`` and ``params`` override, and
        ``loggers`` overrides the ``[train]`` table's ``loggers`` list."""
        resolved = dict(recipe) if isinstance(recipe, dict) else read_recipe(recipe)
        train_options = {**resolved.pop("train", {}), **train, "seed": seed}
        recipe_loggers = train_options.pop("loggers", [])
        strategy_params = {**resolved.pop("strategy", {}).get(strategy, {}), **(params or {})}
        return cls(
            recipe=resolved,
            strategy=strategy,
            model=model,
            strategy_params=strategy_params,
            train=TrainConfig.from_dict(train_options),
            loggers=check_loggers(recipe_loggers if loggers is None else loggers),
        )

    @property
    def seed(self) -> int:
        return self.train.seed

    def to_dict(self) -> dict[str, Any]:
        return {
            "stream": self.recipe,
            "strategy": self.strategy,
            "strategy_params": self.strategy_params,
            "model": self.model,
            "train": self.train.to_dict(),
        }

    def run_name(self) -> str:
        return f"{self.recipe['name']}-{self.strategy}-seed{self.seed}"


@dataclass
class RunResult:
    """A run's directory, accuracy matrix, summary metrics and the whole ``results.json``."""

    run_dir: Path
    matrix: AccuracyMatrix
    metrics: dict[str, float | None]
    results: dict[str, Any]

    @classmethod
    def of(cls, run_dir: Path, results: dict[str, Any]) -> RunResult:
        return cls(run_dir, AccuracyMatrix.from_dict(results["matrix"]), results["summary"], results)


@dataclass
class InvocationCache:
    """What the runs of one invocation share (``cltune run`` of several strategies or seeds).

    ``encoders``: one :class:`Encoder` per (model, stream recipe), so every row is encoded once
    (features are read-only: collation copies them). ``zero_shot``: row 0 of the matrix per (model,
    stream recipe, evaluation options), which depends on nothing else, so it is computed once.
    """

    encoders: dict[tuple, Encoder] = field(default_factory=dict)
    zero_shot: dict[tuple, list[TaskScore]] = field(default_factory=dict)


def _versions() -> dict[str, str]:
    import peft
    import transformers

    return {
        "cltune": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "machine": f"{platform.machine()} {platform.system()}, {cpu_description()}, "
        f"{torch.get_num_threads()} threads",
    }


def use_deterministic_algorithms() -> bool:
    """Turn on PyTorch's deterministic algorithms when ``$CLTUNE_DETERMINISTIC`` is ``1``.

    On a GPU some kernels (atomic adds in backward passes, cuBLAS reductions) may otherwise give
    different low bits from run to run; ops without a deterministic implementation then warn.
    Returns whether deterministic algorithms are on (they may also be on from the caller's code).
    """
    if os.environ.get(DETERMINISTIC_ENV) == "1":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    return torch.are_deterministic_algorithms_enabled()


def _runtime(device: torch.device) -> dict[str, Any]:
    """Where the run computed and whether its results are bitwise reproducible there."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    if device.type == "cpu":
        note = "CPU: the same recipe and seed give identical results on this CPU kind and thread count"
    elif deterministic:
        note = "GPU with deterministic algorithms: reproducible up to ops that warned"
    else:
        note = (
            "GPU without deterministic algorithms: some kernels may change the low bits of a step, "
            f"so matrices can differ slightly between runs; set {DETERMINISTIC_ENV}=1 for reproducible runs"
        )
    return {
        "device": str(device),
        "deterministic_algorithms": deterministic,
        "threads": torch.get_num_threads(),
        "note": note,
        **distributed.launch_facts(),
    }


def _experiences(stream: Stream, joint: bool) -> list[Experience]:
    if joint:
        return [Experience(1, list(stream.tasks))]
    return [Experience(i + 1, [task]) for i, task in enumerate(stream.tasks)]


def _prepare(preset: Preset, model: torch.nn.Module, spec: RunSpec) -> torch.nn.Module:
    """The strategy's model (adapters added, ...), its random initialisation drawn from the run's
    seed, not from whatever state the global generator is in (it starts from a different seed in
    each process), so two runs of one recipe start from the same LoRA factors."""
    seed_everything(derive_seed(spec.seed, "prepare"))
    return preset.prepare(model, spec.train.scope)


def _parameter_digests(model: torch.nn.Module) -> dict[str, bytes]:
    """A digest of every parameter's dtype, shape and bytes (gathered whole, one at a time, under FSDP)."""
    digests = TensorDigests()
    return {
        name: digests.digest(name, distributed.full_parameters({name: p})[name])
        for name, p in model.named_parameters()
    }


def _changed_parameters(model: torch.nn.Module, loaded: dict[str, bytes]) -> dict[str, torch.Tensor]:
    """Every parameter that differs from the model as loaded (``loaded``: its digests) or is new
    since (an adapter added in an experience): what a checkpoint must keep, trainable or not, so a
    frozen weight that a plugin wrote survives a resume."""
    now = _parameter_digests(model)
    changed = {name for name, digest in now.items() if loaded.get(name) != digest}
    return distributed.full_parameters({n: p for n, p in model.named_parameters() if n in changed})


def _load_params(model: torch.nn.Module, params: dict[str, torch.Tensor]) -> None:
    own = dict(model.named_parameters())
    missing = sorted(set(params) - set(own))
    if missing:
        raise RuntimeError(f"checkpoint has parameters the model lacks: {missing[:5]}")
    with torch.no_grad():
        for name, value in params.items():
            own[name].copy_(value)


def _restore(run: RunDirectory, preset: Preset, model: torch.nn.Module, stream: Stream, stage: int) -> None:
    """The resume block of a run and of :func:`load_trained_model`: the plugins get the stream's
    tasks, then (after a finished ``stage``) their saved state, and the model its saved parameters."""
    for plugin in preset.plugins:
        plugin.attach_tasks(stream.tasks)
    if stage < 1:
        return
    params, states = run.load_checkpoint(stage)
    for plugin, state in zip(preset.plugins, states, strict=True):
        plugin.load_state_dict(state)
    _load_params(model, params)


def _log_row(loggers: list, stage: int, tasks: list, row: list[float]) -> None:
    """Give every logger one row of the accuracy matrix."""
    for logger in loggers:
        logger.log_scores(stage, {task.name: score for task, score in zip(tasks, row, strict=True)})


class _Experiment:
    """The named steps of :func:`run_experiment`, in the order it calls them: :meth:`setup`,
    :meth:`zero_shot`, :meth:`build_strategy`, :meth:`restore`, :meth:`train_stage` per remaining
    experience, :meth:`finish`; :meth:`close` always."""

    def __init__(
        self,
        spec: RunSpec,
        out: str | Path,
        shared: InvocationCache | None,
        progress: bool,
        reuse_evaluations: bool,
    ):
        self.spec = spec
        self.out = out
        self.shared = shared
        self.reuse = EvalReuse() if reuse_evaluations else None
        self.main = distributed.is_main_process()
        self.progress = progress and self.main
        self.run = RunDirectory(Path(out) / spec.run_name(), writes=self.main)
        self.config = spec.to_dict()
        self.previous = self.run.previous(self.config)
        self.loggers: list = []

    def setup(self, stream: Stream | None, progress: bool) -> None:
        """Check every input before the run directory records anything, load the model, start the
        run directory and the loggers."""
        spec = self.spec
        self.preset = build_preset(spec.strategy, **spec.strategy_params)
        distributed.check_strategy(spec.strategy, self.preset.plugins, spec.train)  # under FSDP or DeepSpeed
        self.stream = stream or build_stream(spec.recipe)
        if self.main:
            ensure_writable_dir(self.out, "the output folder", WRITABLE_FIX)
        self.experiences = _experiences(self.stream, self.preset.joint)
        self.eval_tasks = [*self.stream.tasks, *self.stream.general]
        self.stages = [ZERO_SHOT] + [
            f"after {e.name}" if not self.preset.joint else "joint" for e in self.experiences
        ]
        use_deterministic_algorithms()
        started = time.perf_counter()
        with distributed.main_process_first():  # the main process pre-trains and caches a built-in model
            self.model, processor = load_model(
                spec.model, pretrain_tasks=self.stream.general, seed=self.stream.seed, progress=progress
            )
        self.encoder = self._encoder(processor)
        self.timings = self.previous["timings"] if self.previous else {"load_model_s": 0.0, "stages": []}
        self.timings["load_model_s"] += time.perf_counter() - started
        # Finished stages only: results.json pads the stages still to come with nulls.
        matrix = AccuracyMatrix.from_dict(self.previous["matrix"]) if self.previous else None
        self.finished = finished_stages(matrix) if matrix is not None else 0
        self.rows = [[float(v) for v in row] for row in matrix.values[: self.finished + 1]] if matrix else []
        self.run.start(self.config)
        self.run.log("start", resume=self.previous is not None, **distributed.launch_facts())
        if self.main:
            self.loggers = build_loggers(spec.loggers, self.run.path, self.config)

    def _encoder(self, processor: Any) -> Encoder:
        if self.shared is None:
            return Encoder(processor, self.spec.model)
        key = (self.spec.model, json.dumps(self.spec.recipe, sort_keys=True))
        return self.shared.encoders.setdefault(key, Encoder(processor, self.spec.model))

    def zero_shot(self) -> None:
        """Row 0: the loaded model on every task, unless a resumed run has it (or another run of
        this invocation computed it)."""
        self.base = Template(self.model, self.encoder, self.spec.train, progress=self.progress)
        if self.rows:
            return
        started = time.perf_counter()
        spec = self.spec
        key = (
            spec.model,
            json.dumps(spec.recipe, sort_keys=True),
            spec.train.eval_batch_size,
            spec.train.max_new_tokens,
        )
        cache = self.shared.zero_shot if self.shared is not None else {}
        if key not in cache:
            cache[key] = evaluate(self.base, self.eval_tasks, self.progress)
        self._record_stage(0, cache[key], train_s=0.0, eval_s=time.perf_counter() - started)

    def build_strategy(self) -> None:
        """The strategy's model and template; the digests of its parameters as loaded, against
        which each checkpoint finds what changed."""
        model = _prepare(self.preset, self.base.model, self.spec)
        plugins = [*self.preset.plugins, *self.loggers]
        self.strategy = Template(model, self.encoder, self.spec.train, plugins, progress=self.progress)
        self.strategy.run_dir = self.run if self.main else None
        self.loaded = _parameter_digests(self.strategy.model)

    def restore(self) -> None:
        """Continue after the last finished stage of a killed run (nothing to do in a fresh one)."""
        _restore(self.run, self.preset, self.strategy.model, self.stream, self.finished)
        if self.finished > 0:
            distributed.wait_for_everyone()  # every process has read the checkpoint
            self.run.drop_checkpoints_except(self.finished)  # a kill may have interrupted the last clean-up
            self.run.log("resumed", after_stage=self.finished)

    def remaining(self) -> list[Experience]:
        return self.experiences[self.finished :]

    def train_stage(self, experience: Experience) -> None:
        """Train one experience, evaluate every task, then save predictions, checkpoint and results."""
        self.run.log("train", stage=experience.index, experience=experience.name)
        started = time.perf_counter()
        self.strategy.train(experience)
        trained = time.perf_counter()
        scores = evaluate(self.strategy, self.eval_tasks, self.progress, self.reuse)
        if self.reuse is not None:
            self.strategy.extra_results["evaluations"] = self.reuse.summary()
        self._record_stage(
            experience.index, scores, train_s=trained - started, eval_s=time.perf_counter() - trained
        )
        plugin_states = [(type(p).__name__, p.state_dict()) for p in self.preset.plugins]
        changed = _changed_parameters(self.strategy.model, self.loaded)
        self.run.save_checkpoint(experience.index, changed, plugin_states)
        self._write_results(done=False)
        self.run.drop_checkpoints_except(experience.index)
        self.run.log("stage_done", stage=experience.index, scores=self.rows[-1])

    def _record_stage(self, stage: int, scores: list[TaskScore], train_s: float, eval_s: float) -> None:
        self.rows.append([s.score for s in scores])
        self.run.save_predictions(stage, {s.task: s.predictions for s in scores})
        _log_row(self.loggers, stage, self.eval_tasks, self.rows[-1])
        self.timings["stages"].append({"stage": self.stages[stage], "train_s": train_s, "eval_s": eval_s})

    def _write_results(self, done: bool) -> dict[str, Any]:
        width = len(self.eval_tasks)
        matrix = AccuracyMatrix(
            values=self.rows + [[float("nan")] * width] * (len(self.stages) - len(self.rows)),
            tasks=self.stream.task_names,
            general=self.stream.general_names,
            stages=self.stages,
            metrics={t.name: t.metric for t in self.eval_tasks},
        )
        results = {
            "schema": RESULTS_SCHEMA,
            "stream": self.stream.name,
            "strategy": self.spec.strategy,
            "model": self.spec.model,
            "seed": self.spec.seed,
            "finished": done,
            "matrix": matrix.to_dict(),
            "summary": cl_metrics(matrix) if done else {},
            "timings": self.timings,
            "versions": _versions(),
            "runtime": _runtime(self.strategy.device),
            "feature_memo": memo_summary(self.strategy.model),
            "extra": self.strategy.extra_results,
        }
        self.run.save_results(results)
        return results

    def finish(self) -> RunResult:
        """The final results (with the summary metrics), to the loggers and the run directory."""
        results = self._write_results(done=True)
        for logger in self.loggers:
            logger.log_summary(results["summary"])
        self.run.log("finished")
        return RunResult.of(self.run.path, results)

    def close(self) -> None:
        for logger in self.loggers:
            logger.close()


def run_experiment(
    spec: RunSpec,
    out: str | Path,
    stream: Stream | None = None,
    shared: InvocationCache | None = None,
    progress: bool = True,
    reuse_evaluations: bool = True,
) -> RunResult:
    """Train ``spec.strategy`` through the stream, evaluating every task after every stage.

    With ``reuse_evaluations`` a task whose answers cannot have changed since the previous stage
    keeps that stage's result (:mod:`cltune.evaluation.reuse`; results.json ``extra.evaluations``
    counts them, in this process: a resumed run counts from where it resumed); the matrix is the
    same either way. ``shared`` holds what runs of one invocation share (:class:`InvocationCache`).

    Under ``accelerate launch`` every process runs this (see :mod:`cltune.distributed`): training
    batches and evaluation are shared out, and only the main process writes the run directory.
    """
    spec.train.check_device()
    distributed.init(spec.train.resolved_device())
    experiment = _Experiment(spec, out, shared, progress, reuse_evaluations)
    distributed.wait_for_everyone()  # every process has read the directory before it changes
    if experiment.previous and experiment.previous.get("finished"):
        return RunResult.of(experiment.run.path, experiment.previous)
    experiment.setup(stream, progress)
    try:
        experiment.zero_shot()
        experiment.build_strategy()
        experiment.restore()
        for experience in experiment.remaining():
            experiment.train_stage(experience)
        return experiment.finish()
    finally:
        experiment.close()


def load_trained_model(run_dir: str | Path) -> tuple[torch.nn.Module, Any, Stream]:
    """The model of a run directory after its last finished stage, rebuilt the way the run built it.

    Loads ``config.json``'s model (the built-in ``tiny`` from its cache), applies the strategy's
    ``prepare`` (e.g. its PEFT wrapper), then the resume block of a run (:func:`_restore`: the
    plugins' saved state and the saved parameters of the newest ``checkpoint-N``). Returns
    ``(model, processor, stream)``; the model is on the CPU in eval mode.
    """
    run = RunDirectory(run_dir, writes=False)
    config = read_config(run.path)
    finished = finished_stages(AccuracyMatrix.from_dict(read_results(run.path)["matrix"]))
    if finished < 1:
        raise FileNotFoundError(f"{run.path}: no finished experience, so there is no trained model yet")
    spec = RunSpec(
        recipe=config["stream"],
        strategy=config["strategy"],
        model=config["model"],
        strategy_params=config.get("strategy_params") or {},
        train=TrainConfig.from_dict(config["train"]),
    )
    stream = build_stream(spec.recipe)
    preset = build_preset(spec.strategy, **spec.strategy_params)
    model, processor = load_model(spec.model, pretrain_tasks=stream.general, seed=stream.seed)
    model = _prepare(preset, model, spec)
    _restore(run, preset, model, stream, finished)
    return model.eval(), processor, stream
