"""Analysis steps: variables added to the analysis dataset after the seed aggregation.

Each step is `compute(ctx) -> xr.Dataset` of new variables, run when `applies(ctx)`; the report
runs them in order before any figure is drawn, so the analysis dataset holds the same variables
whichever figures are asked for. Steps compute; figure families (analysis.figs) only draw.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np
import xarray as xr

from analysis import aggregate, metrics
from analysis.context import Context, best_models, only
from sweep.constants import NORM_THRESHOLD

# A feature's D_i is labelled with the nearest sticky value within this distance (the closest
# pair, 2/5 and 3/8, is 0.025 apart; trained D_i scatter by about 0.01 around their value).
STICKY_TOL = 0.02


def best_seed_index(agg: xr.Dataset) -> xr.DataArray:
    """Index of the lowest-loss usable seed of every cell; -1 where the cell is missing."""
    loss = agg["loss_seed"]
    idx = loss.fillna(np.inf).argmin("seed")
    return idx.where(loss.notnull().any("seed"), -1).astype(np.int64)


def sticky_dataset(
    best: xr.Dataset, tol: float = STICKY_TOL, norm_threshold: float = NORM_THRESHOLD
) -> xr.Dataset:
    """D_i, D* and the nearest sticky value of every feature of the best seed, with counts.

    Returns `dimensionality_best` (cells..., feature), `dims_per_feature_best` (cells...),
    `sticky_label` (index into metrics.STICKY_VALUES, -1 = none within tol), `sticky_count`
    (cells..., sticky): features per sticky value, the last entry "none"; `represented` (cells...):
    features with ‖W_i‖ >= norm_threshold, and `sticky_share` (cells..., sticky): the share of
    those at each sticky value. Why a share of the represented: at 400 → 30 most features are
    not represented at any density (at most ~60-150 of 400 are), which hides the geometry of
    the rest; and a dense model spreads all features thinly over its 30 dimensions (D_i ≈ m/n,
    ‖W_i‖ ≈ 0.27), which is not a sticky geometry either.
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
    rep = metrics.feature_norms(W.values) >= norm_threshold  # (cells..., feature)
    rep_counts = np.stack(
        [(rep & (idx == j)).sum(-1) for j in range(k)] + [(rep & (idx == -1)).sum(-1)], -1
    )
    n_rep = rep.sum(-1)
    share = rep_counts / np.maximum(n_rep, 1)[..., None]
    names = [s.name for s in metrics.STICKY_VALUES] + ["none"]
    label_doc = "index along `sticky` of the nearest sticky value of D_i within tolerance; -1: none"
    return xr.Dataset(
        {
            "dimensionality_best": ((*cells, "feature"), D),
            "dims_per_feature_best": (cells, metrics.dimensions_per_feature(W.values)),
            "sticky_label": ((*cells, "feature"), idx.astype(np.int64), {"description": label_doc}),
            "sticky_count": ((*cells, "sticky"), counts.astype(np.int64)),
            "represented": (cells, n_rep.astype(np.int64)),
            "sticky_share": ((*cells, "sticky"), share),
        },
        coords={
            **{d: W[d].values for d in cells},
            "feature": W["feature"].values,
            "sticky": names,
            "sticky_value": ("sticky", [s.value for s in metrics.STICKY_VALUES] + [np.nan]),
        },
        attrs={
            "sticky_tolerance": tol,
            "sticky_seed_rule": "lowest-loss usable seed",
            "represented_norm_threshold": norm_threshold,
        },
    )


def geometry(ctx: Context) -> xr.Dataset:
    """D_i, D* and sticky values of the lowest-loss seed of every cell (geometry grid)."""
    return sticky_dataset(best_models(ctx), norm_threshold=ctx.settings.norm_threshold)


def neurons(ctx: Context) -> xr.Dataset:
    """Monosemanticity of each hidden unit of the lowest-loss seed (privileged bases)."""
    W = best_models(ctx)["W"].transpose(..., "hidden", "feature")
    mono = metrics.monosemanticity(W.values)  # (cells..., hidden)
    doc = "share of a hidden unit's squared input weights on its top feature (lowest-loss seed)"
    return xr.Dataset({"monosemanticity_best": (W.dims[:-1], mono, {"description": doc})})


def feature_sets(ctx: Context) -> xr.Dataset:
    """Mean cosine between the W_i of one feature set, and across sets (correlated grid)."""
    set_size = int(ctx.section("data").get("set_size", 2))
    W = best_models(ctx)["W"].transpose(..., "hidden", "feature")
    within, across = metrics.set_cosines(W.values, set_size)
    cells = W.dims[:-2]
    return xr.Dataset(
        {"set_cosine_within": (cells, within), "set_cosine_across": (cells, across)},
        attrs={"set_size": set_size},
    )


def theory(ctx: Context) -> xr.Dataset:
    """The closed-form phase of the extra feature and the agreement with it (phase grids)."""
    assert ctx.kind is not None
    return aggregate.compare_with_theory(ctx.analysis, ctx.kind)


def phase_boundaries(ctx: Context) -> xr.Dataset:
    """Measured boundaries p(r), seed-bootstrap bands, both theories (analysis.boundaries)."""
    from analysis import boundaries

    assert ctx.kind is not None
    return boundaries.boundary_dataset(ctx.analysis, ctx.store, ctx.kind)


def latent_best(ctx: Context) -> xr.Dataset:
    """The lowest-loss seed over (n_hidden, density): the latent grid's cells."""
    best = only(best_models(ctx), ("n_hidden", "density"))
    if "n_hidden" not in best.dims:
        best = best.expand_dims(n_hidden=[int(ctx.section("model").get("n_hidden", 0))])
    return best


def embeddings(ctx: Context) -> xr.Dataset:
    """MDS, t-SNE and UMAP of W's columns in a few latent cells (slow: only when drawn)."""
    # imported here: scipy.spatial and scipy.stats (~1.5 s) serve only the `embeddings` family
    from analysis import embedding

    return embedding.embedding_dataset(latent_best(ctx), float(ctx.settings.norm_threshold))


# A jump: some feature's D_i moves by more than JUMP_THRESHOLD within a factor JUMP_WINDOW of
# training time (from the last snapshot at or before step t / JUMP_WINDOW to step t). Measured
# over a window of log-time rather than between neighbouring snapshots, so the count does not
# depend on how densely the snapshots are spaced. 0.1 is the gap between the closest sticky
# values features hop between (1/2 and 2/5); a feature on a plateau drifts by ~0.01 per window.
JUMP_THRESHOLD = 0.1
JUMP_WINDOW = 2.0


def find_jumps(
    D: np.ndarray, steps: np.ndarray, threshold: float = JUMP_THRESHOLD, window: float = JUMP_WINDOW
) -> tuple[np.ndarray, np.ndarray]:
    """Jumps in D (..., snap, feature) at snapshot `steps` (snap,), increasing.

    A snapshot is *moving* when some D_i differs by more than `threshold` from its value at the
    last snapshot at or before step / window. Each run of consecutive moving snapshots is one
    jump, marked at the snapshot where D changes fastest (largest max_i |ΔD_i| per log-step).
    Returns `jump` (..., snap) bool and `features` (..., snap): how many D_i moved in that run.
    """
    steps = np.asarray(steps, float)
    back = np.searchsorted(steps, steps / window, side="right") - 1  # (snap,), -1: none
    ok = back >= 0
    prev = np.take(D, np.maximum(back, 0), axis=-2)
    moved = (np.abs(D - prev) > threshold) & ok[:, None]  # (..., snap, feature)
    moving = moved.any(-1)  # (..., snap)
    rate = np.zeros(D.shape[:-1])
    rate[..., 1:] = np.nanmax(np.abs(np.diff(D, axis=-2)), -1) / np.diff(np.log(steps))
    jump = np.zeros(moving.shape, bool)
    features = np.zeros(moving.shape, np.int64)
    for idx in np.ndindex(*moving.shape[:-1]):
        row = moving[idx]
        k = 0
        while k < len(row):
            if not row[k]:
                k += 1
                continue
            end = k
            while end + 1 < len(row) and row[end + 1]:
                end += 1
            at = k + int(np.argmax(rate[idx][k : end + 1]))
            jump[idx][at] = True
            features[idx][at] = int(moved[idx][k : end + 1].any(0).sum())
            k = end + 1
    return jump, features


def dynamics(ctx: Context) -> xr.Dataset:
    """D_i of every feature at every snapshot (every seed) and the jumps (`find_jumps`).

    Returns `dimensionality_snapshot` (cells..., seed, snapshot_step, feature), `jump`
    (cells..., seed, snapshot_step): True at the snapshot marking a jump, `jump_features` (how
    many D_i moved in it), and `jump_count` (cells..., seed).
    """
    W = ctx.store["W_snapshot"].transpose(..., "snapshot_step", "hidden", "feature")
    D = metrics.feature_dimensionality(W.values)  # (cells..., seed, snap, feature)
    dims = W.dims[:-2]
    jump, count = find_jumps(np.nan_to_num(D), W["snapshot_step"].values)
    doc = (
        f"a jump: some D_i moved by more than {JUMP_THRESHOLD} within a factor "
        f"{JUMP_WINDOW} of training steps; marked where D changes fastest"
    )
    return xr.Dataset(
        {
            "dimensionality_snapshot": ((*dims, "feature"), D),
            "jump": (dims, jump, {"description": doc}),
            "jump_features": (dims, count),
            "jump_count": (dims[:-1], jump.sum(-1).astype(np.int64)),
        },
        coords={d: W[d].values for d in dims},
        attrs={"jump_threshold": JUMP_THRESHOLD, "jump_window": JUMP_WINDOW},
    )


def perturbation(ctx: Context) -> xr.Dataset:
    """One feature's density varied against the others' (perturb grid): relative sparsity k,
    norm and D_i of each feature of the lowest-loss seed, and the measured split ratio.

    `relative_sparsity` = base density / the varied density (k > 1: the feature is sparser);
    `split_ratio` (bound: low, high): the largest k at which every varied feature is still
    represented (norm >= norm_threshold) and the next k, at which one is dropped (the pentagon
    has become two digons); NaN when no drop is seen.
    """
    data = ctx.section("data")
    moved = list(data.get("density_features") or [])
    base = float(data.get("density", 1.0))
    best = best_models(ctx)
    W = best["W"].transpose(..., "hidden", "feature")
    other = [d for d in W.dims[:-2] if d != "density"]
    W = W.isel({d: 0 for d in other}).sortby("density", ascending=False)
    k = base / W["density"].values  # (density,) increasing
    norms = metrics.feature_norms(W.values)  # (density, feature)
    D = metrics.feature_dimensionality(W.values)
    kept = (norms[:, moved] >= float(ctx.settings.norm_threshold)).all(-1)  # (density,)
    lo = hi = np.nan
    sparser = np.flatnonzero((k > 1) & ~kept)
    if len(sparser) and sparser[0] > 0:
        lo, hi = float(k[sparser[0] - 1]), float(k[sparser[0]])
    dens = W["density"].values
    return xr.Dataset(
        {
            "relative_sparsity": (("density",), k),
            "norm_best": (("density", "feature"), norms),
            "dimensionality_perturbed": (("density", "feature"), D),
            "split_ratio": (("bound",), np.array([lo, hi])),
        },
        coords={"density": dens, "bound": ["low", "high"]},
        attrs={"perturbed_features": moved, "base_density": base},
    )


def is_perturbation(ctx: Context) -> bool:
    data = ctx.section("data")
    return bool(data.get("density_features")) and "density" in ctx.store.dims


ABSVAL_SAMPLES = 4096  # fresh inputs per cell for the |x| check (R² to ~0.01)


def absval_forward(W: np.ndarray, W_out: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    """y' = ReLU(W_out ReLU(W x) + b) in numpy; W, W_out as stored (hidden, feature), b
    (feature,), x (sample, feature) -> (sample, feature)."""
    return np.maximum(np.maximum(x @ W.T, 0) @ W_out + b, 0)


def absval_inputs(density: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """x (sample, feature): x_i ~ U[-1, 1] with probability density_i, else 0."""
    rng = np.random.default_rng(seed)
    u = rng.uniform(-1, 1, (n, len(density)))
    return np.where(rng.uniform(0, 1, u.shape) < density, u, 0.0)


def _r2_abs(w: np.ndarray, wo: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    """R² of y'_i against |x_i| per feature over the samples x (NaN where |x_i| is constant)."""
    target = np.abs(x)
    y = absval_forward(w, wo, b, x)
    var = target.var(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(var > 0, 1 - ((y - target) ** 2).mean(0) / var, np.nan)


def absval(ctx: Context) -> xr.Dataset:
    """Does the absval model compute |x|, and how many features does each neuron serve?

    Per cell (lowest-loss seed): `absval_r2` (cells..., feature), the share of |x_i|'s variance
    that y'_i explains on fresh *dense* inputs (every x_i ~ U[-1, 1]; 1 = exact, 0 = a constant),
    and `absval_r2_own`, the same with x_i active and the other features at the cell's own
    density (the inputs the model was trained for); `features_per_neuron`
    (cells..., hidden), the participation ratio (Σ_i w_i²)² / Σ_i w_i⁴ of a neuron's input
    weights (1: monosemantic, k: spread evenly over k features; NaN for a dead neuron), and its
    mean over live neurons, `features_per_neuron_mean` (cells...).
    """
    idx = ctx.analysis["best_seed"].clip(min=0)
    best = ctx.store[["W", "W_out", "b", "feature_density"]]
    best = best.assign(
        W=best["W"].isel(seed=idx), W_out=best["W_out"].isel(seed=idx), b=best["b"].isel(seed=idx)
    ).drop_vars("seed", errors="ignore")
    W = best["W"].transpose(..., "hidden", "feature")
    cells = W.dims[:-2]
    shape = tuple(W.sizes[d] for d in cells)
    nf = W.sizes["feature"]
    r2 = np.full((*shape, nf), np.nan)
    r2_own = np.full((*shape, nf), np.nan)
    pr = np.full((*shape, W.sizes["hidden"]), np.nan)
    for cell in np.ndindex(*shape):
        sel = dict(zip(cells, cell, strict=True))
        w = best["W"].isel(sel).transpose("hidden", "feature").values.astype(float)
        wo = best["W_out"].isel(sel).transpose("hidden", "feature").values.astype(float)
        bb = best["b"].isel(sel).values.astype(float)
        dens = best["feature_density"].isel(sel).values.astype(float)
        rows, feats = ~np.isnan(w).all(1), ~np.isnan(bb)  # drop NaN padding
        if not rows.any() or not np.isfinite(w[rows][:, feats]).all():
            continue
        w, wo, bb, dens = w[rows][:, feats], wo[rows][:, feats], bb[feats], dens[feats]
        r2[cell][: feats.sum()] = _r2_abs(
            w, wo, bb, absval_inputs(np.ones_like(dens), ABSVAL_SAMPLES)
        )
        # in context: x_i active (U[-1, 1]), the other features at the cell's own density
        x = absval_inputs(dens, ABSVAL_SAMPLES // 2)
        u = absval_inputs(np.ones_like(dens), ABSVAL_SAMPLES // 2, seed=1)
        own = np.empty(feats.sum())
        for i in range(len(own)):
            xi = x.copy()
            xi[:, i] = u[:, i]
            own[i] = _r2_abs(w, wo, bb, xi)[i]
        r2_own[cell][: feats.sum()] = own
        sq = w**2
        with np.errstate(divide="ignore", invalid="ignore"):
            p = sq.sum(1) ** 2 / (sq**2).sum(1)
        pr[cell][: rows.sum()] = np.where(sq.sum(1) > 1e-8, p, np.nan)
    with warnings.catch_warnings():  # a cell whose neurons are all dead: NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(pr, -1)
    return xr.Dataset(
        {
            "absval_r2": (
                (*cells, "feature"),
                r2,
                {"description": "R² of y'_i against |x_i| on dense inputs (lowest-loss seed)"},
            ),
            "absval_r2_own": ((*cells, "feature"), r2_own),
            "features_per_neuron": ((*cells, "hidden"), pr),
            "features_per_neuron_mean": (cells, mean),
        },
        coords={d: W[d].values for d in cells},
    )


def has_feature_sets(ctx: Context) -> bool:
    data = ctx.section("data")
    return "correlation" in ctx.store.dims or data.get("correlation", "none") != "none"


def capacity(ctx: Context) -> xr.Dataset:
    """How many of a cell's n features its m dimensions hold, and how: features per phase of
    the seed rule's phase (`phase`, with the analysis thresholds), their share of n, m/n, and
    whether the dedicated features are exactly the m most important (the linear model's
    theory: it keeps the top-m principal directions, here the m most important features, each
    on its own axis). Cells with no usable seed are NaN / False."""
    phase = ctx.analysis["phase"]  # (cells..., feature); -1: a padded feature or missing cell
    missing = ctx.analysis["missing"]
    cells = [d for d in phase.dims if d != "feature"]
    n = (phase >= 0).sum("feature")
    counts = {
        f"n_{name}": (phase == code).sum("feature").where(~missing)
        for code, name in enumerate(metrics.PHASE_NAMES)
    }
    m = ctx.store["n_hidden"].broadcast_like(n)  # the step runs on grids with an n_hidden axis
    # The m most important present features of each cell (ranks by importance, padding last).
    imp = ctx.store["importance"].where(phase >= 0, -np.inf).transpose(*cells, "feature")
    rank = (-imp.values).argsort(-1, kind="stable").argsort(-1, kind="stable")
    top = rank < m.transpose(*cells).values[..., None]  # (cells..., feature)
    dedicated = (phase == metrics.DEDICATED).transpose(*cells, "feature").values
    exact = np.all(dedicated == top, -1) & ~missing.transpose(*cells).values
    doc = "the dedicated features are exactly the m most important (linear-model theory)"
    return xr.Dataset(
        {
            **{k: v.astype(float) for k, v in counts.items()},
            "n_represented": (counts["n_dedicated"] + counts["n_superposed"]).astype(float),
            "share_superposed": (counts["n_superposed"] / n).astype(float),
            "hidden_per_feature": (m / n).astype(float),
            "dedicated_top_m": (cells, exact, {"description": doc}),
        }
    )


def dimension(ctx: Context) -> xr.Dataset:
    """The extra feature's phase, the phase counts, D* and the extra feature's boundaries per
    (n, m) shape of a zipped shape axis (the dimension grid; analysis.dimension)."""
    from analysis import dimension as dim

    return dim.dimension_dataset(ctx.store, ctx.analysis)


def has_shape_pairs(ctx: Context) -> bool:
    from analysis import dimension as dim

    return dim.applies(ctx.store)


def has_hidden_axis(ctx: Context) -> bool:
    return "n_hidden" in ctx.store.dims


@dataclass(frozen=True)
class Step:
    name: str
    compute: Callable[[Context], xr.Dataset]
    applies: Callable[[Context], bool]
    # A step too slow for every store runs only when the store's grid (or the caller) names
    # the figure family that shows it.
    family: str | None = None


# In order: each step may read what the earlier ones wrote. Cheap steps run for every store.
STEPS: tuple[Step, ...] = (
    Step("theory", theory, lambda ctx: ctx.kind is not None),
    Step("boundaries", phase_boundaries, lambda ctx: ctx.kind is not None),
    Step("geometry", geometry, lambda ctx: True),
    Step("neurons", neurons, lambda ctx: True),
    Step("feature_sets", feature_sets, has_feature_sets),
    Step("dynamics", dynamics, lambda ctx: "W_snapshot" in ctx.store),
    Step("perturbation", perturbation, is_perturbation),
    Step("absval", absval, lambda ctx: "W_out" in ctx.store),
    Step("capacity", capacity, has_hidden_axis),
    Step("dimension", dimension, has_shape_pairs),
    Step("embeddings", embeddings, lambda ctx: True, family="embeddings"),
)


def run_steps(ctx: Context, families: Collection[str] = ()) -> list[str]:
    """Run every applicable step, merging its variables into ctx.analysis; return their names.

    families: the figure families of the store's grid and of the caller.
    """
    ctx.analysis = ctx.analysis.assign(best_seed=best_seed_index(ctx.analysis))
    done = []
    for step in STEPS:
        if (step.family is not None and step.family not in families) or not step.applies(ctx):
            continue
        extra = step.compute(ctx)
        merged = ctx.analysis.assign(extra.data_vars).assign_coords(extra.coords)
        merged.attrs.update(extra.attrs)
        ctx.analysis = merged
        done.append(step.name)
    return done
