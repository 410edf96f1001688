"""Training curves of every store: median and 10–90 % band over models, raw and relative."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from analysis.context import Context
from analysis.figs.style import fmt_p

RUN = "_run"  # the stacked (cells..., seed) dim; no grid axis has this name (a `model` axis does)
BAND = 80  # the percentile interval drawn around the median: the 10–90 % band


def draw(ctx: Context) -> dict[str, Figure]:
    """`loss_curves`: training loss over steps (every store)."""
    return {"loss_curves": loss_curves(ctx.store, ctx.analysis["usable_seed"])}


def _finite(curves: np.ndarray) -> np.ndarray:
    """Which runs of (run, step) curves have a finite curve: (run,) bool."""
    return np.all(np.isfinite(curves), axis=-1)


def _band(ax: Axes, steps: np.ndarray, curves: np.ndarray, color: Any, label: str) -> None:
    """The median line and 10–90 % band over runs of (run, step) curves; nothing without runs.

    Why not seaborn's lineplot(estimator="median", errorbar=("pi", 80)): it aggregates a long
    table with pandas, one group per step, which took 0.4-0.7 s of the 245-model grid's ~4 s
    analysis; the same median and the same percentiles (np.percentile, as seaborn's interval
    uses) over the run axis take milliseconds. The look is seaborn's: its theme and a band of
    alpha 0.2."""
    if not len(curves):
        return
    low, mid, high = np.percentile(curves, [50 - BAND / 2, 50, 50 + BAND / 2], axis=0)
    ax.plot(steps, mid, color=color, label=label)
    ax.fill_between(steps, low, high, color=color, alpha=0.2, linewidth=0)


def loss_curves(store: xr.Dataset, usable: xr.DataArray) -> Figure:
    """Training loss over steps: median and 10–90 % band over models, raw and relative to final.

    Raw curves are grouped by density (a few values) because the loss scales with density.
    """
    steps = store["curve_step"].values
    cells = list(usable.dims)
    flat = store["loss_curve"].where(usable).stack({RUN: cells}).transpose(RUN, "curve_step")
    # Relative to the expected loss after training (the store's `loss`, on fresh samples):
    # the last training-batch loss is too noisy at low density to normalise by.
    final = store["loss"].where(usable).stack({RUN: cells}).values
    fig, (ax_raw, ax_rel) = plt.subplots(1, 2, figsize=(11.5, 4.2), gridspec_kw={"wspace": 0.3})
    if "density" in usable.dims:
        dens = usable["density"].values
        pick = dens[np.unique(np.linspace(0, len(dens) - 1, min(5, len(dens))).round().astype(int))]
        labels = {d: f"p = {fmt_p(d)}" for d in pick}
        group = np.array([labels.get(d, "") for d in flat["density"].values])
        keep = _finite(flat.values)
        curves, groups = flat.values[keep], group[keep]
        colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(pick)))
        for d, colour in zip(pick, colours, strict=True):
            _band(ax_raw, steps, curves[groups == labels[d]], colour, labels[d])
        if len(ax_raw.get_lines()):
            ax_raw.legend(fontsize=8, title="density", title_fontsize=8)
    else:
        _band(ax_raw, steps, flat.values[_finite(flat.values)], "#0072B2", "all models")
        if len(ax_raw.get_lines()):
            ax_raw.legend()
    relative = flat.values / final[:, None]
    _band(ax_rel, steps, relative[_finite(relative)], "#D55E00", "all models")
    if len(ax_rel.get_lines()):
        ax_rel.legend()
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
