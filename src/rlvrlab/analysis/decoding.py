"""Decoding with a base model and its RLVR descendant together (METHODS.md §B, "Direction").

Both models run in lockstep over the same tokens (rlvrlab.lm.sampling.decode), each with its own
KV cache. Sampling is at `temperature`, within the nucleus `top_p` (the paper: T = 1.0, top_p = 0.7).

- **Selective replacement** (`mode="replace"`): decode with the BASE model; at each step compute
  the criterion for the sampled token y; where it selects the position, resample that token from
  the RLVR model restricted to the base's `candidates` (50) most likely tokens; elsewhere keep y.
  Criteria (CRITERIA): Δlog p(y) ≤ τ (τ < 0), base entropy ≥ τ, KL(π_RL‖π_base) ≥ τ, reverse KL
  ≥ τ, JS ≥ τ, random (u < τ: τ is the rate). `calibrate` turns a target replacement rate into each
  criterion's τ, so that criteria can be compared at matched rates. No position selected: the
  tokens of base decoding with the same generator, exactly.
- **Selective extrapolation** (`mode="extrapolate"`): decode from
  log π_extra = log π_RL + γ·Δlog p at the tokens whose Δlog p ≤ τ (π_RL elsewhere), renormalized:
  (1 + γ) log π_RL − γ log π_base + const on the selected tokens, i.e. π_RL reweighted by
  exp(γ·Δlog p). γ = 0 is π_RL itself: the tokens of RLVR decoding with the same generator, exactly.
- `mode="base"` / `"rl"`: plain sampling from that model alone, with the same draw as the others.

Each decoded position also records whether it was selected (replaced / extrapolated).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from rlvrlab import _checks
from rlvrlab.analysis.tokens import position_stats
from rlvrlab.lm.sampling import Rollout, decode

__all__ = ["CRITERIA", "MODES", "calibrate", "check_settings", "extrapolated_logits", "generate", "selected"]

CRITERIA = {  # name: (the position_stats key, selects where the value is <= τ (True) or >= τ (False))
    "delta-logp": ("delta_logp", True),
    "entropy": ("entropy_base", False),
    "kl": ("kl", False),
    "reverse-kl": ("reverse_kl", False),
    "js": ("js", False),
    "random": (None, False),
}
MODES = ("base", "rl", "replace", "extrapolate")


def selected(criterion: str, stats: dict[str, torch.Tensor], tau: float, u: torch.Tensor) -> torch.Tensor:
    """Which positions the criterion selects at threshold τ (u: uniforms for "random")."""
    key, below = _checks.choose("criterion", criterion, CRITERIA)
    if key is None:
        return u < tau
    return stats[key] <= tau if below else stats[key] >= tau


def calibrate(criterion: str, stats: dict[str, torch.Tensor], mask: torch.Tensor, rate: float) -> float:
    """The τ at which `criterion` selects a share `rate` of the positions (mask (N, T)) of
    base-decoded completions, from their `position_stats` (each (N, T))."""
    _checks.probability("rate", rate)
    key, below = _checks.choose("criterion", criterion, CRITERIA)
    if key is None:
        return rate
    values = stats[key][mask.bool()].double()
    if values.numel() == 0:
        _checks.fail("mask", "no positions", "at least one decoded position to calibrate on")
    if rate == 0:  # nothing may be selected: beyond every value
        return float(values.min()) - 1.0 if below else float(values.max()) + 1.0
    return float(torch.quantile(values, rate if below else 1 - rate))


def extrapolated_logits(logits_base: torch.Tensor, logits_rl: torch.Tensor, *, tau: float, gamma: float) -> torch.Tensor:
    """Logits (n, V) of π_extra: log π_RL + γ·Δlog p on the tokens with Δlog p ≤ τ, logits_rl
    elsewhere (up to a constant per row). γ = 0 returns logits_rl + 0: the same numbers."""
    delta = torch.log_softmax(logits_rl.float(), -1) - torch.log_softmax(logits_base.float(), -1)
    return logits_rl + gamma * delta * (delta <= tau)


def _nucleus(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Sampling probabilities (n, V) at `temperature`, within the smallest set of mass >= top_p."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p >= 1:
        return probs
    sorted_p, order = probs.sort(-1, descending=True)
    outside = sorted_p.cumsum(-1) - sorted_p >= top_p  # the mass before this token already reaches top_p
    sorted_p = sorted_p.masked_fill(outside, 0.0)
    return torch.zeros_like(probs).scatter(-1, order, sorted_p)


def check_settings(*, mode: str, criterion: str = "delta-logp", tau: float = -0.3, gamma: float = 0.1,
                   temperature: float = 1.0, top_p: float = 1.0, candidates: int = 50) -> None:
    """The settings of `generate`, checked before any model is loaded (the CLI calls this first)."""
    _checks.choose("mode", mode, MODES)
    _checks.choose("criterion", criterion, CRITERIA)
    _checks.positive("temperature", temperature)
    if not 0 < top_p <= 1:
        _checks.fail("top_p", top_p, "a number in (0, 1]")
    _checks.integer("candidates", candidates)
    if not (math.isfinite(gamma) and gamma >= 0):
        _checks.fail("gamma", gamma, "a number >= 0 and finite (0: the RLVR model itself)")
    if not math.isfinite(tau):  # NaN selects no position and would silently decode without extrapolation
        _checks.fail("tau", tau, "a finite number (the threshold of the criterion)")
    if mode == "replace" and criterion == "random" and not 0 <= tau <= 1:
        _checks.fail("tau", tau, "a rate in [0, 1] with criterion 'random' (the share of positions replaced)")


def generate(base, rl, prompts: Sequence[Sequence[int]], *, mode: str, G: int, max_new_tokens: int, eos_id: int,
             pad_id: int, generator: torch.Generator, criterion: str = "delta-logp", tau: float = -0.3, gamma: float = 0.1,
             temperature: float = 1.0, top_p: float = 1.0, candidates: int = 50) -> tuple[Rollout, torch.Tensor]:
    """G completions per prompt (token id lists) in one of MODES; returns the Rollout and a (N, T)
    flag of the positions replaced / extrapolated (False in modes base and rl)."""
    check_settings(mode=mode, criterion=criterion, tau=tau, gamma=gamma, temperature=temperature, top_p=top_p,
                   candidates=candidates)
    uniforms = torch.Generator(generator.device).manual_seed(generator.initial_seed() + 7_777_777)

    def draw(logits: torch.Tensor) -> torch.Tensor:
        return torch.multinomial(_nucleus(logits, temperature, top_p), 1, generator=generator).squeeze(1)

    if mode in ("base", "rl"):  # one model: its logits alone, through the same draw
        return decode([base if mode == "base" else rl], [list(p) for p in prompts], G=G, max_new_tokens=max_new_tokens,
                      eos_id=eos_id, pad_id=pad_id, choose=lambda logits: (draw(logits[0]), None))

    def choose(logits: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        lb, lr = logits
        log_b, log_r = torch.log_softmax(lb.float(), -1), torch.log_softmax(lr.float(), -1)
        if mode == "extrapolate":
            y = draw(extrapolated_logits(lb, lr, tau=tau, gamma=gamma))  # γ = 0: exactly π_RL
            return y, (log_r - log_b).gather(-1, y.unsqueeze(-1)).squeeze(-1) <= tau
        y = draw(lb)
        u = torch.rand(y.shape, generator=uniforms, device=y.device) if criterion == "random" else y.new_zeros(y.shape)
        sel = selected(criterion, position_stats(log_b, log_r, y), tau, u)
        if bool(sel.any()):  # only then: no position selected leaves base decoding's random stream untouched
            top = lb.topk(min(candidates, lb.shape[-1]), -1).indices
            restricted = torch.full_like(lr, float("-inf")).scatter(-1, top, lr.gather(-1, top))
            y = torch.where(sel, draw(restricted), y)
        return y, sel

    return decode([base, rl], [list(p) for p in prompts], G=G, max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id,
                  choose=choose)
