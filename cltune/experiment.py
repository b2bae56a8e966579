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

import io
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from cltune import distributed
from cltune.analysis import cl_metrics
from cltune.analysis.runs import read_config, read_results
from cltune.data.encode import Encoder
from cltune.data.recipe import build_stream, read_recipe
from cltune.data.task import Stream
from cltune.evaluation.evaluator import TaskScore, evaluate
from cltune.evaluation.reuse import EvalReuse
from cltune.loggers import build_loggers, check_loggers
from cltune.matrix import ZERO_SHOT, AccuracyMatrix
from cltune.models.feature_cache import memo_summary
from cltune.models.loading import load_model
from cltune.strategies.config import TrainConfig
from cltune.strategies.experience import Experience
from cltune.strategies.registry import Preset, build_preset
from cltune.strategies.template import Template
from cltune.utils import (
    atomic_write_bytes,
    atomic_write_json,
    cpu_description,
    derive_seed,
    ensure_writable_dir,
    remove_stale_temporaries,
    seed_everything,
)

RESULTS_SCHEMA = "cltune.results/1"
DETERMINISTIC_ENV = "CLTUNE_DETERMINISTIC"
WRITABLE_FIX = "choose a writable --out folder (or fix its permissions and free space)"


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

    def report(self, out: str | Path | None = None) -> dict[str, Path]:
        """Write this run's report (``report.md``, ``report.html``, ``metrics.csv``, figures) into
        ``out`` (default: ``<run dir>/report``); returns the files written."""
        from cltune.reports import write_report

        return write_report([self.run_dir], self.run_dir / "report" if out is None else out)


class RunConfigMismatch(ValueError):
    """A run directory was started with another configuration than the one asked now."""


def _diff(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [
            line
            for key in sorted(set(old) | set(new), key=str)
            for line in _diff(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
        ]
    return [] if old == new else [f"  {path}: was {old!r}, now {new!r}"]


def _versions() -> dict[str, str]:
    import peft
    import transformers

    from cltune import __version__

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


class RunDirectory:
    """Reads and writes the files of one run directory; with ``writes=False`` (a process other than
    the main one of a multi-process run) it reads only, and every write is skipped."""

    def __init__(self, path: Path, writes: bool = True):
        self.path = Path(path)
        self.writes = writes

    @property
    def results_path(self) -> Path:
        return self.path / "results.json"

    def log(self, event: str, **fields: Any) -> None:
        if not self.writes:
            return
        with open(self.path / "events.jsonl", "a") as f:
            f.write(json.dumps({"time": time.time(), "event": event, **fields}) + "\n")

    def previous(self, config: dict[str, Any]) -> dict[str, Any] | None:
        """Earlier results of this run directory, if any; reads only.

        Raises :class:`RunConfigMismatch` if the directory was started with another configuration,
        and a :class:`cltune.analysis.RunDirectoryError` naming the file and field if its
        ``config.json`` or ``results.json`` is damaged.
        """
        if not (self.path / "config.json").is_file():
            return None
        differences = _diff(read_config(self.path), json.loads(json.dumps(config)))
        if differences:
            raise RunConfigMismatch(
                f"run directory {self.path} was started with another configuration:\n"
                + "\n".join(differences)
                + "\nuse another --out folder, or delete the directory to start over"
            )
        return read_results(self.path) if self.results_path.is_file() else None

    def start(self, config: dict[str, Any]) -> None:
        """Create the directory (or tidy the one a killed run left) and record ``config``.

        A killed run may have left temporary files of atomic writes and a torn last line in
        ``events.jsonl``; both are removed, and an event says so.
        """
        if not self.writes:
            return
        ensure_writable_dir(self.path, "the run directory", WRITABLE_FIX)
        repaired = [str(p.relative_to(self.path)) for p in remove_stale_temporaries(self.path)]
        if self._drop_torn_event():
            repaired.append("events.jsonl (torn last line)")
        if not (self.path / "config.json").is_file():
            atomic_write_json(self.path / "config.json", config)
        if repaired:
            self.log("repaired", removed=repaired)

    def _drop_torn_event(self) -> bool:
        """Cut a last line of ``events.jsonl`` that has no newline (a kill mid-append)."""
        path = self.path / "events.jsonl"
        data = path.read_bytes() if path.is_file() else b""
        if not data or data.endswith(b"\n"):
            return False
        atomic_write_bytes(path, data[: data.rfind(b"\n") + 1])
        return True

    def save_checkpoint(self, stage: int, params: dict[str, torch.Tensor], plugin_states: list) -> None:
        """Trained parameters and plugin state after ``stage``; ``stage.json``, written last, marks
        the checkpoint whole."""
        if not self.writes:
            return
        folder = self.path / f"checkpoint-{stage}"
        tensors = {n: p.detach().to("cpu").clone().contiguous() for n, p in params.items()}
        atomic_write_bytes(folder / "params.safetensors", safetensors_bytes(tensors))
        buffer = io.BytesIO()
        torch.save(plugin_states, buffer)
        atomic_write_bytes(folder / "plugins.pt", buffer.getvalue())
        atomic_write_json(folder / "stage.json", {"stage": stage})

    def save_results(self, results: dict[str, Any]) -> None:
        if self.writes:
            atomic_write_json(self.results_path, results)

    def drop_checkpoints_except(self, stage: int) -> None:
        if not self.writes:
            return
        for folder in self.path.glob("checkpoint-*"):
            if folder.name != f"checkpoint-{stage}":
                shutil.rmtree(folder, ignore_errors=True)

    def load_checkpoint(self, stage: int) -> tuple[dict[str, torch.Tensor], list]:
        folder = self.path / f"checkpoint-{stage}"
        if not (folder / "stage.json").is_file():
            raise FileNotFoundError(
                f"{self.path}: results.json lists {stage} finished stage(s) but {folder.name} is missing; "
                "delete the run directory to start over"
            )
        params = load_file(str(folder / "params.safetensors"))
        states = torch.load(folder / "plugins.pt", weights_only=False)
        return params, states

    def save_predictions(self, stage: int, scores: list[TaskScore]) -> None:
        if not self.writes:
            return
        atomic_write_json(
            self.path / "predictions" / f"stage-{stage}.json", {s.task: s.predictions for s in scores}
        )


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


def _load_params(model: torch.nn.Module, params: dict[str, torch.Tensor]) -> None:
    own = dict(model.named_parameters())
    missing = sorted(set(params) - set(own))
    if missing:
        raise RuntimeError(f"checkpoint has parameters the model lacks: {missing[:5]}")
    with torch.no_grad():
        for name, value in params.items():
            own[name].copy_(value)


def _shared_encoder(cache: dict[tuple, Any] | None, spec: RunSpec, processor: Any) -> Encoder:
    """The run's encoder: one per (model, stream recipe) in ``cache``, so runs of one invocation
    encode every row once (features are read-only: collation copies them)."""
    if cache is None:
        return Encoder(processor, spec.model)
    key = ("encoder", spec.model, json.dumps(spec.recipe, sort_keys=True))
    return cache.setdefault(key, Encoder(processor, spec.model))


def run_experiment(
    spec: RunSpec,
    out: str | Path,
    stream: Stream | None = None,
    zero_shot: dict[tuple, Any] | None = None,
    progress: bool = True,
    reuse_evaluations: bool = True,
) -> RunResult:
    """Train ``spec.strategy`` through the stream, evaluating every task after every stage.

    With ``reuse_evaluations`` a task whose answers cannot have changed since the previous stage
    keeps that stage's result (:mod:`cltune.evaluation.reuse`; results.json ``extra.evaluations``
    counts them, in this process: a resumed run counts from where it resumed); the matrix is the
    same either way.

    Under ``accelerate launch`` every process runs this (see :mod:`cltune.distributed`): training
    batches and evaluation are shared out, and only the main process writes the run directory.

    ``zero_shot`` is a cache shared by runs of one invocation: row 0 depends only on the model,
    the stream and the evaluation options, so it is computed once for all strategies; the encoded
    rows (:class:`Encoder`'s memo) depend only on the model and the stream, so they are kept there too.
    """
    distributed.init(spec.train.resolved_device())
    main = distributed.is_main_process()
    run = RunDirectory(Path(out) / spec.run_name(), writes=main)
    config = spec.to_dict()
    previous = run.previous(config)
    distributed.wait_for_everyone()  # every process has read the directory before it changes
    if previous and previous.get("finished"):
        matrix = AccuracyMatrix.from_dict(previous["matrix"])
        return RunResult(run.path, matrix, previous["summary"], previous)
    # Every input is checked before the run directory records anything.
    preset = build_preset(spec.strategy, **spec.strategy_params)
    distributed.check_strategy(spec.strategy, preset.plugins, spec.train)  # under FSDP or DeepSpeed
    stream = stream or build_stream(spec.recipe)
    if main:
        ensure_writable_dir(out, "the output folder", WRITABLE_FIX)
    experiences = _experiences(stream, preset.joint)
    eval_tasks = [*stream.tasks, *stream.general]
    use_deterministic_algorithms()

    started = time.perf_counter()
    with distributed.main_process_first():  # the main process pre-trains and caches a built-in model
        model, processor = load_model(
            spec.model, pretrain_tasks=stream.general, seed=stream.seed, progress=progress
        )
    encoder = _shared_encoder(zero_shot, spec, processor)
    progress = progress and main
    run.start(config)
    run.log("start", resume=previous is not None, **distributed.launch_facts())
    loggers = build_loggers(spec.loggers, run.path, config) if main else []
    try:
        timings = previous["timings"] if previous else {"load_model_s": 0.0, "stages": []}
        timings["load_model_s"] += time.perf_counter() - started

        stages = [ZERO_SHOT] + [f"after {e.name}" if not preset.joint else "joint" for e in experiences]
        # Finished stages only: results.json pads the stages still to come with nulls.
        rows = [r for r in previous["matrix"]["values"] if None not in r] if previous else []
        base = Template(model, encoder, spec.train, progress=progress)
        if not rows:
            started = time.perf_counter()
            key = (
                spec.model,
                json.dumps(spec.recipe, sort_keys=True),
                spec.train.eval_batch_size,
                spec.train.max_new_tokens,
            )
            scores = zero_shot.get(key) if zero_shot is not None else None
            if scores is None:
                scores = evaluate(base, eval_tasks, progress)
                if zero_shot is not None:
                    zero_shot[key] = scores
            rows.append([s.score for s in scores])
            run.save_predictions(0, scores)
            _log_row(loggers, 0, eval_tasks, rows[0])
            timings["stages"].append(
                {"stage": ZERO_SHOT, "train_s": 0.0, "eval_s": time.perf_counter() - started}
            )

        model = _prepare(preset, base.model, spec)
        strategy = Template(model, encoder, spec.train, [*preset.plugins, *loggers], progress=progress)
        strategy.run_dir = run.path if main else None
        for plugin in preset.plugins:
            if hasattr(plugin, "attach_tasks"):
                plugin.attach_tasks(stream.tasks)
        finished = len(rows) - 1
        if finished:
            params, states = run.load_checkpoint(finished)
            for plugin, state in zip(preset.plugins, states, strict=True):
                plugin.load_state_dict(state)
            _load_params(strategy.model, params)
            strategy.touched.update(params)
            distributed.wait_for_everyone()  # every process has read the checkpoint
            run.drop_checkpoints_except(finished)  # a kill may have interrupted the last clean-up
            run.log("resumed", after_stage=finished)

        def write_results(done: bool) -> dict[str, Any]:
            matrix = AccuracyMatrix(
                values=rows + [[float("nan")] * len(eval_tasks)] * (len(stages) - len(rows)),
                tasks=stream.task_names,
                general=stream.general_names,
                stages=stages,
                metrics={t.name: t.metric for t in eval_tasks},
            )
            results = {
                "schema": RESULTS_SCHEMA,
                "stream": stream.name,
                "strategy": spec.strategy,
                "model": spec.model,
                "seed": spec.seed,
                "finished": done,
                "matrix": matrix.to_dict(),
                "summary": cl_metrics(matrix) if done else {},
                "timings": timings,
                "versions": _versions(),
                "runtime": _runtime(strategy.device),
                "feature_memo": memo_summary(strategy.model),
                "extra": strategy.extra_results,
            }
            run.save_results(results)
            return results

        reuse = EvalReuse() if reuse_evaluations else None
        for experience in experiences[finished:]:
            run.log("train", stage=experience.index, experience=experience.name)
            started = time.perf_counter()
            strategy.train(experience)
            trained = time.perf_counter()
            scores = evaluate(strategy, eval_tasks, progress, reuse)
            if reuse is not None:
                strategy.extra_results["evaluations"] = reuse.summary()
            rows.append([s.score for s in scores])
            _log_row(loggers, experience.index, eval_tasks, rows[-1])
            timings["stages"].append(
                {
                    "stage": stages[experience.index],
                    "train_s": trained - started,
                    "eval_s": time.perf_counter() - trained,
                }
            )
            run.save_predictions(experience.index, scores)
            run.save_checkpoint(
                experience.index, strategy.touched_parameters(), [p.state_dict() for p in preset.plugins]
            )
            write_results(done=False)
            run.drop_checkpoints_except(experience.index)
            run.log("stage_done", stage=experience.index, scores=rows[-1])
        results = write_results(done=True)
        for logger in loggers:
            logger.log_summary(results["summary"])
        run.log("finished")
        return RunResult(run.path, AccuracyMatrix.from_dict(results["matrix"]), results["summary"], results)
    finally:
        for logger in loggers:
            logger.close()


def _log_row(loggers: list, stage: int, tasks: list, row: list[float]) -> None:
    """Give every logger one row of the accuracy matrix."""
    for logger in loggers:
        logger.log_scores(stage, {task.name: score for task, score in zip(tasks, row, strict=True)})


def load_trained_model(run_dir: str | Path) -> tuple[torch.nn.Module, Any, Stream]:
    """The model of a run directory after its last finished stage, rebuilt the way the run built it.

    Loads ``config.json``'s model (the built-in ``tiny`` from its cache), applies the strategy's
    ``prepare`` (e.g. its PEFT wrapper) and its plugins' saved state, then the trained parameters
    of the newest ``checkpoint-N`` — the same steps as a resumed run. Returns
    ``(model, processor, stream)``; the model is on the CPU in eval mode.
    """
    run = RunDirectory(Path(run_dir))
    config = read_config(run.path)
    results = read_results(run.path)
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
    for plugin in preset.plugins:
        if hasattr(plugin, "attach_tasks"):
            plugin.attach_tasks(stream.tasks)
    finished = sum(any(v is not None for v in row) for row in results["matrix"]["values"]) - 1
    if finished < 1:
        raise FileNotFoundError(f"{run.path}: no finished experience, so there is no trained model yet")
    params, states = run.load_checkpoint(finished)
    for plugin, state in zip(preset.plugins, states, strict=True):
        plugin.load_state_dict(state)
    _load_params(model, params)
    return model.eval(), processor, stream
