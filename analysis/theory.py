"""Theory of the ReLU output model's phase diagrams: closed forms (the exact expected loss is in
analysis.exact_loss).

Model x' = ReLU(W^T W x + b), loss sum_i I_i E[(x_i - x'_i)^2] for one sample (summed over
features, not averaged), x_i = 0 with probability 1 - p_i, else U[0, 1], independently.
"2to1": importances (1, r); "3to2": importances (1, 1, r). The last feature is the "extra"
feature whose phase the diagrams show; every feature has the same density p.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np
import xarray as xr
from scipy.optimize import brentq

from analysis.metrics import DEDICATED, IGNORED, SUPERPOSED

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


def phase_kind(cfg: Mapping[str, Any], cell_dims: Iterable[str]) -> str | None:
    """'2to1' or '3to2' when a store's config and cell dims are a phase grid the closed forms
    describe, else None.

    That is: ReLU model, n → m = 2 → 1 or 3 → 2, all importances 1 but the last feature's,
    scaled by the relative_importance axis, one density for all features, and exactly the axes
    relative_importance and density.
    """
    model, data = cfg.get("model") or {}, cfg.get("data") or {}
    imp = data.get("importance") or {}
    if set(cell_dims) != {"relative_importance", "density"} or model.get("kind") != "relu":
        return None
    if (
        data.get("density_features") is not None
        or imp.get("schedule") != "constant"
        or float(imp.get("value", 1.0)) != 1.0
    ):
        return None
    shape = (int(model.get("n_features") or 0), int(model.get("n_hidden") or 0))
    kind = {(2, 1): "2to1", (3, 2): "3to2"}.get(shape)
    if kind is None or list(data.get("relative_importance_features") or []) != [shape[0] - 1]:
        return None
    return kind
