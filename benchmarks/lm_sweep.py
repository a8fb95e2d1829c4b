"""Benchmark: GRPO runs per hour through `lm_sweep` on 2 cores, one process with 2 torch threads
against 2 processes with 1 thread each.

    python benchmarks/lm_sweep.py [--model DIR] [--runs 8] [--rounds 3] [--steps 60] [--batch-size 64]
                                  [--max-load 0.5] [--max-wait 1800] [--max-others 0.2] [--json FILE] [--smoke]

Each configuration sweeps the same grid, `--runs` seeds of one run of `--steps` steps of
`--batch-size` completions (8 per prompt) on `add` with every other TrainConfig default (at most 48
new tokens, diagnostics on, held-out accuracy every 10 steps), into a fresh directory through
`rlvrlab.integrations.sweep.lm_sweep(..., backend="local")`: the wall time includes starting the
pool and loading the model, as a user's sweep does. The model is the tiny base model that
`rlvrlab lm pretrain` trains (cached), or --model. Rounds alternate which configuration goes
first; runs per hour are `--runs` × 3600 / wall seconds, reported per round and as their medians,
with the median of the per-round ratios (2 processes over 1). The script fails unless every run
finished and each ran on the threads asked for (recorded by the worker in its sweep.json).

Other engineers share the machine: before the first measurement it waits (checking every minute,
at most --max-wait seconds) until the 1-minute load average is below --max-load, and before each
measurement until no process outside this benchmark uses more than a fifth of a core. During each
measurement it counts the CPU time of every process outside this benchmark; a measurement during
which they used more than --max-others cores on average is discarded and taken again (at most 3
times; each attempt is written). The load averages, busy processes and others' CPU are reported
with the numbers. --smoke: a tiny run of the script (2 runs of 2 steps of 8 completions, one
round, no waiting) for the tests.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

from rlvrlab.integrations.sweep import lm_sweep
from rlvrlab.lm.pretrain import PretrainConfig, model_dir, pretrain

CONFIGS = {"1x2": {"workers": 1, "threads": 2}, "2x1": {"workers": 2, "threads": 1}}  # processes x threads


def default_model() -> str:
    """The tiny base model of `rlvrlab lm pretrain` (trained once into the cache)."""
    config = PretrainConfig()
    if not (model_dir(config) / "rlvrlab_pretrain.json").exists():
        print("training the default tiny base model (once; about 2 minutes) ...", flush=True)
    return str(pretrain(config))


HZ = os.sysconf("SC_CLK_TCK")


def _cpu_ticks() -> dict[int, tuple[str, int, int]]:
    """Every process's (name, parent pid, user + system clock ticks so far), from /proc."""
    out = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, rest = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
        out[int(stat.parent.name)] = (name, int(rest[1]), int(rest[11]) + int(rest[12]))  # fields 4, 14, 15
    return out


def _others(before: dict, after: dict) -> dict[int, float]:
    """CPU seconds between two snapshots of every process but this one and its children."""
    me = os.getpid()
    return {p: (ticks - (before[p][2] if p in before else 0)) / HZ for p, (_, ppid, ticks) in after.items()
            if p != me and ppid != me}


def busy_processes(seconds: float = 3.0, share: float = 0.2) -> list[str]:
    """Processes other than this one that used more than ``share`` of a core over ``seconds``."""
    before = _cpu_ticks()
    time.sleep(seconds)
    after = _cpu_ticks()
    return [f"{after[p][0]} (pid {p}, {cpu / seconds:.0%} of a core)" for p, cpu in _others(before, after).items()
            if p in before and cpu / seconds > share]


def wait_until_quiet(max_load: float | None, max_wait: float) -> dict:
    """Wait (checking every minute, at most ``max_wait`` s) for a 1-minute load average below
    ``max_load`` (None: do not look at it) and no busy process; say what was seen."""
    start = time.monotonic()
    while True:
        load, busy = os.getloadavg(), busy_processes()
        quiet = (max_load is None or load[0] < max_load) and not busy
        if quiet or time.monotonic() - start >= max_wait:
            return {"load_average": [round(x, 2) for x in load], "busy": busy, "quiet": quiet,
                    "waited_seconds": round(time.monotonic() - start)}
        print(f"  waiting for a quiet machine: load {load[0]:.2f}, busy: {', '.join(busy) or 'none'}", flush=True)
        time.sleep(60)


def measure(grid: dict, workers: int, threads: int) -> tuple[float, list[float], float]:
    """Wall seconds of one sweep of ``grid`` into a fresh directory, each run's own seconds, and the
    cores that processes outside this benchmark used meanwhile (on average)."""
    with tempfile.TemporaryDirectory() as tmp:
        before = _cpu_ticks()
        t0 = time.perf_counter()
        table = lm_sweep(grid, Path(tmp) / "sweep", backend="local", workers=workers, threads=threads)
        wall = time.perf_counter() - t0
        others = sum(_others(before, _cpu_ticks()).values()) / wall
        statuses = table.column("status").to_pylist()
        assert statuses == ["finished"] * len(statuses), f"not every run finished: {statuses}"
        for run in table.column("run").to_pylist():
            ran_on = json.loads((Path(tmp) / "sweep" / run / "sweep.json").read_text())["threads"]
            assert ran_on == threads, f"{run} ran on {ran_on} torch threads, not {threads}"
        return wall, table.column("seconds").to_pylist(), others


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=str, default=None, help="a causal LM directory (default: the tiny base model)")
    ap.add_argument("--runs", type=int, default=8, help="runs (seeds) in each sweep")
    ap.add_argument("--rounds", type=int, default=3, help="sweeps of each configuration, alternating")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-load", type=float, default=0.5, help="wait for a 1-minute load average below this")
    ap.add_argument("--max-wait", type=float, default=1800, help="longest wait for a quiet machine, seconds")
    ap.add_argument("--max-others", type=float, default=0.2,
                    help="take a measurement again when other processes used more cores than this meanwhile")
    ap.add_argument("--json", type=str, default=None)
    ap.add_argument("--smoke", action="store_true", help="a tiny run of the script (for the tests)")
    args = ap.parse_args()
    grid = {"model": args.model or default_model(), "task": "add", "steps": args.steps, "batch_size": args.batch_size,
            "seed": list(range(args.runs))}
    if args.smoke:
        grid.update(steps=2, batch_size=8, group=4, prompts=40, max_new_tokens=8, eval_every=1, eval_samples=1, seed=[0, 1])
        args.runs, args.rounds, args.max_load, args.max_wait, args.max_others = 2, 1, None, 0, math.inf

    print(f"lm_sweep: {args.runs} runs of {grid['steps']} steps x {grid['batch_size']} completions, "
          f"{args.rounds} rounds; {os.cpu_count()} cores", flush=True)
    start = wait_until_quiet(args.max_load, args.max_wait)
    print(f"  before: load average {start['load_average']}, busy: {', '.join(start['busy']) or 'none'}", flush=True)
    wall: dict[str, list[float]] = {k: [] for k in CONFIGS}
    run_seconds: dict[str, list[float]] = {k: [] for k in CONFIGS}
    conditions = []
    for r in range(args.rounds):
        for name in list(CONFIGS) if r % 2 == 0 else list(reversed(CONFIGS)):
            for attempt in range(3):
                seen = start if not conditions else wait_until_quiet(None, args.max_wait)
                t, per_run, others = measure(grid, **CONFIGS[name])
                kept = others <= args.max_others or attempt == 2
                conditions.append({"round": r, "config": name, **seen, "others_cores": round(others, 3), "kept": kept,
                                   "wall_seconds": round(t, 2)})
                print(f"  round {r} {name}: {t:.1f} s, {args.runs * 3600 / t:.1f} runs/hour (load before "
                      f"{seen['load_average'][0]:.2f}; other processes meanwhile {others:.2f} cores)"
                      f"{'' if kept else ': disturbed, again'}", flush=True)
                if kept:
                    break
            wall[name].append(t)
            run_seconds[name].extend(per_run)

    rph = {k: [args.runs * 3600 / t for t in v] for k, v in wall.items()}
    ratios = [b / a for a, b in zip(rph["1x2"], rph["2x1"])]
    report = {
        "runs": args.runs, "rounds": args.rounds, "grid": grid, "cores": os.cpu_count(),
        "configurations": {k: {**CONFIGS[k], "wall_seconds": [round(t, 2) for t in wall[k]],
                               "runs_per_hour": [round(x, 2) for x in rph[k]],
                               "runs_per_hour_median": round(statistics.median(rph[k]), 2),
                               "run_seconds_mean": round(statistics.mean(run_seconds[k]), 2)} for k in CONFIGS},
        "ratio_2x1_over_1x2": [round(x, 3) for x in ratios],
        "ratio_2x1_over_1x2_median": round(statistics.median(ratios), 3),
        "conditions": conditions, "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    report["faster"] = "2x1" if report["ratio_2x1_over_1x2_median"] > 1 else "1x2"
    for k, c in report["configurations"].items():
        print(f"  {c['workers']} process(es) x {c['threads']} thread(s): {c['runs_per_hour_median']} runs/hour (median of "
              f"{c['runs_per_hour']}); a run takes {c['run_seconds_mean']} s on average")
    print(f"  2 processes x 1 thread / 1 process x 2 threads: {report['ratio_2x1_over_1x2_median']}x "
          f"(per round {report['ratio_2x1_over_1x2']}); faster: {report['faster']}; quiet before each: "
          f"{all(c['quiet'] for c in conditions)}; other processes used at most "
          f"{max(c['others_cores'] for c in conditions if c['kept']):.2f} cores during a kept measurement; "
          f"load average after {report['load_average_after']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
