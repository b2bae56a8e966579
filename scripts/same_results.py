"""Check that two folders of runs have bit-identical accuracy matrices and predictions.

    python scripts/same_results.py runs/before runs/after

For a restructuring that must not change behaviour: run the same ``cltune run`` (same seeds, same
``OMP_NUM_THREADS``) on both trees into two folders, then compare. Exits 1 if any run differs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def compare(before: Path, after: Path) -> int:
    differing = 0
    for run in sorted(p for p in before.iterdir() if (p / "results.json").is_file()):
        other = after / run.name
        if not (other / "results.json").is_file():
            print(f"{run.name:32s} missing in {after}")
            differing += 1
            continue
        same_matrix = (
            json.loads((run / "results.json").read_text())["matrix"]
            == json.loads((other / "results.json").read_text())["matrix"]
        )
        predictions = sorted(p.relative_to(run) for p in run.glob("predictions/*"))
        same_predictions = all(
            (other / p).is_file() and (run / p).read_bytes() == (other / p).read_bytes() for p in predictions
        )
        print(
            f"{run.name:32s} matrix {'identical' if same_matrix else 'DIFFERENT'}, "
            f"{len(predictions)} prediction files {'identical' if same_predictions else 'DIFFERENT'}"
        )
        differing += not (same_matrix and same_predictions)
    return int(differing > 0)


if __name__ == "__main__":
    sys.exit(compare(Path(sys.argv[1]), Path(sys.argv[2])))
