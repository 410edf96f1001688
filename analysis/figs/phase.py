"""The phase diagram of a 2→1 or 3→2 grid: the extra feature's trained phase over (r, p),
beside the closed form (analysis.theory), with the agreement in the title.

pcolormesh on the cells' log-spaced edges rather than seaborn.heatmap (a categorical grid): the
analytic boundaries are drawn over it in data coordinates (r, p)."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr
from matplotlib import pyplot as plt
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from analysis import theory
from analysis.context import Context
from analysis.figs.style import (
    DISAGREE_HATCH,
    MISSING_COLOUR,
    MISSING_HATCH,
    PHASE_COLOURS,
    cell_edges,
    cell_rect,
    is_log_axis,
    set_axis,
)
from analysis.metrics import DEDICATED, IGNORED, PHASE_NAMES, SUPERPOSED

SYMBOLS = {"2to1": ("2 → 1", 2), "3to2": ("3 → 2", 3)}  # title, number of the extra feature


def draw(ctx: Context) -> dict[str, Figure]:
    """`phase_diagram_<kind>`; nothing for a store that is not a closed-form phase grid (the
    report says so)."""
    if ctx.kind is None:
        return {}
    return {f"phase_diagram_{ctx.kind}": phase_diagram(ctx.analysis, ctx.kind)}


def draw_axes(ctx: Context, ax: Axes) -> bool:
    """The trained panel alone, into ax: the extra feature's phase over (r, p) with the analytic
    boundaries on top (missing cells grey-hatched, disagreeing seeds hatched); False (nothing
    drawn) for a store that is not a closed-form phase grid."""
    if ctx.kind is None:
        return False
    title, extra = SYMBOLS[ctx.kind]
    a = ctx.analysis.transpose("relative_importance", "density", ...)
    r, p = a["relative_importance"].values, a["density"].values
    last = a.isel(feature=-1)
    _phase_panel(
        ax, last["phase"].values, r, p, a["missing"].values, last["seeds_disagree_feature"].values
    )
    _boundary_lines(ax, ctx.kind, r, p)
    set_axis(ax, "x", "relative_importance", r, f"relative importance r of feature {extra}")
    set_axis(ax, "y", "density", p)
    ax.set_title(
        f"{title}: phase of feature {extra} (rule {a.attrs.get('aggregate', '?')}); agreement "
        f"{a.attrs.get('agreement', np.nan):.1%}",
        fontsize=10,
    )
    handles = [
        Patch(facecolor=PHASE_COLOURS[c], label=PHASE_NAMES[c])
        for c in (IGNORED, DEDICATED, SUPERPOSED)
    ]
    ax.legend(handles=handles, fontsize=8, loc="lower left", framealpha=0.8)
    return True


def _phase_panel(
    ax: Axes,
    phase: np.ndarray,
    r: np.ndarray,
    p: np.ndarray,
    missing: np.ndarray | None = None,
    disagree: np.ndarray | None = None,
) -> None:
    """Heatmap of phase codes (r, p) on log axes; missing grey-hatched, disagreement hatched."""
    xe, ye = cell_edges(r, is_log_axis(r)), cell_edges(p, is_log_axis(p))
    cmap = ListedColormap([PHASE_COLOURS[c] for c in (IGNORED, DEDICATED, SUPERPOSED)])
    norm = BoundaryNorm([-0.5, 0.5, 1.5, 2.5], cmap.N)
    shown = np.ma.masked_less(phase, 0)  # -1: no phase
    ax.pcolormesh(xe, ye, shown.T, cmap=cmap, norm=norm, shading="flat")
    for i, j in zip(*np.nonzero(missing if missing is not None else phase < 0), strict=True):
        ax.add_patch(
            cell_rect(
                xe,
                ye,
                i,
                j,
                facecolor=MISSING_COLOUR,
                edgecolor="#777777",
                hatch=MISSING_HATCH,
                linewidth=0,
            )
        )
    if disagree is not None:
        for i, j in zip(*np.nonzero(disagree), strict=True):
            ax.add_patch(
                cell_rect(
                    xe, ye, i, j, fill=False, edgecolor="#444444", hatch=DISAGREE_HATCH, linewidth=0
                )
            )
    ax.set_xlim(xe[0], xe[-1])
    ax.set_ylim(ye[0], ye[-1])


def _boundary_lines(ax: Axes, kind: str, r: np.ndarray, p: np.ndarray) -> None:
    """Closed-form boundaries (theory.boundaries_*) plus the r = 1 edge where the phase flips."""
    lo_r, hi_r = cell_edges(r, True)[[0, -1]]
    rf = np.geomspace(lo_r, hi_r, 400)  # across the whole axis, not only the cell centres
    bounds = theory.boundaries_2to1(rf) if kind == "2to1" else theory.boundaries_3to2(rf)
    style: dict[str, Any] = {"color": "black", "linewidth": 1.6}
    for curve in bounds:
        ax.plot(rf, curve, **style)
    # Where the extra feature's importance crosses the others' (r = 1) the phase can jump
    # between ignored and dedicated (and, in 3→2, from superposed to dedicated) with no curve
    # in p: draw it where the closed-form phase differs just below and above r = 1.
    if lo_r < 1 < hi_r:
        lo_p, hi_p = cell_edges(p, True)[[0, -1]]
        pf = np.geomspace(lo_p, hi_p, 400)
        lo = theory.analytic_phase(kind, 1 - 1e-6, pf)
        hi = theory.analytic_phase(kind, 1 + 1e-6, pf)
        ax.plot(np.ones_like(pf), np.where(lo != hi, pf, np.nan), **style)


def phase_diagram(agg: xr.Dataset, kind: str) -> Figure:
    """Empirical phase of the extra feature over (r, p) beside the closed form, on log axes."""
    title, extra = SYMBOLS[kind]
    a = agg.transpose("relative_importance", "density", ...)
    r, p = a["relative_importance"].values, a["density"].values
    emp = a["phase"].isel(feature=-1).values
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 5.0), sharey=True, gridspec_kw={"wspace": 0.08})
    _phase_panel(
        axes[0], emp, r, p, a["missing"].values, a["seeds_disagree_feature"].isel(feature=-1).values
    )
    _phase_panel(axes[1], a["analytic_phase"].values, r, p)
    xe, ye = cell_edges(r, True), cell_edges(p, True)
    # Cells left out of the agreement (next to a boundary) get a dot; compared cells whose
    # phase differs from the closed form get a cross.
    near = a["near_boundary"].values & ~a["missing"].values
    wrong = a["compared"].values & ~a["agrees"].values
    rc, pc = np.sqrt(xe[:-1] * xe[1:]), np.sqrt(ye[:-1] * ye[1:])  # log-centre of each cell
    for mask, marker, size in ((near, "o", 10), (wrong, "x", 30)):
        i, j = np.nonzero(mask)
        axes[0].scatter(rc[i], pc[j], marker=marker, s=size, c="black", linewidths=1.2, zorder=4)
    for ax in axes:
        _boundary_lines(ax, kind, r, p)
        set_axis(ax, "x", "relative_importance", r, f"relative importance r of feature {extra}")
    set_axis(axes[0], "y", "density", p)
    axes[1].tick_params(labelleft=False)
    rule = a.attrs.get("aggregate", "?")
    agreement = a.attrs.get("agreement", np.nan)
    # The agreement goes in the panel's title, where it never hides a cell.
    axes[0].set_title(
        f"trained ({len(a['seed'])} seeds, rule: {rule})\n"
        f"agreement with theory: {agreement:.1%} ({a.attrs.get('n_agree', 0)}/"
        f"{a.attrs.get('n_compared', 0)} cells away from boundaries)",
        fontsize=10,
    )
    axes[1].set_title("closed form (lowest-loss candidate)", fontsize=10)
    fig.suptitle(f"{title} phase diagram: phase of feature {extra}", fontsize=12, y=1.03)
    handles: list[Artist] = [
        Patch(facecolor=PHASE_COLOURS[c], label=PHASE_NAMES[c])
        for c in (IGNORED, DEDICATED, SUPERPOSED)
    ]
    handles += [
        Patch(
            facecolor=MISSING_COLOUR,
            edgecolor="#777777",
            hatch=MISSING_HATCH,
            label="missing (unfinished / diverged)",
        ),
        Patch(facecolor="white", edgecolor="#444444", hatch=DISAGREE_HATCH, label="seeds disagree"),
        Line2D([], [], color="black", linewidth=1.6, label="analytic boundary"),
        Line2D(
            [],
            [],
            color="black",
            marker="o",
            markersize=3,
            linestyle="none",
            label="near boundary (not compared)",
        ),
        Line2D(
            [],
            [],
            color="black",
            marker="x",
            markersize=5,
            linestyle="none",
            label="differs from theory",
        ),
    ]
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=4,
        fontsize=9,
        frameon=False,
        bbox_to_anchor=(0.5, -0.12),
    )
    return fig
