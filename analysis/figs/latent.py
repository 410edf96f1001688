"""The latent grid: WᵀW over (m, density), and 2-D embeddings (MDS, t-SNE, UMAP) of the
columns of W with Shepard plots, of the lowest-loss seed."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy.spatial.distance import pdist

from analysis import embedding
from analysis.context import Context, importance_of, real_W
from analysis.figs import panels
from analysis.figs.gram import gram_vmax
from analysis.figs.style import OKABE_ITO, fmt_p
from analysis.steps import latent_best


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


def embedding_figure(
    emb: xr.Dataset, best: xr.Dataset, method: str, imp: np.ndarray, threshold: float
) -> Figure:
    """Per embedded cell (rows): the embedding of all columns of W and its Shepard plot, then
    the same without the features collapsed at the origin (‖W_i‖ < threshold).

    emb: the embeddings step's variables (analysis.embedding.embedding_dataset).
    """
    label = embedding.METHODS[method]
    one = emb.sel(embedding_method=method)  # not sel(method=): that is its fill rule
    notes = set(one["embedding_note"].values.ravel())
    if len(notes) == 1 and (reason := notes.pop()):  # e.g. umap-learn missing: say so
        return panels.message_figure(f"{label} embedding skipped", reason)
    n_cells = one.sizes["embed_cell"]
    norm, cmap = panels.value_norm(imp), plt.get_cmap(panels.ORDERED)
    fig, axes = plt.subplots(
        n_cells,
        4,
        squeeze=False,
        figsize=(13.5, 2.9 * n_cells + 0.8),
        gridspec_kw={"hspace": 0.6, "wspace": 0.45},
    )
    fig.subplots_adjust(top=1 - 0.9 / fig.get_figheight(), bottom=0.7 / fig.get_figheight())
    for r in range(n_cells):
        cell = one.isel(embed_cell=r)
        m, p = int(cell["embed_n_hidden"]), float(cell["embed_density"])
        W = real_W(best["W"].sel(n_hidden=m, density=p).transpose("hidden", "feature").values)
        X = W.T  # (feature, m): one point per feature, for the Shepard plot's distances
        collapsed = cell["collapsed"].values
        for c, subset in enumerate(embedding.SUBSETS):
            ax_e, ax_s = axes[r, 2 * c], axes[r, 2 * c + 1]
            what = "all features" if c == 0 else f"without {collapsed.sum()} collapsed"
            ax_e.set_title(f"m = {m}, p = {fmt_p(p)}: {what}", fontsize=8.5)
            ax_s.set_title("Shepard plot", fontsize=8.5)
            sub = cell.sel(subset=subset)
            if str(sub["embedding_note"].values):
                for ax in (ax_e, ax_s):
                    ax.text(
                        0.5,
                        0.5,
                        str(sub["embedding_note"].values),
                        ha="center",
                        va="center",
                        fontsize=8,
                        wrap=True,
                        transform=ax.transAxes,
                    )
                    ax.set_xticks([])
                    ax.set_yticks([])
                continue
            Y_all = sub["embedding"].transpose("feature", "component").values
            keep = np.isfinite(Y_all).all(1)
            Y, col, sub_collapsed = Y_all[keep], cmap(norm(imp[keep])), collapsed[keep]
            ax_e.scatter(*Y[~sub_collapsed].T, c=col[~sub_collapsed], s=18, edgecolors="none")
            ax_e.scatter(
                *Y[sub_collapsed].T, c=col[sub_collapsed], s=18, marker="x", linewidths=0.9
            )
            ax_e.set_xlabel(f"{label} 1", fontsize=8)
            ax_e.set_ylabel(f"{label} 2", fontsize=8)
            ax_e.tick_params(labelsize=7)
            d0, d1 = pdist(X[keep]), pdist(Y)
            ax_s.scatter(d0, d1, s=3, alpha=0.3, color=OKABE_ITO[0], linewidths=0)
            if method == "mds":  # MDS keeps distances, so the diagonal is the perfect fit
                top = max(float(d0.max(initial=0)), float(d1.max(initial=0)))
                ax_s.plot([0, top], [0, top], color="black", linewidth=0.8, linestyle="--")
            ax_s.text(
                0.03,
                0.95,
                f"Spearman ρ = {float(sub['embedding_rho']):.2f}",
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


def gram_grid(ctx: Context) -> dict[str, Figure]:
    """`gram_grid`: WᵀW over (m, density)."""
    return {"gram_grid": latent_gram(latent_best(ctx))}


def embeddings(ctx: Context) -> dict[str, Figure]:
    """`embedding_<method>`: MDS, t-SNE and UMAP embeddings of W's columns with Shepard plots
    (the embeddings step's variables)."""
    best, imp = latent_best(ctx), importance_of(ctx)
    threshold = float(ctx.analysis.attrs["embedding_threshold"])
    return {
        f"embedding_{method}": embedding_figure(ctx.analysis, best, method, imp, threshold)
        for method in embedding.METHODS
    }
