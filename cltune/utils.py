"""Small helpers shared across cltune: error messages, atomic writes, seeding, the fault hook."""

from __future__ import annotations

import difflib
import json
import os
import platform
import shutil
import signal
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def unknown_name_error(kind: str, name: str, known: Iterable[str]) -> ValueError:
    """A ValueError for an unknown registry name, with a 'did you mean' and the list of names."""
    known = sorted(known)
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(f"unknown {kind} {name!r}.{hint} Known: {', '.join(known)}")


def register_unique(table: dict[str, T], kind: str, name: str, value: T) -> T:
    """``table[name] = value``, refusing a name already in ``table`` (the registries' one rule)."""
    if name in table:
        raise ValueError(f"{kind} {name!r} is already registered; choose another name")
    table[name] = value
    return value


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file beside ``path`` for the block to write, moved onto ``path`` when the block
    ends cleanly: readers see the old file or the new one, never half. On an error the temporary
    file is removed; a killed writer's is removed by :func:`remove_stale_temporaries`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
        os.close(fd)
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_path`, flushed to disk before the move."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        view, half = memoryview(data), len(data) // 2
        f.write(view[:half])
        f.flush()
        fault_point(f"write:{path.name}")  # a kill here leaves a half-written temporary file
        f.write(view[half:])
        f.flush()
        os.fsync(f.fileno())


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that :func:`atomic_write_bytes` left under ``folder`` when its
    process was killed mid-write; returns what was removed."""
    stale = [p for p in Path(folder).rglob(".*.tmp") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def ensure_writable_dir(path: str | os.PathLike, what: str, fix: str) -> Path:
    """Create the folder ``path`` and check that a file can be written in it; an OSError that
    names ``what`` it is and the ``fix`` otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OSError(f"cannot write to {what} {str(path)!r}: it is a file, not a folder; {fix}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise OSError(f"cannot write to {what} {str(path)!r}: {err.strerror or err}; {fix}") from err
    return path


FAULT_ENV = "CLTUNE_FAULT"
_fault_hits: Counter[str] = Counter()


def fault_point(name: str) -> None:
    """Testing hook: the process SIGKILLs itself the N-th time it reaches point ``name`` when
    ``$CLTUNE_FAULT`` is ``name@N`` (or ``name`` for the first time).

    Points: ``pretrain`` (each pre-training step of the tiny model), every template hook
    (``after_update``, ``after_eval_exp``, ...) and ``write:<file name>`` (half-way through an
    atomic write). Used by the kill-and-resume tests; unset, it costs one dictionary lookup.
    """
    wanted = os.environ.get(FAULT_ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition("@")
    if point != name:
        return
    _fault_hits[name] += 1
    if _fault_hits[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_dir(folder: str | os.PathLike, replace: bool = False) -> Iterator[Path]:
    """A temporary folder beside ``folder``, renamed to ``folder`` when the block ends cleanly.

    Readers see no folder or a whole one. If ``folder`` appeared meanwhile (another process
    finished first), its copy is kept and the temporary one dropped, unless ``replace``: then the
    old folder is moved aside and removed once the new one is in place. On an error the temporary
    folder is removed and the error raised. Temporaries left by a writer that was killed (their
    name carries the writer's pid, and no such process is alive) are removed on the next call.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphaned_temporaries(folder)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.{os.getpid()}."))
    try:
        yield tmp
        if folder.exists() and replace:
            old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.{os.getpid()}."))
            folder.rename(old / folder.name)
            tmp.rename(folder)
            shutil.rmtree(old)
        elif folder.exists():
            shutil.rmtree(tmp)
        else:
            tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _remove_orphaned_temporaries(folder: Path) -> None:
    for tmp in folder.parent.glob(f".{folder.name}.*.*"):
        parts = tmp.name[len(folder.name) + 2 :].split(".")  # [pid, mkdtemp's suffix]
        if len(parts) == 2 and parts[0].isdigit() and not _process_alive(int(parts[0])):
            shutil.rmtree(tmp, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy and torch (every device) with ``transformers.set_seed``.

    ``seed`` must lie in ``[0, 2**32)`` (numpy's range), as :func:`derive_seed`'s do.
    """
    from transformers import set_seed

    set_seed(seed)


def derive_seed(seed: int, *parts: object) -> int:
    """A stable sub-seed for one part of a run (an experience, a subset), independent of order."""
    import hashlib

    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def cpu_description() -> str:
    """The CPU and the vector kernels torch picked on it, e.g. ``AMD EPYC (family 26, model 2), AVX512``.

    On a CPU the order of float sums, so the low bits of every step and the greedy answers of a small
    model, depends on both: the same run gives identical results on the same kind of CPU only.
    """
    import torch

    fields: dict[str, str] = {}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields:
        name += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    return f"{name}, {torch.backends.cpu.get_cpu_capability()}"
