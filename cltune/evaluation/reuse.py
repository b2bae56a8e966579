"""Reuse a task's last evaluation when nothing that determines its answers has changed.

Greedy generation (and teacher-forced scoring) is a function of the model's weights, the task's
test rows and the generation settings. :func:`answer_fingerprint` hashes exactly these, as they
stand after the strategy's ``before_eval_exp`` hook (when the task's routing is set), so equal
fingerprints mean the same answers and a changed result is never skipped. It covers

- the task: name, test rows (the ``datasets`` fingerprint and length), and the training options
  (batch size, token budget, precision, device), the torch thread count (float sums), the encoder;
- the plugins' ``generation_kwargs`` for every test row (e.g. PEFT's per-row ``adapter_names``);
- the model's module types, configuration and generation configuration, and every parameter and
  buffer by name, dtype, shape and bytes — except the parameters of PEFT LoRA adapters that the task
  does not use: with per-row ``adapter_names`` the adapters named there, otherwise the active ones.
  The used adapters' names, ``r``, ``alpha``, ``scaling``, dropout and DoRA/rsLoRA flags are
  hashed, and every tuner layer's disabled and merged adapters (other PEFT tuners: all their
  parameters and active adapters).

Within one evaluation pass over the tasks (:meth:`EvalReuse.begin_pass`), a tensor is hashed once
and its digest reused for the later tasks while its storage and autograd version counter are
unchanged (:class:`TensorDigests`); every pass hashes every used tensor again, so a write that
bypasses the version counter (through ``.data``, as PEFT's merges do) between passes is seen.
A plugin must not write weights through ``.data`` between the tasks of one pass.

Anything outside these makes the fingerprint ``None``, so the task is always evaluated: a forward
hook (whose behaviour cannot be hashed) other than transformers' output recorders, or a generation
argument without a byte representation. A plugin that changes answers through other state must
return it from :meth:`~cltune.strategies.plugin.Plugin.eval_fingerprint`.

Under ``lora-isolation`` (frozen base, one adapter per task) a task's fingerprint changes only when
its own adapter is trained, so after the first stage each stage generates one task instead of all;
under ``naive`` every weight changes at every stage and nothing is reused.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from peft.tuners.lora import LoraLayer
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from cltune.adapters.bank import BASE
from cltune.data.task import Task
from cltune.evaluation.generate import plugin_generation_kwargs

T = TypeVar("T")
# Forward hooks known to record outputs without changing them (transformers adds them on first use).
RECORDING_HOOKS = {
    ("transformers.utils.output_capturing", "install_output_capuring_hook.<locals>.output_capturing_hook")
}
# LoraLayer settings per adapter that change its output (its weights are hashed as parameters).
_LORA_SETTINGS = ("r", "lora_alpha", "scaling", "use_dora", "use_rslora", "lora_bias")


class Unhashable(TypeError):
    """A value that enters generation but has no stable byte representation."""


def _update(digest: Any, value: Any) -> None:
    """Feed ``value`` (tensors, containers and plain scalars) into ``digest``, unambiguously."""
    if isinstance(value, torch.Tensor):
        flat = value.detach().reshape(-1).contiguous().cpu()
        digest.update(f"T{flat.dtype}{tuple(value.shape)}:".encode())
        digest.update(flat.view(torch.uint8).numpy().data)
    elif isinstance(value, dict):
        digest.update(b"{")
        for key in sorted(value, key=str):
            _update(digest, str(key))
            _update(digest, value[key])
        digest.update(b"}")
    elif isinstance(value, list | tuple):
        digest.update(f"[{len(value)}".encode())
        for item in value:
            _update(digest, item)
        digest.update(b"]")
    elif value is None or isinstance(value, str | int | float | bool | torch.dtype | torch.device):
        digest.update(f"{type(value).__name__}:{value!r};".encode())
    else:
        raise Unhashable(f"cannot fingerprint a {type(value).__name__}")


def _hook_id(hook: Any) -> tuple[str | None, str | None]:
    function = getattr(hook, "__func__", hook)
    return getattr(function, "__module__", None), getattr(function, "__qualname__", None)


def _has_unknown_hooks(model: nn.Module) -> bool:
    """Whether a forward (pre-)hook other than :data:`RECORDING_HOOKS` sits on ``model`` or globally."""
    tables = [nn.modules.module._global_forward_hooks, nn.modules.module._global_forward_pre_hooks]
    tables += [t for m in model.modules() for t in (m._forward_hooks, m._forward_pre_hooks)]
    return any(_hook_id(hook) not in RECORDING_HOOKS for table in tables for hook in table.values())


def _used_adapters(layer: BaseTunerLayer, kwargs: dict[str, Any]) -> set[str]:
    if "adapter_names" in kwargs:
        return set(kwargs["adapter_names"]) - {BASE}
    return set(layer.active_adapters)


def _unused_prefixes(model: nn.Module, kwargs: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """Module-name prefixes of LoRA adapters the task does not use, and the tuner layers' settings."""
    unused: list[str] = []
    settings: dict[str, Any] = {}
    for name, module in model.named_modules():
        if not isinstance(module, BaseTunerLayer):
            continue
        state: dict[str, Any] = {"disabled": module.disable_adapters, "merged": list(module.merged_adapters)}
        if not isinstance(module, LoraLayer):
            state["active"] = list(module.active_adapters)
        else:
            used = _used_adapters(module, kwargs)
            for attr in (*module.adapter_layer_names, *module.other_param_names):
                container = getattr(module, attr, None)
                if isinstance(container, nn.ModuleDict | nn.ParameterDict):
                    unused += [f"{name}.{attr}.{key}" for key in container if key not in used]
            for adapter in sorted(used):
                values = {s: getattr(module, s, None) for s in _LORA_SETTINGS}
                state[adapter] = {s: v.get(adapter) if isinstance(v, dict) else v for s, v in values.items()}
                state[adapter]["dropout"] = repr(dict(module.lora_dropout).get(adapter))
        settings[name] = state
    return unused, settings


@dataclass
class TensorDigests:
    """Digests of named tensors for one evaluation pass; ``hashed`` counts the tensors hashed.

    A tensor is hashed again only when its storage, layout or version counter changed since (an
    optimizer step or any in-place op under ``no_grad`` bumps the counter; a write through
    ``.data`` does not, hence one instance per pass).
    """

    seen: dict[str, tuple[tuple, bytes]] = field(default_factory=dict)
    hashed: int = 0

    def digest(self, name: str, tensor: torch.Tensor) -> bytes:
        state = (tensor.data_ptr(), tensor._version, tensor.dtype, tuple(tensor.shape), tensor.stride())
        stored = self.seen.get(name)
        if stored is not None and stored[0] == state:
            return stored[1]
        digest = hashlib.blake2b(digest_size=32)
        _update(digest, tensor)
        self.seen[name] = (state, digest.digest())
        self.hashed += 1
        return self.seen[name][1]


def answer_fingerprint(strategy, task: Task, tensors: TensorDigests | None = None) -> str | None:
    """A digest of everything that determines ``task``'s greedy answers now (module docstring);
    None when the model has forward hooks or a generation argument cannot be hashed.

    ``tensors``: the pass's tensor digests, shared by the tasks of one pass (a fresh one if None).
    """
    model = strategy.model
    if _has_unknown_hooks(model):
        return None
    digest = hashlib.blake2b(digest_size=32)
    rows = list(range(len(task.test)))
    kwargs = plugin_generation_kwargs(strategy, task, rows)
    try:
        _update(
            digest,
            {
                "task": [task.name, len(task.test), getattr(task.test, "_fingerprint", None)],
                "train": json.dumps(strategy.config.to_dict(), sort_keys=True, default=str),
                "threads": torch.get_num_threads(),
                "encoder": [id(strategy.encoder), strategy.encoder.pad_id],
                "generation_kwargs": kwargs,
                "plugins": [
                    fingerprint
                    for p in strategy.plugins
                    if (fingerprint := p.eval_fingerprint(strategy, task)) is not None
                ],
            },
        )
    except Unhashable:
        return None
    unused, settings = _unused_prefixes(model, kwargs)
    unused_set, unused_children = set(unused), tuple(p + "." for p in unused)

    def used(name: str) -> bool:
        return name not in unused_set and not name.startswith(unused_children)

    config = getattr(model, "config", None)
    generation = getattr(model, "generation_config", None)
    _update(
        digest,
        {
            "modules": [f"{n}:{type(m).__qualname__}" for n, m in model.named_modules() if used(n)],
            "config": config.to_json_string() if hasattr(config, "to_json_string") else repr(config),
            "generation": generation.to_json_string() if hasattr(generation, "to_json_string") else None,
            "tuner_layers": settings,
        },
    )
    tensors = tensors if tensors is not None else TensorDigests()
    for kind, named in (("p", model.named_parameters()), ("b", model.named_buffers())):
        for name, tensor in named:
            if used(name):
                _update(digest, f"{kind}:{name}")
                digest.update(tensors.digest(f"{kind}:{name}", tensor))
    return digest.hexdigest()


@dataclass
class EvalReuse:
    """Per task, the result of its last evaluation and the fingerprint it was computed under.

    One instance serves one run: :meth:`result` computes a task only when its fingerprint differs
    from the stored one. ``computed``/``reused`` count evaluations; ``reused_by_stage`` names the
    reused tasks per training stage (the strategy's experience index).
    """

    last: dict[str, tuple[str, Any]] = field(default_factory=dict)
    computed: int = 0
    reused: int = 0
    reused_by_stage: dict[str, list[str]] = field(default_factory=dict)
    tensors: TensorDigests = field(default_factory=TensorDigests)

    def begin_pass(self) -> None:
        """Start a pass over the tasks: every tensor is hashed again (module docstring)."""
        self.tensors = TensorDigests()

    def result(self, strategy, task: Task, compute: Callable[[], T]) -> T:
        """``compute()``'s result for ``task``, or the stored one when the fingerprint is unchanged
        (call it after ``before_eval_exp``)."""
        key = answer_fingerprint(strategy, task, self.tensors)
        stored = self.last.get(task.name)
        if key is not None and stored is not None and stored[0] == key:
            self.reused += 1
            stage = str(getattr(strategy.experience, "index", 0))
            self.reused_by_stage.setdefault(stage, []).append(task.name)
            return copy.deepcopy(stored[1])
        value = compute()
        self.computed += 1
        if key is not None:
            self.last[task.name] = (key, copy.deepcopy(value))
        return value

    def summary(self) -> dict[str, Any]:
        """Counts for results.json: computed and reused evaluations, reused tasks per stage."""
        return {"computed": self.computed, "reused": self.reused, "reused_by_stage": self.reused_by_stage}
