"""Input checks shared by every layer: one place that words the error messages.

A user mistake must end in a ``ValueError`` that names the field, what was given, and what is
allowed; the CLI turns it into a one-line message and a non-zero exit (DESIGN.md, "Contracts").
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch


def fail(field: str, got: Any, allowed: str) -> None:
    """Raise the project's standard ValueError: ``<field>: got <got>; allowed: <allowed>``."""
    raise ValueError(f"{field}: got {got!r}; allowed: {allowed}")


def choose(field: str, name: str, options: Mapping[str, Any] | Iterable[str]) -> Any:
    """Look ``name`` up in ``options``; an unknown name lists the valid ones (STYLE.md, rule 3)."""
    keys = list(options)
    if name not in keys:
        fail(field, name, ", ".join(sorted(keys)))
    return options[name] if isinstance(options, Mapping) else name


def finite_nonneg(field: str, value: float | torch.Tensor) -> None:
    """Step sizes and constants: finite and >= 0."""
    t = torch.as_tensor(value, dtype=torch.float64)
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
        shown = value if t.numel() == 1 else f"a tensor with values in [{t.min().item():g}, {t.max().item():g}]"
        fail(field, shown, "finite numbers >= 0")


def positive(field: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        fail(field, value, "a finite number > 0")


def integer(field: str, value: Any, minimum: int = 1) -> None:
    """An int (not a bool) >= minimum."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        fail(field, value, f"an integer >= {minimum}")


def probability(field: str, value: float | torch.Tensor) -> None:
    t = torch.as_tensor(value, dtype=torch.float64)
    if bool(torch.isnan(t).any()) or bool(((t < 0) | (t > 1)).any()):
        shown = value if t.numel() == 1 else "a tensor with entries outside [0, 1]"
        fail(field, shown, "numbers in [0, 1]")


def binary(field: str, reward: torch.Tensor) -> None:
    """Verifiable rewards are pass/fail: every entry must be exactly 0 or 1."""
    bad = ~((reward == 0) | (reward == 1))
    if bool(bad.any()):
        example = reward[bad].flatten()[0].item()
        fail(field, f"a value {example!r} (and {int(bad.sum()) - 1} more outside {{0, 1}})", "0 or 1 only")


def shape(field: str, t: torch.Tensor, expected: Sequence[int | None], letters: str) -> None:
    """Check a tensor's trailing shape; ``None`` matches any size. ``letters`` documents it, e.g. '(..., N, d)'."""
    if t.dim() < len(expected) or any(
        e is not None and s != e for s, e in zip(t.shape[t.dim() - len(expected):], expected)
    ):
        fail(field, f"shape {tuple(t.shape)}", f"shape {letters} with {_dims(expected)}")


# File systems that hold no files of ours, whatever their permission bits say (root may "write" /proc).
_PSEUDO_FS = frozenset({"proc", "sysfs", "cgroup", "cgroup2", "devpts", "debugfs", "tracefs", "securityfs", "pstore",
                        "bpf", "configfs", "efivarfs", "fusectl", "mqueue", "autofs", "binfmt_misc", "nsfs"})


def writable_dir(name: str, path: str | os.PathLike) -> None:
    """Refuse an output directory that cannot be made or written, before any work, creating nothing:
    an existing non-directory, a path under a file, or one whose nearest existing ancestor is not
    writable (permissions, a read-only or immutable directory, a pseudo file system such as /proc)."""
    p = Path(os.path.abspath(os.fspath(path)))
    if p.exists() and not p.is_dir():
        fail(name, str(path), "a directory or a path where one can be made (this is an existing file)")
    ancestor = p
    while not ancestor.exists():  # the nearest existing ancestor: where the run directory would be made
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        fail(name, str(path), f"a path under a directory ({ancestor} is a file)")
    if not os.access(ancestor, os.W_OK | os.X_OK) or _fs_type(ancestor) in _PSEUDO_FS:
        fail(name, str(path), f"a path where a directory can be written ({ancestor} cannot be written)")


def _fs_type(path: Path) -> str:
    """The type of the file system holding ``path`` (Linux: from /proc/self/mounts; '' elsewhere)."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return ""
    real, best, kind = os.path.realpath(path), "", ""
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])  # a space is written \040
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def _dims(expected: Sequence[int | None]) -> str:
    return "trailing sizes (" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
