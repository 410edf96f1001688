"""Figures of measured phase boundaries (analysis.boundaries) against both theories.

- `boundary_diagram`: every trained point coloured by its lowest-loss phase (a ring where
  seeds disagree), the measured boundaries with their bootstrap bands, the exact-minimum curve
  and the fixed-candidate closed form. Points, not cells, so refined grids draw as they are.
- `boundary_distance`: measured minus analytic boundary in decades of p against r, one panel
  per boundary, for each theory, with the band as error bars and the ±0.02-decade target.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from analysis.context import Context
from analysis.figs.phase import SYMBOLS
from analysis.figs.style import PHASE_COLOURS
from analysis.metrics import PHASE_NAMES

R, P = "relative_importance", "density"
TARGET = 0.02  # decades: the precision target
MEASURED = {"superposed|ignored": "#D55E00", "superposed|dedicated": "#CC79A7"}


def draw(ctx: Context) -> dict[str, Figure]:
    """`boundaries_<kind>` and `boundary_distance_<kind>`; nothing for a store that is not a
    closed-form phase grid."""
    if ctx.kind is None or "boundary" not in ctx.analysis:
        return {}
    return {
        f"boundaries_{ctx.kind}": boundary_diagram(ctx.analysis, ctx.kind),
        f"boundary_distance_{ctx.kind}": boundary_distance(ctx.analysis, ctx.kind),
    }


def _theory_lines(ax, kind: str, r_lo: float, r_hi: float) -> None:
    from analysis import exact_minimum as exact

    rf = np.geomspace(r_lo, r_hi, 400)
    for name in ("superposed|ignored", "superposed|dedicated"):
        try:
            ex = exact.boundary_curve(kind, name, rf)
        except ValueError:
            ex = np.full(rf.shape, np.nan)
        ax.plot(rf, ex, color="black", lw=1.4)
        ax.plot(rf, exact.closed_form_curve(kind, name, rf), color="black", lw=1.0, ls="--")
    if kind == "2to1":  # ignored|dedicated: r = 1 above the triple point (r -> 1/r symmetry)
        top = exact.boundary_curve(kind, "superposed|ignored", np.array([1.0]))[0]
        ax.plot([1, 1], [top, 1.0], color="black", lw=1.4)


def boundary_diagram(agg: xr.Dataset, kind: str) -> Figure:
    """Trained points by phase, measured boundaries with bands, exact and closed-form curves."""
    fig, ax = plt.subplots(figsize=(7.5, 6.0))
    handles = _diagram(ax, agg, kind)
    fig.legend(
        handles=handles,
        fontsize=8,
        loc="lower center",
        ncol=3,
        frameon=False,
        bbox_to_anchor=(0.5, -0.1),
    )
    return fig


def draw_axes(ctx: Context, ax: Axes) -> bool:
    """`boundary_diagram` alone, into ax, its legend inside; False (nothing drawn) for a store
    that is not a closed-form phase grid."""
    if ctx.kind is None or "boundary" not in ctx.analysis:
        return False
    ax.legend(handles=_diagram(ax, ctx.analysis, ctx.kind), fontsize=7, loc="lower left")
    return True


def _diagram(ax: Axes, agg: xr.Dataset, kind: str) -> list[Artist]:
    """Draw the boundary diagram into ax; return its legend's handles."""
    title, extra = SYMBOLS[kind]
    a = agg.transpose(R, P, ...)
    r, p = a[R].values, a[P].values
    phase = a["phase_lowest_loss"].values
    disagree = a["seeds_disagree_feature"].isel(feature=-1).values
    rr, pp = np.meshgrid(r, p, indexing="ij")
    trained = phase >= 0
    size = 14 if trained.sum() < 600 else 8
    for code, colour in PHASE_COLOURS.items():
        m = phase == code
        ax.scatter(rr[m], pp[m], s=size, c=colour, linewidths=0, zorder=2)
    m = trained & disagree
    ax.scatter(
        rr[m],
        pp[m],
        s=size * 2.2,
        facecolors="none",
        edgecolors="#444444",
        linewidths=0.6,
        zorder=3,
    )
    for name in a["boundary"].values:
        b = a.sel(boundary=name)
        colour = MEASURED.get(str(name), "#0072B2")
        ax.fill_between(
            r,
            b["boundary_density_lo"],
            b["boundary_density_hi"],
            color=colour,
            alpha=0.3,
            linewidth=0,
            zorder=1,
        )
        ax.plot(r, b["boundary_density"], color=colour, lw=1.6, marker="o", ms=3, zorder=4)
    _theory_lines(ax, kind, r.min(), r.max())
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(r.min() / 1.1, r.max() * 1.1)
    ax.set_ylim(p.min() / 1.1, 1.05)
    ax.set_xlabel(f"relative importance r of feature {extra}")
    ax.set_ylabel("density p = 1 − S")
    n_models = int(a["usable_seed"].sum())
    ax.set_title(
        f"{title}: phase of feature {extra} (each point's lowest-loss seed)\n"
        f"{int(trained.sum())} trained points, {n_models} usable models, "
        f"{len(a['seed'])} seeds",
        fontsize=10,
    )
    handles: list[Artist] = [
        Patch(color=PHASE_COLOURS[c], label=PHASE_NAMES[c]) for c in PHASE_COLOURS
    ]
    handles += [
        Line2D([], [], marker="o", ls="none", mfc="none", mec="#444444", label="seeds disagree"),
        Line2D([], [], color="#D55E00", lw=1.6, label="measured boundary (95 % seed bootstrap)"),
        Line2D([], [], color="black", lw=1.4, label="exact expected-loss minimum"),
        Line2D([], [], color="black", lw=1.0, ls="--", label="closed form (fixed candidates)"),
    ]
    return handles


def boundary_distance(agg: xr.Dataset, kind: str) -> Figure:
    """Measured minus analytic boundary (decades of p) against r, per boundary and theory."""
    title, _ = SYMBOLS[kind]
    names = [
        n
        for n in agg["boundary"].values
        if np.isfinite(agg["boundary_density"].sel(boundary=n)).any()
    ]
    names = names or list(agg["boundary"].values)
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        b = agg.sel(boundary=name)
        r = b[R].values
        for th, marker, colour, label in (
            ("exact", "o", "#0072B2", "exact minimum"),
            ("closed_form", "s", "#E69F00", "closed form"),
        ):
            ref = b[f"boundary_{th}"].values
            d = np.log10(b["boundary_density"].values / ref)
            lo = np.log10(b["boundary_density_lo"].values / ref)
            hi = np.log10(b["boundary_density_hi"].values / ref)
            ok = np.isfinite(d)
            inside = b[f"boundary_within_band_{th}"].values[ok]
            shift = 1.02 if th == "closed_form" else 1.0  # side by side, not on top
            ax.errorbar(
                r[ok] * shift,
                d[ok],
                yerr=[d[ok] - lo[ok], hi[ok] - d[ok]],
                fmt=marker,
                color=colour,
                ms=4,
                capsize=2,
                lw=1,
                label=f"{label} (inside band {int(inside.sum())}/{int(ok.sum())}, "
                f"max |Δ| {np.nanmax(np.abs(d[ok])) if ok.any() else np.nan:.3f})",
            )
        ax.axhspan(-TARGET, TARGET, color="#999999", alpha=0.25, lw=0, label=f"±{TARGET} decades")
        ax.axhline(0, color="black", lw=0.8)
        if not np.isfinite(b["boundary_density"].values).any():
            ax.text(0.5, 0.5, "not found in this store", ha="center", transform=ax.transAxes)
        ax.set_xscale("log")
        ax.set_xlim(r.min() / 1.2, r.max() * 1.2)  # explicit: an empty log axis has no limits
        ax.set_xlabel("relative importance r")
        ax.set_ylabel("log10(p measured / p theory)  [decades]")
        ax.set_title(f"{title}: {name} boundary", fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle("measured boundary minus theory, with the 95 % seed-bootstrap band", fontsize=11)
    fig.tight_layout()
    return fig
