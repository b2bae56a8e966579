"""``cltune run --launcher accelerate``: run the same command again under ``accelerate launch``.

The command is checked first (launcher, accelerate's configuration), so a bad one stops before
anything is written; then ``python -m accelerate.commands.launch ... -m cltune run <the same
arguments>`` runs in a subprocess, and its exit code is returned.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Sequence

from cltune import distributed
from cltune.utils import unknown_name_error

LAUNCHERS = ("none", "accelerate")
_LAUNCH_OPTIONS = ("--launcher", "--num-processes")


def accelerate_config_file() -> str:
    """Where ``accelerate launch`` looks for its default configuration (``$HF_HOME/accelerate/...``)."""
    from accelerate.commands.config.config_args import default_config_file

    return default_config_file


def check_launcher(launcher: str, num_processes: int | None) -> None:
    """A clear ValueError for an unknown launcher, a bad process count, or accelerate unconfigured."""
    if launcher not in LAUNCHERS:
        raise unknown_name_error("launcher", launcher, LAUNCHERS)
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"--num-processes must be a positive integer, got {num_processes}")
    if launcher == "none":
        if num_processes is not None:
            raise ValueError("--num-processes needs --launcher accelerate")
        return
    if distributed.active():
        raise ValueError(
            "--launcher accelerate inside a process that a launcher already started; drop --launcher"
        )
    if importlib.util.find_spec("accelerate") is None:
        raise ValueError("--launcher accelerate needs the accelerate package: pip install accelerate")
    if num_processes is None and not os.path.isfile(accelerate_config_file()):
        raise ValueError(
            f"--launcher accelerate: accelerate is not configured (no config file at "
            f"{accelerate_config_file()}); run `accelerate config` to write one, or pass --num-processes N "
            "(N processes on this machine, one GPU each, or gloo on the CPU)"
        )


def launch_arguments(num_processes: int | None) -> list[str]:
    """``accelerate launch`` options: the configuration file's, with ``num_processes`` overridden;
    without a configuration file, N local processes through torchrun on a free port."""
    if num_processes is None:
        return []
    if os.path.isfile(accelerate_config_file()):
        return ["--num_processes", str(num_processes)]
    return [
        *(["--multi_gpu"] if num_processes > 1 else []),
        "--num_processes",
        str(num_processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "0",
    ]


def without_launch_options(argv: Sequence[str]) -> list[str]:
    """``argv`` less ``--launcher X`` and ``--num-processes N`` (both ``--opt X`` and ``--opt=X``)."""
    kept: list[str] = []
    skip = False
    for item in argv:
        if skip:
            skip = False
        elif item in _LAUNCH_OPTIONS:
            skip = True
        elif not item.startswith(tuple(f"{option}=" for option in _LAUNCH_OPTIONS)):
            kept.append(item)
    return kept


def relaunch(argv: Sequence[str], num_processes: int | None) -> int:
    """Run ``cltune <argv>`` (launch options dropped) under ``accelerate launch``; its exit code."""
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *launch_arguments(num_processes),
        "-m",
        "cltune",
        *without_launch_options(argv),
    ]
    print("cltune: " + " ".join(command[2:]), flush=True)
    return subprocess.run(command, check=False).returncode
