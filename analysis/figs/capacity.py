"""Capacity across dimension: how many of n features m dimensions hold, and how many of those
in superposition, over (m/n, density); and D* = m / ‖W‖²_F against density for each m/n.

Both read the capacity and geometry steps' variables (`share_superposed`, `n_*`,
`dedicated_top_m`, `dims_per_feature_best`); grids without an `n_hidden` axis draw nothing.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from analysis import metrics
from analysis.context import Context, model_label
from analysis.figs import panels
from analysis.figs.style import MISSING_COLOUR, OKABE_ITO, cell_edges, fmt_p


def _by_model(ds: xr.Dataset) -> list[tuple[str, xr.Dataset]]:
    """(label, the cells of one model kind), every axis other than n_hidden and density held at
    its first value."""
    kinds = list(ds["model"].values) if "model" in ds.dims else [None]
    out = []
    for k in kinds:
        part = ds.sel(model=k) if k is not None else ds
        other = [d for d in part.dims if d not in ("n_hidden", "density", "feature", "sticky")]
        out.append((model_label(k) if k is not None else "", part.isel({d: 0 for d in other})))
    return out


def _n(ctx: Context) -> int:
    return int(ctx.section("model").get("n_features") or ctx.store.sizes["feature"])


def capacity_map(ctx: Context) -> dict[str, Figure]:
    """`capacity_map`: share of the n features in superposition over (m/n, density), one panel
    per model kind; each cell says how many features are represented (dedicated + superposed);
    a linear panel marks the cells whose dedicated features are not the top m by importance."""
    if "share_superposed" not in ctx.analysis:
        return {"capacity_map": panels.message_figure("Capacity", "needs an n_hidden axis")}
    parts = _by_model(ctx.analysis)
    n = _n(ctx)
    fig, axes = panels.grid_of_axes(len(parts), 3, 4.6, height=1.0, layout="constrained")
    cmap = plt.get_cmap("viridis").with_extremes(bad=MISSING_COLOUR)
    mesh = None
    for ax, (label, part) in zip(axes, parts, strict=True):
        share = part["share_superposed"].transpose("density", "n_hidden")
        m = part["n_hidden"].values
        p = part["density"].values
        order = np.argsort(p)
        xe = cell_edges(m / n, log=False)
        ye = cell_edges(p[order], log=True)
        mesh = ax.pcolormesh(
            xe, ye, np.ma.masked_invalid(share.values[order]), cmap=cmap, vmin=0, vmax=1
        )
        rep = part["n_represented"].transpose("density", "n_hidden").values[order]
        for i in range(len(p)):
            for j in range(len(m)):
                if np.isfinite(rep[i, j]) and len(m) * len(p) <= 400:
                    colour = "white" if share.values[order][i, j] < 0.5 else "black"
                    ax.text(
                        (xe[j] + xe[j + 1]) / 2,
                        np.sqrt(ye[i] * ye[i + 1]),
                        f"{int(rep[i, j])}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color=colour,
                    )
        if label == "linear":
            top = part["dedicated_top_m"].transpose("density", "n_hidden").values[order]
            bad = np.argwhere(~top)
            for i, j in bad:
                ax.plot((xe[j] + xe[j + 1]) / 2, np.sqrt(ye[i] * ye[i + 1]), "rx", ms=7)
            ax.set_title(
                f"{label}: top-m features dedicated in {int(top.sum())}/{top.size} cells",
                fontsize=9,
            )
        else:
            ax.set_title(label, fontsize=10)
        ax.set_yscale("log")
        ax.set_xlabel(f"hidden dimensions per feature m/n (n = {n})")
        ax.set_ylabel("density p = 1 − S")
    if mesh is not None:
        fig.colorbar(mesh, ax=list(axes), label="share of the n features in superposition")
    fig.suptitle(
        "Capacity: features in superposition (colour) and represented (numbers) per cell",
        fontsize=11,
    )
    return {"capacity_map": fig}


def dims_by_ratio(ctx: Context) -> dict[str, Figure]:
    """`dims_per_feature`: D* = m / ‖W‖²_F of the lowest-loss seed against density, one line per
    m/n, with the sticky values of D_i as dotted lines (D* is their average over the features)."""
    if "dims_per_feature_best" not in ctx.analysis or "n_hidden" not in ctx.analysis.dims:
        return {"dims_per_feature": panels.message_figure("D* by m/n", "needs an n_hidden axis")}
    parts = _by_model(ctx.analysis)
    n = _n(ctx)
    fig, axes = panels.grid_of_axes(
        len(parts), 3, 4.6, height=0.85, sharey=True, layout="constrained"
    )
    colours = plt.get_cmap("plasma")
    for ax, (label, part) in zip(axes, parts, strict=True):
        dstar = part["dims_per_feature_best"].transpose("n_hidden", "density")
        m = part["n_hidden"].values
        p = part["density"].values
        order = np.argsort(p)
        for k, mk in enumerate(m):
            ax.plot(
                p[order],
                dstar.values[k][order],
                "o-",
                ms=3,
                lw=1.2,
                color=colours(k / max(len(m) - 1, 1) * 0.9),
                label=f"{mk / n:.2g}",
            )
        label_y = panels.spread([v.value for v in metrics.STICKY_VALUES], gap=0.045)
        for j, (v, y) in enumerate(zip(metrics.STICKY_VALUES, label_y, strict=True)):
            ax.axhline(v.value, color=OKABE_ITO[j % len(OKABE_ITO)], ls=":", lw=0.8)
            ax.text(p.min(), y, f" {v.name}", fontsize=6, va="bottom", color="#555555")
        ax.set_xscale("log")
        ax.set_xlabel("density p = 1 − S")
        ax.set_title(label, fontsize=10)
        ax.set_xticks(p[order][:: max(1, len(p) // 5)])
        ax.set_xticklabels([fmt_p(v) for v in p[order][:: max(1, len(p) // 5)]])
    axes[0].set_ylabel("dimensions per feature D* = m / ‖W‖²_F")
    # lower right of the first panel: D* is near 1 there only at the densest points
    axes[0].legend(title="m/n", fontsize=7, title_fontsize=8, loc="lower right", ncols=2)
    fig.suptitle("D* against density for each m/n (sticky values of D_i dotted)", fontsize=11)
    return {"dims_per_feature": fig}
