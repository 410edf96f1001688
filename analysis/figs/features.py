"""Per-feature panels for any store: feature norms ‖W_i‖ and superposition over the grid.

Two numeric axes and few features: heatmaps over the two axes, one column per feature; one
cell: the paper's bar plot; otherwise feature × cell heatmaps. Missing cells are grey.
Heatmaps are pcolormesh on the cells' true edges, not seaborn.heatmap: that places cells on a
categorical grid, which would lose the log-spaced sweep axes.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from analysis.context import Context
from analysis.figs.style import MISSING_COLOUR, cell_edges, is_log_axis, set_axis


def draw(ctx: Context) -> dict[str, Figure]:
    """`feature_panels`: norms and superposition per feature and cell (every store)."""
    return {"feature_panels": feature_overview(ctx.analysis)}


QUANTITIES = {
    "norm": ("‖W_i‖ (feature norm)", "viridis", (0.0, None)),
    "superposition": ("superposition Σ_j≠i (Ŵ_i·W_j)²", "magma", (0.0, 1.0)),
}


def _cell_dims(agg: xr.Dataset) -> list[str]:
    return [str(d) for d in agg["norm"].dims if d != "feature"]


def feature_heatmaps(
    agg: xr.Dataset,
    quantities: tuple[str, ...] = ("norm", "superposition"),
    x: str | None = None,
    y: str | None = None,
) -> Figure:
    """Heatmaps of per-feature quantities over two grid axes: rows quantities, columns features.

    Missing cells (and padded features) are grey.
    """
    dims = [d for d in _cell_dims(agg) if agg.sizes[d] > 1]
    x = x or ("relative_importance" if "relative_importance" in dims else dims[0])
    y = y or (
        "density" if "density" in dims and x != "density" else next(d for d in dims if d != x)
    )
    a = agg.squeeze([d for d in _cell_dims(agg) if d not in (x, y)], drop=True)
    xv, yv = a[x].values.astype(float), a[y].values.astype(float)
    xe, ye = cell_edges(xv, is_log_axis(xv)), cell_edges(yv, is_log_axis(yv))
    feats = a["feature"].values
    fig, axes = plt.subplots(
        len(quantities),
        len(feats),
        squeeze=False,
        sharex=True,
        sharey=True,
        figsize=(3.4 * len(feats) + 1.2, 2.9 * len(quantities)),
    )
    for row, q in enumerate(quantities):
        label, cmap, (vmin, vmax) = QUANTITIES[q]
        data = a[q].transpose(x, y, "feature").values
        top = vmax if vmax is not None else max(1.0, float(np.nanmax(data, initial=1.0)))
        for col, f in enumerate(feats):
            ax = axes[row, col]
            ax.set_facecolor(MISSING_COLOUR)  # NaN cells show the background
            mesh = ax.pcolormesh(
                xe,
                ye,
                np.ma.masked_invalid(data[..., col]).T,
                cmap=cmap,
                vmin=vmin,
                vmax=top,
                shading="flat",
            )
            set_axis(ax, "x", x, xv)
            set_axis(ax, "y", y, yv)
            ax.label_outer()
            if row == 0:
                ax.set_title(f"feature {int(f) + 1}", fontsize=10)
        fig.colorbar(
            mesh,
            ax=axes[row, :].tolist(),
            label=label,
            shrink=0.9,
            extend="max" if vmax is not None else "neither",
        )
    fig.suptitle(
        f"per-feature norms and superposition (rule: {agg.attrs.get('aggregate')}; grey: missing)",
        fontsize=11,
    )
    return fig


def feature_overview(agg: xr.Dataset) -> Figure:
    """Any grid: per-feature quantities as feature × cell heatmaps (one axis: that axis)."""
    dims = [d for d in _cell_dims(agg) if agg.sizes[d] > 1]
    if (
        len(dims) == 2
        and agg.sizes["feature"] <= 6
        and all(np.issubdtype(agg[d].dtype, np.number) for d in dims)
    ):
        return feature_heatmaps(agg)
    if not _cell_dims(agg):
        return feature_bars(agg)
    stacked = agg[["norm", "superposition"]].stack(cell=_cell_dims(agg))
    n_cells, feats = stacked.sizes["cell"], agg["feature"].values
    fig, axes = plt.subplots(
        2, 1, sharex=True, squeeze=False, figsize=(max(5.0, min(14.0, 0.35 * n_cells + 3)), 6.0)
    )
    one_axis = len(dims) == 1 and np.issubdtype(agg[dims[0]].dtype, np.number)
    if one_axis:
        xv = agg[dims[0]].values.astype(float)
        xe = cell_edges(xv, is_log_axis(xv))
    else:
        xe = np.arange(n_cells + 1) - 0.5
    fe = np.arange(len(feats) + 1) - 0.5
    for ax, q in zip(axes[:, 0], ("norm", "superposition"), strict=True):
        label, cmap, (vmin, vmax) = QUANTITIES[q]
        data = stacked[q].transpose("feature", "cell").values
        if one_axis:
            data = (
                agg[q]
                .squeeze([d for d in _cell_dims(agg) if d not in dims])
                .transpose("feature", dims[0])
                .values
            )
        top = vmax if vmax is not None else max(1.0, float(np.nanmax(data, initial=1.0)))
        ax.set_facecolor(MISSING_COLOUR)
        mesh = ax.pcolormesh(
            xe, fe, np.ma.masked_invalid(data), cmap=cmap, vmin=vmin, vmax=top, shading="flat"
        )
        ax.set_ylabel("feature i")
        step = max(1, len(feats) // 20)
        ax.set_yticks(np.arange(len(feats))[::step], [str(int(f) + 1) for f in feats[::step]])
        ax.invert_yaxis()
        fig.colorbar(mesh, ax=ax, label=label)
    bottom = axes[-1, 0]
    if one_axis:
        set_axis(bottom, "x", dims[0], xv)
    else:
        labels = [
            ", ".join(
                f"{v:.3g}" if isinstance(v, float) else str(v)
                for v in (c if isinstance(c, tuple) else (c,))
            )
            for c in stacked["cell"].values
        ]
        step = max(1, n_cells // 30)
        bottom.set_xticks(np.arange(n_cells)[::step], labels[::step], rotation=90, fontsize=7)
        bottom.set_xlabel("cell (" + ", ".join(_cell_dims(agg)) + ")")
    fig.suptitle(
        f"per-feature norms and superposition (rule: {agg.attrs.get('aggregate')}; grey: missing)",
        fontsize=11,
    )
    return fig


def feature_bars(agg: xr.Dataset) -> Figure:
    """A grid of one cell: bars of ‖W_i‖ coloured by superposition (the paper's bar plots)."""
    norm, sup = agg["norm"].values, agg["superposition"].values
    feats = np.arange(len(norm))
    cmap = plt.get_cmap("magma")
    fig, ax = plt.subplots(figsize=(5.5, 0.3 * len(feats) + 1.5))
    ax.barh(
        feats,
        np.nan_to_num(norm),
        color=cmap(np.clip(np.nan_to_num(sup), 0, 1)),
        edgecolor="#333333",
        linewidth=0.5,
    )
    ax.set_yticks(feats, [str(f + 1) for f in feats])
    ax.invert_yaxis()
    ax.set_ylabel("feature i")
    ax.set_xlabel("‖W_i‖ (feature norm)")
    mappable = plt.cm.ScalarMappable(norm=plt.Normalize(0, 1), cmap=cmap)
    fig.colorbar(mappable, ax=ax, label="superposition Σ_j≠i (Ŵ_i·W_j)²", extend="max")
    ax.set_title(f"one cell (rule: {agg.attrs.get('aggregate')})", fontsize=10)
    return fig
