"""Figures of the correlated-features and absolute-value experiments (conf/grid/correlated.yaml,
conf/grid/absval.yaml), registered into analysis.report.FIGURES like analysis.experiments."""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np

from analysis import panels
from analysis.experiments import _loss_curves, _p, best_models, real_W

if TYPE_CHECKING:
    from analysis.report import Context


def set_cosines(W: np.ndarray, set_size: int) -> tuple[float, float]:
    """Mean cosine between features of the same set, and of different sets; W (hidden, feat)."""
    norms = np.linalg.norm(W, axis=0)
    unit = W / np.where(norms > 1e-9, norms, np.inf)
    cos = unit.T @ unit  # (feat, feat)
    sets = np.arange(W.shape[1]) // set_size
    same = (sets[:, None] == sets[None, :]) & ~np.eye(len(sets), dtype=bool)
    other = sets[:, None] != sets[None, :]
    return float(cos[same].mean()), float(cos[other].mean())


def correlated_figures(ctx: Context) -> dict:
    """Columns of W as arrows for every (correlation, density) cell, coloured by feature set."""
    best = best_models(ctx)
    set_size = int(ctx.config["data"]["set_size"])
    kinds = (list(best["correlation"].values) if "correlation" in best.dims
             else [ctx.config["data"]["correlation"]])
    densities = best["density"].values if "density" in best.dims else [None]
    fig, axes = plt.subplots(len(kinds), len(densities), squeeze=False,
                             figsize=(2.6 * len(densities), 2.8 * len(kinds) + 0.6),
                             sharex=True, sharey=True)
    palette = plt.get_cmap("tab10")  # sets are categories; tab10's first hues are distinct
    for i, kind in enumerate(kinds):
        for j, p in enumerate(densities):
            sel = {}
            if "correlation" in best.dims:
                sel["correlation"] = kind
            if p is not None:
                sel["density"] = p
            W = real_W(best["W"].sel(sel).transpose("hidden", "feature").values)
            ax = axes[i, j]
            n = W.shape[1]
            colours = [palette(f // set_size) for f in range(n)]
            if W.shape[0] == 2 and np.isfinite(W).all():
                panels.arrows(ax, W, colours, max(1.3, float(np.linalg.norm(W, axis=0).max()) + .3))
                within, across = set_cosines(W, set_size)
                ax.text(0.5, 0.02, f"cos within sets {within:+.2f}, across {across:+.2f}",
                        transform=ax.transAxes, ha="center", va="bottom", fontsize=7)
            else:
                ax.text(0.5, 0.5, "missing" if not np.isfinite(W).all() else
                        f"{W.shape[0]}-D: see the analysis dataset", ha="center",
                        transform=ax.transAxes)
            ax.set_title(f"{kind}, p = {_p(p)}" if p is not None else kind, fontsize=9)
            if i == len(kinds) - 1:
                ax.set_xlabel("hidden dim 1", fontsize=8)
            if j == 0:
                ax.set_ylabel("hidden dim 2", fontsize=8)
    fig.suptitle(f"Feature sets of {set_size}: correlated sets go orthogonal, anticorrelated "
                 "sets antipodal (colour: set)", fontsize=11)
    return {"arrows_by_set": fig, **_loss_curves(ctx)}


def neuron_weights(W: np.ndarray) -> np.ndarray:
    """Each neuron's (row's) input weights scaled so its largest |W| is 1, rows ordered by the
    feature they weigh most (monosemantic neurons then form a diagonal)."""
    W = np.asarray(W, float)
    scale = np.abs(W).max(axis=1, keepdims=True)
    scaled = W / np.where(scale > 0, scale, 1.0)
    return scaled[np.argsort(np.abs(W).argmax(axis=1), kind="stable")]


def absval_figures(ctx: Context) -> dict:
    """Neuron × feature input weights per density (each neuron scaled to max |W| = 1)."""
    best = best_models(ctx)
    densities = best["density"].values
    fig, axes = plt.subplots(1, len(densities), squeeze=False, sharey=True,
                             figsize=(2.4 * len(densities) + 1.2, 4.2))
    image = None
    for ax, p in zip(axes[0], densities, strict=True):
        W = real_W(best["W"].sel(density=p).transpose("hidden", "feature").values)
        W = W[:, ~np.isnan(W).all(0)]
        if not np.isfinite(W).all():
            ax.text(0.5, 0.5, "missing", ha="center", transform=ax.transAxes)
            continue
        image = ax.imshow(neuron_weights(W), cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto",
                          interpolation="nearest")
        ax.set_title(f"p = {_p(p)}", fontsize=9)
        ax.set_xlabel("feature i (by importance)", fontsize=8)
    axes[0, 0].set_ylabel("neuron (ordered by its largest weight)", fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=list(axes[0]), label="input weight / neuron's max |W|",
                     shrink=0.9)
    fig.suptitle("Computing |x| in superposition: neuron input weights by density",
                 fontsize=11)
    return {"neuron_weights": fig, **_loss_curves(ctx)}


FIGURES = {"correlated": correlated_figures, "absval": absval_figures}

