"""The peer monitors (rlwatch, rldoctor, rlprobe) on synthetic GRPO logs, with the real packages."""

import inspect
import math

import numpy as np
import pytest

from rlvrlab.analysis import peers
from rlvrlab.analysis.peers import PEERS, peer_alarms, peer_detectors

K, ONSET = 80, 40  # steps; the collapse starts after ONSET

# rldoctor fires these on flat logs by design: `plateau` when the best reward lies >= 30% of the run
# back (true of most flat noisy curves), `reward_hacking` when training reward and held-out accuracy
# have a negative rank correlation over >= 6 evaluations (half of all flat logs). rlwatch is silent on
# this seed, but its 3σ rules (kl_explosion, gradient_norm_spike) alarm on 25 of 100 seeds.
FIRES_ON_FLAT = {"rlwatch": set(), "rldoctor": {"plateau", "reward_hacking"}, "rlprobe": set()}


def grpo_log(*, collapse: bool, steps: int = K, seed: int = 0) -> list[dict]:
    """metrics.parquet rows of a GRPO run: flat and healthy, or collapsing after step ONSET.

    Collapsing: reward rises 0.4 -> 0.6 until ONSET and then falls to 0 together with held-out
    accuracy, entropy collapses to ~0, groups lose their reward variance (frac_reward_zero_std -> 1,
    reward_std and advantage_std -> 0), KL and the gradient norm explode, completions run into the
    length cap. Flat: the same run with every curve at its step-0 level, plus noise.
    """
    rng = np.random.default_rng(seed)
    rows = [{"step": 0, "eval/accuracy": 0.40, "gap/M": 0.0}]
    for s in range(1, steps + 1):
        def noisy(x, sd):
            return float(x + rng.normal(0, sd))

        u = max(0, s - ONSET) / (steps - ONSET) if collapse else 0.0  # 0 until the collapse, 1 at the end
        reward = 0.4 + 0.2 * min(s, ONSET) / ONSET * (1 - u) - 0.4 * u if collapse else 0.5
        zero = 0.2 + 0.8 * u ** 0.7
        rows.append({
            "step": s, "learning_rate": 1e-6, "loss": noisy(0, 0.01),
            "grad_norm": noisy(0.3 * (1 + 30 * u ** 2), 0.02), "entropy": max(noisy(1.5 * (1 - u) ** 3, 0.03), 1e-3),
            "reward": min(max(noisy(reward, 0.02), 0.0), 1.0), "reward_std": max(noisy(0.48 * (1 - u), 0.01), 0.0),
            "frac_reward_zero_std": min(max(noisy(zero, 0.02), 0.0), 1.0),
            "kl": max(noisy(0.01 + 5 * u ** 2, 0.001), 0.0),
            "clip_ratio/low_mean": 0.001 + 0.2 * u, "clip_ratio/high_mean": 0.001 + 0.2 * u,
            "clip_ratio/region_mean": 0.002 + 0.4 * u, "completions/mean_length": noisy(200 + 300 * u, 5),
            "completions/max_length": 256 + 256 * u, "completions/min_length": noisy(40, 3),
            "completions/clipped_ratio": max(noisy(0.02 + 0.9 * u, 0.003), 0.0),
            "advantage_std": max(noisy(0.85 * (1 - u), 0.02), 0.0), "gap/M": 0.1,
            "eval/accuracy": (0.4 + (0.1 * min(s, ONSET) / ONSET if collapse else 0.0)) * (1 - u) + rng.normal(0, 0.01)
            if s % 10 == 0 else math.nan,
        })
    return rows


def fired(alarms: dict[str, list[int]]) -> set[str]:
    return {name for name, at in alarms.items() if at}


@pytest.mark.parametrize("package", PEERS)
def test_fires_inside_a_collapse(package):
    alarms = peer_alarms(package, grpo_log(collapse=True))
    inside = {name for name, at in alarms.items() if any(ONSET < s <= K for s in at)}
    assert inside, alarms


@pytest.mark.parametrize("package", PEERS)
def test_flat_log_raises_no_alarm(package):
    """Nothing fires on a flat log, but for rldoctor's two detectors that fire on flat logs by design."""
    assert fired(peer_alarms(package, grpo_log(collapse=False))) <= FIRES_ON_FLAT[package]


@pytest.mark.parametrize("package,check_every", [(p, None) for p in PEERS] + [("rldoctor", 1), ("rlprobe", 1)])
def test_no_look_ahead(package, check_every):
    rows = grpo_log(collapse=True)
    full = peer_alarms(package, rows, check_every=check_every)
    assert sum(map(len, full.values())) >= 2  # something to cut
    for k in (30, 44, 50, 59, 65, 75):
        cut = peer_alarms(package, rows[:k + 1], check_every=check_every)
        assert cut == {name: [s for s in at if s <= k] for name, at in full.items()}, k


@pytest.mark.parametrize("package", PEERS)
def test_alarms_name_every_detector_in_step_order(package):
    names = peer_detectors(package)
    assert names and len(set(names)) == len(names) and names == peer_detectors(package)
    alarms = peer_alarms(package, grpo_log(collapse=True), check_every=1 if package != "rlwatch" else None)
    assert tuple(alarms) == names
    assert all(at == sorted(set(at)) and set(at) <= set(range(1, K + 1)) for at in alarms.values())


def test_detector_names():
    assert peer_detectors("rlwatch")[:2] == ("entropy_collapse", "kl_explosion")
    assert "advantage_collapse" in peer_detectors("rldoctor")
    assert "DEGENERATE_GROUPS" in peer_detectors("rlprobe")


def test_every_mapped_name_is_one_the_package_reads():
    """A misspelt name would be swallowed silently (rlwatch's **extra_metrics, pydantic's extra fields)."""
    import rlwatch
    from rl_doctor import aliases
    from rlprobe.schemas import StepRecord

    assert set(peers._RLWATCH_KEYS) <= set(inspect.signature(rlwatch.RLWatch.log_step).parameters)
    assert all(aliases.resolve(key) for key in peers._RLDOCTOR_KEYS)
    assert set(peers._RLPROBE_KEYS) <= set(StepRecord.model_fields)


def test_nan_is_missing_and_inf_is_a_value():
    rows = [{"step": s, "loss": math.inf if s == 30 else math.nan, "kl": math.nan, "reward": 0.5} for s in range(1, 41)]
    alarms = peer_alarms("rlwatch", rows)
    assert alarms["loss_nan"] == [30] and alarms["kl_explosion"] == []


def test_silent_and_writes_nothing(tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    for package in PEERS:
        assert fired(peer_alarms(package, grpo_log(collapse=True)))
    assert list(tmp_path.iterdir()) == []
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_unknown_package_and_bad_arguments():
    with pytest.raises(ValueError, match="package: got 'wandb'; allowed: rldoctor, rlprobe, rlwatch"):
        peer_alarms("wandb", [])
    with pytest.raises(ValueError, match="package: got 'wandb'"):
        peer_detectors("wandb")
    with pytest.raises(ValueError, match="check_every"):
        peer_alarms("rlwatch", [], check_every=25)
    with pytest.raises(ValueError, match="check_every"):
        peer_alarms("rlprobe", [], check_every=0)
    with pytest.raises(ValueError, match="increasing step order"):
        peer_alarms("rlprobe", [{"step": 2}, {"step": 1}])


def test_missing_package_says_how_to_install(monkeypatch):
    def absent(name):
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    monkeypatch.setattr(peers.importlib, "import_module", absent)
    with pytest.raises(ValueError, match=r"package: got 'rldoctor'.*pip install 'rlvrlab\[peers\]'"):
        peer_alarms("rldoctor", [])
