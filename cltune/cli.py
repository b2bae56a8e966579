"""``cltune run | list``: the command line."""

from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_STRATEGIES = ("naive", "replay", "lora")
SUMMARY_COLUMNS = (("mft", "MFT"), ("mfn", "final avg"), ("bwt", "BWT"), ("general_change", "general Δ"))


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


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
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    sub.add_parser("list", help="show the built-in streams, strategies and models")
    return parser


def _summary_table(results: list) -> str:
    header = ["run", *[label for _, label in SUMMARY_COLUMNS]]
    lines = [header]
    for result in results:
        cells = [result.run_dir.name]
        for key, _ in SUMMARY_COLUMNS:
            value = result.metrics.get(key)
            cells.append("—" if value is None else f"{value:.1f}")
        lines.append(cells)
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in lines)


def command_run(args: argparse.Namespace) -> int:
    from cltune.data.recipe import build_stream, read_recipe
    from cltune.experiment import RunSpec, run_experiment
    from cltune.strategies.config import TrainConfig
    from cltune.strategies.registry import get_factory

    recipe = read_recipe(args.recipe)
    train_options = {**recipe.pop("train"), **{k: v for k, v in (kv.split("=", 1) for kv in args.train)}}
    train_options = {k: _parse_value(v) if isinstance(v, str) else v for k, v in train_options.items()}
    recipe_params = recipe.pop("strategy")
    cli_params = _parse_params(args.param)
    strategies = args.strategies.split(",") if args.strategies else list(DEFAULT_STRATEGIES)
    for name in [*strategies, *cli_params, *recipe_params]:
        get_factory(name)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [train_options.pop("seed", 0)]
    train_options.pop("seed", None)
    specs = [
        RunSpec(
            recipe=recipe,
            strategy=name,
            model=args.model,
            strategy_params={**recipe_params.get(name, {}), **cli_params.get(name, {})},
            train=TrainConfig.from_dict({**train_options, "seed": seed}),
        )
        for seed in seeds
        for name in strategies
    ]
    started = time.perf_counter()
    stream = build_stream(recipe)
    print(f"stream {stream.name!r}: tasks {stream.task_names}, general {stream.general_names}")
    zero_shot: dict = {}
    results = []
    for spec in specs:
        print(f"== {spec.run_name()}")
        results.append(run_experiment(spec, args.out, stream, zero_shot, progress=not args.quiet))
    print()
    print(_summary_table(results))
    print(f"\n{len(results)} run(s) in {Path(args.out)}/ ({time.perf_counter() - started:.0f} s)")
    return 0


def command_list(_: argparse.Namespace) -> int:
    from cltune.data.recipe import builtin_streams, read_recipe
    from cltune.models.loading import BUILTIN_MODELS
    from cltune.strategies.registry import strategy_defaults, strategy_description, strategy_names

    print("streams:")
    for name in builtin_streams():
        recipe = read_recipe(name)
        print(f"  {name:<16} {recipe['description'] or ''}")
    print("strategies:")
    for name in strategy_names():
        defaults = ", ".join(f"{k}={v!r}" for k, v in strategy_defaults(name).items())
        print(f"  {name:<16} {strategy_description(name)}" + (f" [{defaults}]" if defaults else ""))
    print("models:")
    for name, text in BUILTIN_MODELS.items():
        print(f"  {name:<16} {text}")
    print("  (or any Hugging Face image-text-to-text model: a local folder or a Hub id)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"run": command_run, "list": command_list}[args.command]
    try:
        return handler(args)
    except (ValueError, FileNotFoundError, OSError) as err:
        print(f"cltune: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
