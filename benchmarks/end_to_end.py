"""Wall time of the default ``cltune run`` (tiny model, default stream, its default strategies), by phase.

Runs the command exactly as a user types it (``python -m cltune run --out DIR``), by default with an
empty model cache so that pre-training the tiny model counts (``--cached`` reuses the cache), and
splits the wall time from what the run leaves behind:

- start-up: interpreter, imports, building the stream (until the first run starts loading the model);
- pre-training + loading the model: results.json ``timings.load_model_s`` of every run;
- training and evaluation: the ``train_s`` and ``eval_s`` of every stage (row 0 included);
- checkpoints and other run bookkeeping: the rest of each run (its events' start to finish);
- analyses: from the last run's end to the newest file under the runs' ``analysis/`` folders;
- report: from there to the end of the command (comparison table, figures, Markdown and HTML).

Run by hand (not by CI), on a quiet machine:
``python benchmarks/end_to_end.py --out reports/PERFORMANCE-e2e.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import emit, load_average, machine

TARGET_S = 300.0


def events(run_dir: Path) -> dict[str, float]:
    """The first time of each event in the run's events.jsonl."""
    times: dict[str, float] = {}
    for line in (run_dir / "events.jsonl").read_text().splitlines():
        record = json.loads(line)
        times.setdefault(record["event"], record["time"])
    return times


def phases(runs: Path, started: float, ended: float) -> dict[str, float]:
    run_dirs = sorted((p.parent for p in runs.glob("*/results.json")), key=lambda p: events(p)["start"])
    results = [json.loads((p / "results.json").read_text()) for p in run_dirs]
    load = sum(r["timings"]["load_model_s"] for r in results)
    train = sum(s["train_s"] for r in results for s in r["timings"]["stages"])
    evaluation = sum(s["eval_s"] for r in results for s in r["timings"]["stages"])
    spans = [(events(p)["start"], events(p)["finished"]) for p in run_dirs]
    bookkeeping = sum(end - start for start, end in spans) - train - evaluation
    analysed = max(
        (f.stat().st_mtime for p in run_dirs for f in (p / "analysis").rglob("*")), default=spans[-1][1]
    )
    first_load = results[0]["timings"]["load_model_s"]
    return {
        "start-up (imports, stream)": spans[0][0] - first_load - started,
        "pre-training + loading the model": load,
        "training": train,
        "evaluation": evaluation,
        "checkpoints, predictions, results": bookkeeping,
        "analyses": analysed - spans[-1][1],
        "report": ended - analysed,
        "between runs": sum(b[0] - a[1] for a, b in zip(spans, spans[1:], strict=False))
        - sum(r["timings"]["load_model_s"] for r in results[1:]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cached", action="store_true", help="reuse the tiny model's cache (no pre-training)"
    )
    parser.add_argument("--args", default="", help="extra arguments for cltune run (tests: a small recipe)")
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown section here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        env = dict(os.environ)
        if not args.cached:
            env["CLTUNE_CACHE"] = str(Path(folder) / "cache")
        runs = Path(folder) / "runs"
        command = [sys.executable, "-m", "cltune", "run", *args.args.split(), "--out", str(runs)]
        load_before = load_average()
        started = time.time()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        ended = time.time()
        if done.returncode != 0:
            sys.exit(f"cltune run failed:\n{done.stderr[-3000:]}")
        parts = phases(runs, started, ended)
    total = ended - started
    rows = "\n".join(
        f"| {name} | {seconds:.1f} | {100 * seconds / total:.0f} % |" for name, seconds in parts.items()
    )
    shown = " ".join(["cltune run", *args.args.split()])
    cache = "the tiny model's cache reused" if args.cached else "an empty model cache (pre-training included)"
    threads = os.environ.get("OMP_NUM_THREADS", "unset, torch's default")
    emit(
        [
            "## End to end: the default run",
            f"`{shown}` with {cache}, measured by `python benchmarks/end_to_end.py"
            f"{' --cached' if args.cached else ''}` on {machine()} (OMP_NUM_THREADS in the run: {threads}); "
            f"load average {load_before} before, {load_average()} after (1/5/15 min).",
            f"| phase | wall time (s) | share |\n|---|---:|---:|\n{rows}\n"
            f"| **total** | **{total:.1f}** | 100 % |",
            f"Target: under {TARGET_S:.0f} s — {'met' if total < TARGET_S else 'missed'} ({total:.0f} s).",
        ],
        args.out,
    )


if __name__ == "__main__":
    main()
