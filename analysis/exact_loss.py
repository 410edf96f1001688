"""The exact expected loss of the ReLU output model, by quadrature, and its minimisation.

Model and loss as in analysis.theory: x' = ReLU(W^T W x + b), loss sum_i I_i E[(x_i - x'_i)^2]
per sample, x_i = 0 with probability 1 - p_i, else U[0, 1], independently. Used to check the
closed forms (tests) and the stored losses of trained models.
"""

from __future__ import annotations

import itertools
from functools import cache
from typing import NamedTuple

import numpy as np
import xarray as xr
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from analysis.metrics import classify_phases

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
_MAX_FEATURES = 4


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
    if n > _MAX_FEATURES:
        raise ValueError(f"exact expected loss needs n <= {_MAX_FEATURES} features; got n={n}")
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


def minimise_expected_loss(
    n: int, m: int, importance: ArrayLike, density: ArrayLike, starts: int = 8, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, float]:
    """Best (W, b, loss) over L-BFGS-B runs from `starts` xavier-normal starts (b = 0)."""
    if starts < 1:
        raise ValueError(f"starts must be an integer >= 1; got starts={starts}")
    importance = np.broadcast_to(np.asarray(importance, dtype=float), (n,))
    density = np.broadcast_to(np.asarray(density, dtype=float), (n,))
    # Loss at W = 0, b = 0; dividing by it keeps the objective O(1) at any density so that the
    # optimiser's absolute tolerances mean the same thing across the diagram.
    scale = max(float(np.sum(importance * density)) / 3, 1e-300)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        W, b = theta[: m * n].reshape(m, n), theta[m * n :]
        loss, g_W, g_b = _loss_and_grad(W, b, importance, density)
        assert g_W is not None and g_b is not None  # grad=True always returns them
        return float(loss) / scale, np.concatenate([g_W.ravel(), g_b]) / scale

    rng = np.random.default_rng(seed)
    best = (np.zeros((m, n)), np.zeros(n), np.inf)
    # L-BFGS-B calls BLAS on tiny matrices, where threads only add overhead; on a busy machine
    # their spinning made the minimisation ~15x slower. One limit around all starts: entering it
    # is not free.
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(starts):
            W0 = rng.normal(0.0, np.sqrt(2 / (m + n)), size=(m, n))
            theta0 = np.concatenate([W0.ravel(), np.zeros(n)])
            res = minimize(
                objective,
                theta0,
                jac=True,
                method="L-BFGS-B",
                options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9},
            )
            loss = float(res.fun) * scale
            if loss < best[2]:
                best = (res.x[: m * n].reshape(m, n), res.x[m * n :], loss)
    return best


def numerical_phase_map(
    n: int,
    m: int,
    r_values: np.ndarray,
    p_values: np.ndarray,
    extra_feature: int = -1,
    starts: int = 8,
    seed: int = 0,
    norm_threshold: float = 0.5,
    superposition_threshold: float = 0.5,
) -> xr.DataArray:
    """Phase of the extra feature (importance r, others 1) at the minimised exact loss."""
    r_values = np.asarray(r_values, dtype=float)
    p_values = np.asarray(p_values, dtype=float)
    phase = np.empty((r_values.size, p_values.size), dtype=np.int64)
    for (ir, r), (ip, p) in itertools.product(enumerate(r_values), enumerate(p_values)):
        importance = np.ones(n)
        importance[extra_feature] = r
        W, _, _ = minimise_expected_loss(n, m, importance, p, starts=starts, seed=seed)
        codes = classify_phases(W, norm_threshold, superposition_threshold)
        phase[ir, ip] = codes[extra_feature]
    return xr.DataArray(
        phase,
        dims=("relative_importance", "density"),
        coords={"relative_importance": r_values, "density": p_values},
        name="phase",
        attrs={"n": n, "m": m, "source": "minimised exact expected loss", "starts": starts},
    )
