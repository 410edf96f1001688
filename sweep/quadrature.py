"""The exact expected loss of the ReLU output model, by quadrature (numpy only).

Model and loss as the engine trains them: x' = ReLU(W^T W x + b), loss sum_i I_i E[(x_i - x'_i)^2]
per sample, x_i = 0 with probability 1 - p_i, else U[0, 1], independently; n <= 4 features.

Why in the engine: the adaptive refinement (sweep/refine.py) ranks a cell's seeds by it to
decide where the boundary is; the stored loss, a Monte Carlo estimate on 8,192 samples, is too
noisy (~1 %) near a boundary, where competing minima differ by less. The analysis uses it too
(analysis/exact_loss.py minimises it; analysis/aggregate.py ranks seeds by it).
"""

from __future__ import annotations

import itertools
from functools import cache
from typing import NamedTuple

import numpy as np

ArrayLike = np.ndarray | float

# Quadrature. For each active set S and output i, one active coordinate t (x_i itself when i is
# active) is integrated in closed form: along t the integrand is piecewise quadratic with a single
# kink where W_i.W x + b_i = 0, so splitting at the kink makes it exact. The other k - 1 active
# coordinates use a tensor-product composite Gauss-Legendre rule, 4 panels of 8 points per axis.
# After the exact inner integral the outer integrand is C^1 (only its second derivative jumps),
# so the composite rule converges at least like h^3; at random W, b its relative error is ~1e-7,
# below 1e-6 (checked against 4x the panels in the tests). It is exact for the closed-form
# candidates, whose outer integrands are polynomials. n <= 4 keeps the rule small: at most
# 32^3 outer points, for the one active set of size 4.
_PANELS, _POINTS = 4, 8
MAX_FEATURES = 4


@cache
def _rule_1d(panels: int, points: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(points)
    edges = np.linspace(0.0, 1.0, panels + 1)
    half = np.diff(edges) / 2  # (panel,)
    nodes = (edges[:-1] + half)[:, None] + half[:, None] * x  # (panel, point)
    return nodes.ravel(), (half[:, None] * w).ravel()


class _Plan(NamedTuple):
    X: np.ndarray  # (row, feat) outer node; 0 for inactive features and for the inner one
    weight: np.ndarray  # (row,) outer quadrature weight
    out_onehot: np.ndarray  # (row, feat) output feature i of the row
    inner_onehot: np.ndarray  # (row, feat) inner coordinate t; all zero when S is empty
    out: np.ndarray  # (row,) index of i
    inner: np.ndarray  # (row,) index of t (0 when S is empty)
    subset: np.ndarray  # (row,) index into masks
    masks: np.ndarray  # (subset, feat) True where active


@cache
def _plan(n: int, panels: int = _PANELS, points: int = _POINTS) -> _Plan:
    nodes, weights = _rule_1d(panels, points)
    masks = np.array(list(itertools.product((False, True), repeat=n)))  # (subset, feat)
    groups = []  # one per (active set, output): its outer nodes and labels
    for sid, mask in enumerate(masks):
        active = list(np.flatnonzero(mask))
        for i in range(n):
            s = i if i in active else (active[0] if active else 0)
            outer = [j for j in active if j != s]
            combos = list(itertools.product(range(nodes.size), repeat=len(outer)))
            idx = np.array(combos, dtype=int).reshape(len(combos), len(outer))  # (q^(k-1), k-1)
            X = np.zeros((idx.shape[0], n))
            X[:, outer] = nodes[idx]
            label = np.array([[i, s, sid, bool(active)]] * idx.shape[0]).reshape(-1, 4)
            groups.append((X, np.prod(weights[idx], axis=-1), label))
    X = np.concatenate([g[0] for g in groups])
    weight = np.concatenate([g[1] for g in groups])
    out, inner, subset, has_inner = np.concatenate([g[2] for g in groups]).T
    eye = np.eye(n)
    return _Plan(X, weight, eye[out], eye[inner] * has_inner[:, None], out, inner, subset, masks)


def _loss_and_grad(
    W: np.ndarray, b: np.ndarray, importance: ArrayLike, density: ArrayLike, grad: bool = True
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Expected loss (...) and, if grad, its gradients with respect to W and b."""
    W, b = np.asarray(W, dtype=float), np.asarray(b, dtype=float)
    n = W.shape[-1]
    if n > MAX_FEATURES:
        raise ValueError(f"exact expected loss needs n <= {MAX_FEATURES} features; got n={n}")
    pl = _plan(n)
    imp = np.broadcast_to(np.asarray(importance, dtype=float), b.shape)
    p = np.broadcast_to(np.asarray(density, dtype=float), b.shape)
    M = np.swapaxes(W, -1, -2) @ W  # (..., feat, feat)
    M_out = M[..., pl.out, :]  # (..., row, feat): row i of M for each quadrature row
    # 1. z = a t + c along the inner coordinate t; target y = e t + y0.
    a = np.sum(M_out * pl.inner_onehot, axis=-1)  # (..., row)
    c = b[..., pl.out] + np.sum(M_out * pl.X, axis=-1)  # (..., row)
    e = np.sum(pl.out_onehot * pl.inner_onehot, axis=-1)  # (row,) 1 where t is x_i itself
    y0 = np.sum(pl.X * pl.out_onehot, axis=-1)  # (row,)
    # 2. The ReLU is active (z > 0) on [lo, hi] within [0, 1].
    root = np.clip(-c / np.where(a == 0, 1.0, a), 0.0, 1.0)
    lo = np.where(a > 0, root, 0.0)
    hi = np.where(a < 0, root, np.where((a == 0) & (c <= 0), 0.0, 1.0))
    A = [(hi ** (k + 1) - lo ** (k + 1)) / (k + 1) for k in range(3)]  # active moments of t^k
    F = [1 / (k + 1) - A[k] for k in range(3)]  # inactive moments
    # 3. Integrate the squared residual: (u t + v)^2 where active, (e t + y0)^2 where not.
    u, v = e - a, y0 - c
    row_loss = u**2 * A[2] + 2 * u * v * A[1] + v**2 * A[0]
    row_loss = row_loss + e**2 * F[2] + 2 * e * y0 * F[1] + y0**2 * F[0]
    prob = np.prod(np.where(pl.masks, p[..., None, :], 1 - p[..., None, :]), axis=-1)
    coef = pl.weight * prob[..., pl.subset] * imp[..., pl.out]  # (..., row)
    loss = np.sum(coef * row_loss, axis=-1)
    if not grad:
        return loss, None, None
    # 4. d loss / d z = -2 (residual) where active: moments R0 = int r dt, R1 = int r t dt.
    R0, R1 = u * A[1] + v * A[0], u * A[2] + v * A[1]
    g_b = -2 * np.einsum("...r,ri->...i", coef * R0, pl.out_onehot)
    g_M = -2 * (
        np.einsum("...r,ri,rj->...ij", coef * R0, pl.out_onehot, pl.X)
        + np.einsum("...r,ri,rj->...ij", coef * R1, pl.out_onehot, pl.inner_onehot)
    )
    g_W = W @ (g_M + np.swapaxes(g_M, -1, -2))  # M = W^T W
    return loss, g_W, g_b


def expected_loss(
    W: np.ndarray, b: np.ndarray, importance: ArrayLike, density: ArrayLike
) -> np.ndarray:
    """Exact expected loss per sample for W (..., hidden, feature), b (..., feature); n <= 4."""
    return _loss_and_grad(W, b, importance, density, grad=False)[0]
