"""Does the absval model compute |x|? Output against input for a few features on dense inputs,
R² against |x| per feature, and features per neuron against density (the absval step's
variables)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from analysis.context import Context
from analysis.figs.style import OKABE_ITO
from analysis.steps import absval_forward, absval_inputs

SHOWN = 4  # features drawn in the output-against-input panel (the most important ones)


def draw(ctx: Context) -> dict[str, Figure]:
    """`absval_check`: y'_i against x_i on dense inputs (densest cell, lowest-loss seed); R²
    of y'_i against |x_i| per density; features per neuron (participation ratio) per density."""
    an = ctx.analysis
    if "absval_r2" not in an or "density" not in an["absval_r2"].dims:
        return {}
    r2 = an["absval_r2"]
    r2 = r2.isel({d: 0 for d in r2.dims if d not in ("density", "feature")})
    fpn = an["features_per_neuron"]
    fpn = fpn.isel({d: 0 for d in fpn.dims if d not in ("density", "hidden")})
    dens = r2["density"].values
    dense = int(np.argmax(dens))
    cell = {d: 0 for d in ctx.store["W"].dims if d not in ("density", "seed", "hidden", "feature")}
    seed = max(int(an["best_seed"].isel({**cell, "density": dense})), 0)
    pick = {**cell, "density": dense, "seed": seed}
    W = ctx.store["W"].isel(pick).transpose("hidden", "feature").values.astype(float)
    W_out = ctx.store["W_out"].isel(pick).transpose("hidden", "feature").values.astype(float)
    b = ctx.store["b"].isel(pick).values.astype(float)
    rows, feats = ~np.isnan(W).all(1), ~np.isnan(b)
    W, W_out, b = W[rows][:, feats], W_out[rows][:, feats], b[feats]
    x = absval_inputs(np.ones(len(b)), 600, seed=1)
    y = absval_forward(W, W_out, b, x)
    fig, (ax_y, ax_r, ax_f) = plt.subplots(1, 3, figsize=(15, 4.3))
    t = np.linspace(-1, 1, 101)
    ax_y.plot(t, np.abs(t), color="#555555", linewidth=1, linestyle="--", label="|x|")
    for i in range(min(SHOWN, len(b))):
        ax_y.scatter(
            x[:, i],
            y[:, i],
            s=4,
            alpha=0.5,
            color=OKABE_ITO[i],
            label=f"feature {i + 1}: R² {float(r2.isel(density=dense)[i]):.2f}",
        )
    ax_y.set_xlabel("input x_i (every feature active, U[-1, 1])")
    ax_y.set_ylabel("output y'_i")
    ax_y.set_title(
        f"output against input, dense inputs (model trained at density {dens[dense]:g})",
        fontsize=9.5,
    )
    ax_y.legend(fontsize=7.5, frameon=False, markerscale=3)
    order = np.argsort(dens)
    own = an["absval_r2_own"]
    own = own.isel({d: 0 for d in own.dims if d not in ("density", "feature")})
    vals = own.transpose("density", "feature").values[order]
    dense_vals = r2.transpose("density", "feature").values[order]
    for i in range(min(SHOWN, vals.shape[1])):
        ax_r.plot(dens[order], vals[:, i], "o-", ms=3, color=OKABE_ITO[i], label=f"feature {i + 1}")
    ax_r.plot(
        dens[order],
        np.nanmedian(dense_vals[:, :SHOWN], 1),
        "k--",
        linewidth=1,
        label=f"features 1-{SHOWN}, all inputs dense (median)",
    )
    ax_r.set_ylim(-1.3, 1.05)
    ax_r.axhline(-1, color="#999999", linestyle=":", linewidth=0.8)
    ax_r.annotate(
        "-1: one sign only, ReLU(±x_i)",
        (0.02, -0.97),
        xycoords=("axes fraction", "data"),
        fontsize=7.5,
        color="#555555",
    )
    ax_r.set_ylabel("R² of y'_i against |x_i|")
    ax_r.set_title(
        "x_i active, the others at the trained density\n(below -1.3: clipped)", fontsize=9.5
    )
    ax_r.legend(fontsize=7.5, frameon=False)
    per = fpn.transpose("density", "hidden").values[order]
    xs = np.broadcast_to(dens[order][:, None], per.shape)
    ax_f.scatter(xs, per, s=8, alpha=0.4, color=OKABE_ITO[0], label="one neuron")
    ax_f.plot(dens[order], np.nanmean(per, 1), "o-", color=OKABE_ITO[1], label="mean")
    ax_f.set_yscale("log")
    ax_f.set_ylabel("features per neuron (participation ratio)")
    ax_f.set_title("monosemantic (1) when dense, polysemantic when sparse", fontsize=9.5)
    ax_f.legend(fontsize=7.5, frameon=False)
    for ax in (ax_r, ax_f):
        ax.set_xscale("log")
        ax.set_xlabel("density p = 1 − S")
    model = ctx.section("model")
    fig.suptitle(
        f"Computing |x| in superposition: {model.get('n_features')} features, "
        f"{model.get('n_hidden')} neurons, lowest-loss seed",
        fontsize=11,
    )
    fig.subplots_adjust(wspace=0.3, top=0.83)
    return {"absval_check": fig}
