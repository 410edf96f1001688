"""Neuron × feature weights of models with a privileged hidden basis: the hidden-ReLU model
(raw weights, with each model's monosemanticity) and the |x| model (each neuron scaled)."""

from __future__ import annotations

import numpy as np
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from analysis.context import Context, best_models, only, real_W
from analysis.figs import panels
from analysis.figs.style import fmt_p


def privileged(ctx: Context) -> dict[str, Figure]:
    """`neuron_weights`: neuron × feature weights per density, with the mean monosemanticity of
    each model (the neurons step's `monosemanticity_best`)."""
    best = only(best_models(ctx), ("density",))
    mono_best = ctx.analysis["monosemanticity_best"]
    mono_best = mono_best.isel({d: 0 for d in mono_best.dims if d not in ("density", "hidden")})
    W = best["W"].transpose("density", "hidden", "feature").values  # (density, neuron, feature)
    vmax = max(1e-3, float(np.nanmax(np.abs(W), initial=0)))
    mono = mono_best.transpose("density", "hidden").values  # (density, neuron)
    fig, axes = panels.grid_of_axes(len(W), 7, 2.2, sharey=True)
    for ax, w, p, mo in zip(axes, W, best["density"].values, mono, strict=True):
        im = ax.imshow(
            w,
            cmap=panels.DIVERGING,
            vmin=-vmax,
            vmax=vmax,
            aspect="auto",
            interpolation="nearest",
            extent=(0.5, w.shape[1] + 0.5, w.shape[0] + 0.5, 0.5),
        )
        ax.set_xticks(range(1, w.shape[1] + 1, max(1, w.shape[1] // 5)))
        ax.set_yticks(range(1, w.shape[0] + 1))
        ax.tick_params(labelsize=7)
        ax.set_title(f"p = {fmt_p(p)}\nmonosemantic {np.nanmean(mo):.2f}", fontsize=9)
        ax.set_xlabel("feature j", fontsize=8)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("neuron", fontsize=8)
    fig.colorbar(im, ax=list(axes), label="weight W_(neuron, feature)", shrink=0.85, pad=0.01)
    fig.suptitle(
        "Hidden-ReLU model: neuron × feature weights by density (lowest-loss seed; "
        "monosemantic: mean share of a neuron's squared weights on its top feature)",
        fontsize=10,
        y=1.08,  # above the two-line panel titles
    )
    return {"neuron_weights": fig}


def neuron_weights(W: np.ndarray) -> np.ndarray:
    """Each neuron's (row's) input weights scaled so its largest |W| is 1, rows ordered by the
    feature they weigh most (monosemantic neurons then form a diagonal)."""
    W = np.asarray(W, float)
    scale = np.abs(W).max(axis=1, keepdims=True)
    scaled = W / np.where(scale > 0, scale, 1.0)
    return scaled[np.argsort(np.abs(W).argmax(axis=1), kind="stable")]


def absval(ctx: Context) -> dict[str, Figure]:
    """`neuron_weights`: neuron × feature input weights per density, each neuron scaled to
    max |W| = 1 and ordered by its top feature."""
    best = only(best_models(ctx), ("density",))
    densities = best["density"].values
    fig, axes = plt.subplots(
        1, len(densities), squeeze=False, sharey=True, figsize=(2.4 * len(densities) + 1.2, 4.2)
    )
    image = None
    for ax, p in zip(axes[0], densities, strict=True):
        W = real_W(best["W"].sel(density=p).transpose("hidden", "feature").values)
        W = W[:, ~np.isnan(W).all(0)]
        if not np.isfinite(W).all():
            ax.text(0.5, 0.5, "missing", ha="center", transform=ax.transAxes)
            continue
        image = ax.imshow(
            neuron_weights(W),
            cmap="RdBu_r",
            vmin=-1,
            vmax=1,
            aspect="auto",
            interpolation="nearest",
        )
        ax.set_title(f"p = {fmt_p(p)}", fontsize=9)
        ax.set_xlabel("feature i (by importance)", fontsize=8)
    axes[0, 0].set_ylabel("neuron (ordered by its largest weight)", fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=list(axes[0]), label="input weight / neuron's max |W|", shrink=0.9)
    fig.suptitle("Computing |x| in superposition: neuron input weights by density", fontsize=11)
    return {"neuron_weights": fig}
