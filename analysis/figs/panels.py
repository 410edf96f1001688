"""Drawing primitives for the experiments' figures: one axes each, no data selection.

Palettes are colour-blind safe: viridis for ordered values, RdBu (diverging, centred on 0) for
signed weights, Okabe–Ito for categories.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

import analysis.figs.style  # noqa: F401  (selects the Agg backend before any figure)

DIVERGING = "RdBu_r"  # red positive, blue negative, white 0
ORDERED = "viridis"
NONE_COLOUR = "#BBBBBB"


def value_norm(values: np.ndarray) -> Normalize:
    """A log colour scale for positive values spanning a factor 10 or more, else linear."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size and v.min() > 0 and v.max() / v.min() >= 10:
        return LogNorm(v.min(), v.max())
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
    return Normalize(lo, hi if hi > lo else lo + 1e-9)


def arrows(ax: Axes, W: np.ndarray, colours: Any, limit: float, labels: bool = True) -> None:
    """Columns of a 2 × n W as arrows from the origin, on equal axes with the unit circle."""
    W = np.nan_to_num(np.asarray(W, float))
    if W.shape[0] == 1:  # a 1-D model: draw its line
        W = np.vstack([W, np.zeros_like(W)])
    t = np.linspace(0, 2 * np.pi, 200)
    ax.plot(np.cos(t), np.sin(t), color="#DDDDDD", linewidth=0.8, zorder=0)
    ax.axhline(0, color="#EEEEEE", linewidth=0.6, zorder=0)
    ax.axvline(0, color="#EEEEEE", linewidth=0.6, zorder=0)
    ax.quiver(
        np.zeros(W.shape[1]),
        np.zeros(W.shape[1]),
        W[0],
        W[1],
        color=colours,
        angles="xy",
        scale_units="xy",
        scale=1,
        width=0.012,
        zorder=2,
    )
    if labels:
        for i, (x, y) in enumerate(W[:2].T):
            r = np.hypot(x, y)
            if r > 0.15:  # label learned features just beyond their tip
                ax.text(
                    x * (1 + 0.17 / r),
                    y * (1 + 0.17 / r),
                    str(i + 1),
                    fontsize=7,
                    ha="center",
                    va="center",
                    color="#333333",
                )
    ax.set_xlim(-limit, limit)
    ax.set_ylim(-limit, limit)
    ax.set_aspect("equal")
    ax.set_xticks([-1, 0, 1])
    ax.set_yticks([-1, 0, 1])
    ax.tick_params(labelsize=7)


def gram(ax: Axes, W: np.ndarray, vmax: float) -> AxesImage:
    """WᵀW (feature × feature) of one model as a heatmap centred on 0; returns the image."""
    W = np.nan_to_num(np.asarray(W, float))
    G = W.T @ W
    n = G.shape[0]
    im = ax.imshow(
        G,
        cmap=DIVERGING,
        vmin=-vmax,
        vmax=vmax,
        interpolation="nearest",
        extent=(0.5, n + 0.5, n + 0.5, 0.5),
    )
    _feature_ticks(ax, n, "x")
    _feature_ticks(ax, n, "y")
    return im


def _feature_ticks(ax: Axes, n: int, which: str) -> None:
    """Ticks at features 1, 5, 10, ... (1-based, as in the paper's figures)."""
    step = 1 if n <= 10 else 5 if n <= 20 else 10 if n <= 40 else 20 if n <= 100 else 50
    ticks = sorted({1, *range(step, n + 1, step)})
    getattr(ax, f"set_{which}ticks")(ticks)
    ax.tick_params(labelsize=7)


def feature_barh(ax: Axes, values: np.ndarray, colours: Any, xlim: tuple[float, float]) -> None:
    """Horizontal bars, feature 1 on top (aligned with the rows of a WᵀW panel)."""
    v = np.nan_to_num(np.asarray(values, float))
    n = len(v)
    ax.barh(np.arange(1, n + 1), v, color=colours, height=0.8, edgecolor="none")
    ax.axvline(0, color="#444444", linewidth=0.6)
    ax.set_ylim(n + 0.5, 0.5)
    ax.set_xlim(*xlim)
    _feature_ticks(ax, n, "y")


def superposition_colours(sup: np.ndarray) -> np.ndarray:
    """The notebook's bar colour: √superposition clipped to [0, 1], on viridis."""
    s = np.clip(np.sqrt(np.clip(np.nan_to_num(np.asarray(sup, float)), 0, None)), 0, 1)
    return plt.get_cmap(ORDERED)(s)


def spread(values: list[float], gap: float) -> list[float]:
    """Label positions for values sorted high to low: moved down so that they are gap apart."""
    out: list[float] = []
    for v in values:
        out.append(min(v, out[-1] - gap) if out else v)
    return out


def message_figure(title: str, message: str) -> Figure:
    """A figure that says why it has nothing to show (in the place of the missing figure)."""
    fig, ax = plt.subplots(figsize=(7, 2.2))
    ax.axis("off")
    ax.text(
        0.5,
        0.62,
        title,
        ha="center",
        va="center",
        fontsize=12,
        weight="bold",
        transform=ax.transAxes,
    )
    ax.text(
        0.5, 0.3, message, ha="center", va="center", fontsize=9, wrap=True, transform=ax.transAxes
    )
    return fig


def grid_of_axes(
    n: int, ncols: int, size: float, height: float = 1.0, **kw: Any
) -> tuple[Figure, np.ndarray]:
    """n panels in rows of ncols (height: row height / panel width); unused axes hidden.

    Returns (fig, the first n axes, flat)."""
    ncols = max(1, min(n, ncols))
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(size * ncols + 1.2, size * height * nrows + 0.8), squeeze=False, **kw
    )
    flat = axes.ravel()
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]
