"""Helpers the benchmark scripts share: the machine's description, interleaving, memory, the tiny model."""

from __future__ import annotations

import ctypes
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch

from cltune.utils import cpu_description

T = TypeVar("T")


def machine() -> str:
    """CPU model and kernels, cores, torch version and threads: what absolute numbers were measured on."""
    return (
        f"{cpu_description()}, {os.cpu_count()} cores ({platform.system()} {platform.machine()}), "
        f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s)"
    )


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages (other work on the machine skews absolute numbers)."""
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def emit(sections: Sequence[str], out: Path | None) -> None:
    """Print the Markdown ``sections`` of a benchmark's report, and write them to ``out`` if given."""
    text = "\n\n".join(sections)
    print(text)
    if out:
        out.write_text(text + "\n")


def rotated(names: Sequence[T], rep: int) -> list[T]:
    """``names`` started at position ``rep``: each repetition runs the competitors in another order."""
    k = rep % len(names)
    return [*names[k:], *names[:k]]


class StepClock:
    """CPU and wall time at the start of every training iteration; a step is the gap to the next."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, float]] = []

    def tick(self) -> None:
        self.marks.append((time.process_time(), time.perf_counter()))

    def steps(self, warmup: int) -> tuple[list[float], list[float]]:
        """(CPU, wall) seconds of each step after the first ``warmup`` ones."""
        gaps = list(zip(self.marks, self.marks[1:], strict=False))[warmup:]
        return [b[0] - a[0] for a, b in gaps], [b[1] - a[1] for a, b in gaps]


def serve_large_blocks_by_mmap() -> None:
    """glibc: every allocation over 64 KiB gets its own mapping, returned to the OS when freed."""
    libc = ctypes.CDLL("libc.so.6")
    m_mmap_threshold = -3
    libc.mallopt(m_mmap_threshold, 64 * 1024)


def rss_bytes(field: str = "VmRSS") -> int:
    """The process's resident memory (``VmHWM``: its peak since :func:`reset_peak`), Linux only."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def pretrained_tiny() -> tuple[Any, Any, Any]:
    """``(stream, model, encoder)``: the default stream and its pre-trained tiny model (cached)."""
    from cltune.data.encode import Encoder
    from cltune.data.recipe import load_stream
    from cltune.models.loading import load_model

    stream = load_stream("default")
    model, processor = load_model("tiny", pretrain_tasks=stream.general, seed=stream.seed)
    return stream, model, Encoder(processor, "tiny")
