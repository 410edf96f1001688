"""The extra-feature diagram across dimension (the `dimension` grid): each (n, m) shape's phase
diagram of the extra (last) feature with its measured boundaries and bands, and all shapes'
boundaries against r on one axes, coloured by m/n.

Both read the dimension step's variables (analysis.dimension: `extra_phase`,
`extra_boundary_density` with `_lo`/`_hi`, `extra_boundary_exact`, the coords `seed_loss` and
`boundary_reference` along `shape`); a store without a zipped shape axis draws a message.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.artist import Artist
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import NullFormatter

from analysis.context import Context
from analysis.figs import panels
from analysis.figs.style import PHASE_COLOURS
from analysis.metrics import PHASE_NAMES

R, P, S = "relative_importance", "density", "shape"
LINES = {"superposed|ignored": "-", "superposed|dedicated": "--"}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _shapes(a: xr.Dataset) -> list[tuple[str, int, int]]:
    return [
        (str(s), int(n), int(m))
        for s, n, m in zip(a[S].values, a["n_features"].values, a["n_hidden"].values, strict=True)
    ]


def _seed_note(a: xr.Dataset, label: str) -> str:
    """How a shape's seeds were ranked and what its boundary is compared with."""
    k = a.sizes["seed"]
    if str(a["seed_loss"].sel({S: label}).values) == "exact":
        ranked = f"lowest exact loss of {k} seeds"
    else:
        ranked = f"lowest stored loss of {k} seeds (n > 4: no quadrature)"
    if str(a["boundary_reference"].sel({S: label}).values) == "exact minimum":
        return ranked + "\nblack: exact minimum (tabulated r)"
    return ranked + "\nno exact minimum tabulated"


def diagrams(ctx: Context) -> dict[str, Figure]:
    """`dimension_diagrams`: one panel per (n, m), every trained (r, p) point coloured by the
    extra feature's phase (the cell's lowest-loss seed), the measured boundaries with their 95 %
    seed-bootstrap bands, and the exact-minimum boundary where one is tabulated."""
    a = ctx.analysis
    if "extra_phase" not in a:
        return {"dimension_diagrams": panels.message_figure("(n, m) diagrams", "needs pairs")}
    shapes = _shapes(a)
    fig, axes = panels.grid_of_axes(len(shapes), 4, 3.3, height=1.0, layout="constrained")
    r, p = a[R].values, a[P].values
    rr, pp = np.meshgrid(r, p, indexing="ij")
    for ax, (label, n, m) in zip(axes, shapes, strict=True):
        one = a.sel({S: label})
        phase = one["extra_phase"].transpose(R, P).values
        for code, colour in PHASE_COLOURS.items():
            hit = phase == code
            ax.scatter(rr[hit], pp[hit], s=10, c=colour, linewidths=0, zorder=2)
        for name, ls in LINES.items():
            b = one.sel(extra_boundary=name)
            loc = b["extra_boundary_density"].values
            if np.isfinite(loc).any():
                ax.fill_between(
                    r,
                    b["extra_boundary_density_lo"].values,
                    b["extra_boundary_density_hi"].values,
                    color="#D55E00",
                    alpha=0.3,
                    linewidth=0,
                    zorder=1,
                )
                ax.plot(r, loc, color="#D55E00", lw=1.4, ls=ls, marker="o", ms=2.5, zorder=4)
            ex = b["extra_boundary_exact"].values
            ax.plot(r, ex, color="black", lw=1.1, ls=ls, zorder=3)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(r.min() / 1.15, r.max() * 1.15)
        ax.set_ylim(p.min() / 1.15, p.max() * 1.15)
        ax.set_title(f"n = {n} → m = {m}  (m/n = {m / n:.2f})", fontsize=10)
        ax.text(0.02, 0.02, _seed_note(a, label), transform=ax.transAxes, fontsize=6.5, va="bottom")
        ax.set_xlabel("relative importance r of the last feature", fontsize=8)
        ax.set_ylabel("density p", fontsize=8)
        ax.tick_params(labelsize=7)
        for axis in (ax.xaxis, ax.yaxis):  # decades only: minor labels overlap at this size
            axis.set_minor_formatter(NullFormatter())
    handles: list[Artist] = [
        Patch(color=PHASE_COLOURS[c], label=PHASE_NAMES[c]) for c in PHASE_COLOURS
    ]
    handles += [
        Line2D([], [], color="#D55E00", lw=1.4, label="measured boundary, 95 % seed bootstrap"),
        Line2D([], [], color="black", lw=1.1, label="exact expected-loss minimum"),
        Line2D([], [], color="grey", ls="-", label="superposed | ignored"),
        Line2D([], [], color="grey", ls="--", label="superposed | dedicated"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(
        "Phase of the extra (last) feature: n − 1 features of importance 1, one of importance r",
        fontsize=11,
    )
    return {"dimension_diagrams": fig}


def boundaries(ctx: Context) -> dict[str, Figure]:
    """`dimension_boundaries`: every shape's measured boundaries p(r), coloured by m/n, each
    shape with its own marker and a small offset in r (several shapes share one m/n, and their
    curves often coincide), the 95 % band as error bars; exact minima in black where tabulated."""
    a = ctx.analysis
    if "extra_boundary_density" not in a:
        return {"dimension_boundaries": panels.message_figure("(n, m) boundaries", "needs pairs")}
    shapes = _shapes(a)
    ratio = np.array([m / n for _, n, m in shapes])
    lo, hi = float(ratio.min()), float(ratio.max())
    norm = Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1)
    cmap = plt.get_cmap("plasma")
    fig, ax = plt.subplots(figsize=(8.4, 5.8), layout="constrained")
    r = a[R].values
    # offsets in r, a few percent, centred: coinciding boundaries stay apart
    shift = 1.035 ** (np.arange(len(shapes)) - (len(shapes) - 1) / 2)
    for k, ((label, n, m), q) in enumerate(zip(shapes, ratio, strict=True)):
        colour = cmap(0.85 * norm(q))  # plasma's yellow end is unreadable on white
        marker = MARKERS[k % len(MARKERS)]
        one = a.sel({S: label})
        for name, ls in LINES.items():
            b = one.sel(extra_boundary=name)
            loc = b["extra_boundary_density"].values
            ok = np.isfinite(loc)
            if not ok.any():
                continue
            ax.errorbar(
                r[ok] * shift[k],
                loc[ok],
                yerr=[
                    loc[ok] - b["extra_boundary_density_lo"].values[ok],
                    b["extra_boundary_density_hi"].values[ok] - loc[ok],
                ],
                color=colour,
                ls=ls,
                lw=1.4,
                marker=marker,
                ms=4.5,
                capsize=2,
                elinewidth=0.7,
                label=f"{n} → {m}" if name == "superposed|ignored" or not ok[r < 1].any() else None,
            )
            ax.plot(r, b["extra_boundary_exact"].values, color="black", ls=ls, lw=0.9)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("relative importance r of the last feature")
    ax.set_ylabel("boundary density p")
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="m / n", shrink=0.8)
    handles, labels = ax.get_legend_handles_labels()
    seen = dict(zip(labels, handles, strict=True))  # one entry per shape
    extra: list[Artist] = [
        Line2D([], [], color="grey", ls="-", label="superposed | ignored (r ≤ 1)"),
        Line2D([], [], color="grey", ls="--", label="superposed | dedicated (r ≥ 1)"),
        Line2D([], [], color="black", lw=0.9, label="exact minimum, where tabulated"),
    ]
    ax.legend(handles=[*seen.values(), *extra], fontsize=7.5, loc="lower right", ncol=2)
    ax.set_title(
        "Where the extra feature leaves superposition, for each (n, m)\n"
        "error bars: 95 % seed bootstrap; n > 4 ranked by the lowest stored loss of the seeds",
        fontsize=10,
    )
    return {"dimension_boundaries": fig}
