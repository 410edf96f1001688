"""The latent grid: WᵀW over (m, density), and 2-D embeddings (MDS, t-SNE, UMAP) of the
columns of W with Shepard plots, of the lowest-loss seed."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis import embedding
from analysis.context import Context, best_models, importance_of, only, real_W
from analysis.figs import panels
from analysis.figs.gram import gram_vmax
from analysis.figs.style import OKABE_ITO, fmt_p


def latent_gram(best: xr.Dataset) -> Figure:
    """WᵀW for every (m, density): rows m, columns density."""
    ms, ps = best["n_hidden"].values, best["density"].values
    Wall = best["W"].transpose("n_hidden", "density", "hidden", "feature").values
    vmax = gram_vmax(Wall)
    fig, axes = plt.subplots(
        len(ms), len(ps), squeeze=False, figsize=(1.75 * len(ps) + 1.4, 1.75 * len(ms) + 0.8)
    )
    for r, m in enumerate(ms):
        for c, p in enumerate(ps):
            ax = axes[r, c]
            im = panels.gram(ax, Wall[r, c], vmax)
            ax.tick_params(labelsize=6)
            if r == 0:
                ax.set_title(f"p = {fmt_p(p)}", fontsize=9)
            if c == 0:
                ax.set_ylabel(f"m = {int(m)}\nfeature i", fontsize=9)
            if r == len(ms) - 1:
                ax.set_xlabel("feature j", fontsize=8)
    fig.subplots_adjust(top=1 - 0.8 / fig.get_figheight())  # no empty band under the title
    fig.colorbar(im, ax=axes.ravel().tolist(), label="(WᵀW)_ij", shrink=0.5, pad=0.01)
    fig.suptitle(
        f"WᵀW of {best.sizes['feature']} features in m dimensions (rows) by density "
        "(columns), lowest-loss seed",
        fontsize=11,
    )
    return fig


def latent_cells(best: xr.Dataset) -> list[tuple[int, float]]:
    """The (m, density) cells the embedding figures show: m 5 and 20 (or the extremes) at the
    densest, a middle and the sparsest density."""
    ms, ps = [int(v) for v in best["n_hidden"].values], list(best["density"].values)
    pick_m: list[int] = [m for m in (5, 20) if m in ms] or sorted({ms[0], ms[-1]})
    pick_p = list(dict.fromkeys([ps[0], ps[len(ps) // 2], ps[-1]]))
    return [(m, p) for m in pick_m for p in pick_p]


def embedding_figure(best: xr.Dataset, method: str, imp: np.ndarray, threshold: float) -> Figure:
    """Per chosen cell (rows): the embedding of all columns of W and its Shepard plot, then the
    same without the features collapsed at the origin (‖W_i‖ < threshold)."""
    label = embedding.METHODS[method]
    if method == "umap" and (reason := embedding.umap_status()) is not None:
        return panels.message_figure("UMAP embedding skipped", reason)
    cells = latent_cells(best)
    norm, cmap = panels.value_norm(imp), plt.get_cmap(panels.ORDERED)
    fig, axes = plt.subplots(
        len(cells),
        4,
        squeeze=False,
        figsize=(13.5, 2.9 * len(cells) + 0.8),
        gridspec_kw={"hspace": 0.6, "wspace": 0.45},
    )
    fig.subplots_adjust(top=1 - 0.9 / fig.get_figheight(), bottom=0.7 / fig.get_figheight())
    for r, (m, p) in enumerate(cells):
        W = real_W(best["W"].sel(n_hidden=m, density=p).transpose("hidden", "feature").values)
        X = W.T  # (feature, m): one point per feature
        collapsed = np.linalg.norm(X, axis=1) < threshold
        for c, keep in enumerate((np.ones(len(X), bool), ~collapsed)):
            ax_e, ax_s = axes[r, 2 * c], axes[r, 2 * c + 1]
            what = "all features" if c == 0 else f"without {collapsed.sum()} collapsed"
            ax_e.set_title(f"m = {m}, p = {fmt_p(p)}: {what}", fontsize=8.5)
            ax_s.set_title("Shepard plot", fontsize=8.5)
            try:
                Y = embedding.embed(X[keep], method)
            except embedding.EmbeddingUnavailable as e:
                for ax in (ax_e, ax_s):
                    ax.text(
                        0.5,
                        0.5,
                        str(e),
                        ha="center",
                        va="center",
                        fontsize=8,
                        wrap=True,
                        transform=ax.transAxes,
                    )
                    ax.set_xticks([])
                    ax.set_yticks([])
                continue
            col = cmap(norm(imp[keep]))
            sub_collapsed = collapsed[keep]
            ax_e.scatter(*Y[~sub_collapsed].T, c=col[~sub_collapsed], s=18, edgecolors="none")
            ax_e.scatter(
                *Y[sub_collapsed].T, c=col[sub_collapsed], s=18, marker="x", linewidths=0.9
            )
            ax_e.set_xlabel(f"{label} 1", fontsize=8)
            ax_e.set_ylabel(f"{label} 2", fontsize=8)
            ax_e.tick_params(labelsize=7)
            d0, d1, rho = embedding.shepard(X[keep], Y)
            ax_s.scatter(d0, d1, s=3, alpha=0.3, color=OKABE_ITO[0], linewidths=0)
            if method == "mds":  # MDS keeps distances, so the diagonal is the perfect fit
                top = max(float(d0.max(initial=0)), float(d1.max(initial=0)))
                ax_s.plot([0, top], [0, top], color="black", linewidth=0.8, linestyle="--")
            ax_s.text(
                0.03,
                0.95,
                f"Spearman ρ = {rho:.2f}",
                transform=ax_s.transAxes,
                va="top",
                fontsize=8,
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
            )
            ax_s.set_xlabel("distance between W_i", fontsize=8)
            ax_s.set_ylabel("distance in embedding", fontsize=8)
            ax_s.tick_params(labelsize=7)
    fig.colorbar(
        ScalarMappable(norm, cmap),
        ax=axes.ravel().tolist(),
        label="importance I_i",
        shrink=0.4,
        pad=0.02,
    )
    fig.legend(
        handles=[
            Line2D([], [], marker="o", linestyle="none", color="#555555", label="learned feature"),
            Line2D(
                [],
                [],
                marker="x",
                linestyle="none",
                color="#555555",
                label=f"collapsed at the origin (‖W_i‖ < {threshold:g})",
            ),
        ],
        loc="lower center",
        ncol=2,
        frameon=False,
        bbox_to_anchor=(0.5, 0.0),
    )
    fig.suptitle(
        f"{label} of the columns of W (lowest-loss seed), coloured by importance; left pair: all "
        "features, right pair: without those collapsed at the origin;\nShepard plots: distances "
        "in the embedding against distances between the W_i",
        fontsize=11,
    )
    return fig


def _best(ctx: Context) -> xr.Dataset:
    best = only(best_models(ctx), ("n_hidden", "density"))
    if "n_hidden" not in best.dims:
        best = best.expand_dims(n_hidden=[int(ctx.section("model").get("n_hidden", 0))])
    return best


def gram_grid(ctx: Context) -> dict[str, Figure]:
    """`gram_grid`: WᵀW over (m, density)."""
    return {"gram_grid": latent_gram(_best(ctx))}


def embeddings(ctx: Context) -> dict[str, Figure]:
    """`embedding_<method>`: MDS, t-SNE and UMAP embeddings of W's columns with Shepard plots."""
    best, imp = _best(ctx), importance_of(ctx)
    threshold = float(ctx.settings.norm_threshold)
    return {
        f"embedding_{method}": embedding_figure(best, method, imp, threshold)
        for method in embedding.METHODS
    }
