"""``cltune run | report | analyze | list | data check``: the command line."""

from __future__ import annotations

import argparse
import ast
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cltune.analysis.artefacts import ANALYSES

if TYPE_CHECKING:
    from cltune.experiment import RunSpec

DEFAULT_STRATEGIES = ("naive", "replay", "lora")
SUMMARY_METRICS = ("mft", "mfn", "bwt", "forgetting_chaudhry", "general_change")


def _parse_value(text: str) -> Any:
    """A TOML value (``true``, ``1e-3``, ``["a", "b"]``), else a Python literal (``None``), else the text."""
    from cltune.data.recipe import tomllib  # tomli before Python 3.11

    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _parse_settings(items: list[str]) -> dict[str, Any]:
    """``--set lr=1e-3`` → {"lr": 0.001}."""
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE, e.g. lr=1e-3")
        settings[key] = _parse_value(value)
    return settings


def _parse_params(items: list[str]) -> dict[str, dict[str, Any]]:
    """``--param replay.buffer_size=100`` → {"replay": {"buffer_size": 100}}."""
    params: dict[str, dict[str, Any]] = {}
    for item in items:
        name, sep, value = item.partition("=")
        strategy, dot, key = name.partition(".")
        if not sep or not dot:
            raise ValueError(f"--param {item!r}: expected STRATEGY.KEY=VALUE, e.g. replay.buffer_size=100")
        params.setdefault(strategy, {})[key] = _parse_value(value)
    return params


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cltune", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train strategies through a stream; write run directories")
    run.add_argument(
        "recipe",
        nargs="?",
        default=None,
        help="stream recipe (TOML file or built-in name; default: the default stream)",
    )
    run.add_argument(
        "--strategies",
        default=None,
        help=f"comma-separated strategy names (default: {','.join(DEFAULT_STRATEGIES)})",
    )
    run.add_argument("--model", default="tiny", help="built-in model, local folder or Hub id (default: tiny)")
    run.add_argument("--out", default="runs", help="folder for the run directories (default: runs)")
    run.add_argument("--seeds", default=None, help="comma-separated seeds; each strategy runs once per seed")
    run.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="STRATEGY.KEY=VALUE",
        help="a strategy hyper-parameter, e.g. replay.buffer_size=100 (repeatable)",
    )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="train",
        help="a training option, e.g. lr=1e-3, epochs=2, max_steps=50, scope=all (repeatable)",
    )
    run.add_argument(
        "--loggers",
        default=None,
        help="comma-separated loggers of training loss, accuracy rows and metrics: csv, tensorboard, "
        "wandb (default: the recipe's [train] loggers, else none)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument(
        "--launcher",
        default="none",
        help="none (this process) or accelerate: run again under `accelerate launch` (DDP on several "
        "processes; its config from `accelerate config`, or --num-processes) (default: none)",
    )
    run.add_argument(
        "--num-processes",
        type=int,
        default=None,
        metavar="N",
        help="with --launcher accelerate: N processes on this machine (overrides accelerate's config)",
    )
    _add_analysis_options(run, "analyses of every run before the report", default=",".join(ANALYSES))
    run.add_argument("--no-report", action="store_true", help="do not write <out>/report/")

    report = sub.add_parser("report", help="write report.md and report.html of finished runs")
    report.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories, or folders of them")
    report.add_argument(
        "--out",
        default=None,
        help="folder for report.md, report.html and figures/ (default: report/ beside the runs)",
    )
    report.add_argument("--formats", default="md,html", help="comma-separated: md, html (default: md,html)")
    report.add_argument(
        "--mask-ratio",
        type=float,
        default=0.05,
        help="share of top-importance entries per tensor that form a task's mask (default: 0.05)",
    )

    analyze = sub.add_parser(
        "analyze", help="weight drift, representation drift and importance maps of runs vs their base model"
    )
    analyze.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories, or folders of them")
    _add_analysis_options(analyze, "analyses to compute", default=",".join(ANALYSES))
    for command in (report, analyze):
        command.add_argument("--quiet", action="store_true", help="no progress bars")
    listing = sub.add_parser("list", help="show the streams, strategies (built-in and others) and models")
    data = sub.add_parser("data", help="check the data of a stream recipe")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    check = data_sub.add_parser(
        "check",
        help="counts, load errors, train/test and cross-task leakage, answers outside label sets; "
        "exits 1 on errors",
    )
    check.add_argument("recipe", help="stream recipe (TOML file or built-in name)")
    check.add_argument(
        "--all-rows", action="store_true", help="check every row, not only the recipe's train_size/test_size"
    )
    for command in (run, analyze, listing):
        command.add_argument(
            "--plugins",
            action="append",
            default=[],
            metavar="FILE",
            help="a Python file that registers strategies with @cltune.register (repeatable)",
        )
    return parser


def _add_analysis_options(parser: argparse.ArgumentParser, what: str, default: str) -> None:
    parser.add_argument(
        "--analyze",
        default=default,
        metavar="LIST",
        help=f"{what}, comma-separated from {', '.join(ANALYSES)}, or 'none' (default: {default})",
    )
    parser.add_argument(
        "--method", default="gradient", help="importance measure for the importance maps (default: gradient)"
    )
    parser.add_argument(
        "--examples", type=int, default=32, help="rows per task the analyses run the model on (default: 32)"
    )


def _parse_seeds(text: str) -> list[int]:
    """``--seeds 0,1,2`` → [0, 1, 2]; a clear error for anything else."""
    parts = [p.strip() for p in text.split(",")]
    if not all(p.lstrip("-").isdigit() for p in parts):
        raise ValueError(f"--seeds {text!r}: expected comma-separated integers, e.g. --seeds 0,1,2")
    seeds = [int(p) for p in parts]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text!r}: a seed is repeated; give each seed once")
    return seeds


def _analyses(args: argparse.Namespace) -> list[str]:
    """The analyses asked for, checked before any work starts."""
    from cltune.selective.importance import get_importance

    text = args.analyze.strip()
    chosen = [] if text == "none" else [a.strip() for a in text.split(",") if a.strip()]
    for name in chosen:
        if name not in ANALYSES:
            raise ValueError(
                f"--analyze: unknown analysis {name!r}; choose from {', '.join(ANALYSES)} or none"
            )
    if "importance" in chosen:
        get_importance(args.method)
    if args.examples < 1:
        raise ValueError(f"--examples must be a positive integer, got {args.examples}")
    return chosen


def _analyze(
    run_dirs: list[Path],
    what: list[str],
    method: str,
    examples: int,
    strict: bool = True,
    progress: bool = True,
) -> None:
    """Compute the analyses of each run into <run>/analysis/ (base models are loaded once), with
    progress bars unless ``progress`` is False.

    With ``strict=False`` (at the end of ``cltune run``) a run that cannot be analysed is reported
    on stderr and skipped, so the report is still written (its figures then say what is missing).
    """
    from cltune.analysis import analyze_run, load_run
    from cltune.experiment import load_trained_model
    from cltune.models.loading import load_model

    bases: dict[tuple, Any] = {}
    for path in run_dirs:
        run = load_run(path)
        try:
            try:
                tuned, processor, stream = load_trained_model(run.path)
            except RuntimeError as err:
                raise ValueError(f"run {run.path}: cannot rebuild its trained model ({err})") from err
            key = (run.model, stream.name, tuple(stream.general_names), stream.seed)
            if key not in bases:
                base = load_model(
                    run.model, pretrain_tasks=stream.general, seed=stream.seed, progress=progress
                )
                bases[key] = base[0].eval()
            started = time.perf_counter()
            written = analyze_run(
                run,
                bases[key],
                tuned,
                processor,
                stream,
                what=what,
                method=method,
                n_examples=examples,
                progress=progress,
            )
        except (ValueError, OSError) as err:
            if strict:
                raise
            print(f"cltune: warning: {run.name} not analysed: {err}", file=sys.stderr)
            continue
        names = ", ".join(p.name for p in written)
        print(f"analysed {run.name} ({time.perf_counter() - started:.0f} s): {names}")


def _print_comparison(run_dirs: list[Path]) -> None:
    from cltune.analysis import compare_runs
    from cltune.reports.render import text_table
    from cltune.reports.tables import comparison_table

    print(text_table(comparison_table(compare_runs(run_dirs), SUMMARY_METRICS)))
    print("(* best in its column)")


def _plan_runs(args: argparse.Namespace) -> list[RunSpec]:
    """The run specs of ``cltune run``, every input checked (nothing is written)."""
    from cltune.data.recipe import read_recipe
    from cltune.experiment import RunSpec
    from cltune.strategies.registry import build_preset, get_factory

    recipe = read_recipe(args.recipe)
    train_options = _parse_settings(args.train)
    cli_params = _parse_params(args.param)
    strategies = args.strategies.split(",") if args.strategies else list(DEFAULT_STRATEGIES)
    for name in [*strategies, *cli_params, *recipe["strategy"]]:
        get_factory(name)
    repeated = sorted({name for name in strategies if strategies.count(name) > 1})
    if repeated:
        raise ValueError(f"--strategies: {', '.join(repeated)} given more than once; give each strategy once")
    seeds = (
        _parse_seeds(args.seeds)
        if args.seeds
        else [train_options.pop("seed", recipe["train"].get("seed", 0))]
    )
    train_options.pop("seed", None)
    loggers = args.loggers if args.loggers is not None else train_options.pop("loggers", None)
    specs = [
        RunSpec.from_recipe(recipe, name, args.model, cli_params.get(name), seed, loggers, **train_options)
        for seed in seeds
        for name in strategies
    ]
    # Strategy parameters out of range, a device this machine lacks: errors before any work.
    for spec in specs:
        build_preset(spec.strategy, **spec.strategy_params)
        spec.train.check_device()
    return specs


def command_run(args: argparse.Namespace) -> int:
    from cltune import distributed
    from cltune.data.recipe import build_stream
    from cltune.experiment import InvocationCache, run_experiment
    from cltune.launch import check_launcher, relaunch
    from cltune.rundir import WRITABLE_FIX
    from cltune.utils import ensure_writable_dir

    check_launcher(args.launcher, args.num_processes)
    specs = _plan_runs(args)
    started = time.perf_counter()
    analyses = _analyses(args)
    distributed.init(specs[0].train.resolved_device())
    main = distributed.is_main_process()  # under accelerate launch, only the main process writes and prints
    if main:
        ensure_writable_dir(args.out, "the output folder", WRITABLE_FIX)
    if args.launcher == "accelerate":
        return relaunch(args.argv, args.num_processes)
    with distributed.main_process_first():
        stream = build_stream(specs[0].recipe)
    if main:
        print(f"stream {stream.name!r}: tasks {stream.task_names}, general {stream.general_names}")
    shared = InvocationCache()
    results = []
    for spec in specs:
        if main:
            print(f"== {spec.run_name()}")
        results.append(run_experiment(spec, args.out, stream, shared, progress=not args.quiet))
    if not main:
        return 0
    run_dirs = [result.run_dir for result in results]
    if analyses:
        _analyze(run_dirs, analyses, args.method, args.examples, strict=False, progress=not args.quiet)
    print()
    _print_comparison(run_dirs)
    print(f"\n{len(results)} run(s) in {Path(args.out)}/ ({time.perf_counter() - started:.0f} s)")
    if not args.no_report:
        from cltune.reports import write_report

        written = write_report(run_dirs, Path(args.out) / "report", progress=not args.quiet)
        print(f"report: {written.get('html')} and {written.get('md')}")
    return 0


def command_report(args: argparse.Namespace) -> int:
    from cltune.analysis import find_runs
    from cltune.reports import write_report
    from cltune.rundir import default_report_dir

    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    run_dirs = find_runs(args.runs)
    out = default_report_dir(run_dirs) if args.out is None else args.out
    written = write_report(run_dirs, out, formats, args.mask_ratio, progress=not args.quiet)
    print(f"report of {len(run_dirs)} run(s):")
    for path in written.values():
        print(f"  {path}")
    return 0


def command_analyze(args: argparse.Namespace) -> int:
    from cltune.analysis import find_runs

    analyses = _analyses(args)
    if not analyses:
        raise ValueError("--analyze none: nothing to do; choose from " + ", ".join(ANALYSES))
    _analyze(find_runs(args.runs), analyses, args.method, args.examples, progress=not args.quiet)
    return 0


def command_list(_: argparse.Namespace) -> int:
    from cltune.data.recipe import builtin_streams, read_recipe
    from cltune.models.loading import BUILTIN_MODELS
    from cltune.strategies.registry import (
        BUILTIN,
        sharded_strategies,
        strategy_defaults,
        strategy_description,
        strategy_names,
        strategy_origin,
    )

    print("streams:")
    for name in builtin_streams():
        recipe = read_recipe(name)
        print(f"  {name:<16} {recipe['description'] or ''}")
    print("strategies:")
    for name in strategy_names():
        defaults = ", ".join(f"{k}={v!r}" for k, v in strategy_defaults(name).items())
        origin = strategy_origin(name)
        print(
            f"  {name:<16} {strategy_description(name)}"
            + (f" [{defaults}]" if defaults else "")
            + (f" (from {origin})" if origin != BUILTIN else "")
        )
    print(f"  (running sharded, under FSDP2 or DeepSpeed ZeRO-1/2: {', '.join(sharded_strategies())})")
    print("models:")
    for name, text in BUILTIN_MODELS.items():
        print(f"  {name:<16} {text}")
    print("  (or any Hugging Face image-text-to-text model: a local folder or a Hub id)")
    return 0


def command_data(args: argparse.Namespace) -> int:
    from cltune.data.check import check_recipe
    from cltune.reports.render import text_table
    from cltune.reports.tables import Cell, Table

    report = check_recipe(args.recipe, all_rows=args.all_rows)
    header = ["task", "role", "split", "rows", "images", "questions"]
    rows = [
        [Cell(str(v)) for v in (c.task, c.role, c.split, c.rows, c.images, c.questions)]
        for c in report.counts
    ]
    print(f"stream {report.stream}:")
    print(text_table(Table(header, rows)))
    for title, findings in (("errors", report.errors), ("warnings", report.warnings)):
        print(f"\n{title} ({len(findings)}):")
        for finding in findings:
            print(f"  {finding.task}: {finding.message}")
    verdict = "FAILED" if report.errors else "passed"
    print(f"\ndata check {verdict}: {len(report.errors)} errors, {len(report.warnings)} warnings")
    return 1 if report.errors else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # for --launcher accelerate, which runs the same command again
    handler = {
        "run": command_run,
        "report": command_report,
        "analyze": command_analyze,
        "list": command_list,
        "data": command_data,
    }[args.command]
    try:
        with _quiet_libraries(getattr(args, "quiet", False)):
            _load_strategy_files(getattr(args, "plugins", []))
            return handler(args)
    except (ValueError, OSError, FloatingPointError) as err:  # FloatingPointError: a NaN/inf loss
        print(f"cltune: error: {err}", file=sys.stderr)
        return 2


def _load_strategy_files(paths: list[str]) -> None:
    """``--plugins FILE``: register the strategies of each file."""
    if not paths:
        return
    from cltune.strategies.registry import load_strategy_file

    for path in paths:
        load_strategy_file(path)


@contextmanager
def _quiet_libraries(quiet: bool) -> Iterator[None]:
    """With ``--quiet``, also no Hugging Face progress bars (transformers' "Loading weights",
    datasets' "Map"), restored after."""
    if not quiet:
        yield
        return
    import datasets
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if enabled[0]:
            hf_logging.enable_progress_bar()
        if enabled[1]:
            datasets.enable_progress_bars()


if __name__ == "__main__":
    sys.exit(main())
