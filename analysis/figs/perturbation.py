"""Perturbing one feature of a pentagon: its norm and every feature's D_i against how much
sparser it is than the others, with the paper's ≈2.5× and the measured split marked (the
perturbation step's variables)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from analysis import metrics
from analysis.context import Context
from analysis.figs.style import OKABE_ITO

PAPER_RATIO = 2.5  # Elhage et al. 2022: the pentagon splits into two digons at ≈2.5× sparsity


def draw(ctx: Context) -> dict[str, Figure]:
    """`perturbation`: ‖W_1‖ and D_i against relative sparsity k = base density / p_1."""
    an = ctx.analysis
    if "relative_sparsity" not in an:
        return {}
    k = an["relative_sparsity"].values
    order = np.argsort(k)
    k = k[order]
    norms = an["norm_best"].values[order]  # (density, feature)
    D = an["dimensionality_perturbed"].values[order]
    moved = list(an.attrs.get("perturbed_features", [0]))
    lo, hi = (float(v) for v in an["split_ratio"].values)
    fig, (ax_n, ax_d) = plt.subplots(1, 2, figsize=(11.5, 4.2), sharex=True)
    for i in range(norms.shape[1]):
        is_moved = i in moved
        style = {
            "color": OKABE_ITO[1] if is_moved else OKABE_ITO[0],
            "marker": "o",
            "ms": 4,
            "linewidth": 1.6 if is_moved else 0.8,
            "alpha": 1 if is_moved else 0.6,
        }
        label = f"feature {i + 1} (density varied)" if is_moved else None
        if not is_moved and i == min(j for j in range(norms.shape[1]) if j not in moved):
            label = "the others"
        ax_n.plot(k, norms[:, i], label=label, **style)
        ax_d.plot(k, D[:, i], **style)
    for v in metrics.STICKY_VALUES:
        if v.value in (0.0, 0.5, 0.4):
            ax_d.axhline(v.value, color="#777777", linestyle=":", linewidth=0.8)
            ax_d.annotate(
                f"{v.name} ({v.value:g})",
                (1.01, v.value),
                va="center",
                fontsize=8,
                xycoords=("axes fraction", "data"),
            )
    for ax in (ax_n, ax_d):
        ax.axvline(
            PAPER_RATIO,
            color=OKABE_ITO[2],
            linestyle="--",
            linewidth=1.2,
            label=f"paper: split at ≈{PAPER_RATIO}×" if ax is ax_n else None,
        )
        if np.isfinite(lo):
            ax.axvspan(
                lo,
                hi,
                color=OKABE_ITO[3],
                alpha=0.2,
                label=f"measured: split between {lo:.2g}× and {hi:.2g}×" if ax is ax_n else None,
            )
        ax.axvline(1.0, color="#bbbbbb", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xticks(k, [f"{v:.2g}×" for v in k], fontsize=8)
        ax.minorticks_off()
        ax.set_xlabel("relative sparsity k = base density / p₁ (k > 1: sparser)")
    ax_n.set_ylabel("feature norm ‖W_i‖")
    ax_d.set_ylabel("feature dimensionality D_i")
    ax_n.legend(fontsize=8, frameon=False, loc="lower left")
    base = an.attrs.get("base_density", float("nan"))
    fig.suptitle(
        f"Perturbing one feature of the pentagon (5 → 2, base density {base:g}, lowest-loss "
        "seed): the pentagon becomes two digons when feature 1 is sparse enough",
        fontsize=10.5,
    )
    fig.subplots_adjust(wspace=0.35, right=0.88)
    return {"perturbation": fig}
