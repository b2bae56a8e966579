"""Plugins: the mechanisms of a strategy, called on Avalanche's hook names in Avalanche's order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from cltune.data.task import Task

# Training hooks in the order the template calls them (Avalanche's ``BaseSGDTemplate`` order),
# then the evaluation hooks. ``adapt_model`` is cltune's name for Avalanche's model-adaptation
# step: it runs before the optimizer is made, so a plugin may add or freeze parameters there.
# ``after_accumulation`` is cltune's too: once per optimizer update that will step, when ``.grad``
# holds the update's whole gradient, unscaled and not yet clipped (see the template).
TRAINING_HOOKS = (
    "adapt_model",
    "before_training_exp",
    "before_training_epoch",
    "before_training_iteration",
    "before_forward",
    "after_forward",
    "before_backward",
    "after_backward",
    "after_accumulation",
    "before_update",
    "after_update",
    "after_training_iteration",
    "after_training_epoch",
    "after_training_exp",
)
EVAL_HOOKS = ("before_eval", "before_eval_exp", "after_eval_exp", "after_eval")
HOOKS = TRAINING_HOOKS + EVAL_HOOKS


class Plugin:
    """Base class: every hook receives the strategy and does nothing unless overridden.

    Besides the hooks, a plugin may override the optional methods below; each has a neutral
    default, so callers call them on every plugin. A plugin with state that must survive a resume
    returns it from :meth:`state_dict` (JSON-able values or tensors) and takes it back in
    :meth:`load_state_dict`.

    ``full_parameters`` says why the plugin needs whole parameters (it reads or edits parameters,
    gradients or optimizer state by name, or changes the modules between experiences), or is None
    for a plugin that works when FSDP or DeepSpeed shards them; under those, cltune refuses a
    strategy with any plugin that needs them. A plugin that does not say is refused.
    """

    full_parameters: ClassVar[str | None] = "it does not declare that it works on sharded parameters"

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None

    def attach_tasks(self, tasks: Sequence[Task]) -> None:
        """Receive the stream's training tasks once, before any training or resume (e.g. for a replay
        buffer restored by name)."""
        return None

    def generation_kwargs(self, strategy: Any, task: Task, rows: list[int]) -> dict[str, Any]:
        """Extra ``model.generate`` (and forward) arguments for test rows ``rows`` of ``task``, e.g.
        PEFT's per-row ``adapter_names``; the default adds none."""
        return {}

    def eval_fingerprint(self, strategy: Any, task: Task) -> str | None:
        """The state outside the model's weights and ``generation_kwargs`` that changes the answers
        on ``task`` (hashed by :mod:`cltune.evaluation.reuse`), or None when there is none."""
        return None


def _noop(self: Plugin, strategy: Any) -> None:
    return None


for _hook in HOOKS:
    setattr(Plugin, _hook, _noop)
