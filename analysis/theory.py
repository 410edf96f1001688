"""Theory of the ReLU output model's phase diagrams: closed forms and an exact expected loss.

Model x' = ReLU(W^T W x + b), loss sum_i I_i E[(x_i - x'_i)^2] for one sample (summed over
features, not averaged), x_i = 0 with probability 1 - p_i, else U[0, 1], independently.
"2to1": importances (1, r); "3to2": importances (1, 1, r). The last feature is the "extra"
feature whose phase the diagrams show; every feature has the same density p.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from functools import cache
from typing import NamedTuple

import numpy as np
import xarray as xr
from scipy.optimize import brentq, minimize
from threadpoolctl import threadpool_limits

from analysis.metrics import DEDICATED, IGNORED, SUPERPOSED, classify_phases

ArrayLike = np.ndarray | float
KINDS = ("2to1", "3to2")


# ---------------------------------------------------------------- closed forms


def drop_loss(importance: ArrayLike, p: ArrayLike) -> np.ndarray:
    """Cost of dropping a feature (bias at its mean p/2): I (p/3 - p^2/4)."""
    p = np.asarray(p, dtype=float)
    return np.asarray(importance) * (p / 3 - p**2 / 4)


def antipodal_loss(importance_1: ArrayLike, importance_2: ArrayLike, p: ArrayLike) -> np.ndarray:
    """Cost of an antipodal pair W = [1, -1] at zero bias: (I_1 + I_2) p^2 / 6."""
    p = np.asarray(p, dtype=float)
    return (np.asarray(importance_1) + np.asarray(importance_2)) * p**2 / 6


class Candidate(NamedTuple):
    name: str
    phase: int  # phase of the extra (last) feature
    W: tuple[tuple[float, ...], ...]  # (hidden, feature)
    dropped: int | None  # feature whose bias is its mean p/2 (W column is zero)
    loss: Callable[[ArrayLike, ArrayLike], np.ndarray]  # closed form in (r, p)


# Listed in tie-break order: where two candidates have equal loss the earlier one wins.
CANDIDATES: dict[str, tuple[Candidate, ...]] = {
    "2to1": (
        Candidate("ignore_extra", IGNORED, ((1, 0),), 1, lambda r, p: drop_loss(r, p)),
        Candidate("dedicate_extra", DEDICATED, ((0, 1),), 0, lambda r, p: drop_loss(1.0, p)),
        Candidate("antipodal", SUPERPOSED, ((1, -1),), None, lambda r, p: antipodal_loss(1, r, p)),
    ),
    # paper.md's kernels: W ⊥ [0,0,1], [1,0,0], [0,1,1], [1,1,0]. [1,0,0] (drop a unit-importance
    # feature, dedicate the extra) is not antipodal, but it is the best candidate for r > 1 and
    # dense p, so it stays in the list.
    "3to2": (
        Candidate("ignore_extra", IGNORED, ((1, 0, 0), (0, 1, 0)), 2, lambda r, p: drop_loss(r, p)),
        Candidate(
            "drop_other", DEDICATED, ((0, 1, 0), (0, 0, 1)), 0, lambda r, p: drop_loss(1.0, p)
        ),
        Candidate(
            "extra_antipodal",
            SUPERPOSED,
            ((1, 0, 0), (0, 1, -1)),
            None,
            lambda r, p: antipodal_loss(1, r, p),
        ),
        Candidate(
            "others_antipodal",
            DEDICATED,
            ((1, -1, 0), (0, 0, 1)),
            None,
            lambda r, p: antipodal_loss(1, 1, p),
        ),
    ),
}


def _check_kind(kind: str) -> None:
    if kind not in CANDIDATES:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")


def importances(kind: str, r: float) -> np.ndarray:
    """Importance vector of a phase-diagram model: (1, r) or (1, 1, r)."""
    _check_kind(kind)
    return np.array([1.0] * (len(CANDIDATES[kind][0].W[0]) - 1) + [r])


def candidate_losses(kind: str, r: ArrayLike, p: ArrayLike) -> dict[str, np.ndarray]:
    """Closed-form expected loss of each candidate, broadcast over r and p."""
    _check_kind(kind)
    r, p = np.broadcast_arrays(np.asarray(r, dtype=float), np.asarray(p, dtype=float))
    return {c.name: np.broadcast_to(c.loss(r, p), r.shape) for c in CANDIDATES[kind]}


def losses_2to1(r: ArrayLike, p: ArrayLike) -> dict[str, np.ndarray]:
    """2->1 candidate losses: 'ignore_extra', 'dedicate_extra', 'antipodal'."""
    return candidate_losses("2to1", r, p)


def losses_3to2(r: ArrayLike, p: ArrayLike) -> dict[str, np.ndarray]:
    """3->2 candidate losses, keyed by the names in CANDIDATES["3to2"]."""
    return candidate_losses("3to2", r, p)


def candidate_params(kind: str, name: str, p: float) -> tuple[np.ndarray, np.ndarray]:
    """W (hidden, feature) and b (feature,) of a named candidate at density p."""
    _check_kind(kind)
    (cand,) = [c for c in CANDIDATES[kind] if c.name == name]
    W = np.array(cand.W, dtype=float)
    b = np.zeros(W.shape[1])
    if cand.dropped is not None:
        b[cand.dropped] = p / 2
    return W, b


def analytic_phase(kind: str, r: ArrayLike, p: ArrayLike) -> np.ndarray:
    """Phase code of the extra feature in the lowest-loss candidate (ties: first listed)."""
    losses = np.stack(list(candidate_losses(kind, r, p).values()))  # (cand, ...)
    phases = np.array([c.phase for c in CANDIDATES[kind]])
    return phases[np.argmin(losses, axis=0)]


def analytic_phase_2to1(r: ArrayLike, p: ArrayLike) -> np.ndarray:
    """Phase of feature 2 (importance r) in the 2->1 closed-form diagram."""
    return analytic_phase("2to1", r, p)


def analytic_phase_3to2(r: ArrayLike, p: ArrayLike) -> np.ndarray:
    """Phase of feature 3 (importance r) in the 3->2 closed-form diagram."""
    return analytic_phase("3to2", r, p)


class Boundaries(NamedTuple):
    """Density of the phase boundary at each r; NaN where no such boundary exists at that r."""

    superposed_ignored: np.ndarray
    superposed_dedicated: np.ndarray


def boundaries_2to1(r: ArrayLike) -> Boundaries:
    """2->1 boundaries in closed form: p = 4r/(2+5r) for r <= 1 and p = 4/(5+2r) for r >= 1."""
    r = np.asarray(r, dtype=float)
    return Boundaries(
        np.where(r <= 1, 4 * r / (2 + 5 * r), np.nan), np.where(r >= 1, 4 / (5 + 2 * r), np.nan)
    )


def _phase_loss(kind: str, r: float, p: np.ndarray, phase: int) -> np.ndarray:
    cands = [c for c in CANDIDATES[kind] if c.phase == phase]
    return np.min([np.broadcast_to(c.loss(r, p), p.shape) for c in cands], axis=0)


def _boundary(kind: str, r: float, other: int) -> float:
    """Density where the superposed and `other` phases' best losses cross and both are optimal."""
    third = ({IGNORED, DEDICATED} - {other}).pop()

    def gap(p: np.ndarray) -> np.ndarray:  # divided by p so it stays O(1) as p -> 0
        return (_phase_loss(kind, r, p, SUPERPOSED) - _phase_loss(kind, r, p, other)) / p

    grid = np.geomspace(1e-6, 1.0, 241)  # geometric: roots sit near p = 2r for small r
    g = gap(grid)
    s = np.sign(g)
    # Sign changes between grid points, and isolated zeros on them. A gap that is zero over a
    # whole range is a tie of two candidates at every p (3->2 at r = 1), not a boundary in p.
    brackets = [(grid[k], grid[k + 1]) for k in np.flatnonzero(s[:-1] * s[1:] < 0)]
    brackets += [
        (grid[k], grid[k]) for k in np.flatnonzero(s[1:-1] == 0) + 1 if s[k - 1] * s[k + 1] < 0
    ]
    for lo, hi in brackets:
        root = lo if lo == hi else brentq(lambda q: float(gap(np.array(q))), lo, hi, xtol=1e-14)
        q = np.array(root)
        if _phase_loss(kind, r, q, third) >= _phase_loss(kind, r, q, other) - 1e-15:
            return float(root)
    return np.nan


def boundaries_from_roots(kind: str, r: ArrayLike) -> Boundaries:
    """Boundaries found by root finding in p between the best closed-form losses of two phases."""
    _check_kind(kind)
    r = np.asarray(r, dtype=float)
    out = [np.vectorize(lambda x, o=o: _boundary(kind, x, o))(r) for o in (IGNORED, DEDICATED)]
    return Boundaries(*out)


def boundaries_3to2(r: ArrayLike) -> Boundaries:
    """3->2 boundaries in p, by root finding between the closed-form candidate losses."""
    return boundaries_from_roots("3to2", r)


def analytic_phase_map(
    kind: str, relative_importance: np.ndarray, density: np.ndarray
) -> xr.DataArray:
    """Closed-form phase codes of the extra feature over (relative_importance, density)."""
    r = np.asarray(relative_importance, dtype=float)
    p = np.asarray(density, dtype=float)
    return xr.DataArray(
        analytic_phase(kind, r[:, None], p[None, :]),
        dims=("relative_importance", "density"),
        coords={"relative_importance": r, "density": p},
        name="phase",
        attrs={"kind": kind, "source": "closed form"},
    )


def near_boundary(kind: str, relative_importance: np.ndarray, density: np.ndarray) -> xr.DataArray:
    """True where a grid neighbour (diagonals included) has a different analytic phase."""
    phase = analytic_phase_map(kind, relative_importance, density)
    padded = np.pad(phase.values, 1, mode="edge")  # edges compare only with real neighbours
    ni, nj = phase.shape
    near = np.zeros(phase.shape, dtype=bool)
    for di, dj in itertools.product((0, 1, 2), repeat=2):
        near |= padded[di : di + ni, dj : dj + nj] != phase.values
    return phase.copy(data=near).rename("near_boundary")


# ---------------------------------------------------------------- exact expected loss

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
