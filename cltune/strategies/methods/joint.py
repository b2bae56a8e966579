"""Joint training on the union of all tasks: the multitask upper bound."""

from cltune.strategies.registry import Preset, register


@register("joint")
def joint() -> Preset:
    """Train once on the union of every task's train split (multitask upper bound, not continual)."""
    return Preset(joint=True)
