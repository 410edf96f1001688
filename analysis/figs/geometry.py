"""Geometry of superposition: D* = m / ‖W‖²_F over sparsity, every feature's D_i with the
sticky values it clusters at, and the share of features per sticky value."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from analysis import metrics
from analysis.context import Context
from analysis.figs import panels
from analysis.figs.style import OKABE_ITO
from analysis.steps import STICKY_TOL


def draw(ctx: Context) -> dict[str, Figure]:
    """`dimensionality`: D* against 1/(1-S); D_i scatter with the sticky values; sticky counts
    per density (the geometry step's variables)."""
    names = ["dimensionality_best", "dims_per_feature_best", "sticky_label", "sticky_share"]
    names += ["represented"]
    sticky = ctx.analysis[names]
    sticky = sticky.isel({d: 0 for d in sticky["dims_per_feature_best"].dims if d != "density"})
    sticky = sticky.sortby("density", ascending=False)
    x = 1 / sticky["density"].values  # 1/(1-S)
    D = sticky["dimensionality_best"].transpose("density", "feature").values
    idx = sticky["sticky_label"].transpose("density", "feature").values
    names = list(sticky["sticky"].values)
    colours = [*OKABE_ITO[: len(names) - 1], panels.NONE_COLOUR]
    fig, (ax_d, ax_i, ax_c) = plt.subplots(
        1, 3, figsize=(17, 4.8), gridspec_kw={"width_ratios": [1, 1.3, 1]}
    )
    ax_d.plot(x, sticky["dims_per_feature_best"].values, "o-", color=OKABE_ITO[0], ms=4)
    ax_d.axhline(0.5, color="#777777", linestyle=":", linewidth=1)
    ax_d.text(
        x[-1], 0.5, "1/2 (antipodal pairs) ", ha="right", va="bottom", fontsize=8, color="#555555"
    )
    ax_d.set_ylabel("dimensions per feature D* = m / ‖W‖²_F")
    ax_d.set_ylim(0, max(1.05, float(np.nanmax(sticky["dims_per_feature_best"], initial=0))))
    ax_d.set_title("D* over sparsity", fontsize=10)
    rng = np.random.default_rng(0)  # jitter only spreads the points of one density apart
    jitter = np.exp(rng.uniform(-0.03, 0.03, D.shape))
    for j, colour in enumerate(colours):
        code = j if j < len(names) - 1 else -1
        mask = idx == code
        xs = np.broadcast_to(x[:, None], D.shape)[mask] * jitter[mask]
        ax_i.scatter(xs, D[mask], s=6, color=colour, alpha=0.6, linewidths=0)
    label_y = panels.spread([v.value for v in metrics.STICKY_VALUES], gap=0.045)
    for v, y, colour in zip(metrics.STICKY_VALUES, label_y, colours, strict=False):
        ax_i.axhline(v.value, color=colour, linewidth=0.8, linestyle="--", alpha=0.8)
        ax_i.annotate(
            f"{v.name} ({v.value:.3g})",
            (1.01, y),
            xycoords=("axes fraction", "data"),
            fontsize=7.5,
            va="center",
            color=colour if colour != "#F0E442" else "#8a7d00",  # yellow text is unreadable
        )
    ax_i.set_ylabel("feature dimensionality D_i")
    ax_i.set_title(
        f"D_i of every feature (colour: nearest sticky value within ±{STICKY_TOL})", fontsize=10
    )
    share = sticky["sticky_share"].transpose("density", "sticky").values
    represented = sticky["represented"].values
    bottom = np.zeros(len(x))
    widths = x * 0.12
    for j, (name, colour) in enumerate(zip(names, colours, strict=True)):
        ax_c.bar(
            x, share[:, j], bottom=bottom, width=widths, color=colour, label=name, align="center"
        )
        bottom += share[:, j]
    for xi, count in zip(x, represented, strict=True):
        ax_c.text(xi, 1.01, str(int(count)), ha="center", va="bottom", fontsize=6, rotation=90)
    ax_c.set_ylabel(f"share of represented features (‖W_i‖ ≥ {ctx.settings.norm_threshold:g})")
    ax_c.set_ylim(0, 1)
    ax_c.legend(
        fontsize=7.5,
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        frameon=False,
        title="nearest sticky value",
        title_fontsize=8,
    )
    ax_c.set_title("represented features (count above) per sticky value", fontsize=10, pad=16)
    for ax in (ax_d, ax_i, ax_c):
        ax.set_xscale("log")
        ax.set_xlabel("1 / (1 − S) = 1 / density")
    n, m = ctx.section("model").get("n_features"), ctx.section("model").get("n_hidden")
    fig.suptitle(
        f"Geometry of superposition: {n} features in {m} dimensions, lowest-loss seed", fontsize=11
    )
    fig.subplots_adjust(wspace=0.7)  # room for the sticky names right of the middle panel
    return {"dimensionality": fig}
