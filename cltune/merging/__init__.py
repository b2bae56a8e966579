"""Task vectors and model/adapter merging: pure functions on tensors and state dicts.

Every merge method has the shape ``merge(deltas, weights=None, **params) -> Tensor`` on one
parameter's task vectors; merged results are at least float32.
"""

from cltune.merging.dare import dare_linear_merge, dare_ties_merge
from cltune.merging.lora import (
    MergedLora,
    factorise_delta,
    lora_delta_weights,
    merge_lora_adapters,
    merge_lora_deltas,
)
from cltune.merging.lora_factors import merge_lora_factors
from cltune.merging.magnitude_prune import magnitude_prune_merge
from cltune.merging.registry import (
    MERGE_METHODS,
    MergeMethod,
    get_merge_method,
    merge_state_dicts,
    register_merge_method,
)
from cltune.merging.task_arithmetic import task_arithmetic_merge
from cltune.merging.task_vectors import apply_task_vector, task_vector
from cltune.merging.ties import ties_merge
from cltune.merging.tsv import tsv_merge
from cltune.merging.wise_ft import wise_ft_merge

__all__ = [
    "MERGE_METHODS",
    "MergeMethod",
    "MergedLora",
    "apply_task_vector",
    "dare_linear_merge",
    "dare_ties_merge",
    "factorise_delta",
    "get_merge_method",
    "lora_delta_weights",
    "magnitude_prune_merge",
    "merge_lora_adapters",
    "merge_lora_deltas",
    "merge_lora_factors",
    "merge_state_dicts",
    "register_merge_method",
    "task_arithmetic_merge",
    "task_vector",
    "tsv_merge",
    "ties_merge",
    "wise_ft_merge",
]
