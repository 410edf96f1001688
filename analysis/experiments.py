"""Figures of the paper's experiments, one entry of `FIGURES` per grid (conf/grid/<name>.yaml).

analysis.report merges `FIGURES` into its own registry; each entry takes the report's Context
(store, analysis dataset, config) and returns {stem: Figure}. Where seeds can land in different
local minima, a figure draws the lowest-loss usable seed of each cell (`best_models`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.cm import ScalarMappable
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from analysis import aggregate, embedding, figures, metrics, panels

if TYPE_CHECKING:
    from analysis.report import Context

# A feature's D_i is labelled with the nearest sticky value within this distance (the closest
# pair, 2/5 and 3/8, is 0.025 apart; trained D_i scatter by about 0.01 around their value).
STICKY_TOL = 0.02
# A neuron whose weight row is shorter than this is dead and has no monosemanticity.
DEAD_NEURON = 0.1
MODEL_LABELS = {"linear": "linear", "relu": "ReLU", "privileged": "hidden-ReLU"}


# ---------------------------------------------------------------- selection and metrics


def best_models(ctx: Context) -> xr.Dataset:
    """W and b of the lowest-loss usable seed of every cell (NaN where a cell is missing)."""
    idx = ctx.analysis["loss_seed"].fillna(np.inf).argmin("seed")  # (cells...)
    best = ctx.store[["W", "b"]].isel(seed=idx).drop_vars("seed", errors="ignore")
    return best.where(~ctx.analysis["missing"])


def only(ds: xr.Dataset, keep: tuple[str, ...]) -> xr.Dataset:
    """The cells along `keep`; every other grid axis is held at its first value."""
    other = [d for d in ds["b"].dims if d not in (*keep, "feature")]
    return ds.isel({d: 0 for d in other})


def importance_of(ctx: Context) -> np.ndarray:
    """Importance of each feature (the first cell's: the experiments use one schedule)."""
    imp = ctx.store["importance"]
    return imp.isel({d: 0 for d in imp.dims if d != "feature"}).values.astype(float)


def real_W(W: np.ndarray) -> np.ndarray:
    """Drop the NaN padding rows (hidden dims beyond this shape's m) of one (hidden, feature) W."""
    W = np.asarray(W, float)
    return W[~np.all(np.isnan(W), axis=-1)]


def monosemanticity(W: np.ndarray) -> np.ndarray:
    """Per neuron, the share of its squared weights on its largest feature: 1 = monosemantic.

    W: (..., neuron, feature); NaN for dead neurons (row norm < DEAD_NEURON).
    """
    W2 = np.nan_to_num(np.asarray(W, float)) ** 2
    total = W2.sum(-1)
    share = W2.max(-1) / np.where(total > 0, total, 1.0)
    return np.where(np.sqrt(total) >= DEAD_NEURON, share, np.nan)


def sticky_dataset(best: xr.Dataset, tol: float = STICKY_TOL) -> xr.Dataset:
    """D_i, D* and the nearest sticky value of every feature of the best seed, with counts.

    Returns `dimensionality_best` (cells..., feature), `dims_per_feature_best` (cells...),
    `sticky_label` (index into metrics.STICKY_VALUES, -1 = none within tol) and `sticky_count`
    (cells..., sticky): features per sticky value, the last entry "none".
    """
    W = best["W"].transpose(..., "hidden", "feature")
    cells = W.dims[:-2]
    D = metrics.feature_dimensionality(W.values)  # (cells..., feature)
    idx = metrics.nearest_sticky(D, tol)
    idx = np.where(np.isnan(D), -1, idx)
    k = len(metrics.STICKY_VALUES)
    counts = np.stack(
        [(idx == j).sum(-1) for j in range(k)] + [((idx == -1) & ~np.isnan(D)).sum(-1)], -1
    )
    names = [s.name for s in metrics.STICKY_VALUES] + ["none"]
    coords = {d: W[d].values for d in cells}
    return xr.Dataset(
        {
            "dimensionality_best": ((*cells, "feature"), D),
            "dims_per_feature_best": (cells, metrics.dimensions_per_feature(W.values)),
            "sticky_label": (
                (*cells, "feature"),
                idx.astype(np.int64),
                {
                    "description": "index along `sticky` of the nearest sticky value of "
                    "D_i within sticky_tolerance; -1: none"
                },
            ),
            "sticky_count": ((*cells, "sticky"), counts.astype(np.int64)),
        },
        coords={
            **coords,
            "feature": W["feature"].values,
            "sticky": names,
            "sticky_value": ("sticky", [s.value for s in metrics.STICKY_VALUES] + [np.nan]),
        },
        attrs={"sticky_tolerance": tol, "sticky_seed_rule": "lowest-loss usable seed"},
    )


def _p(p: float) -> str:
    return f"{p:.3g}"


def _relative(p: float, base: float) -> str:
    """A density against the base density, as the paper words it (k× sparser / denser)."""
    if np.isclose(p, base):
        return "= base"
    return f"{base / p:.2g}× sparser" if p < base else f"{p / base:.2g}× denser"


def _loss_curves(ctx: Context) -> dict:
    # figures.loss_curves stacks the cells into a dim called "model": rename a model axis first
    names = {"model": "model_kind"} if "model" in ctx.store.dims else {}
    store, usable = ctx.store.rename(names), ctx.analysis["usable_seed"].rename(names)
    return {"loss_curves": figures.loss_curves(store, usable)}


# ---------------------------------------------------------------- 2-D arrows: intro, perturb


def _arrow_figure(Ws: np.ndarray, titles: list[str], colours, notes: list[str]) -> Figure:
    """One panel of arrows per model; Ws (panel, hidden, feature)."""
    limit = max(1.3, float(np.nanmax(np.linalg.norm(np.nan_to_num(Ws), axis=1), initial=0)) + 0.3)
    fig, axes = panels.grid_of_axes(len(Ws), 5, 2.3, height=0.9, sharex=True, sharey=True)
    for ax, W, title, note in zip(axes, Ws, titles, notes, strict=True):
        panels.arrows(ax, W, colours, limit)
        ax.set_title(title, fontsize=9)
        ax.text(
            0.5,
            0.02,
            note,
            transform=ax.transAxes,
            ha="center",
            va="bottom",
            fontsize=6.5,
            color="#333333",
        )
    for ax in axes:
        if ax.get_subplotspec().is_last_row() or ax is axes[-1]:
            ax.set_xlabel("hidden dim 1", fontsize=8)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("hidden dim 2", fontsize=8)
    return fig


def _dims_note(W: np.ndarray) -> str:
    D = metrics.feature_dimensionality(W)
    return "D_i: " + " ".join(f"{d:.2f}".lstrip("0") if d > 0 else "0" for d in D)


def intro_figures(ctx: Context) -> dict:
    """Columns of W as arrows per density, coloured by importance."""
    best = only(best_models(ctx), ("density",))
    W = best["W"].transpose("density", "hidden", "feature").values
    imp = importance_of(ctx)
    norm = panels.value_norm(imp)
    cmap = plt.get_cmap(panels.ORDERED)
    titles = [f"p = {_p(p)} (S = {_p(1 - p)})" for p in best["density"].values]
    fig = _arrow_figure(W, titles, cmap(norm(imp)), [_dims_note(w) for w in W])
    fig.colorbar(ScalarMappable(norm, cmap), ax=fig.axes, label="importance I_i", shrink=0.8)
    n, m = W.shape[-1], W.shape[-2]
    fig.suptitle(
        f"{n} features in {m} dimensions: columns W_i of the lowest-loss seed, by "
        "density (grey: unit circle; numbers: feature i)",
        fontsize=11,
    )
    return {"arrows_by_density": fig, **_loss_curves(ctx)}


def perturb_figures(ctx: Context) -> dict:
    """Arrows per density of the perturbed feature(s); the perturbed ones in vermillion."""
    best = only(best_models(ctx), ("density",))
    W = best["W"].transpose("density", "hidden", "feature").values
    data = ctx.config.get("data") or {}
    moved = list(data.get("density_features") or [])
    base = float(data.get("density", 1.0))
    colours = [
        panels.OKABE_ITO[1] if i in moved else panels.OKABE_ITO[0] for i in range(W.shape[-1])
    ]
    which = ", ".join(str(i + 1) for i in moved) or "all"
    titles = [f"p_{which} = {_p(p)} ({_relative(p, base)})" for p in best["density"].values]
    fig = _arrow_figure(W, titles, colours, [_dims_note(w) for w in W])
    fig.legend(
        handles=[
            Patch(color=panels.OKABE_ITO[1], label=f"feature {which} (density varied)"),
            Patch(color=panels.OKABE_ITO[0], label=f"the others (density {_p(base)})"),
        ],
        loc="lower center",
        ncol=2,
        frameon=False,
        bbox_to_anchor=(0.5, -0.04),
        fontsize=9,
    )
    fig.suptitle(
        f"Perturbing one feature's density: columns W_i (lowest-loss seed); base "
        f"density {_p(base)}",
        fontsize=11,
    )
    return {"arrows_by_density": fig, **_loss_curves(ctx)}


# ---------------------------------------------------------------- WᵀW, b, norms: basic, blog


def _limits(b: np.ndarray) -> tuple[float, float]:
    lo, hi = float(np.nanmin(b, initial=0)), float(np.nanmax(b, initial=0))
    pad = 0.08 * max(hi - lo, 1e-3)
    return min(lo, 0) - pad, max(hi, 0) + pad


def _gram_vmax(W: np.ndarray) -> float:
    W0 = np.nan_to_num(W)
    return max(1e-3, float(np.abs(np.swapaxes(W0, -1, -2) @ W0).max()))


def gram_bias_norms(W: np.ndarray, b: np.ndarray, dens: np.ndarray, title: str) -> Figure:
    """Per density (columns): WᵀW, b and ‖W_i‖ bars coloured by √superposition (rows)."""
    k = len(dens)
    vmax = _gram_vmax(W)
    norms = metrics.feature_norms(np.nan_to_num(W))
    sup = metrics.superposition(np.nan_to_num(W))
    fig, axes = plt.subplots(
        3,
        k,
        figsize=(2.05 * k + 1.6, 7.4),
        squeeze=False,
        gridspec_kw={"hspace": 0.35, "wspace": 0.3},
    )
    blim = _limits(b)
    nlim = (0.0, max(1.0, float(np.nanmax(norms, initial=0))) * 1.05)
    for j in range(k):
        im = panels.gram(axes[0, j], W[j], vmax)
        axes[0, j].set_title(f"S = {_p(1 - dens[j])}\n(p = {_p(dens[j])})", fontsize=9)
        panels.feature_barh(axes[1, j], b[j], panels.OKABE_ITO[0], blim)
        panels.feature_barh(axes[2, j], norms[j], panels.superposition_colours(sup[j]), nlim)
        axes[0, j].set_xlabel("feature j", fontsize=8)
        axes[1, j].set_xlabel("b_i", fontsize=8)
        axes[2, j].set_xlabel("‖W_i‖", fontsize=8)
    for row, label in enumerate(("WᵀW: feature i", "bias: feature i", "norm: feature i")):
        axes[row, 0].set_ylabel(label, fontsize=9)
    fig.colorbar(im, ax=axes[0, :].tolist(), label="(WᵀW)_ij", shrink=0.9, pad=0.01)
    fig.colorbar(
        ScalarMappable(plt.Normalize(0, 1), panels.ORDERED),
        ax=axes[2, :].tolist(),
        label="√superposition\n(clipped to [0, 1])",
        shrink=0.9,
        pad=0.01,
    )
    fig.suptitle(title, fontsize=11)
    return fig


def basic_figures(ctx: Context) -> dict:
    """For each model kind: WᵀW, b and the feature-norm bars per sparsity."""
    best = only(best_models(ctx), ("model", "density"))
    out = {}
    models = best["model"].values if "model" in best.dims else [ctx.config["model"]["kind"]]
    for kind in models:
        cell = best.sel(model=kind) if "model" in best.dims else best
        W = cell["W"].transpose("density", "hidden", "feature").values
        b = cell["b"].transpose("density", "feature").values
        n, m = W.shape[-1], W.shape[-2]
        title = (
            f"{MODEL_LABELS.get(str(kind), kind)} model, {n} features in {m} dimensions: "
            "WᵀW, bias and feature norms by sparsity (lowest-loss seed)"
        )
        out[f"gram_bias_norms_{kind}"] = gram_bias_norms(W, b, cell["density"].values, title)
    return {**out, **_loss_curves(ctx)}


def blog_figures(ctx: Context) -> dict:
    """Rows: sparsity; per model kind side by side: the bias as bars and WᵀW."""
    best = only(best_models(ctx), ("model", "density"))
    models = list(best["model"].values) if "model" in best.dims else [None]
    dens = best["density"].values
    vmax = _gram_vmax(best["W"].transpose(..., "hidden", "feature").values)
    blim = _limits(best["b"].values)
    fig, axes = plt.subplots(
        len(dens),
        2 * len(models),
        squeeze=False,
        figsize=(3.1 * 2 * len(models) + 1.2, 3.0 * len(dens) + 0.6),
        gridspec_kw={"width_ratios": [0.6, 1] * len(models), "hspace": 0.4, "wspace": 0.35},
    )
    for c, kind in enumerate(models):
        cell = best.sel(model=kind) if kind is not None else best
        label = MODEL_LABELS.get(str(kind or ctx.config["model"]["kind"]), kind)
        for r, p in enumerate(dens):
            one = cell.sel(density=p)
            ax_b, ax_g = axes[r, 2 * c], axes[r, 2 * c + 1]
            panels.feature_barh(ax_b, one["b"].values, panels.OKABE_ITO[0], blim)
            im = panels.gram(ax_g, one["W"].transpose("hidden", "feature").values, vmax)
            ax_b.set_title(f"{label}: bias b\nS = {_p(1 - p)}", fontsize=9)
            ax_g.set_title(f"{label}: WᵀW\nS = {_p(1 - p)}", fontsize=9)
            ax_b.set_ylabel("feature i", fontsize=8)
            ax_b.set_xlabel("b_i", fontsize=8)
            ax_g.set_xlabel("feature j", fontsize=8)
    fig.colorbar(im, ax=axes.ravel().tolist(), label="(WᵀW)_ij", shrink=0.6, pad=0.01)
    n = best.sizes["feature"]
    fig.suptitle(
        f"{n} features in {ctx.config['model']['n_hidden']} dimensions: bias and WᵀW, "
        "linear vs ReLU, by sparsity S (lowest-loss seed)",
        fontsize=11,
    )
    return {"bias_and_gram": fig, **_loss_curves(ctx)}


# ---------------------------------------------------------------- geometry


def extend_analysis(ctx: Context, extra: xr.Dataset) -> None:
    """Add variables to the analysis dataset on disk (beside the store, never in it)."""
    merged = ctx.analysis.assign(extra.data_vars).assign_coords(extra.coords)
    merged.attrs.update(extra.attrs)
    aggregate.write_atomic(merged, aggregate.analysis_path(ctx.path))
    ctx.analysis = merged


def _spread(values: list[float], gap: float) -> list[float]:
    """Label positions for values sorted high to low: moved down so that they are gap apart."""
    out: list[float] = []
    for v in values:
        out.append(min(v, out[-1] - gap) if out else v)
    return out


def geometry_figures(ctx: Context) -> dict:
    """D* against 1/(1-S); D_i scatter with the sticky values; sticky counts per density."""
    best = only(best_models(ctx), ("density",))
    sticky = sticky_dataset(best)
    extend_analysis(ctx, sticky)
    sticky = sticky.sortby("density", ascending=False)
    x = 1 / sticky["density"].values  # 1/(1-S)
    D = sticky["dimensionality_best"].transpose("density", "feature").values
    idx = sticky["sticky_label"].transpose("density", "feature").values
    names = list(sticky["sticky"].values)
    colours = [*panels.OKABE_ITO[: len(names) - 1], panels.NONE_COLOUR]
    fig, (ax_d, ax_i, ax_c) = plt.subplots(
        1, 3, figsize=(17, 4.8), gridspec_kw={"width_ratios": [1, 1.3, 1]}
    )
    ax_d.plot(x, sticky["dims_per_feature_best"].values, "o-", color=panels.OKABE_ITO[0], ms=4)
    ax_d.axhline(0.5, color="#777777", linestyle=":", linewidth=1)
    ax_d.text(
        x[-1], 0.5, "1/2 (antipodal pairs) ", ha="right", va="bottom", fontsize=8, color="#555555"
    )
    ax_d.set_ylabel("dimensions per feature D* = m / ‖W‖²_F")
    ax_d.set_ylim(0, max(1.05, float(np.nanmax(sticky["dims_per_feature_best"], initial=0))))
    ax_d.set_title("D* over sparsity", fontsize=10)
    rng = np.random.default_rng(0)  # jitter only spreads the points of one density apart
    jitter = np.exp(rng.uniform(-0.03, 0.03, D.shape))
    for j, colour in enumerate(colours):
        code = j if j < len(names) - 1 else -1
        mask = idx == code
        xs = np.broadcast_to(x[:, None], D.shape)[mask] * jitter[mask]
        ax_i.scatter(xs, D[mask], s=6, color=colour, alpha=0.6, linewidths=0)
    label_y = _spread([v.value for v in metrics.STICKY_VALUES], gap=0.045)
    for v, y, colour in zip(metrics.STICKY_VALUES, label_y, colours, strict=False):
        ax_i.axhline(v.value, color=colour, linewidth=0.8, linestyle="--", alpha=0.8)
        ax_i.annotate(
            f"{v.name} ({v.value:.3g})",
            (1.01, y),
            xycoords=("axes fraction", "data"),
            fontsize=7.5,
            va="center",
            color=colour if colour != "#F0E442" else "#8a7d00",  # yellow text is unreadable
        )
    ax_i.set_ylabel("feature dimensionality D_i")
    ax_i.set_title(
        f"D_i of every feature (colour: nearest sticky value within ±{STICKY_TOL})", fontsize=10
    )
    counts = sticky["sticky_count"].transpose("density", "sticky").values
    share = counts / np.maximum(counts.sum(-1, keepdims=True), 1)
    bottom = np.zeros(len(x))
    widths = x * 0.12
    for j, (name, colour) in enumerate(zip(names, colours, strict=True)):
        ax_c.bar(
            x, share[:, j], bottom=bottom, width=widths, color=colour, label=name, align="center"
        )
        bottom += share[:, j]
    ax_c.set_ylabel("share of features")
    ax_c.set_ylim(0, 1)
    ax_c.legend(
        fontsize=7.5,
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        frameon=False,
        title="nearest sticky value",
        title_fontsize=8,
    )
    ax_c.set_title("features per sticky value", fontsize=10)
    for ax in (ax_d, ax_i, ax_c):
        ax.set_xscale("log")
        ax.set_xlabel("1 / (1 − S) = 1 / density")
    n, m = ctx.config["model"]["n_features"], ctx.config["model"]["n_hidden"]
    fig.suptitle(
        f"Geometry of superposition: {n} features in {m} dimensions, lowest-loss seed", fontsize=11
    )
    fig.subplots_adjust(wspace=0.7)  # room for the sticky names right of the middle panel
    return {"dimensionality": fig, **_loss_curves(ctx)}


# ---------------------------------------------------------------- privileged basis


def privileged_figures(ctx: Context) -> dict:
    """Neuron × feature weights per density, with the mean monosemanticity of each model."""
    best = only(best_models(ctx), ("density",))
    W = best["W"].transpose("density", "hidden", "feature").values  # (density, neuron, feature)
    vmax = max(1e-3, float(np.nanmax(np.abs(W), initial=0)))
    mono = monosemanticity(W)  # (density, neuron)
    fig, axes = panels.grid_of_axes(len(W), 7, 2.2, sharey=True)
    for ax, w, p, mo in zip(axes, W, best["density"].values, mono, strict=True):
        im = ax.imshow(
            w,
            cmap=panels.DIVERGING,
            vmin=-vmax,
            vmax=vmax,
            aspect="auto",
            interpolation="nearest",
            extent=(0.5, w.shape[1] + 0.5, w.shape[0] + 0.5, 0.5),
        )
        ax.set_xticks(range(1, w.shape[1] + 1, max(1, w.shape[1] // 5)))
        ax.set_yticks(range(1, w.shape[0] + 1))
        ax.tick_params(labelsize=7)
        ax.set_title(f"p = {_p(p)}\nmonosemantic {np.nanmean(mo):.2f}", fontsize=9)
        ax.set_xlabel("feature j", fontsize=8)
        if ax.get_subplotspec().is_first_col():
            ax.set_ylabel("neuron", fontsize=8)
    fig.colorbar(im, ax=list(axes), label="weight W_(neuron, feature)", shrink=0.85, pad=0.01)
    fig.suptitle(
        "Hidden-ReLU model: neuron × feature weights by density (lowest-loss seed; "
        "monosemantic: mean share of a neuron's squared weights on its top feature)",
        fontsize=10,
        y=1.08,  # above the two-line panel titles
    )
    return {"neuron_weights": fig, **_loss_curves(ctx)}


# ---------------------------------------------------------------- latent space


def latent_gram(best: xr.Dataset) -> Figure:
    """WᵀW for every (m, density): rows m, columns density."""
    ms, ps = best["n_hidden"].values, best["density"].values
    Wall = best["W"].transpose("n_hidden", "density", "hidden", "feature").values
    vmax = _gram_vmax(Wall)
    fig, axes = plt.subplots(
        len(ms), len(ps), squeeze=False, figsize=(1.75 * len(ps) + 1.4, 1.75 * len(ms) + 0.8)
    )
    for r, m in enumerate(ms):
        for c, p in enumerate(ps):
            ax = axes[r, c]
            im = panels.gram(ax, Wall[r, c], vmax)
            ax.tick_params(labelsize=6)
            if r == 0:
                ax.set_title(f"p = {_p(p)}", fontsize=9)
            if c == 0:
                ax.set_ylabel(f"m = {int(m)}\nfeature i", fontsize=9)
            if r == len(ms) - 1:
                ax.set_xlabel("feature j", fontsize=8)
    fig.subplots_adjust(top=1 - 0.8 / fig.get_figheight())  # no empty band under the title
    fig.colorbar(im, ax=axes.ravel().tolist(), label="(WᵀW)_ij", shrink=0.5, pad=0.01)
    fig.suptitle(
        f"WᵀW of {best.sizes['feature']} features in m dimensions (rows) by density "
        "(columns), lowest-loss seed",
        fontsize=11,
    )
    return fig


def latent_cells(best: xr.Dataset) -> list[tuple[int, float]]:
    """The (m, density) cells the embedding figures show: m 5 and 20 (or the extremes) at the
    densest, a middle and the sparsest density."""
    ms, ps = [int(v) for v in best["n_hidden"].values], list(best["density"].values)
    pick_m = [m for m in (5, 20) if m in ms] or sorted({ms[0], ms[-1]})
    pick_p = list(dict.fromkeys([ps[0], ps[len(ps) // 2], ps[-1]]))
    return [(m, p) for m in pick_m for p in pick_p]


def embedding_figure(best: xr.Dataset, method: str, imp: np.ndarray, threshold: float) -> Figure:
    """Per chosen cell (rows): the embedding of all columns of W and its Shepard plot, then the
    same without the features collapsed at the origin (‖W_i‖ < threshold)."""
    label = embedding.METHODS[method]
    if method == "umap" and (reason := embedding.umap_status()) is not None:
        return panels.message_figure("UMAP embedding skipped", reason)
    cells = latent_cells(best)
    norm, cmap = panels.value_norm(imp), plt.get_cmap(panels.ORDERED)
    fig, axes = plt.subplots(
        len(cells),
        4,
        squeeze=False,
        figsize=(13.5, 2.9 * len(cells) + 0.8),
        gridspec_kw={"hspace": 0.6, "wspace": 0.45},
    )
    fig.subplots_adjust(top=1 - 0.9 / fig.get_figheight(), bottom=0.7 / fig.get_figheight())
    for r, (m, p) in enumerate(cells):
        W = real_W(best["W"].sel(n_hidden=m, density=p).transpose("hidden", "feature").values)
        X = W.T  # (feature, m): one point per feature
        collapsed = np.linalg.norm(X, axis=1) < threshold
        for c, keep in enumerate((np.ones(len(X), bool), ~collapsed)):
            ax_e, ax_s = axes[r, 2 * c], axes[r, 2 * c + 1]
            what = "all features" if c == 0 else f"without {collapsed.sum()} collapsed"
            ax_e.set_title(f"m = {m}, p = {_p(p)}: {what}", fontsize=8.5)
            ax_s.set_title("Shepard plot", fontsize=8.5)
            try:
                Y = embedding.embed(X[keep], method)
            except embedding.EmbeddingUnavailable as e:
                for ax in (ax_e, ax_s):
                    ax.text(
                        0.5,
                        0.5,
                        str(e),
                        ha="center",
                        va="center",
                        fontsize=8,
                        wrap=True,
                        transform=ax.transAxes,
                    )
                    ax.set_xticks([])
                    ax.set_yticks([])
                continue
            col = cmap(norm(imp[keep]))
            sub_collapsed = collapsed[keep]
            ax_e.scatter(*Y[~sub_collapsed].T, c=col[~sub_collapsed], s=18, edgecolors="none")
            ax_e.scatter(
                *Y[sub_collapsed].T, c=col[sub_collapsed], s=18, marker="x", linewidths=0.9
            )
            ax_e.set_xlabel(f"{label} 1", fontsize=8)
            ax_e.set_ylabel(f"{label} 2", fontsize=8)
            ax_e.tick_params(labelsize=7)
            d0, d1, rho = embedding.shepard(X[keep], Y)
            ax_s.scatter(d0, d1, s=3, alpha=0.3, color=panels.OKABE_ITO[0], linewidths=0)
            if method == "mds":  # MDS keeps distances, so the diagonal is the perfect fit
                top = max(float(d0.max(initial=0)), float(d1.max(initial=0)))
                ax_s.plot([0, top], [0, top], color="black", linewidth=0.8, linestyle="--")
            ax_s.text(
                0.03,
                0.95,
                f"Spearman ρ = {rho:.2f}",
                transform=ax_s.transAxes,
                va="top",
                fontsize=8,
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
            )
            ax_s.set_xlabel("distance between W_i", fontsize=8)
            ax_s.set_ylabel("distance in embedding", fontsize=8)
            ax_s.tick_params(labelsize=7)
    fig.colorbar(
        ScalarMappable(norm, cmap),
        ax=axes.ravel().tolist(),
        label="importance I_i",
        shrink=0.4,
        pad=0.02,
    )
    fig.legend(
        handles=[
            Line2D([], [], marker="o", linestyle="none", color="#555555", label="learned feature"),
            Line2D(
                [],
                [],
                marker="x",
                linestyle="none",
                color="#555555",
                label=f"collapsed at the origin (‖W_i‖ < {threshold:g})",
            ),
        ],
        loc="lower center",
        ncol=2,
        frameon=False,
        bbox_to_anchor=(0.5, 0.0),
    )
    fig.suptitle(
        f"{label} of the columns of W (lowest-loss seed), coloured by importance; left pair: all "
        "features, right pair: without those collapsed at the origin;\nShepard plots: distances "
        "in the embedding against distances between the W_i",
        fontsize=11,
    )
    return fig


def latent_figures(ctx: Context) -> dict:
    """WᵀW grid over (m, density); MDS, t-SNE and UMAP embeddings with Shepard plots."""
    best = only(best_models(ctx), ("n_hidden", "density"))
    if "n_hidden" not in best.dims:
        best = best.expand_dims(n_hidden=[int(ctx.config["model"]["n_hidden"])])
    imp = importance_of(ctx)
    threshold = float(ctx.analysis.attrs.get("norm_threshold", 0.5))
    out = {"gram_grid": latent_gram(best)}
    for method in embedding.METHODS:
        out[f"embedding_{method}"] = embedding_figure(best, method, imp, threshold)
    return {**out, **_loss_curves(ctx)}


FigureSet = Callable[["Context"], dict]
FIGURES: dict[str, FigureSet] = {
    "intro": intro_figures,
    "basic": basic_figures,
    "basic-large": basic_figures,
    "blog": blog_figures,
    "geometry": geometry_figures,
    "perturb": perturb_figures,
    "privileged": privileged_figures,
    "latent": latent_figures,
}
