"""Sequential fine-tuning of the chosen scope: the lower bound every method is compared with."""

from cltune.strategies.registry import Preset, register


@register("naive")
def naive() -> Preset:
    """Fine-tune the scope (language model by default) on each task in turn, nothing else."""
    return Preset()
