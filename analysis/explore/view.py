"""The explorer's page, as Bokeh models: the cell map, its selectors, and the per-seed panels.

One function, `build`, makes the page for both uses. Clicking a cell selects a row of the
map's ColumnDataSource; the served app answers in Python (`Page.show`, which reads that cell
from the store), the static export in the browser (`CLICK_JS`, which copies the cell's
precomputed payload into the same sources). Both fill the page from one *payload* per cell
(`payload.payload()`): new data per named source, HTML per named Div, model properties.
Selectors for the axes that are not on the map are Bokeh `GroupFilter`s linked to `Select`
widgets (`js_link`), so they work without a server too.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from bokeh.layouts import column, row
from bokeh.model import Model
from bokeh.models import (
    BasicTicker,
    CDSView,
    ColumnDataSource,
    CustomJS,
    DataRange1d,
    Filter,
    FixedTicker,
    GroupFilter,
    HoverTool,
    LinearColorMapper,
    LogColorMapper,
    Range1d,
    TapTool,
)
from bokeh.models.annotations import Arrow, ColorBar, VeeHead
from bokeh.models.glyphs import Quad
from bokeh.models.widgets import Button, Div, Select
from bokeh.palettes import RdBu, Viridis256
from bokeh.plotting import figure

from analysis import theory
from analysis.explore.data import Explorer, label
from analysis.explore.payload import empty_arrows, empty_gram
from analysis.explore.style import (
    MISSING,
    PHASE_COLOURS,
    PHASE_NAMES,
    SEED_COLOURS,
    axis_label,
    colours,
)
from analysis.metrics import DEDICATED, IGNORED, SUPERPOSED

# The project's figure palette (analysis/figures.py): Okabe–Ito phases, grey missing cells.
QUANTITIES = {  # key -> (menu label, colour bar title)
    "phase": ("phase of the last feature", ""),
    "n_superposed": ("superposed features", "superposed features per cell"),
    "loss": ("loss (expected, after training)", "loss"),
    "dstar": ("D* = m / ‖W‖²_F", "dimensions per feature D*"),
}

# In the browser: a click (a selection on the map) copies that cell's payload into the page.
CLICK_JS = """
const get = (o, k) => (o instanceof Map ? o.get(k) : o[k]);
const items = (o) => (o instanceof Map ? [...o.entries()] : Object.entries(o));
if (window._toysweep === undefined) { window._toysweep = JSON.parse(payloads); }
const i = src.selected.indices[0];
if (i === undefined) { return; }
const p = window._toysweep[src.data.key[i]];
if (p === undefined) {
  get(targets, "header").text = "<b>This cell is not in the export.</b>"; return;
}
for (const [name, data] of Object.entries(p.sources)) { get(targets, name).data = data; }
for (const [name, text] of Object.entries(p.divs)) { get(targets, name).text = text; }
for (const [name, props] of Object.entries(p.props)) { get(targets, name).setv(props); }
"""
# Switching the map's quantity: the precomputed colour column, its colour bar, the legend.
QUANTITY_JS = """
const q = cb_obj.value;
src.data.fill = src.data["col_" + q];
src.change.emit();
for (const [k, bar] of (bars instanceof Map ? bars.entries() : Object.entries(bars))) {
  bar.visible = (k === q);
}
legend.visible = (q === "phase");
"""


def is_log(values: np.ndarray) -> bool:
    """Positive numbers spanning a factor 10 or more: drawn on a log axis (as the figures)."""
    try:
        v = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        return False
    return bool(v.size >= 2 and np.all(v > 0) and v.max() / v.min() >= 10)


def _edges(values: np.ndarray, log: bool) -> tuple[np.ndarray, np.ndarray]:
    """Left and right edge of each value's cell, in data coordinates (any order of values)."""
    v = np.asarray(values, dtype=float)
    t = np.log(v) if log else v
    order = np.argsort(t)
    ts = t[order]
    inner = (ts[:-1] + ts[1:]) / 2
    e = np.concatenate([[2 * ts[0] - inner[0]], inner, [2 * ts[-1] - inner[-1]]])
    lo, hi = np.empty_like(t), np.empty_like(t)
    lo[order], hi[order] = e[:-1], e[1:]
    return (np.exp(lo), np.exp(hi)) if log else (lo, hi)


@dataclass
class Axis:
    """How one grid axis is laid out on the map: real log coordinates, or one slot per value."""

    dim: str | None
    values: np.ndarray
    log: bool = False
    lo: np.ndarray = field(default_factory=lambda: np.zeros(0))
    hi: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @classmethod
    def of(cls, dim: str | None, values: np.ndarray) -> Axis:
        if dim is not None and is_log(values):
            lo, hi = _edges(values, True)
            return cls(dim, values, True, lo, hi)
        k = np.arange(len(values), dtype=float)  # categorical or linear: one slot per value
        return cls(dim, values, False, k - 0.5, k + 0.5)

    def centre(self, i: np.ndarray) -> np.ndarray:
        return np.sqrt(self.lo[i] * self.hi[i]) if self.log else (self.lo[i] + self.hi[i]) / 2

    def style(self, fig_axis) -> None:
        fig_axis.axis_label = axis_label(self.dim) if self.dim else ""
        if not self.log:
            fig_axis.ticker = FixedTicker(ticks=list(range(len(self.values))))
            fig_axis.major_label_overrides = {k: label(v) for k, v in enumerate(self.values)}


def choose_axes(ex: Explorer, x: str | None, y: str | None) -> tuple[str | None, str | None]:
    """The map's axes: the phase diagram's (r, p), else density up and the longest other axis."""
    dims = ex.cell_dims
    pairs = "shape" in dims and {"relative_importance", "density"} <= set(dims)
    if x is None and y is None and (ex.kind is not None or pairs):
        # a phase grid, or (n, m) pairs of them (the dimension grid: shape chosen by a selector)
        return "relative_importance", "density"
    left = [d for d in dims if d not in (x, y)]
    if y is None:
        y = "density" if "density" in left else None
        left = [d for d in left if d != y]
    if x is None and left:
        x = max(left, key=lambda d: len(ex.coords[d]))
    if y is None:
        rest = [d for d in dims if d not in (x,)]
        y = max(rest, key=lambda d: len(ex.coords[d])) if rest else None
    if x is None and y is not None:  # one axis only: lay it along x
        x, y = y, None
    return x, y


def _mapper(q: str, values: np.ndarray):
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
    if q == "loss" and lo > 0 and hi / lo >= 10:
        return LogColorMapper(palette=Viridis256, low=lo, high=hi)
    return LinearColorMapper(palette=Viridis256, low=lo, high=hi if hi > lo else lo + 1)


def map_data(
    ex: Explorer,
    table: pd.DataFrame,
    ax: Axis,
    ay: Axis,
    mappers: dict,
    keep: np.ndarray | None = None,
) -> dict:
    """Columns of the map's source: geometry, labels for the selectors, colours, hover text."""
    t = table if keep is None else table[keep]
    ix = t[f"i_{ax.dim}"].to_numpy() if ax.dim else np.zeros(len(t), int)
    iy = t[f"i_{ay.dim}"].to_numpy() if ay.dim else np.zeros(len(t), int)
    idx = np.stack([t[f"i_{d}"].to_numpy() for d in ex.cell_dims], -1)
    data = {
        "key": [",".join(map(str, r)) for r in idx],
        "x": ax.centre(ix),
        "left": ax.lo[ix],
        "right": ax.hi[ix],
        "y": ay.centre(iy),
        "bottom": ay.lo[iy],
        "top": ay.hi[iy],
        "status": t["status"].to_list(),
        "phase_name": [PHASE_NAMES.get(int(c), "missing") for c in t["phase"]],
        "loss_text": [f"{v:.4g}" for v in t["loss"]],
        "n_sup_text": ["–" if np.isnan(v) else str(int(v)) for v in t["n_superposed"]],
        "hatch": np.where(t["missing"], "x", np.where(t["disagree"], "/", " ")).tolist(),
    }
    for d in ex.cell_dims:
        data[f"lab_{d}"] = [label(ex.coords[d][i]) for i in t[f"i_{d}"]]
    data["col_phase"] = [PHASE_COLOURS.get(int(c), MISSING) for c in t["phase"]]
    for q, m in mappers.items():
        data[f"col_{q}"] = colours(t[q].to_numpy(), m)
    return data


def boundary_lines(kind: str, ax: Axis, ay: Axis) -> list[tuple[np.ndarray, np.ndarray]]:
    """The closed-form phase boundaries over the map's (r, p) range, as polylines in the map's
    coordinates: r and p themselves on a log axis, slots on another (`on_map`)."""
    r_lo, r_hi = span(ax)
    p_lo, p_hi = span(ay)
    rf = np.geomspace(r_lo, r_hi, 300)
    bounds = theory.boundaries_2to1(rf) if kind == "2to1" else theory.boundaries_3to2(rf)
    lines = [(on_map(ax, rf), on_map(ay, np.asarray(c, float))) for c in bounds]
    if r_lo < 1 < r_hi:  # the r = 1 edge, where the closed-form phase jumps with no curve in p
        pf = np.geomspace(p_lo, p_hi, 300)
        below, above = (theory.analytic_phase(kind, r, pf) for r in (1 - 1e-6, 1 + 1e-6))
        jump = below != above
        lines.append((on_map(ax, np.ones_like(pf)), on_map(ay, np.where(jump, pf, np.nan))))
    return lines


def span(axis: Axis) -> tuple[float, float]:
    """The values an axis covers: its cells' outer edges on a log axis, else its values (a
    slot axis's edges are slot numbers, not values)."""
    if axis.log:
        return float(axis.lo.min()), float(axis.hi.max())
    v = np.asarray(axis.values, dtype=float)
    return float(v.min()), float(v.max())


def on_map(axis: Axis, v: np.ndarray) -> np.ndarray:
    """Values -> the map's coordinates: themselves on a log axis; on a slot axis (one slot per
    value, axes spanning less than 10×), linear between the slots' centres, NaN outside."""
    if not axis.log:
        values = np.asarray(axis.values, dtype=float)
        order = np.argsort(values)  # slot k holds values[k]
        v = np.interp(v, values[order], order.astype(float), left=np.nan, right=np.nan)
    return v


# ---------------------------------------------------------------- the page


@dataclass
class Page:
    """The page's root layout and the models that a click fills."""

    root: Model
    src: ColumnDataSource
    targets: dict
    quantity: Select | None = None
    refresh: Button | None = None
    counts: Div | None = None
    explorer: Explorer | None = None
    axes: tuple[Axis, Axis] | None = None
    mappers: dict = field(default_factory=dict)

    def redraw(self, table: pd.DataFrame) -> None:
        """Recolour the map from a new summary (the served app's refresh)."""
        assert self.explorer is not None and self.quantity is not None and self.axes
        for q, m in self.mappers.items():
            new = _mapper(q, table[q].to_numpy())
            m.update(low=new.low, high=new.high)
        data = map_data(self.explorer, table, self.axes[0], self.axes[1], self.mappers)
        data["fill"] = data[f"col_{self.quantity.value}"]
        self.src.data = data
        if self.counts is not None:
            self.counts.text = counts_text(self.explorer, table)

    def show(self, p: dict) -> None:
        """Fill the page with one cell's payload (the served app's half of CLICK_JS)."""
        for name, data in p["sources"].items():
            self.targets[name].data = data
        for name, text in p["divs"].items():
            self.targets[name].text = text
        for name, props in p["props"].items():
            self.targets[name].update(**props)


def _swatch(colour: str, text: str, pattern: str = "") -> str:
    bg = (
        f"repeating-linear-gradient(45deg,{colour},{colour} 3px,#555 3px,#555 4px)"
        if pattern
        else colour
    )
    return (
        f'<span style="display:inline-block;width:14px;height:14px;background:{bg};'
        f'border:1px solid #888;vertical-align:middle;margin:0 4px 0 12px"></span>{text}'
    )


def legend_html(boundaries: bool) -> str:
    """The phase legend (Okabe–Ito as the project's figures), shown while cells show phases."""
    parts = [_swatch(PHASE_COLOURS[c], PHASE_NAMES[c]) for c in (IGNORED, DEDICATED, SUPERPOSED)]
    parts.append(_swatch(MISSING, "missing: unfinished / diverged (crossed)", "x"))
    parts.append(_swatch("#FFFFFF", "seeds disagree (hatched)", "/"))
    if boundaries:
        parts.append(
            '<span style="display:inline-block;width:22px;border-top:2px solid black;'
            'vertical-align:middle;margin:0 4px 0 12px"></span>analytic boundary '
            "(closed form)"
        )
    return f'<div class="legend"><b>phase of the last feature:</b>{"".join(parts)}</div>'


def counts_text(ex: Explorer, table: pd.DataFrame) -> str:
    n_cells = len(table)
    done = int((table["n_finished"] == len(ex.seeds)).sum())
    models = int(table["n_finished"].sum())
    div = int(table["n_diverged"].sum())
    total = n_cells * len(ex.seeds)
    return (
        f'<div class="counts">{done}/{n_cells} cells finished, {models}/{total} models '
        f"trained, {div} diverged; rule: {ex.settings.aggregate}</div>"
    )


def build(
    ex: Explorer,
    x: str | None = None,
    y: str | None = None,
    *,
    keep: np.ndarray | None = None,
    payloads: dict | None = None,
    served: bool = True,
) -> Page:
    """The whole page. Static export: served=False and payloads = {key: payload}."""
    table = ex.summary()
    xd, yd = choose_axes(ex, x, y)
    ax = Axis.of(xd, ex.coords[xd] if xd else np.array([""]))
    ay = Axis.of(yd, ex.coords[yd] if yd else np.array([""]))
    mappers = {q: _mapper(q, table[q].to_numpy()) for q in QUANTITIES if q != "phase"}
    src = ColumnDataSource(map_data(ex, table, ax, ay, mappers, keep), name="cells")
    src.data["fill"] = src.data["col_phase"]
    t = table if keep is None else table[keep]

    # Selectors for the axes not on the map.
    selects, filters = [], []
    for d in ex.cell_dims:
        if d in (xd, yd):
            continue
        opts: list[str | tuple[Any, str]] = [
            label(ex.coords[d][i]) for i in sorted(set(t[f"i_{d}"]))
        ]
        sel = Select(
            title=axis_label(d), options=opts, value=str(opts[0]), width=170, name=f"sel_{d}"
        )
        gf = GroupFilter(column_name=f"lab_{d}", group=str(opts[0]))
        sel.js_link("value", gf, "group")
        selects.append(sel)
        filters.append(gf)
    view = CDSView()
    if filters:
        flt: Filter = filters[0]
        for gf in filters[1:]:
            flt = flt & gf
        view = CDSView(filter=flt)

    title = (
        f"{ex.name}: {'2 → 1' if ex.kind == '2to1' else '3 → 2'} phase diagram "
        f"(phase of feature {2 if ex.kind == '2to1' else 3})"
        if ex.kind
        else f"{ex.name}: one cell per grid point; click a cell"
    )
    # white cell outlines, unless the cells are too small for them (they would grey the map)
    outline = "white" if max(len(ax.values), len(ay.values)) <= 40 else None
    x_type: Literal["log", "linear"] = "log" if ax.log else "linear"
    y_type: Literal["log", "linear"] = "log" if ay.log else "linear"
    fmap = figure(
        title=title,
        width=560,
        height=470,
        tools="pan,wheel_zoom,reset,save",
        x_axis_type=x_type,
        y_axis_type=y_type,
        toolbar_location="above",
        x_range=Range1d(start=float(ax.lo.min()), end=float(ax.hi.max())),
        y_range=Range1d(start=float(ay.lo.min()), end=float(ay.hi.max())),
    )
    # quads, not rects: a rect's width is symmetric in data units, wrong on a log axis
    cells = fmap.quad(
        left="left",
        right="right",
        bottom="bottom",
        top="top",
        source=src,
        view=view,
        fill_color="fill",
        line_color=outline,
        line_width=0.5,
        hatch_pattern="hatch",
        hatch_color="#555555",
        hatch_alpha=0.6,
        hatch_scale=8,
        nonselection_fill_alpha=1.0,
        name="cellmap",
    )
    cells.selection_glyph = Quad(  # the clicked cell: a thick black outline
        fill_color="fill",
        line_color="black",
        line_width=3,
        hatch_pattern="hatch",
        hatch_color="#555555",
        hatch_alpha=0.6,
        hatch_scale=8,
    )
    hover_dims = [(axis_label(d), f"@lab_{d}") for d in ex.cell_dims]
    # tools made here, not found with select_one (which walks every model: ~1 s per call)
    fmap.add_tools(
        HoverTool(
            renderers=[cells],
            tooltips=hover_dims
            + [
                ("status", "@status"),
                ("phase (last feature)", "@phase_name"),
                ("loss", "@loss_text"),
                ("superposed features", "@n_sup_text"),
            ],
        ),
        TapTool(renderers=[cells]),
    )
    ax.style(fmap.xaxis[0])
    ay.style(fmap.yaxis[0])
    fmap.grid.visible = False
    plots = [fmap]
    theory_fig = None
    if ex.kind is not None and {xd, yd} == {"relative_importance", "density"}:
        lines = boundary_lines(
            ex.kind, ax if xd == "relative_importance" else ay, ay if yd == "density" else ax
        )
        # a closed-form map beside the trained one, on the same axes
        theory_fig = figure(
            title="closed form (lowest-loss candidate)",
            width=470,
            height=470,
            x_range=fmap.x_range,
            y_range=fmap.y_range,
            tools="pan,wheel_zoom,reset,save",
            y_axis_label=axis_label(yd or ""),
            x_axis_type=x_type,
            y_axis_type=y_type,
            toolbar_location="above",
        )
        r = np.asarray(ex.coords["relative_importance"], float)
        p = np.asarray(ex.coords["density"], float)
        an = theory.analytic_phase(ex.kind, r[:, None], p[None, :])  # (r, p)
        ir, ip = np.meshgrid(np.arange(len(r)), np.arange(len(p)), indexing="ij")
        jx, jy = (ir, ip) if xd == "relative_importance" else (ip, ir)
        kx, ky = jx.ravel(), jy.ravel()
        tsrc = ColumnDataSource(
            {
                "left": ax.lo[kx],
                "right": ax.hi[kx],
                "bottom": ay.lo[ky],
                "top": ay.hi[ky],
                "fill": [PHASE_COLOURS[int(c)] for c in an.ravel()],
            }
        )
        theory_fig.quad(
            left="left",
            right="right",
            bottom="bottom",
            top="top",
            source=tsrc,
            fill_color="fill",
            line_color=outline,
            line_width=0.5,
        )
        ax.style(theory_fig.xaxis[0])
        ay.style(theory_fig.yaxis[0])
        theory_fig.grid.visible = False
        for fig in (fmap, theory_fig):
            for rr, pp in lines:
                xs, ys = (rr, pp) if xd == "relative_importance" else (pp, rr)
                fig.line(xs, ys, color="black", line_width=2)
        plots.append(theory_fig)
    legend = Div(
        text=legend_html(ex.kind is not None and theory_fig is not None), width=1000, name="legend"
    )
    bars = {}
    for q, m in mappers.items():
        bar = ColorBar(
            color_mapper=m,
            title=QUANTITIES[q][1],
            visible=False,
            ticker=BasicTicker(desired_num_ticks=6),
            width=12,
        )
        fmap.add_layout(bar, "right")
        bars[q] = bar
    quantity = Select(
        title="colour cells by",
        value="phase",
        width=230,
        name="quantity",
        options=list[str | tuple[Any, str]]([(q, v[0]) for q, v in QUANTITIES.items()]),
    )
    quantity.js_on_change(
        "value", CustomJS(args=dict(src=src, bars=bars, legend=legend), code=QUANTITY_JS)
    )

    # Per-seed panels, filled on click.
    targets: dict = {}
    header = Div(
        text="<i>Click a cell of the map to see its models, seed by seed.</i>",
        width=1000,
        name="header",
    )
    targets["header"] = header
    curve = figure(
        title="training loss per seed",
        width=520,
        height=240,
        y_axis_type="log",
        x_axis_label="step",
        y_axis_label="loss",
        tools="pan,wheel_zoom,reset,save",
    )
    rows = []
    for k, seed in enumerate(ex.seeds):
        colour = SEED_COLOURS[k % len(SEED_COLOURS)]
        cs = ColumnDataSource({"step": [], "loss": []})
        curve.line(
            "step",
            "loss",
            source=cs,
            color=colour,
            line_width=1.5,
            legend_label=f"seed {int(seed)}",
        )
        targets[f"curve{k}"] = cs
        text = Div(text="", width=260, name=f"text{k}")
        asrc = ColumnDataSource(empty_arrows(), name=f"arrows{k}")
        csrc = ColumnDataSource({"x": [], "y": []})
        gsrc = ColumnDataSource(empty_gram())
        gmap = LinearColorMapper(palette=RdBu[11], low=-1, high=1)
        # one figure for W's geometry: arrows when m <= 2, else WᵀW (features down the rows)
        fg = figure(
            title="columns of W",
            width=270,
            height=230,
            match_aspect=True,
            tools="pan,wheel_zoom,reset",
            y_range=DataRange1d(),
            toolbar_location=None,
        )
        fg.line("x", "y", source=csrc, color="#BBBBBB")
        fg.add_layout(
            Arrow(  # type: ignore[call-arg]  # bokeh's stubs say body_line_*, the model line_*
                end=VeeHead(size=8, fill_color=colour, line_color=colour),
                x_start="x0",
                y_start="y0",
                x_end="x1",
                y_end="y1",
                source=asrc,
                line_color=colour,
                line_width=2,
            )
        )
        fg.text(
            "lx",
            "ly",
            text="label",
            source=asrc,
            text_font_size="9pt",
            text_align="center",
            text_baseline="middle",
        )
        grect = fg.rect("i", "j", 1, 1, source=gsrc, fill_color="colour", line_color=None)
        fg.add_tools(
            HoverTool(renderers=[grect], tooltips=[("features", "@i, @j"), ("WᵀW", "@v{0.000}")])
        )
        gbar = ColorBar(color_mapper=gmap, width=8, title="WᵀW", visible=False)
        fg.add_layout(gbar, "right")
        bsrc = ColumnDataSource({"feature": [], "b": []})
        fb = figure(
            title="bias b_i",
            width=230,
            height=230,
            tools="hover,reset",
            x_axis_label="feature",
            toolbar_location=None,
            tooltips=[("feature", "@feature"), ("b", "@b{0.0000}")],
        )
        fb.vbar("feature", top="b", width=0.8, source=bsrc, color="#0072B2")
        nsrc = ColumnDataSource({"feature": [], "norm": [], "colour": [], "sup": []})
        fn = figure(
            title="‖W_i‖, colour: superposition",
            width=260,
            height=230,
            tools="hover,reset",
            x_axis_label="feature",
            toolbar_location=None,
            tooltips=[
                ("feature", "@feature"),
                ("‖W_i‖", "@norm{0.000}"),
                ("superposition", "@sup{0.000}"),
            ],
        )
        fn.vbar("feature", top="norm", width=0.8, source=nsrc, color="colour")
        fn.add_layout(
            ColorBar(
                color_mapper=LinearColorMapper(palette=Viridis256, low=0, high=1),
                title="√superposition",
                width=8,
            ),
            "right",
        )
        targets.update(
            {
                f"text{k}": text,
                f"arrows{k}": asrc,
                f"circle{k}": csrc,
                f"gram{k}": gsrc,
                f"gram_map{k}": gmap,
                f"bias{k}": bsrc,
                f"norm{k}": nsrc,
                f"geom_y{k}": fg.y_range,
                f"geom_title{k}": fg.title,
                f"gram_bar{k}": gbar,
            }
        )
        rows.append(row(text, fg, fb, fn))
    curve.legend.label_text_font_size = "8pt"
    curve.add_layout(curve.legend[0], "right")  # beside the curves, never over them

    counts = Div(text=counts_text(ex, table if keep is None else table[keep]), width=560)
    controls: list[Model] = [quantity, *selects]
    refresh = None
    if served:
        refresh = Button(label="refresh (re-read finished cells)", width=230, name="refresh")
        controls.append(refresh)
    intro = Div(
        text=(
            f"<h2 style='margin:2px 0'>toysweep explorer: {html.escape(ex.name)}</h2>"
            f"<div style='color:#555'>{html.escape(str(ex.path))} · {ex.ds.sizes['seed']} seeds "
            f"per cell · {'live from the store' if served else 'static export'}</div>"
        ),
        width=1000,
    )
    details = column(row(curve), *rows, visible=False, name="details")  # shown on a click
    targets["details"] = details
    root = column(
        intro, counts, row(*controls), row(*plots), legend, row(header), details, name="root"
    )
    page = Page(
        root=root,
        src=src,
        targets=targets,
        quantity=quantity,
        refresh=refresh,
        counts=counts,
        explorer=ex,
        axes=(ax, ay),
        mappers=mappers,
    )
    if payloads is not None:
        src.selected.js_on_change(
            "indices",
            CustomJS(
                args=dict(src=src, targets=targets, payloads=json.dumps(payloads, allow_nan=False)),
                code=CLICK_JS,
            ),
        )
    return page
