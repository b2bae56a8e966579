"""Training options shared by every strategy."""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, fields
from typing import Any

from cltune.utils import unknown_name_error

LR_SCHEDULES = ("constant", "linear", "cosine")
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class TrainConfig:
    """How each experience is trained and each task evaluated.

    ``max_steps`` (optimizer updates per experience) overrides ``epochs`` when set. A fresh
    AdamW is made for every experience (Avalanche's default), so no optimizer state crosses tasks;
    its learning rate follows ``lr_schedule`` (``constant``, ``linear`` or ``cosine`` decay to 0
    over the experience) after ``warmup_steps`` of linear warm-up, restarted per experience.
    ``precision="bf16"`` runs forward passes (training, generation and scoring) under bfloat16
    autocast, weights and optimizer state staying fp32; ``precision="fp16"`` under float16 autocast,
    with the loss scaled against gradient underflow (:class:`torch.amp.GradScaler`, see
    :meth:`cltune.strategies.template.Template.make_scaler`); ``gradient_checkpointing``
    recomputes activations in backward instead of keeping them (Hugging Face models);
    ``feature_memo`` memoises the vision tower's outputs per image whenever that cannot change them
    (:mod:`cltune.models.feature_cache`), ``False`` runs every image through the tower.
    """

    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.0
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0
    scope: str = "language_model"
    eval_batch_size: int = 64
    max_new_tokens: int = 32
    seed: int = 0
    device: str = "auto"
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    precision: str = "fp32"
    gradient_checkpointing: bool = False
    feature_memo: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum", "eval_batch_size", "max_new_tokens"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"training option {name} must be a positive integer, got {value!r}")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            raise ValueError(f"training option max_steps must be a positive integer, got {self.max_steps!r}")
        for name in ("lr", "weight_decay", "max_grad_norm"):
            value = getattr(self, name)
            if not (value is None and name == "max_grad_norm") and not _is_number(value):
                raise ValueError(f"training option {name} must be a number, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"training option lr must be positive, got {self.lr!r}")
        if self.weight_decay < 0 or (self.max_grad_norm is not None and self.max_grad_norm <= 0):
            raise ValueError(
                "training options weight_decay must be >= 0 and max_grad_norm > 0 (or None), got "
                f"{self.weight_decay!r} and {self.max_grad_norm!r}"
            )
        for name in ("scope", "device"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"training option {name} must be a string, got {getattr(self, name)!r}")
        if not _is_int(self.seed):
            raise ValueError(f"training option seed must be an integer, got {self.seed!r}")
        if not _is_int(self.warmup_steps) or self.warmup_steps < 0:
            raise ValueError(
                f"training option warmup_steps must be an integer >= 0, got {self.warmup_steps!r}"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"training option lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(f"training option precision must be one of {PRECISIONS}, got {self.precision!r}")
        for name in ("gradient_checkpointing", "feature_memo"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"training option {name} must be true or false, got {getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        for key in options:
            if key not in known:
                raise unknown_name_error("training option", key, known)
        return cls(**options)

    def planned_updates(self, n_rows: int) -> tuple[int, int]:
        """(epochs, optimizer updates) for an experience of ``n_rows`` training rows."""
        per_epoch = max(1, math.ceil(n_rows / self.batch_size) // self.grad_accum)
        if self.max_steps is None:
            return self.epochs, per_epoch * self.epochs
        return math.ceil(self.max_steps / per_epoch), self.max_steps

    def check_precision(self, device: str) -> None:
        """Refuse bf16 on a CUDA device without bfloat16 support, and fp16 on a device type whose
        autocast or GradScaler does not take float16 in this torch, naming the fix."""
        import torch

        if self.precision == "bf16" and device.startswith("cuda") and not torch.cuda.is_bf16_supported():
            raise ValueError(
                f"precision='bf16' is not supported on {torch.cuda.get_device_name()}; use 'fp16' or 'fp32'"
            )
        if self.precision == "fp16":
            kind = torch.device(device).type
            with warnings.catch_warnings(record=True) as caught:  # torch warns and disables itself
                warnings.simplefilter("always")
                try:
                    with torch.autocast(kind, dtype=torch.float16):
                        problem = "" if torch.is_autocast_enabled(kind) else "autocast stays disabled"
                    torch.amp.GradScaler(kind)
                except RuntimeError as err:
                    problem = str(err)
            problem = "; ".join([problem, *(str(w.message) for w in caught)]).strip("; ")
            if problem:
                raise ValueError(
                    f"precision='fp16' does not run on the device {device!r} with torch {torch.__version__} "
                    f"({problem}); use precision='bf16' or 'fp32'"
                )

    def check_device(self) -> None:
        """Refuse a ``device`` this machine does not have (call it before loading a model), naming
        the devices it has."""
        import torch

        have = machine_devices()
        try:
            device = torch.device(self.resolved_device())
        except RuntimeError as err:
            raise ValueError(
                f"training option device={self.device!r} is not a device ({err}); this machine has "
                f"{', '.join(have)} (or use device=auto)"
            ) from None
        kinds = {name.partition(":")[0] for name in have}
        if (
            device.type != "cpu"
            and str(device) not in have
            and not (device.index is None and device.type in kinds)
        ):
            raise ValueError(
                f"training option device={self.device!r}: this machine has no such device; it has "
                f"{', '.join(have)} (or use device=auto)"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def resolved_device(self) -> str:
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device


def machine_devices() -> list[str]:
    """The torch devices of this machine: ``cpu``, then ``cuda:N`` (and ``mps``, ``xpu:N``) that exist."""
    import torch

    devices = ["cpu"]
    for kind in ("cuda", "xpu"):
        backend = getattr(torch, kind, None)
        if backend is not None and backend.is_available():
            devices += [f"{kind}:{i}" for i in range(backend.device_count())]
    if torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
