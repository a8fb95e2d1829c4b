"""What an experiment is: a config dataclass, a run function and a plot function, under a name.

    config   a frozen dataclass; every field has a default that runs on a laptop CPU and a
             ``help`` in its metadata; ``quick()`` returns the settings of ``--quick``;
             ``__post_init__`` checks cross-field constraints with a message that says how to fix them
    run      (config, progress, workdir) -> Result: calls the library, returns tables, headline
             numbers and the theory checks; writes nothing but what it keeps in workdir (the run
             directory) to resume from, e.g. the cells of a sweep (the runner writes the results)
    plot     (run directory) -> names of the PNGs it wrote, from the stored tables only, so that
             figures can be remade without rerunning

Checks come in two kinds: "theorem" (a statement of the paper whose premises were verified on the
instance: it must hold, and a failure is a bug or a counterexample) and "claim" (what the paper
reports seeing; ours is reported either way). A claim check whose run lacked the data to decide it
(an interval too wide to tell, a model pair with no RLVR gain to analyse, one seed where a spread
is needed) says so with ``enough=False``: the ledger reads it as "not enough data", whichever way
``passed`` came out.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from rlvrlab import _checks

__all__ = ["Check", "Experiment", "Progress", "Result", "apply_settings", "describe_fields", "setting"]


def setting(default: Any, help: str, **kw: Any) -> Any:
    """A config field with its documentation (shown by ``rlvrlab list``). ``empty=True`` on a list
    setting lets ``--set NAME=none`` (or ``NAME=``) give the empty list, where its help says what
    empty means; other lists refuse it."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple for sequence defaults (configs are frozen)")
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class Check:
    """One verified statement: what was measured against what the theory (or paper) says."""

    name: str
    passed: bool
    measured: str
    expected: str
    kind: Literal["theorem", "claim"] = "theorem"
    enough: bool = True  # False: the run lacked the data to decide this claim check (why: in ``measured``)


@dataclass
class Result:
    """What a run produced: long-format tables (``metrics`` first), headline numbers, checks."""

    tables: dict[str, pa.Table]
    summary: dict[str, Any]
    checks: list[Check] = field(default_factory=list)


class Progress(typing.Protocol):
    def task(self, description: str, total: int) -> Callable[[int], None]:
        """Start a task; the returned function advances it."""
        ...


class NoProgress:
    def task(self, description: str, total: int) -> Callable[[int], None]:
        return lambda n: None


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    description: str
    config: type
    run: Callable[[Any, Progress, Path], Result]
    plot: Callable[[Path], list[str]]

    def settings(self, quick: bool = False) -> Any:
        return self.config.quick() if quick else self.config()


# --- --set k=v --------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        inner = typing.get_args(tp)[0]
        plural = {int: "integers", float: "numbers", str: "strings"}.get(inner, _type_name(inner))
        return f"a comma-separated list of {plural}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "none"}.get(tp, str(tp))


def _parse(text: str, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    try:
        if origin is Literal:
            options = typing.get_args(tp)
            for o in options:
                if str(o) == text:
                    return o
            raise ValueError
        if origin is tuple:
            inner = typing.get_args(tp)[0]
            parts = [p.strip() for p in text.split(",") if p.strip()]
            if not parts:
                raise ValueError
            return tuple(_parse(p, inner, key) for p in parts)
        if origin in (typing.Union, types.UnionType):
            for alt in typing.get_args(tp):
                try:
                    return _parse(text, alt, key)
                except ValueError:
                    continue
            raise ValueError
        if tp is type(None):
            if text.lower() in ("none", "null"):
                return None
            raise ValueError
        if tp is bool:
            low = text.lower()
            if low in ("true", "1", "yes"):
                return True
            if low in ("false", "0", "no"):
                return False
            raise ValueError
        if tp is int:
            return int(text)
        if tp is float:
            value = float(text)
            return value
        if tp is str:
            return text
    except ValueError:
        pass
    _checks.fail(f"--set {key}", text, _type_name(tp))


def apply_settings(config: Any, assignments: Sequence[str] | Mapping[str, Any]) -> Any:
    """A copy of ``config`` with ``k=v`` assignments (strings, parsed by field type) or a mapping."""
    hints = typing.get_type_hints(type(config))
    names = [f.name for f in dataclasses.fields(config)]
    changes: dict[str, Any] = {}
    items = assignments.items() if isinstance(assignments, Mapping) else [_split(a) for a in assignments]
    for key, value in items:
        if key not in names:
            _checks.fail(f"setting '{key}'", key, "the settings of this experiment: " + ", ".join(names))
        empty = dataclasses.fields(config)[names.index(key)].metadata.get("empty", False)
        if isinstance(value, str) and empty and value.strip().lower() in ("", "none"):
            changes[key] = ()
        else:
            changes[key] = _parse(value, hints[key], key) if isinstance(value, str) else value
    return dataclasses.replace(config, **changes)


def _split(assignment: str) -> tuple[str, str]:
    if "=" not in assignment:
        _checks.fail("--set", assignment, "key=value")
    key, value = assignment.split("=", 1)
    return key.strip(), value.strip()


def describe_fields(config: Any) -> list[tuple[str, str, str, str]]:
    """(name, type, default, help) for each setting."""
    hints = typing.get_type_hints(type(config))
    return [(f.name, _type_name(hints[f.name]), repr(getattr(config, f.name)), f.metadata.get("help", ""))
            for f in dataclasses.fields(config)]


check_positive_int = _checks.integer  # kept under the name the experiment configs use


def check_positive_floats(name: str, values: Sequence[float]) -> None:
    for v in values:
        if not (isinstance(v, (int, float)) and v == v and v not in (float("inf"),) and v > 0):
            _checks.fail(name, v, "finite numbers > 0")
