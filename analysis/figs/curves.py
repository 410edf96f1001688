"""Training curves of every store: median and 10–90 % band over models, raw and relative."""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from analysis.context import Context
from analysis.figs.style import fmt_p

RUN = "_run"  # the stacked (cells..., seed) dim; no grid axis has this name (a `model` axis does)
BAND = ("pi", 80)  # seaborn's percentile interval: the 10–90 % band


def draw(ctx: Context) -> dict[str, Figure]:
    """`loss_curves`: training loss over steps (every store)."""
    return {"loss_curves": loss_curves(ctx.store, ctx.analysis["usable_seed"])}


def _long(curves: np.ndarray, steps: np.ndarray, group: np.ndarray | None) -> pd.DataFrame:
    """(run, step) curves -> one row per (run, step), finite curves only, for seaborn."""
    keep = np.all(np.isfinite(curves), axis=-1)
    c = curves[keep]
    frame = pd.DataFrame(
        {
            "run": np.repeat(np.arange(len(c)), len(steps)),
            "step": np.tile(steps, len(c)),
            "loss": c.ravel(),
        }
    )
    if group is not None:
        frame["group"] = np.repeat(group[keep], len(steps))
    return frame


def _band(ax: Axes, frame: pd.DataFrame, **kw: Any) -> None:
    """seaborn's median line and band; nothing when no model has a finite curve."""
    if not frame.empty:
        sns.lineplot(frame, ax=ax, x="step", y="loss", estimator="median", errorbar=BAND, **kw)


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
        raw = _long(flat.values, steps, group)
        raw = raw[raw["group"] != ""]
        colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(pick)))
        order = [labels[d] for d in pick]
        _band(ax_raw, raw, hue="group", hue_order=order, palette=list(colours))
        if not raw.empty:
            ax_raw.legend(fontsize=8, title="density", title_fontsize=8)
    else:
        _band(ax_raw, _long(flat.values, steps, None), color="#0072B2", label="all models")
    relative = _long(flat.values / final[:, None], steps, None)
    _band(ax_rel, relative, color="#D55E00", label="all models")
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
