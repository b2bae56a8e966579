"""Compare saved runs from a script: metrics per run, mean ± 95% CI per strategy, paired tests,
and the forgetting matrix of each run.

    python analysis/compare_runs.py runs/            # a `cltune run --out` folder, or run directories
"""

from __future__ import annotations

import sys

import pandas as pd

from cltune.analysis import compare_runs, find_runs, forgetting_matrix

pd.set_option("display.width", 160)
pd.set_option("display.precision", 2)


def main(paths: list[str]) -> None:
    comparison = compare_runs(find_runs(paths))
    print(f"stream {comparison.stream!r}: {len(comparison.runs)} runs\n")
    print(
        comparison.per_run()[["label", "seed", "mft", "mfn", "bwt", "forgetting_chaudhry", "general_change"]]
    )

    summary = comparison.summary()
    key = summary[summary["metric"].isin(["mfn", "bwt", "general_change"])]
    print("\nmean and 95% confidence interval over seeds:")
    print(key.pivot(index="label", columns="metric", values=["mean", "ci_low", "ci_high"]))

    paired = comparison.paired(["mfn", "general_change"])
    print("\npaired t-tests on shared seeds (p is NaN with fewer than two seeds):")
    print(paired)

    for run in comparison.runs:
        forgetting = forgetting_matrix(run.matrix)["chaudhry"]
        frame = pd.DataFrame(forgetting, index=run.matrix.stages, columns=run.matrix.tasks)
        print(f"\n{run.name}: Chaudhry forgetting per stage and task")
        print(frame.dropna(how="all"))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
