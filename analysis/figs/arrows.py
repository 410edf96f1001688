"""2-D models drawn as arrows (the columns W_i of the lowest-loss seed): the intro grid, the
perturbed pentagon, and correlated / anticorrelated feature sets."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from analysis.context import Context, best_models, importance_of, only, real_W
from analysis.figs import panels
from analysis.figs.style import OKABE_ITO, fmt_p


def arrow_figure(Ws: np.ndarray, titles: list[str], colours: Any, notes: list[str]) -> Figure:
    """One panel of arrows per model; Ws (panel, hidden, feature)."""
    limit = max(1.3, float(np.nanmax(np.linalg.norm(np.nan_to_num(Ws), axis=1), initial=0)) + 0.3)
    fig, axes = panels.grid_of_axes(len(Ws), 5, 2.3, height=0.9, sharex=True, sharey=True)
    for ax, W, title, note in zip(axes, Ws, titles, notes, strict=True):
        panels.arrows(ax, W, colours, limit)
        ax.set_title(title, fontsize=9)
        ax.text(
            0.5,
            0.02,
            note,
            transform=ax.transAxes,
            ha="center",
            va="bottom",
            fontsize=6.5,
            color="#333333",
        )
    for ax in axes:
        if ax.get_subplotspec().is_last_row() or ax is axes[-1]:
            ax.set_xlabel("hidden dim 1", fontsize=8)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("hidden dim 2", fontsize=8)
    return fig


def dims_notes(ctx: Context) -> list[str]:
    """Each density's D_i (the geometry step's `dimensionality_best`) as a panel note."""
    dims = ctx.analysis["dimensionality_best"]
    dims = dims.isel({d: 0 for d in dims.dims if d not in ("density", "feature")})
    return [
        "D_i: " + " ".join(f"{d:.2f}".lstrip("0") if d > 0 else "0" for d in row)
        for row in dims.transpose("density", "feature").values
    ]


def relative(p: float, base: float) -> str:
    """A density against the base density, as the paper words it (k× sparser / denser)."""
    if np.isclose(p, base):
        return "= base"
    return f"{base / p:.2g}× sparser" if p < base else f"{p / base:.2g}× denser"


def intro(ctx: Context) -> dict[str, Figure]:
    """`arrows_by_density`: columns of W as arrows per density, coloured by importance."""
    best = only(best_models(ctx), ("density",))
    W = best["W"].transpose("density", "hidden", "feature").values
    imp = importance_of(ctx)
    norm = panels.value_norm(imp)
    cmap = plt.get_cmap(panels.ORDERED)
    titles = [f"p = {fmt_p(p)} (S = {fmt_p(1 - p)})" for p in best["density"].values]
    fig = arrow_figure(W, titles, cmap(norm(imp)), dims_notes(ctx))
    fig.colorbar(ScalarMappable(norm, cmap), ax=fig.axes, label="importance I_i", shrink=0.8)
    n, m = W.shape[-1], W.shape[-2]
    fig.suptitle(
        f"{n} features in {m} dimensions: columns W_i of the lowest-loss seed, by "
        "density (grey: unit circle; numbers: feature i)",
        fontsize=11,
    )
    return {"arrows_by_density": fig}


def perturb(ctx: Context) -> dict[str, Figure]:
    """`arrows_by_density`: arrows per density of the perturbed feature(s), those in vermillion."""
    best = only(best_models(ctx), ("density",))
    W = best["W"].transpose("density", "hidden", "feature").values
    data = ctx.section("data")
    moved = list(data.get("density_features") or [])
    base = float(data.get("density", 1.0))
    colours = [OKABE_ITO[1] if i in moved else OKABE_ITO[0] for i in range(W.shape[-1])]
    which = ", ".join(str(i + 1) for i in moved) or "all"
    titles = [f"p_{which} = {fmt_p(p)} ({relative(p, base)})" for p in best["density"].values]
    fig = arrow_figure(W, titles, colours, dims_notes(ctx))
    fig.legend(
        handles=[
            Patch(color=OKABE_ITO[1], label=f"feature {which} (density varied)"),
            Patch(color=OKABE_ITO[0], label=f"the others (density {fmt_p(base)})"),
        ],
        loc="lower center",
        ncol=2,
        frameon=False,
        bbox_to_anchor=(0.5, -0.04),
        fontsize=9,
    )
    fig.suptitle(
        f"Perturbing one feature's density: columns W_i (lowest-loss seed); base "
        f"density {fmt_p(base)}",
        fontsize=11,
    )
    return {"arrows_by_density": fig}


def by_set(ctx: Context) -> dict[str, Figure]:
    """`arrows_by_set`: arrows per (correlation, density) cell, coloured by feature set, with
    the feature_sets step's mean cosines."""
    best = best_models(ctx)
    data = ctx.section("data")
    set_size = int(data.get("set_size", 2))
    has_axis = "correlation" in best.dims
    kinds = list(best["correlation"].values) if has_axis else [data.get("correlation", "none")]
    densities = list(best["density"].values) if "density" in best.dims else [None]
    fig, axes = plt.subplots(
        len(kinds),
        len(densities),
        squeeze=False,
        sharex=True,
        sharey=True,
        figsize=(2.6 * len(densities), 2.8 * len(kinds) + 0.6),
    )
    palette = plt.get_cmap("tab10")  # sets are categories; tab10's first hues are distinct
    for i, kind in enumerate(kinds):
        for j, p in enumerate(densities):
            sel = {"correlation": kind} if has_axis else {}
            if p is not None:
                sel["density"] = p
            W = real_W(best["W"].sel(sel).transpose("hidden", "feature").values)
            cell = ctx.analysis.sel(sel) if sel else ctx.analysis
            ax = axes[i, j]
            colours = [palette(f // set_size) for f in range(W.shape[1])]
            if W.shape[0] == 2 and np.isfinite(W).all():
                panels.arrows(
                    ax, W, colours, max(1.3, float(np.linalg.norm(W, axis=0).max()) + 0.3)
                )
                within = float(cell["set_cosine_within"].squeeze())
                across = float(cell["set_cosine_across"].squeeze())
                ax.text(
                    0.5,
                    0.02,
                    f"cos within sets {within:+.2f}, across {across:+.2f}",
                    transform=ax.transAxes,
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
            else:
                why = "missing" if not np.isfinite(W).all() else f"{W.shape[0]}-D: see the analysis"
                ax.text(0.5, 0.5, why, ha="center", transform=ax.transAxes)
            ax.set_title(f"{kind}, p = {fmt_p(p)}" if p is not None else str(kind), fontsize=9)
            if i == len(kinds) - 1:
                ax.set_xlabel("hidden dim 1", fontsize=8)
            if j == 0:
                ax.set_ylabel("hidden dim 2", fontsize=8)
    fig.suptitle(
        f"Feature sets of {set_size}: correlated sets go orthogonal, anticorrelated "
        "sets antipodal (colour: set)",
        fontsize=11,
    )
    return {"arrows_by_set": fig}
