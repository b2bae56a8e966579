"""Several processes through Hugging Face accelerate (DDP, FSDP2, DeepSpeed ZeRO-1/2); a no-op in one process.

A run started by ``accelerate launch`` (or ``cltune run --launcher accelerate``) has several
processes. cltune then uses accelerate's own objects only: one ``Accelerator`` (its process group,
device and ``prepare_model``, which wraps the model in PyTorch DDP for the training forward pass),
``accelerator.backward``, ``gather_object`` and ``reduce``. The division of work:

- training: each process takes a contiguous share of every seeded minibatch
  (:func:`minibatch_share`), so one update still sees ``batch_size`` rows; DDP averages the
  gradients, and each share's loss is weighted by its rows so the average is the row-weighted
  mean of the single-process batch;
- evaluation: each process generates the answers of every n-th batch of the single-process
  batching (same batches, so the same answers) and the answers are gathered (:func:`gather_rows`);
- importances measured from data: each process scores every n-th calibration batch and the scores
  are averaged over processes, weighted by batches (:func:`weighted_mean`);
- files: only the main process writes (:func:`is_main_process`).

Under an FSDP or DeepSpeed configuration (GPUs only) the model and optimizer go through
``accelerator.prepare`` instead (:func:`prepare`), only strategies whose plugins declare that they
work on sharded parameters run (:func:`check_strategy`), FSDP2 processes each evaluate every batch
(every forward pass is a collective), and checkpoints gather FSDP's shards (:func:`full_parameters`).

Without a multi-process launch (``WORLD_SIZE`` unset or 1) nothing here imports accelerate, wraps
the model or changes a number.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar

import torch

T = TypeVar("T")
_WORLD_SIZE_ENV = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
_SHARDED = ("FSDP", "DEEPSPEED")
_REFUSED = ("MEGATRON_LM",)
_accelerator: Any = None


def world_size() -> int:
    """Processes the launcher started (the variables accelerate's launchers set; 1 when unset)."""
    for name in _WORLD_SIZE_ENV:
        if os.environ.get(name):
            return int(os.environ[name])
    return 1


def active() -> bool:
    """Whether this process is one of several."""
    return world_size() > 1


def sharding() -> str | None:
    """``"FSDP"`` or ``"DEEPSPEED"`` when several processes run under such an accelerate configuration
    (the flags ``accelerate launch`` sets in every process), else None."""
    if not active():
        return None
    return next(
        (k for k in _SHARDED if os.environ.get(f"ACCELERATE_USE_{k}", "false").lower() == "true"), None
    )


def init(device: str) -> None:
    """Create the run's ``Accelerator`` (once) when several processes run; ``device`` is cltune's
    resolved device (``cpu`` gives gloo DDP on the CPU, ``cuda`` one GPU per process).

    Raises a ValueError for what cltune cannot run: accelerate's own mixed precision (cltune's
    ``precision`` option sets it), FSDP or DeepSpeed on the CPU, FSDP1, ZeRO-3, Megatron-LM and
    XLA (see docs/DISTRIBUTED.md).
    """
    global _accelerator
    if _accelerator is not None or not active():
        return
    precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if precision != "no":
        raise ValueError(
            f"the accelerate configuration asks for mixed_precision={precision!r}; cltune sets precision "
            "itself: set mixed_precision: 'no' in the accelerate config and pass --set precision=bf16"
        )
    for kind in _REFUSED:  # what accelerate launch sets for these configurations
        if os.environ.get(f"ACCELERATE_USE_{kind}", "false").lower() == "true":
            raise _unsupported(kind)
    sharded = sharding()
    if sharded and device == "cpu":
        # accelerate's AcceleratorState turns FSDP/DeepSpeed on only for GPU-like distributed types:
        # on the CPU it would give MULTI_CPU, and prepare_model would wrap the model in DDP instead.
        raise ValueError(
            f"accelerate runs {sharded} only on GPUs: on the CPU its Accelerator sets up plain DDP "
            "(distributed_type MULTI_CPU) instead; on a CPU use DDP (--launcher accelerate "
            "--num-processes N, or a MULTI_GPU config with --set device=cpu)"
        )
    if sharded == "FSDP" and os.environ.get("FSDP_VERSION", "1") != "2":
        raise ValueError(
            "cltune runs FSDP2 only: FSDP1 keeps flat shards in the model between forward passes, which "
            "generation and checkpoints would read; set fsdp_version: 2 in the accelerate config "
            "(examples/accelerate/fsdp.yaml)"
        )
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, DistributedType

    accelerator = Accelerator(
        cpu=device == "cpu",
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    kind = accelerator.distributed_type
    if kind == DistributedType.NO:
        raise ValueError(
            f"{world_size()} processes were launched, but accelerate set up none of its distributed modes "
            f"on the device {device!r}; use --set device=cpu (gloo) or launch on a machine with GPUs"
        )
    if kind == DistributedType.DEEPSPEED and accelerator.state.deepspeed_plugin.zero_stage == 3:
        raise ValueError(
            "DeepSpeed ZeRO-3 is not supported by cltune: it partitions the parameters outside the "
            "engine, where cltune generates answers and saves checkpoints; use zero_stage 2 "
            "(examples/accelerate/deepspeed_zero2.yaml) or FSDP2 (examples/accelerate/fsdp.yaml)"
        )
    if kind.value != sharded if sharded else not kind.value.startswith("MULTI_"):
        raise _unsupported(kind.value)
    _accelerator = accelerator


def check_strategy(name: str, plugins: Sequence[Any], config: Any) -> None:
    """A ValueError when strategy ``name`` (its ``plugins`` and ``TrainConfig``) cannot run under
    this launch's FSDP or DeepSpeed configuration; nothing otherwise."""
    sharded = sharding()
    if sharded is None:
        return
    reasons = [f"{type(p).__name__}: {p.full_parameters}" for p in plugins if p.full_parameters]
    if reasons:
        raise ValueError(
            f"strategy {name!r} cannot run under {sharded}, which shards parameters, gradients and "
            f"optimizer state ({'; '.join(reasons)}); under {sharded} run one of the strategies that "
            "`cltune list` names as running sharded, or run this strategy with DDP (an accelerate config "
            "with distributed_type: MULTI_GPU, e.g. examples/accelerate/ddp.yaml, or --launcher "
            "accelerate --num-processes N)"
        )
    if config.precision == "fp16":
        raise ValueError(
            f"precision='fp16' under {sharded}: cltune's loss scaler (torch.amp.GradScaler) checks each "
            f"process's gradients for overflow, but {sharded} shards them (it needs its own scaler); use "
            "--set precision=bf16, or run fp16 with DDP (distributed_type: MULTI_GPU)"
        )
    if sharded == "DEEPSPEED" and config.grad_accum != 1:
        raise ValueError(
            f"grad_accum={config.grad_accum} under DeepSpeed: its engine steps inside backward and scales "
            "the loss itself; set --set grad_accum=1 (raise batch_size instead) or use DDP or FSDP"
        )


def _unsupported(kind: str) -> ValueError:
    return ValueError(
        f"accelerate distributed_type {kind} is not supported by cltune: its strategies read and "
        "edit whole parameters, gradients and optimizer state by name (masks, penalties, merges), which "
        f"{kind} shards; use DDP (distributed_type: MULTI_GPU, e.g. examples/accelerate/ddp.yaml, or "
        "--num-processes N) or, for the strategies that run sharded, FSDP2 or DeepSpeed ZeRO-2 "
        "(docs/DISTRIBUTED.md)"
    )


def accelerator() -> Any:
    """The run's ``Accelerator`` (created for the default device if :func:`init` was not called)."""
    if _accelerator is None:
        init("cuda" if torch.cuda.is_available() else "cpu")
    return _accelerator


def is_main_process() -> bool:
    """True in a single process and in rank 0 of several: the process that writes files."""
    return not active() or accelerator().is_main_process


def process_index() -> int:
    return accelerator().process_index if active() else 0


def num_processes() -> int:
    return accelerator().num_processes if active() else 1


def device(default: str) -> torch.device:
    """The device of this process: accelerate's (one GPU per process) when several run."""
    return accelerator().device if active() else torch.device(default)


def main_process_first() -> AbstractContextManager:
    """The main process runs the block first (e.g. pre-training and caching a model), then the others."""
    return accelerator().main_process_first() if active() else nullcontext()


def wait_for_everyone() -> None:
    if active():
        accelerator().wait_for_everyone()


def prepare(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, config: Any
) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The module the training forward pass runs through and the optimizer to step: ``model`` and
    ``optimizer`` themselves in one process; under DDP the model's wrapper
    (``accelerator.prepare_model``); under FSDP2 or DeepSpeed both through ``accelerator.prepare``
    (FSDP2 shards ``model`` in place; DeepSpeed returns its engine and steps inside backward). Call it
    after the trainable parameters of an experience are set, and :func:`release` at its end."""
    if not active():
        return model, optimizer
    if sharding() is None:
        return accelerator().prepare_model(model), optimizer
    plugin = accelerator().state.deepspeed_plugin
    if plugin is not None:  # no dataloader goes through prepare, so DeepSpeed's batch values are set here
        wanted = {
            "train_micro_batch_size_per_gpu": -(-config.batch_size // num_processes()),
            "gradient_accumulation_steps": 1,
            "gradient_clipping": config.max_grad_norm or 0.0,
        }
        for key, value in wanted.items():
            if plugin.is_auto(key) or key not in plugin.deepspeed_config:
                plugin.deepspeed_config[key] = value
            elif plugin.deepspeed_config[key] != value:
                raise ValueError(
                    f"the DeepSpeed config sets {key}={plugin.deepspeed_config[key]!r} but cltune's training "
                    f"uses {value!r}; leave {key} out of the DeepSpeed config (or auto): cltune sets it"
                )
    return tuple(accelerator().prepare(model, optimizer))


def clip_grad_norm_(parameters: list[torch.nn.Parameter], max_norm: float) -> None:
    """Clip the gradients' global norm: ``torch.nn.utils.clip_grad_norm_``, accelerate's under FSDP2
    (sharded gradients) and DeepSpeed (where the engine clips, by ``gradient_clipping``)."""
    if sharding() is None:
        torch.nn.utils.clip_grad_norm_(parameters, max_norm)
    else:
        accelerator().clip_grad_norm_(parameters, max_norm)


def full_parameters(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``params`` with FSDP2's sharded parameters (DTensors) gathered whole; every process must call
    it (it is a collective under FSDP2). Unchanged otherwise (ZeRO-1/2 keep parameters whole)."""
    if sharding() != "FSDP":
        return params
    from torch.distributed.tensor import DTensor

    return {n: p.full_tensor() if isinstance(p, DTensor) else p for n, p in params.items()}


def release() -> None:
    """Drop accelerate's references to the models it prepared (and their DDP buffers)."""
    if active():
        accelerator().free_memory()


def backward(loss: torch.Tensor) -> None:
    """``loss.backward()``; ``accelerator.backward`` under several processes (DDP all-reduces)."""
    if active():
        accelerator().backward(loss)
    else:
        loss.backward()


def minibatch_share(rows: Sequence[T]) -> tuple[list[T], float]:
    """This process's contiguous share of a minibatch (accelerate's ``split_between_processes``) and
    the weight of its loss, ``len(share) · processes / len(rows)``, so that DDP's average of the
    weighted share losses is the row-weighted mean over the whole minibatch. A process left without
    rows (fewer rows than processes) runs the last row with weight 0: DDP needs every process."""
    rows = list(rows)
    if not active():
        return rows, 1.0
    with accelerator().split_between_processes(rows) as share:
        share = list(share)
    if not share:
        return rows[-1:], 0.0
    return share, len(share) * num_processes() / len(rows)


def strided_share(items: Sequence[T]) -> list[T]:
    """Every n-th item from this process's index: an even split of ordered work (evaluation batches
    sorted by length, calibration batches). Under FSDP every item: each forward pass is a collective
    of all processes, so they must all run the same batches."""
    if sharding() == "FSDP":
        return list(items)
    return list(items)[process_index() :: num_processes()]


def gather_object(obj: T) -> list[T]:
    """``[obj of process 0, obj of process 1, ...]`` (accelerate's ``gather_object``); ``[obj]`` alone."""
    if not active():
        return [obj]
    from accelerate.utils import gather_object as gather

    return gather([obj])


def gather_rows(answers: dict[int, str], n: int) -> list[str]:
    """The answers of rows ``0..n-1``, each computed by one process, gathered on every process."""
    merged: dict[int, str] = {}
    for part in gather_object(answers):
        merged.update(part)
    missing = sorted(set(range(n)) - set(merged))
    if missing:
        raise RuntimeError(f"no process answered rows {missing[:5]}")
    return [merged[i] for i in range(n)]


def weighted_mean(scores: dict[str, torch.Tensor], weight: float) -> dict[str, torch.Tensor]:
    """Σ_p weight_p · scores_p / Σ_p weight_p over processes (accelerate's ``reduce``, in float32),
    the same tensors on every process; ``scores`` unchanged in one process."""
    if not active():
        return scores
    from accelerate.utils import reduce

    dtypes = {name: s.dtype for name, s in scores.items()}
    total = reduce({name: s.float() * weight for name, s in scores.items()}, reduction="sum")
    weights = reduce(torch.tensor(float(weight), device=device("cpu")), reduction="sum")
    if float(weights) <= 0:
        raise ValueError("no process had data to measure the importance on")
    return {name: (s / weights).to(dtypes[name]) for name, s in total.items()}


def all_finite(loss: torch.Tensor) -> bool:
    """Whether the loss is finite on every process (so all processes stop together)."""
    finite = torch.isfinite(loss.detach())
    if not active():
        return bool(finite)
    from accelerate.utils import reduce

    return bool(reduce(finite.float().reshape(1), reduction="sum") == num_processes())


def launch_facts() -> dict[str, Any]:
    """What the run directory records about a multi-process launch (nothing in one process)."""
    if not active():
        return {}
    return {"processes": num_processes(), "distributed_type": accelerator().distributed_type.value}
