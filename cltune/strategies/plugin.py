"""Plugins: the mechanisms of a strategy, called on Avalanche's hook names in Avalanche's order."""

from __future__ import annotations

from typing import Any, ClassVar

# Training hooks in the order the template calls them (Avalanche's ``BaseSGDTemplate`` order),
# then the evaluation hooks. ``adapt_model`` is cltune's name for Avalanche's model-adaptation
# step: it runs before the optimizer is made, so a plugin may add or freeze parameters there.
TRAINING_HOOKS = (
    "adapt_model",
    "before_training_exp",
    "before_training_epoch",
    "before_training_iteration",
    "before_forward",
    "after_forward",
    "before_backward",
    "after_backward",
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

    A plugin with state that must survive a resume returns it from :meth:`state_dict`
    (JSON-able values or tensors) and takes it back in :meth:`load_state_dict`.

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


def _noop(self: Plugin, strategy: Any) -> None:
    return None


for _hook in HOOKS:
    setattr(Plugin, _hook, _noop)
