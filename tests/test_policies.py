"""rlvrlab.policies: every closed form against the autograd defaults of EnumerablePolicy, token
enumeration and log π against plain loops, the regularity constants against observed score
norms and Hessians, grad_J against autograd and a high-precision reference, sampling against π."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.func import hessian, vmap

from rlvrlab.policies import (
    EnumerablePolicy,
    FeatureSoftmax,
    LinearContextualSoftmax,
    TabularSoftmax,
    TokenSoftmax,
    enumerate_responses,
)

R = 3  # runs in every batched check
F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=F64)


def _build_cases() -> dict[str, EnumerablePolicy]:
    gen = _gen(0)
    cases: dict[str, EnumerablePolicy] = {
        "tabular-2": TabularSoftmax(2),
        "tabular-5": TabularSoftmax(5),
        "feature-Nd": FeatureSoftmax(_randn(5, 3, gen=gen)),
        "feature-CNd": FeatureSoftmax(_randn(2, 4, 3, gen=gen)),
        "contextual-shared": LinearContextualSoftmax(_randn(3, 2, gen=gen), arms=4),
        "contextual-per-run": LinearContextualSoftmax(_randn(R, 3, 2, gen=gen), arms=3),
    }
    for V, T in ((2, 1), (2, 3), (3, 2), (4, 2)):
        for eos in (None, 0, V - 1):
            for param in ("position", "prefix", "linear"):
                feats = _randn(V, 2, gen=gen) if param == "linear" else None
                cases[f"token-V{V}-T{T}-eos{eos}-{param}"] = TokenSoftmax(V, T, eos=eos, parametrization=param, features=feats)
    return cases


CASES = _build_cases()
NAMES = sorted(CASES)


def _theta(policy: EnumerablePolicy, seed: int, scale: float = 1.0) -> torch.Tensor:
    return policy.init(R, scale=scale, generator=_gen(seed))


# --- the interface: normalization, closed forms, scores ------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_logp_is_normalized(name):
    policy = CASES[name]
    logp = policy.logp(_theta(policy, 1, scale=2.0))
    assert logp.shape == (R, policy.n_prompts, policy.n_responses)
    torch.testing.assert_close(torch.logsumexp(logp, -1), torch.zeros(R, policy.n_prompts, dtype=F64), rtol=0, atol=1e-13)


@pytest.mark.parametrize("name", NAMES)
def test_closed_forms_equal_autograd_defaults(name):
    policy = CASES[name]
    gen = _gen(2)
    theta = _theta(policy, 3)
    w = _randn(R, policy.n_params, gen=gen)
    v = _randn(R, policy.n_prompts, policy.n_responses, gen=gen)
    logp, proj = policy.logp_and_jvp(theta, w)
    ref_logp, ref_proj = EnumerablePolicy.logp_and_jvp(policy, theta, w)
    tol = dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logp, ref_logp, **tol)
    torch.testing.assert_close(proj, ref_proj, **tol)
    torch.testing.assert_close(policy.vjp(theta, v), EnumerablePolicy.vjp(policy, theta, v), **tol)
    torch.testing.assert_close(policy.curvature(theta, w), EnumerablePolicy.curvature(policy, theta, w), **tol)


@pytest.mark.parametrize("name", NAMES)
def test_scores_equal_plain_jacobian_loop(name):
    policy = CASES[name]
    theta = _theta(policy, 4)
    scores = policy.scores(theta)
    assert scores.shape == (R, policy.n_prompts, policy.n_responses, policy.n_params)
    for r in range(R):
        def row_logp(t, r=r):
            full = torch.cat([theta[:r], t.unsqueeze(0), theta[r + 1:]])
            return policy.logp(full)[r]

        ref = torch.autograd.functional.jacobian(row_logp, theta[r])
        torch.testing.assert_close(scores[r], ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_grad_J_equals_autograd(name):
    policy = CASES[name]
    gen = _gen(5)
    theta = _theta(policy, 6).requires_grad_(True)
    C = policy.n_prompts if policy.n_prompts > 1 else 2  # a shared policy serves several prompts
    reward = (torch.rand(R, C, policy.n_responses, generator=gen) < 0.5).to(F64)
    weights = torch.softmax(_randn(R, C, gen=gen), -1)
    J = (weights * (policy.logp(theta).exp() * reward).sum(-1)).sum()
    (ref,) = torch.autograd.grad(J, theta)
    theta = theta.detach()
    torch.testing.assert_close(policy.grad_J(theta, reward, weights), ref, rtol=1e-12, atol=1e-13)
    # a reward shared by the runs, weights shared too
    torch.testing.assert_close(policy.grad_J(theta, reward[0], weights[0]),
                               policy.grad_J(theta, reward[0].expand(R, -1, -1), weights[0].expand(R, -1)),
                               rtol=1e-13, atol=1e-14)


# --- token enumeration and log π ---------------------------------------------------------------------------


def _reference_responses(V: int, T: int, eos: int | None) -> set[tuple[int, ...]]:
    """Every sequence of length 1..T with EOS (if any) only as its last token, ending in EOS unless truncated at T."""
    out = set()
    for length in range(1, T + 1):
        for seq in itertools.product(range(V), repeat=length):
            if eos is None:
                if length == T:
                    out.add(seq)
                continue
            if eos in seq[:-1]:
                continue
            if seq[-1] == eos or length == T:
                out.add(seq)
    return out


TOKEN_SHAPES = [(2, 1, None), (2, 3, None), (2, 3, 0), (3, 2, 1), (3, 3, 0), (4, 2, 3), (3, 4, 2)]


@pytest.mark.parametrize("V, T, eos", TOKEN_SHAPES)
def test_enumeration_is_complete_and_unique(V, T, eos):
    policy = TokenSoftmax(V, T, eos=eos)
    # count: V^T without EOS; with EOS, Σ_{t<=T} (V-1)^{t-1} ending in EOS plus (V-1)^T truncated
    count = V**T if eos is None else sum((V - 1) ** (t - 1) for t in range(1, T + 1)) + (V - 1) ** T
    assert policy.n_responses == count
    decoded = [policy.decode(i) for i in range(policy.n_responses)]
    assert len(set(decoded)) == count  # each response once
    assert set(decoded) == _reference_responses(V, T, eos)
    lengths = policy.lengths().tolist()
    for seq, length in zip(decoded, lengths):
        assert len(seq) == length
        if eos is None or seq[-1] != eos:
            assert length == T  # truncated
    tokens, lens, _, _ = enumerate_responses(V, T, eos)
    assert torch.equal(lens, policy.lengths()) and tokens.shape == (count, T)
    assert bool((tokens[torch.arange(T).unsqueeze(0) >= lens.unsqueeze(1)] == 0).all())  # padding


def _prefix_ids(V: int, T: int, eos: int | None) -> dict[tuple[int, ...], int]:
    """The documented layout of the "prefix" parametrization: open prefixes breadth first,
    lexicographic within a length."""
    ids: dict[tuple[int, ...], int] = {}
    for t in range(T):
        for seq in itertools.product([v for v in range(V) if v != eos], repeat=t):
            ids[seq] = len(ids)
    return ids


def _loop_logp(policy: TokenSoftmax, theta_row: torch.Tensor, seq: tuple[int, ...]) -> float:
    V, T = policy.vocab, policy.max_len
    ids = _prefix_ids(V, T, policy.eos)
    total = 0.0
    for t, tok in enumerate(seq):
        if policy.parametrization == "position":
            logits = theta_row.view(T, V)[t]
        elif policy.parametrization == "prefix":
            logits = theta_row.view(-1, V)[ids[seq[:t]]]
        else:
            logits = policy.features @ theta_row
        probs = [math.exp(float(x)) for x in logits]
        total += math.log(probs[tok] / sum(probs))
    return total


@pytest.mark.parametrize("V, T, eos", [(2, 3, None), (3, 3, 0), (3, 2, 2), (4, 2, 1)])
@pytest.mark.parametrize("param", ["position", "prefix", "linear"])
def test_token_logp_equals_plain_product_of_step_softmaxes(V, T, eos, param):
    feats = _randn(V, 3, gen=_gen(7)) if param == "linear" else None
    policy = TokenSoftmax(V, T, eos=eos, parametrization=param, features=feats)
    if param == "prefix":
        assert policy.n_params == len(_prefix_ids(V, T, eos)) * V
    theta = policy.init(2, scale=1.5, generator=_gen(8))
    logp = policy.logp(theta)
    for r in range(2):
        for i in range(policy.n_responses):
            assert float(logp[r, 0, i]) == pytest.approx(_loop_logp(policy, theta[r], policy.decode(i)), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("eos", [None, 0])
def test_prefix_parametrization_depends_on_the_prefix(eos):
    V, T = 3, 3
    prefix = TokenSoftmax(V, T, eos=eos, parametrization="prefix")
    position = TokenSoftmax(V, T, eos=eos, parametrization="position")
    index = {prefix.decode(i): i for i in range(prefix.n_responses)}
    a, b = [v for v in range(V) if v != eos][:2]
    x = 1 if eos != 1 else 2
    tail = (x, x) if eos is None else (x, eos)
    i, j = index[(a, *tail)], index[(b, *tail)]
    theta = prefix.init(1, scale=1.0, generator=_gen(9))
    scores = prefix.scores(theta)[0, 0]  # (N, d)
    blocks = lambda s: {k for k, blk in enumerate(s.view(-1, V)) if bool((blk.abs() > 1e-14).any())}  # noqa: E731
    bi, bj = blocks(scores[i]), blocks(scores[j])
    assert len(bi) == len(bj) == T  # one context per step
    assert len(bi & bj) == 1  # only the empty prefix is shared: step 2 reads different contexts
    # tied across prefixes of equal length, "prefix" is "position"
    theta_pos = position.init(2, scale=1.0, generator=_gen(10))
    ids = _prefix_ids(V, T, eos)
    tied = torch.stack([theta_pos[:, len(p) * V:(len(p) + 1) * V] for p in sorted(ids, key=ids.get)], 1).reshape(2, -1)
    torch.testing.assert_close(prefix.logp(tied), position.logp(theta_pos), rtol=1e-13, atol=1e-13)
    # untied, they differ
    assert not torch.allclose(prefix.logp(tied + 0.3 * _randn(*tied.shape, gen=_gen(11))), position.logp(theta_pos))


# --- regularity constants ------------------------------------------------------------------------------------


def _many_thetas(policy: EnumerablePolicy, seed: int) -> torch.Tensor:
    gen = _gen(seed)
    scales = torch.tensor([0.1, 1.0, 5.0, 30.0, 300.0], dtype=F64).repeat_interleave(80)
    return _randn(len(scales), policy.n_params, gen=gen) * scales.unsqueeze(1)


def _max_score_norm(policy: EnumerablePolicy, thetas: torch.Tensor) -> float:
    return float(policy.scores(thetas).norm(dim=-1).max())


def _max_hessian_norm(policy: EnumerablePolicy, thetas: torch.Tensor) -> float:
    H = vmap(hessian(lambda t: policy.logp(t.unsqueeze(0))[0]))(thetas)  # (M, C, N, d, d)
    return float(torch.linalg.eigvalsh(H).abs().max())


TRAJECTORY = ["tabular-2", "tabular-5", "feature-Nd", "feature-CNd", "contextual-shared"]


@pytest.mark.parametrize("name", TRAJECTORY)
def test_trajectory_constants_bound_scores_and_hessians(name):
    policy = CASES[name]
    c = policy.constants()
    assert (c.G_p, c.L_p, c.T_inf) == (c.G_o, c.L_o, 1)
    thetas = _many_thetas(policy, 12)
    G = _max_score_norm(policy, thetas)
    assert G <= c.G_o * (1 + 1e-12)
    assert G >= 0.95 * c.G_o  # the bound is attained in the limit of a deterministic policy
    assert _max_hessian_norm(policy, thetas) <= c.L_o * (1 + 1e-12)


def test_tabular_L_o_is_attained():
    # -∇² log π = diag(π) - ππᵀ has largest eigenvalue ½ at π = (½, ½, 0, ...): L_o = D²/4 = ½
    policy = TabularSoftmax(4)
    thetas = torch.cat([_many_thetas(policy, 13), torch.tensor([[0.0, 0.0, -40.0, -40.0]], dtype=F64)])
    assert _max_hessian_norm(policy, thetas) == pytest.approx(policy.constants().L_o, rel=1e-12)


@pytest.mark.parametrize("param", ["position", "prefix", "linear"])
@pytest.mark.parametrize("eos", [None, 1])
def test_token_constants(param, eos):
    V = 3
    feats = _randn(V, 2, gen=_gen(14)) if param == "linear" else None
    one = TokenSoftmax(V, 1, eos=eos, parametrization=param, features=feats)  # one token: the per-token constants
    c1 = one.constants()
    thetas = _many_thetas(one, 15)
    G = _max_score_norm(one, thetas)
    assert c1.G_p * 0.95 <= G <= c1.G_p * (1 + 1e-12)
    assert _max_hessian_norm(one, thetas) <= c1.L_p * (1 + 1e-12)
    T = 3
    many = TokenSoftmax(V, T, eos=eos, parametrization=param, features=feats)
    c = many.constants()
    assert (c.G_p, c.L_p, c.T_inf) == (c1.G_p, c1.L_p, T)
    if param == "linear":  # the proof of Theorem 3's conversion, tight for shared features
        assert (c.G_o, c.L_o) == pytest.approx((c1.G_p * T, c1.L_p * T))
    else:  # orthogonal blocks per step: sqrt(2T) and 1/2
        assert (c.G_o, c.L_o) == pytest.approx((math.sqrt(2 * T), 0.5))
    thetas = _many_thetas(many, 16)[::4]
    assert _max_score_norm(many, thetas) <= c.G_o * (1 + 1e-12)
    assert _max_hessian_norm(many, thetas) <= c.L_o * (1 + 1e-12)


@pytest.mark.parametrize("param", ["position", "prefix"])
def test_tabular_token_trajectory_constants_are_attained(param):
    # Every step concentrated on token 0 while the response picks token 1 everywhere: each of
    # the T orthogonal blocks contributes ‖e_1 - e_0‖² = 2, so ‖score‖ -> sqrt(2T). A tie
    # between two tokens at one step gives the Hessian block diag(π) - ππᵀ of norm 1/2.
    V, T = 2, 3
    policy = TokenSoftmax(V, T, parametrization=param)
    c = policy.constants()
    far = torch.zeros(1, policy.n_params, dtype=F64)
    far.view(1, -1, V)[..., 0] = 40.0  # token 0 almost surely at every context
    assert _max_score_norm(policy, far) == pytest.approx(c.G_o, rel=1e-9)
    tie = torch.zeros(1, policy.n_params, dtype=F64)
    assert _max_hessian_norm(policy, tie) == pytest.approx(c.L_o, rel=1e-12)


def test_token_linear_trajectory_constants_are_attained():
    # Linear features shared by every step: a length-T response that repeats the token farthest
    # from where π concentrates has score T(φ_b - φ_a), norm T·D; with π = (½, ½) every step,
    # -∇² log π = T·Cov_π(φ) has norm T·D²/4.
    feats = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=F64)
    policy = TokenSoftmax(2, 3, parametrization="linear", features=feats)
    c = policy.constants()
    far = torch.tensor([[400.0, 0.0]], dtype=F64)  # logits (400, 0): token 0 almost surely
    assert _max_score_norm(policy, far) == pytest.approx(c.G_o, rel=1e-9)
    tie = torch.tensor([[2.0, 1.0]], dtype=F64)  # logits (2, 2): π = (½, ½)
    assert _max_hessian_norm(policy, tie) == pytest.approx(c.L_o, rel=1e-12)


# --- grad_J precision, sampling ---------------------------------------------------------------------------


@pytest.mark.parametrize("theta, reward", [
    ([50.0, 0.0, 0.0], [1.0, 0.0, 0.0]),
    ([50.0, 49.0, 0.0, -3.0], [1.0, 1.0, 0.0, 0.0]),
    ([0.0, 80.0, 1.0], [0.0, 1.0, 0.0]),
])
def test_grad_J_keeps_relative_precision_near_J_equal_1(theta, reward):
    # ∇J = π ⊙ (r - J) with 1 - J summed from the incorrect arms (here 1 - J < 1e-20)
    policy = TabularSoftmax(len(theta))
    th = torch.tensor([theta], dtype=F64)
    r = torch.tensor([reward], dtype=F64)
    pi = [math.exp(t - float(torch.logsumexp(th, -1))) for t in theta]
    one_minus_J = sum(p for p, y in zip(pi, reward) if y == 0)
    J = sum(p for p, y in zip(pi, reward) if y == 1)
    assert one_minus_J < 1e-20
    expected = torch.tensor([[p * one_minus_J if y == 1 else -p * J for p, y in zip(pi, reward)]], dtype=F64)
    got = policy.grad_J(th, r, torch.ones(1, dtype=F64))
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", ["tabular-5", "feature-CNd", "token-V3-T2-eos0-prefix"])
def test_sample_frequencies_match_pi(name):
    policy = CASES[name]
    theta = _theta(policy, 17)
    G = 20000
    idx = policy.sample(theta, G, generator=_gen(18))
    assert idx.shape == (R, policy.n_prompts, G)
    assert torch.equal(idx, policy.sample(theta, G, generator=_gen(18)))  # reproducible
    p = policy.logp(theta).exp()
    counts = torch.zeros_like(p).scatter_add_(-1, idx, torch.ones_like(idx, dtype=F64))
    expected = G * p
    chi2 = ((counts - expected) ** 2 / expected).sum(-1)  # (R, C), each ~ chi² with N - 1 dof
    dof = policy.n_responses - 1
    assert bool((chi2 < dof + 6 * math.sqrt(2 * dof) + 10).all())


# --- input checks ---------------------------------------------------------------------------------------------


def test_bad_input_names_the_field():
    with pytest.raises(ValueError, match="^arms: got 1"):
        TabularSoftmax(1)
    with pytest.raises(ValueError, match="^arms: "):
        LinearContextualSoftmax(torch.randn(3, 2), arms=1)
    with pytest.raises(ValueError, match=r"^eos: got 3; allowed: None or a token index in \[0, 2\]"):
        TokenSoftmax(3, 2, eos=3)
    with pytest.raises(ValueError, match="^parametrization: got 'tree'; allowed: linear, position, prefix"):
        TokenSoftmax(3, 2, parametrization="tree")
    with pytest.raises(ValueError, match="^features: "):
        TokenSoftmax(3, 2, parametrization="linear")
    with pytest.raises(ValueError, match="^features: "):
        TokenSoftmax(3, 2, features=torch.randn(3, 2))
    with pytest.raises(ValueError, match="^features: "):
        TokenSoftmax(3, 2, parametrization="linear", features=torch.randn(4, 2))
    with pytest.raises(ValueError, match="^features: "):
        FeatureSoftmax(torch.randn(1, 3))
    with pytest.raises(ValueError, match="^vocab: "):
        TokenSoftmax(1, 2)
    with pytest.raises(ValueError, match="^max_len: "):
        TokenSoftmax(2, 0)
    with pytest.raises(ValueError, match="^vocab/max_len: "):
        TokenSoftmax(50, 5)


@pytest.mark.parametrize("param", ["position", "prefix"])
def test_token_sparse_count_matrices_equal_dense(param, monkeypatch):
    # Large prefix trees keep their count matrices sparse; the results must not change.
    dense = TokenSoftmax(3, 3, eos=0, parametrization=param)
    monkeypatch.setattr("rlvrlab.policies.token.DENSE_COUNTS", 0)
    sparse = TokenSoftmax(3, 3, eos=0, parametrization=param)
    assert sparse._A.is_sparse and not dense._A.is_sparse
    gen = _gen(31)
    theta = torch.randn(4, dense.n_params, generator=gen, dtype=F64)
    w = torch.randn(4, dense.n_params, generator=gen, dtype=F64)
    v = torch.randn(4, 1, dense.n_responses, generator=gen, dtype=F64)
    for a, b in zip(dense.logp_and_jvp(theta, w), sparse.logp_and_jvp(theta, w)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dense.vjp(theta, v), sparse.vjp(theta, v), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dense.curvature(theta, w), sparse.curvature(theta, w), rtol=1e-12, atol=1e-12)
