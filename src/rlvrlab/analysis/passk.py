"""pass@k from n sampled answers per problem, c of them correct (METHODS.md §A, "The Invisible Leash").

The unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained on Code"),
for one problem with n ≥ k samples of which c are correct:

    pass@k = 1 − C(n−c, k) / C(n, k)
           = 1                                       if n − c < k
           = 1 − Π_{i=n−c+1..n} (1 − k/i)            otherwise
           = 1 − Π_{j=0..k−1}   (1 − c/(n−j))        the same ratio, as k factors instead of c

and a benchmark's pass@k is its mean over problems (``pass_at_k_curve``).

No factorial is formed: the shorter of the two products (min(c, k) factors x, each in (0, 1)) is
evaluated as pass@k = −expm1(Σ log1p(−x)), which keeps its relative accuracy when pass@k is tiny
(c = 1, n = 10^5) as well as near 1; a single factor is returned as x itself, so pass@1 = c/n and
pass@k with c = 1 is k/n, both correctly rounded. Problems sharing (n, c) are computed once.

Shapes: n and c are integer counts, one per problem (any shape (C, ...) that broadcasts; Python ints,
sequences, numpy or torch integer arrays); k is one integer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from rlvrlab import _checks

__all__ = ["pass_at_k", "pass_at_k_curve"]


def pass_at_k(n: Any, c: Any, k: int) -> float | np.ndarray:
    """Unbiased pass@k of each problem, 1 − C(n−c, k) / C(n, k) (Chen et al. 2021).

    n: ()/(C, ...) number of samples per problem, integers >= 1
    c: ()/(C, ...) number of correct samples, integers with 0 <= c <= n (broadcasts with n)
    k: one integer with 1 <= k <= n for every problem

    Returns a float when n and c are both scalars, else a float64 numpy array of their broadcast
    shape (torch inputs give numpy output). pass@1 = c/n; pass@n = 1 if c > 0 else 0.
    """
    k = _check_k_type(k)
    n_arr, c_arr = _broadcast_counts(n, c)
    _check_ranges(n_arr, c_arr, k)
    out = _pass_at_k(n_arr, c_arr, k)
    return float(out) if out.ndim == 0 else out


def pass_at_k_curve(n: Any, c: Any, ks: Sequence[int]) -> dict[int, float]:
    """A benchmark's pass@k curve: {k: mean over problems of pass_at_k(n, c, k)}, keys ascending.

    n, c: as in ``pass_at_k``, one entry per problem (C, ...); every k must satisfy 1 <= k <= min n.
    ks:   a non-empty sequence of integers (repeats are computed once).

    Plot it as ``plt.plot(list(curve), list(curve.values()))``; ``curve[1]`` is the mean pass@1.
    """
    if isinstance(ks, (str, bytes)) or not isinstance(ks, Sequence | np.ndarray | torch.Tensor) or len(ks) == 0:
        _checks.fail("ks", ks, "a non-empty sequence of integers k >= 1")
    ks = [_check_k_type(k) for k in (ks.tolist() if isinstance(ks, np.ndarray | torch.Tensor) else ks)]
    n_arr, c_arr = _broadcast_counts(n, c)
    for k in ks:
        _check_ranges(n_arr, c_arr, k)
    return {k: float(_pass_at_k(n_arr, c_arr, k).mean()) for k in sorted(set(ks))}


def _pass_at_k(n: np.ndarray, c: np.ndarray, k: int) -> np.ndarray:
    """pass_at_k without input checks; n, c int64 arrays of one shape."""
    pairs, inverse = np.unique(np.stack([n.ravel(), c.ravel()]), axis=1, return_inverse=True)
    values = np.array([_one(int(ni), int(ci), k) for ni, ci in pairs.T], dtype=np.float64)
    return values[inverse.ravel()].reshape(n.shape)


def _one(n: int, c: int, k: int) -> float:
    """pass@k of one problem; 1 <= k <= n, 0 <= c <= n."""
    if c == 0:
        return 0.0
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    if c <= k:
        x = k / np.arange(n - c + 1, n + 1, dtype=np.float64)  # (c,) factors 1 − k/i
    else:
        x = c / np.arange(n, n - k, -1, dtype=np.float64)  # (k,) factors 1 − c/(n−j)
    if x.size == 1:
        return float(x[0])  # 1 − (1 − x) = x, without rounding it twice
    return float(-np.expm1(np.log1p(-x).sum()))


def _check_k_type(k: Any) -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        _checks.fail("k", k, "an integer >= 1")
    return int(k)


def _counts(field: str, value: Any) -> np.ndarray:
    """An int64 array of counts; anything but integers (floats, bools, strings, objects) is refused."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.size == 0:
        _checks.fail(field, f"an empty array of shape {arr.shape}", "one count per problem, at least one problem")
    if arr.dtype.kind not in "iu":
        shown = value if arr.ndim == 0 else f"an array of dtype {arr.dtype}"
        _checks.fail(field, shown, "integers (a Python int, or an integer numpy/torch array)")
    if arr.dtype.kind == "u" and int(arr.max()) > np.iinfo(np.int64).max:
        _checks.fail(field, int(arr.max()), f"integers <= {np.iinfo(np.int64).max}")
    return arr.astype(np.int64)


def _broadcast_counts(n: Any, c: Any) -> tuple[np.ndarray, np.ndarray]:
    n_arr, c_arr = _counts("n", n), _counts("c", c)
    try:
        shape = np.broadcast_shapes(n_arr.shape, c_arr.shape)
    except ValueError:
        _checks.fail("c", f"shape {c_arr.shape}", f"a shape that broadcasts with n's shape {n_arr.shape}")
    return np.broadcast_to(n_arr, shape), np.broadcast_to(c_arr, shape)


def _check_ranges(n: np.ndarray, c: np.ndarray, k: int) -> None:
    """n >= 1, 0 <= c <= n and k <= n everywhere; the message names the first offending problem."""
    _first_bad("n", n < 1, n, n, "an integer >= 1")
    _first_bad("c", c < 0, c, n, "an integer >= 0")
    _first_bad("c", c > n, c, n, "an integer with c <= n, the number of samples (n = {n})")
    if k > n.min():
        _checks.fail("k", k, f"an integer with 1 <= k <= n for every problem (the smallest n is {int(n.min())})")


def _first_bad(field: str, bad: np.ndarray, values: np.ndarray, n: np.ndarray, allowed: str) -> None:
    if not bad.any():
        return
    idx = np.unravel_index(int(np.argmax(bad)), bad.shape)  # first True, in C order
    where = int(idx[0]) if len(idx) == 1 else tuple(int(i) for i in idx)
    got = int(values[idx]) if values.ndim == 0 else f"{int(values[idx])} at index {where}"
    _checks.fail(field, got, allowed.format(n=int(n[idx])))
