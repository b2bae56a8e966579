"""Functions users call from scripts on saved runs: CL metrics, forgetting, statistics."""

from cltune.analysis.forgetting import forgetting_matrix
from cltune.analysis.metrics import METRIC_DEFINITIONS, cl_metrics
from cltune.analysis.stats import aggregate, paired_test

__all__ = [
    "METRIC_DEFINITIONS",
    "aggregate",
    "cl_metrics",
    "forgetting_matrix",
    "paired_test",
]
