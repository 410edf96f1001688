"""WᵀW, the bias and the feature norms by sparsity (the paper's basic results, and the blog
post's linear-vs-ReLU comparison), of the lowest-loss seed of every cell."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure

from analysis.context import Context, best_models, model_label, only
from analysis.figs import panels
from analysis.figs.style import OKABE_ITO, fmt_p


def bias_limits(b: np.ndarray) -> tuple[float, float]:
    lo, hi = float(np.nanmin(b, initial=0)), float(np.nanmax(b, initial=0))
    pad = 0.08 * max(hi - lo, 1e-3)
    return min(lo, 0) - pad, max(hi, 0) + pad


def gram_vmax(W: np.ndarray) -> float:
    W0 = np.nan_to_num(W)
    return max(1e-3, float(np.abs(np.swapaxes(W0, -1, -2) @ W0).max()))


def gram_bias_norms(
    W: np.ndarray, b: np.ndarray, norms: np.ndarray, sup: np.ndarray, dens: np.ndarray, title: str
) -> Figure:
    """Per density (columns): WᵀW, b and ‖W_i‖ bars coloured by √superposition (rows).

    W (density, hidden, feature); b, norms, sup (density, feature).
    """
    k = len(dens)
    vmax = gram_vmax(W)
    fig, axes = plt.subplots(
        3,
        k,
        figsize=(2.05 * k + 1.6, 7.4),
        squeeze=False,
        gridspec_kw={"hspace": 0.35, "wspace": 0.3},
    )
    blim = bias_limits(b)
    nlim = (0.0, max(1.0, float(np.nanmax(norms, initial=0))) * 1.05)
    for j in range(k):
        im = panels.gram(axes[0, j], W[j], vmax)
        axes[0, j].set_title(f"S = {fmt_p(1 - dens[j])}\n(p = {fmt_p(dens[j])})", fontsize=9)
        panels.feature_barh(axes[1, j], b[j], OKABE_ITO[0], blim)
        panels.feature_barh(axes[2, j], norms[j], panels.superposition_colours(sup[j]), nlim)
        axes[0, j].set_xlabel("feature j", fontsize=8)
        axes[1, j].set_xlabel("b_i", fontsize=8)
        axes[2, j].set_xlabel("‖W_i‖", fontsize=8)
    for row, label in enumerate(("WᵀW: feature i", "bias: feature i", "norm: feature i")):
        axes[row, 0].set_ylabel(label, fontsize=9)
    fig.colorbar(im, ax=axes[0, :].tolist(), label="(WᵀW)_ij", shrink=0.9, pad=0.01)
    fig.colorbar(
        ScalarMappable(plt.Normalize(0, 1), panels.ORDERED),
        ax=axes[2, :].tolist(),
        label="√superposition\n(clipped to [0, 1])",
        shrink=0.9,
        pad=0.01,
    )
    fig.suptitle(title, fontsize=11)
    return fig


def basic(ctx: Context) -> dict[str, Figure]:
    """`gram_bias_norms_<kind>`: for each model kind, WᵀW, b and the feature-norm bars per
    sparsity."""
    best = only(best_models(ctx, ("norm_seed", "superposition_seed")), ("model", "density"))
    out = {}
    models = best["model"].values if "model" in best.dims else [ctx.section("model").get("kind")]
    for kind in models:
        cell = best.sel(model=kind) if "model" in best.dims else best
        W = cell["W"].transpose("density", "hidden", "feature").values
        b, norms, sup = (
            cell[v].transpose("density", "feature").values
            for v in ("b", "norm_seed", "superposition_seed")
        )
        n, m = W.shape[-1], W.shape[-2]
        title = (
            f"{model_label(kind)} model, {n} features in {m} dimensions: "
            "WᵀW, bias and feature norms by sparsity (lowest-loss seed)"
        )
        out[f"gram_bias_norms_{kind}"] = gram_bias_norms(
            W, b, norms, sup, cell["density"].values, title
        )
    return out


def blog(ctx: Context) -> dict[str, Figure]:
    """`bias_and_gram`: rows sparsity; per model kind side by side: the bias as bars and WᵀW."""
    best = only(best_models(ctx), ("model", "density"))
    models = list(best["model"].values) if "model" in best.dims else [None]
    dens = best["density"].values
    vmax = gram_vmax(best["W"].transpose(..., "hidden", "feature").values)
    blim = bias_limits(best["b"].values)
    fig, axes = plt.subplots(
        len(dens),
        2 * len(models),
        squeeze=False,
        figsize=(3.1 * 2 * len(models) + 1.2, 3.0 * len(dens) + 0.6),
        gridspec_kw={"width_ratios": [0.6, 1] * len(models), "hspace": 0.4, "wspace": 0.35},
    )
    for c, kind in enumerate(models):
        cell = best.sel(model=kind) if kind is not None else best
        label = model_label(kind if kind is not None else ctx.section("model").get("kind"))
        for r, p in enumerate(dens):
            one = cell.sel(density=p)
            ax_b, ax_g = axes[r, 2 * c], axes[r, 2 * c + 1]
            panels.feature_barh(ax_b, one["b"].values, OKABE_ITO[0], blim)
            im = panels.gram(ax_g, one["W"].transpose("hidden", "feature").values, vmax)
            ax_b.set_title(f"{label}: bias b\nS = {fmt_p(1 - p)}", fontsize=9)
            ax_g.set_title(f"{label}: WᵀW\nS = {fmt_p(1 - p)}", fontsize=9)
            ax_b.set_ylabel("feature i", fontsize=8)
            ax_b.set_xlabel("b_i", fontsize=8)
            ax_g.set_xlabel("feature j", fontsize=8)
    fig.colorbar(im, ax=axes.ravel().tolist(), label="(WᵀW)_ij", shrink=0.6, pad=0.01)
    n = best.sizes["feature"]
    fig.suptitle(
        f"{n} features in {ctx.section('model').get('n_hidden')} dimensions: bias and WᵀW, "
        "linear vs ReLU, by sparsity S (lowest-loss seed)",
        fontsize=11,
    )
    return {"bias_and_gram": fig}
