"""Functions users call from scripts on saved runs: CL metrics, forgetting, statistics, run
tables, importance maps, weight and representation drift, mask overlap."""

from cltune.analysis.artefacts import (
    ANALYSES,
    analyze_run,
    read_importance_maps,
    read_masks,
    read_representation_drift,
    read_weight_drift,
)
from cltune.analysis.batches import task_batches
from cltune.analysis.comparison import LOWER_IS_BETTER, Comparison, compare_runs
from cltune.analysis.drift import (
    drift_by,
    effective_weights,
    hidden_states,
    linear_cka,
    representation_drift,
    weight_drift,
)
from cltune.analysis.forgetting import forgetting_matrix
from cltune.analysis.importance_map import ImportanceMap, importance_map
from cltune.analysis.metrics import METRIC_DEFINITIONS, cl_metrics
from cltune.analysis.overlap import importance_masks, mask_overlap
from cltune.analysis.runs import (
    Run,
    RunDirectoryError,
    StreamMismatchError,
    find_runs,
    load_run,
)
from cltune.analysis.stats import aggregate, paired_test

__all__ = [
    "ANALYSES",
    "LOWER_IS_BETTER",
    "METRIC_DEFINITIONS",
    "Comparison",
    "ImportanceMap",
    "Run",
    "RunDirectoryError",
    "StreamMismatchError",
    "aggregate",
    "analyze_run",
    "cl_metrics",
    "compare_runs",
    "drift_by",
    "effective_weights",
    "find_runs",
    "forgetting_matrix",
    "hidden_states",
    "importance_map",
    "importance_masks",
    "linear_cka",
    "load_run",
    "mask_overlap",
    "paired_test",
    "read_importance_maps",
    "read_masks",
    "read_representation_drift",
    "read_weight_drift",
    "representation_drift",
    "task_batches",
    "weight_drift",
]
