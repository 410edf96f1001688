"""Geometry of learned weights: feature norms, superposition, dimensionality and phase codes.

Every function takes W with shape (..., hidden, feature) and works over any leading axes
(instances, sweep points). NaN marks padding: a feature column that is all NaN is absent
(its results are NaN, or -1 for phase codes); a hidden row that is all NaN does not count as
a dimension. Absent entries are treated as zeros elsewhere, so they never change the results
of present features.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# The phase codes, the thresholds and their tolerances are shared with the engine (its schema
# and the refinement): defined once, with why, in sweep.constants.
from sweep.constants import (
    ABSENT,
    DEDICATED,
    IGNORED,
    NORM_THRESHOLD,
    SUPERPOSED,
    SUPERPOSITION_THRESHOLD,
    TIE_TOL,
    ZERO_NORM,
)

PHASE_NAMES = ("ignored", "dedicated", "superposed")


class StickyValue(NamedTuple):
    value: float
    name: str


# Dimensionalities the paper finds features "stick" to; k unit vectors forming a tight frame in
# d dimensions have D_i = d / k. Ordered from largest to smallest.
STICKY_VALUES: tuple[StickyValue, ...] = (
    StickyValue(1.0, "dedicated"),
    StickyValue(3 / 4, "tetrahedron"),
    StickyValue(2 / 3, "triangle"),
    StickyValue(1 / 2, "antipodal pair"),
    StickyValue(2 / 5, "pentagon"),
    StickyValue(3 / 8, "square antiprism"),
    StickyValue(0.0, "not learned"),
)


def _split(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return W with NaN replaced by 0, and the (..., feature) mask of present features."""
    W = np.asarray(W, dtype=float)
    if W.ndim < 2:
        raise ValueError(f"W must have shape (..., hidden, feature); got shape {W.shape}")
    present = ~np.all(np.isnan(W), axis=-2)
    return np.nan_to_num(W, nan=0.0), present


def _overlaps(W0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return norms (..., feat) and P (..., feat, feat) with P_ij = W^_i . W_j."""
    norms = np.linalg.norm(W0, axis=-2)  # (..., feat)
    safe = np.where(norms > ZERO_NORM, norms, 1.0)
    gram = np.swapaxes(W0, -1, -2) @ W0  # (..., feat, feat)
    return norms, gram / safe[..., :, None]


def feature_norms(W: np.ndarray) -> np.ndarray:
    """Column norms ||W_i||, shape (..., feature); NaN for absent features."""
    W0, present = _split(W)
    return np.where(present, np.linalg.norm(W0, axis=-2), np.nan)


def superposition(W: np.ndarray) -> np.ndarray:
    """Sum over j != i of (W^_i . W_j)^2, shape (..., feature); 0 for zero-norm features."""
    W0, present = _split(W)
    norms, P = _overlaps(W0)
    total = np.sum(P**2, axis=-1) - np.diagonal(P, axis1=-2, axis2=-1) ** 2
    total = np.where(norms > ZERO_NORM, np.maximum(total, 0.0), 0.0)
    return np.where(present, total, np.nan)


def feature_dimensionality(W: np.ndarray) -> np.ndarray:
    """D_i = ||W_i||^2 / sum_j (W^_i . W_j)^2 (j = i included), shape (..., feature)."""
    W0, present = _split(W)
    norms, P = _overlaps(W0)
    denom = np.sum(P**2, axis=-1)  # >= ||W_i||^2 > 0 for represented features
    represented = norms > ZERO_NORM
    D = np.where(represented, norms**2 / np.where(represented, denom, 1.0), 0.0)
    return np.where(present, D, np.nan)


def dimensions_per_feature(W: np.ndarray) -> np.ndarray:
    """D* = m / ||W||_F^2 over present hidden rows, shape (...); NaN if W is all zero."""
    W = np.asarray(W, dtype=float)
    m = np.sum(~np.all(np.isnan(W), axis=-1), axis=-1)  # hidden rows that are not padding
    frob2 = np.nansum(W**2, axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(frob2 > 0, m / np.where(frob2 > 0, frob2, 1.0), np.nan)


def classify_phases(
    W: np.ndarray,
    norm_threshold: float = NORM_THRESHOLD,
    superposition_threshold: float = SUPERPOSITION_THRESHOLD,
) -> np.ndarray:
    """Phase code per feature, shape (..., feature): IGNORED, DEDICATED, SUPERPOSED or -1."""
    # Why these defaults: see sweep.constants (trained norms are bimodal, an antipodal pair has
    # superposition 1, an orthogonal feature 0: halfway, both).
    W0, present = _split(W)
    norms = np.linalg.norm(W0, axis=-2)
    sup = superposition(W0)
    phase = np.where(sup >= superposition_threshold - TIE_TOL, SUPERPOSED, DEDICATED)
    phase = np.where(norms < norm_threshold, IGNORED, phase)
    return np.where(present, phase, ABSENT).astype(np.int64)


def nearest_sticky(D: np.ndarray | float, tol: float = 0.05) -> np.ndarray:
    """Index into STICKY_VALUES of the sticky value nearest D if within tol, else -1."""
    D = np.asarray(D, dtype=float)
    values = np.array([s.value for s in STICKY_VALUES])
    dist = np.abs(D[..., None] - values)  # (..., sticky)
    best = np.argmin(np.nan_to_num(dist, nan=np.inf), axis=-1)
    within = np.take_along_axis(dist, best[..., None], axis=-1)[..., 0] <= tol
    return np.where(within, best, -1).astype(np.int64)


# A neuron whose weight row is shorter than this is dead and has no monosemanticity.
DEAD_NEURON = 0.1


def monosemanticity(W: np.ndarray) -> np.ndarray:
    """Per neuron (hidden row), the share of its squared weights on its largest feature:
    1 = monosemantic. W: (..., neuron, feature); NaN for dead neurons (row norm < DEAD_NEURON)
    and padding rows. Meaningful where the hidden basis is privileged (a ReLU on the hidden
    layer); elsewhere any rotation of W is as good, and the number says nothing.
    """
    W2 = np.nan_to_num(np.asarray(W, float)) ** 2
    total = W2.sum(-1)
    share = W2.max(-1) / np.where(total > 0, total, 1.0)
    return np.where(np.sqrt(total) >= DEAD_NEURON, share, np.nan)


def set_cosines(W: np.ndarray, set_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean cosine between features of the same set, and of different sets.

    W: (..., hidden, feature), features in consecutive sets of set_size; returns two arrays of
    shape (...). Zero-norm features count as cosine 0; NaN where W is all NaN.
    """
    W0, present = _split(W)
    norms = np.linalg.norm(W0, axis=-2)  # (..., feat)
    unit = W0 / np.where(norms > ZERO_NORM, norms, np.inf)[..., None, :]
    cos = np.swapaxes(unit, -1, -2) @ unit  # (..., feat, feat)
    sets = np.arange(W0.shape[-1]) // set_size
    same = (sets[:, None] == sets[None, :]) & ~np.eye(len(sets), dtype=bool)
    other = sets[:, None] != sets[None, :]
    anything = present.any(-1)
    within = np.where(anything, cos[..., same].mean(-1) if same.any() else np.nan, np.nan)
    across = np.where(anything, cos[..., other].mean(-1) if other.any() else np.nan, np.nan)
    return within, across
