"""Print the Markdown table of the README for finished runs: mean ± 95 % CI half-width over seeds.

    python scripts/readme_table.py runs/selective [runs/other ...] [--order naive,replay,...]

One row per strategy label (its non-default hyper-parameters included), strategies in ``--order``
first (as given to ``cltune run --strategies``), the rest in the order the runs are found; the
interval is Student-t over the seeds (:meth:`cltune.analysis.comparison.Comparison.summary`).
"""

from __future__ import annotations

import sys

import numpy as np

from cltune.analysis.comparison import compare_runs
from cltune.analysis.runs import find_runs

COLUMNS = {
    "mft": "MFT",
    "mfn": "final avg (MFN)",
    "bwt": "BWT",
    "general_change": "general Δ (F)",
    "harmonic": "H",
}


def cell(mean: float, low: float, high: float, n: int) -> str:
    if np.isnan(mean):
        return "–"
    text = f"{mean:.1f}".replace("-", "−")
    return text if n < 2 else f"{text} ± {(high - low) / 2:.1f}"


def main(args: list[str]) -> None:
    order = args[args.index("--order") + 1].split(",") if "--order" in args else []
    paths = [a for i, a in enumerate(args) if a != "--order" and (i == 0 or args[i - 1] != "--order")]
    comparison = compare_runs(find_runs(paths))
    summary = comparison.summary().set_index(["label", "metric"])
    seeds = sorted({run.seed for run in comparison.runs})
    print(f"seeds {','.join(map(str, seeds))}, mean ± 95 % CI half-width\n")
    print("| strategy | " + " | ".join(COLUMNS.values()) + " |")
    print("|:--|" + "--:|" * len(COLUMNS))
    rank = {name: i for i, name in enumerate(order)}
    labels = sorted(comparison.labels, key=lambda label: rank.get(label.split("(")[0], len(rank)))
    for label in labels:
        cells = [
            cell(*summary.loc[(label, metric), ["mean", "ci_low", "ci_high", "n"]]) for metric in COLUMNS
        ]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
