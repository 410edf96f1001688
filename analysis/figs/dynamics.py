"""Learning dynamics: every feature's D_i over training, jumping between the sticky values, and
the loss curve with those jumps marked (the dynamics step's variables; needs train.snapshots)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from analysis import metrics
from analysis.context import Context
from analysis.figs import panels
from analysis.figs.style import OKABE_ITO

MAX_CELLS = 6  # columns: the first cells of the grid, each its lowest-loss seed
SMOOTH = 1.15  # the loss curve's running median spans steps / SMOOTH to steps * SMOOTH


def draw(ctx: Context) -> dict[str, Figure]:
    """`dynamics`: D_i against the training step (log axis) with the sticky values, and the
    training loss with the jumps (some D_i moving by more than the threshold) marked; one
    column per cell (at most MAX_CELLS), its lowest-loss seed."""
    if "dimensionality_snapshot" not in ctx.analysis:
        msg = "this store has no snapshots; set train.snapshots (e.g. [log, 10, 10000, 60])"
        return {"dynamics": panels.message_figure("Learning dynamics", msg)}
    an = ctx.analysis
    cell_dims = [d for d in an["jump_count"].dims if d != "seed"]
    best = an["best_seed"]
    cells = [
        dict(zip(cell_dims, idx, strict=True))
        for idx in np.ndindex(*[an.sizes[d] for d in cell_dims])
    ][:MAX_CELLS]
    snaps = an["snapshot_step"].values
    threshold = an.attrs.get("jump_threshold", 0.1)
    window = an.attrs.get("jump_window", 2.0)
    n = len(cells)
    fig, axes = plt.subplots(
        2,
        n,
        figsize=(3.9 * n + 1.4, 7.0),
        squeeze=False,
        sharex=True,
        gridspec_kw={"height_ratios": [2, 1]},
    )
    for col, cell in enumerate(cells):
        ax_d, ax_l = axes[0, col], axes[1, col]
        s = max(int(best.isel(cell)), 0)
        sel = {**cell, "seed": s}
        for v, colour in zip(metrics.STICKY_VALUES, OKABE_ITO, strict=False):
            ax_d.axhline(v.value, color=colour, linestyle="--", linewidth=0.8, alpha=0.7)
            if col == n - 1:
                ax_d.annotate(
                    f"{v.name} ({v.value:.3g})",
                    (1.01, v.value),
                    xycoords=("axes fraction", "data"),
                    fontsize=7.5,
                    va="center",
                )
        d = an["dimensionality_snapshot"].isel(sel).transpose("snapshot_step", "feature")
        ax_d.plot(snaps, d.values, color="#333333", linewidth=0.7, alpha=0.6)
        ax_d.set_ylim(-0.03, 1.05)
        jumps = snaps[an["jump"].isel(sel).values]
        curve = ctx.store["loss_curve"].isel(sel)
        steps, raw = curve["curve_step"].values, curve.values.astype(float)
        ax_l.plot(steps, raw, color=OKABE_ITO[0], linewidth=0.6, alpha=0.35)
        # the batch loss is noisy: a running median over a factor SMOOTH of steps either side
        # (a window of constant width on the log axis) shows the trend
        lo, hi = np.searchsorted(steps, steps / SMOOTH), np.searchsorted(steps, steps * SMOOTH)
        smooth = np.array(
            [np.nanmedian(raw[a : max(b, a + 1)]) for a, b in zip(lo, hi, strict=True)]
        )
        ax_l.plot(steps, smooth, color=OKABE_ITO[0], linewidth=1.2)
        for k, x in enumerate(jumps):
            for ax in (ax_d, ax_l):
                ax.axvline(
                    x,
                    color=OKABE_ITO[1],
                    linewidth=0.8,
                    alpha=0.5,
                    label="jump" if (k == 0 and ax is ax_l) else None,
                )
        ax_l.set_yscale("log")
        ax_l.set_xscale("log")
        ax_l.set_xlabel("training step")
        where = ", ".join(f"{d} {an[d].values[i]:.3g}" for d, i in cell.items())
        seed = int(an["seed"].values[s])
        ax_d.set_title(f"{where}\nseed {seed} (lowest loss): {len(jumps)} jump(s)", fontsize=9.5)
        if col == 0:
            ax_d.set_ylabel("feature dimensionality D_i")
            ax_l.set_ylabel("training loss")
        if len(jumps):
            ax_l.legend(fontsize=8, frameon=False)
    model = ctx.section("model")
    total = int(an["jump_count"].sum())
    fig.suptitle(
        f"Learning dynamics: {model.get('n_features')} features in {model.get('n_hidden')} "
        f"dimensions, lowest-loss seed of each cell. Jump (orange): some D_i moves by "
        f"> {threshold:g} within a factor {window:g} of steps ({total} over all seeds and cells)",
        fontsize=11,
    )
    fig.subplots_adjust(right=0.88, hspace=0.1, wspace=0.25)
    return {"dynamics": fig}
