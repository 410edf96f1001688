"""Figures of an analysis dataset (analysis.aggregate). Every function returns its Figure.

Colours are Okabe–Ito (safe for the common colour-vision deficiencies); missing cells are
grey with a cross hatch everywhere, so "no data" never looks like a phase.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.colors import BoundaryNorm, ListedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

from analysis.metrics import DEDICATED, IGNORED, PHASE_NAMES, SUPERPOSED  # noqa: E402

PHASE_COLOURS = {IGNORED: "#E69F00", DEDICATED: "#56B4E9", SUPERPOSED: "#009E73"}
MISSING_COLOUR = "#CCCCCC"
MISSING_HATCH = "xx"
DISAGREE_HATCH = "//"
AXIS_LABELS = {
    "density": "density p = 1 − S",
    "relative_importance": "relative importance r",
    "n_features": "features n",
    "n_hidden": "hidden dimensions m",
    "model": "model",
}
SYMBOLS = {"2to1": ("2 → 1", 2), "3to2": ("3 → 2", 3)}  # title, number of the extra feature


# ---------------------------------------------------------------- helpers


def is_log_axis(values: np.ndarray) -> bool:
    """True for positive values spanning at least a factor 10 (sweep axes are then log-spaced)."""
    v = np.asarray(values, dtype=float)
    return bool(v.size >= 2 and np.all(v > 0) and v.max() / v.min() >= 10)


def cell_edges(values: np.ndarray, log: bool) -> np.ndarray:
    """Edges of the cells centred on sorted values: midpoints in log space when log."""
    v = np.asarray(values, dtype=float)
    t = np.log(v) if log else v
    if t.size == 1:
        mid = np.array([t[0] - 0.5, t[0] + 0.5]) if not log else t[0] + np.array([-0.1, 0.1])
    else:
        inner = (t[:-1] + t[1:]) / 2
        mid = np.concatenate([[2 * t[0] - inner[0]], inner, [2 * t[-1] - inner[-1]]])
    return np.exp(mid) if log else mid


def _cell_rect(xe: np.ndarray, ye: np.ndarray, i: int, j: int, **kw) -> Rectangle:
    return Rectangle((xe[i], ye[j]), xe[i + 1] - xe[i], ye[j + 1] - ye[j], **kw)


def _set_axis(ax, which: str, name: str, values: np.ndarray, label: str | None = None) -> bool:
    log = is_log_axis(values)
    getattr(ax, f"set_{which}scale")("log" if log else "linear")
    getattr(ax, f"set_{which}label")(label or AXIS_LABELS.get(name, name))
    return log


def save(fig: Figure, directory: Path, stem: str) -> list[Path]:
    """Write fig as PNG and SVG into directory; return both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{stem}.png", directory / f"{stem}.svg"]
    for p in paths:
        fig.savefig(p, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths


# ---------------------------------------------------------------- phase diagram


def _phase_panel(
    ax,
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
            _cell_rect(
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
                _cell_rect(
                    xe, ye, i, j, fill=False, edgecolor="#444444", hatch=DISAGREE_HATCH, linewidth=0
                )
            )
    ax.set_xlim(xe[0], xe[-1])
    ax.set_ylim(ye[0], ye[-1])


def _boundary_lines(ax, kind: str, r: np.ndarray, p: np.ndarray) -> None:
    """Closed-form boundaries (theory.boundaries_*) plus the r = 1 edge where the phase flips."""
    from analysis import theory

    lo_r, hi_r = cell_edges(r, True)[[0, -1]]
    rf = np.geomspace(lo_r, hi_r, 400)  # across the whole axis, not only the cell centres
    bounds = theory.boundaries_2to1(rf) if kind == "2to1" else theory.boundaries_3to2(rf)
    style = {"color": "black", "linewidth": 1.6}
    for curve in bounds:
        ax.plot(rf, curve, **style)
    # Where the extra feature's importance crosses the others' (r = 1) the phase can jump
    # between ignored and dedicated (and, in 3→2, from superposed to dedicated) with no curve
    # in p: draw it where the closed-form phase differs just below and above r = 1.
    if lo_r < 1 < hi_r:
        pf = np.geomspace(*cell_edges(p, True)[[0, -1]], 400)
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
        _set_axis(ax, "x", "relative_importance", r, f"relative importance r of feature {extra}")
    _set_axis(axes[0], "y", "density", p)
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
    handles = [
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


# ---------------------------------------------------------------- per-feature panels

QUANTITIES = {
    "norm": ("‖W_i‖ (feature norm)", "viridis", (0.0, None)),
    "superposition": ("superposition Σ_j≠i (Ŵ_i·W_j)²", "magma", (0.0, 1.0)),
}


def _cell_dims(agg: xr.Dataset) -> list[str]:
    return [d for d in agg["norm"].dims if d != "feature"]


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
            _set_axis(ax, "x", x, xv)
            _set_axis(ax, "y", y, yv)
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
        _set_axis(bottom, "x", dims[0], xv)
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


# ---------------------------------------------------------------- training curves


def loss_curves(store: xr.Dataset, usable: xr.DataArray) -> Figure:
    """Training loss over steps: median and 10–90 % band over models, raw and relative to final.

    Raw curves are grouped by density (a few values) because the loss scales with density.
    """
    curve = store["loss_curve"]
    steps = store["curve_step"].values
    fig, (ax_raw, ax_rel) = plt.subplots(1, 2, figsize=(11.5, 4.2), gridspec_kw={"wspace": 0.3})

    def band(ax, c: np.ndarray, colour, label: str) -> None:
        c = c[np.all(np.isfinite(c), axis=-1)]
        if len(c) == 0:
            return
        lo, med, hi = np.quantile(c, [0.1, 0.5, 0.9], axis=0)
        ax.fill_between(steps, lo, hi, color=colour, alpha=0.25, linewidth=0)
        ax.plot(steps, med, color=colour, label=label)

    flat = curve.where(usable).stack(model=list(usable.dims)).transpose("model", "curve_step")
    if "density" in usable.dims:
        dens = usable["density"].values
        pick = dens[np.unique(np.linspace(0, len(dens) - 1, min(5, len(dens))).round().astype(int))]
        colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(pick)))
        for d, colour in zip(pick, colours, strict=True):
            band(ax_raw, flat.where(flat["density"] == d, drop=True).values, colour, f"p = {d:.3g}")
        ax_raw.legend(fontsize=8, title="density", title_fontsize=8)
    else:
        band(ax_raw, flat.values, "#0072B2", "all models")
    # Relative to the expected loss after training (the store's `loss`, on fresh samples):
    # the last training-batch loss is too noisy at low density to normalise by.
    final = store["loss"].where(usable).stack(model=list(usable.dims)).values
    band(ax_rel, flat.values / final[:, None], "#D55E00", "all models")
    ax_rel.axhline(1.0, color="black", linewidth=0.8, linestyle=":")
    for ax in (ax_raw, ax_rel):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training step")
    ax_raw.set_ylabel("training loss (median, 10–90 % band)")
    ax_rel.set_ylabel("training loss / expected loss after training")
    ax_raw.set_title("loss by density", fontsize=10)
    ax_rel.set_title("convergence: loss relative to the trained model's", fontsize=10)
    return fig
