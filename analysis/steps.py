"""Analysis steps: variables added to the analysis dataset after the seed aggregation.

Each step is `compute(ctx) -> xr.Dataset` of new variables, run when `applies(ctx)`; the report
runs them in order before any figure is drawn, so the analysis dataset holds the same variables
whichever figures are asked for. Steps compute; figure families (analysis.figs) only draw.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np
import xarray as xr

from analysis import aggregate, embedding, metrics
from analysis.context import Context, best_models, only

# A feature's D_i is labelled with the nearest sticky value within this distance (the closest
# pair, 2/5 and 3/8, is 0.025 apart; trained D_i scatter by about 0.01 around their value).
STICKY_TOL = 0.02


def best_seed_index(agg: xr.Dataset) -> xr.DataArray:
    """Index of the lowest-loss usable seed of every cell; -1 where the cell is missing."""
    loss = agg["loss_seed"]
    idx = loss.fillna(np.inf).argmin("seed")
    return idx.where(loss.notnull().any("seed"), -1).astype(np.int64)


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
    label_doc = "index along `sticky` of the nearest sticky value of D_i within tolerance; -1: none"
    return xr.Dataset(
        {
            "dimensionality_best": ((*cells, "feature"), D),
            "dims_per_feature_best": (cells, metrics.dimensions_per_feature(W.values)),
            "sticky_label": ((*cells, "feature"), idx.astype(np.int64), {"description": label_doc}),
            "sticky_count": ((*cells, "sticky"), counts.astype(np.int64)),
        },
        coords={
            **{d: W[d].values for d in cells},
            "feature": W["feature"].values,
            "sticky": names,
            "sticky_value": ("sticky", [s.value for s in metrics.STICKY_VALUES] + [np.nan]),
        },
        attrs={"sticky_tolerance": tol, "sticky_seed_rule": "lowest-loss usable seed"},
    )


def geometry(ctx: Context) -> xr.Dataset:
    """D_i, D* and sticky values of the lowest-loss seed of every cell (geometry grid)."""
    return sticky_dataset(best_models(ctx))


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
    return embedding.embedding_dataset(latent_best(ctx), float(ctx.settings.norm_threshold))


def has_feature_sets(ctx: Context) -> bool:
    data = ctx.section("data")
    return "correlation" in ctx.store.dims or data.get("correlation", "none") != "none"


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
