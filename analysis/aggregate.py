"""From a results store to an analysis dataset: metrics per model, then one value per cell.

A *model* is one entry of the store (grid point × seed); a *cell* is one grid point, whose seeds
are aggregated by a rule:

- ``drop_worst`` (the paper's): among the usable seeds, drop the one with the highest loss, then
  average the continuous metrics over the rest and take the *mode* of their phases (a tie goes
  to the phase of the lowest-loss seed among the tied ones). A cell with one usable seed keeps it.
- ``lowest_loss``: the usable seed with the lowest loss stands for the cell.

Usable = finished and not diverged. Unfinished and diverged models are left out and counted; a
cell with no usable seed is *missing* (phase -1, metrics NaN). Seeds *disagree* when the seeds
the rule pools over (drop_worst: those kept; lowest_loss: all usable ones) do not all share one
phase. The analysis dataset is written beside the store, never into it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import xarray as xr
import yaml

from analysis import metrics
from analysis.metrics import ABSENT
from analysis.settings import RULES, Settings

SEED = "seed"
# Models per call of the quadrature: its work arrays are (models, quadrature rows), and a
# 4-feature model has ~1e5 rows; this keeps them near 100 MB.
EXACT_CHUNK = 128


def exact_losses(ds: xr.Dataset, usable: np.ndarray) -> np.ndarray | None:
    """Exact expected loss (quadrature) of every usable model, (..., seed), NaN elsewhere; or
    None where it cannot be computed: only the ReLU output model on independent features with
    n <= 4 has it (sweep.quadrature).

    Why: the loss a job stores is a Monte Carlo estimate on 8,192 fresh samples, too noisy to
    rank seeds when features are sparse. In the 3->2 grid at p = 0.01 those samples hold about
    two with two features active, the only ones that tell an antipodal pair from a dedicated
    dimension; on the default phase3 grid the lowest-MC-loss seed was a local minimum in 7 of
    174 cells away from the boundaries, the lowest-exact-loss seed in none.
    """
    from sweep.quadrature import MAX_FEATURES, expected_loss

    cfg = yaml.safe_load(ds.attrs.get("config_yaml", "")) or {}
    model, data = cfg.get("model") or {}, cfg.get("data") or {}
    if model.get("kind") != "relu" or "model" in ds.dims or "correlation" in ds.dims:
        return None
    if data.get("correlation", "none") != "none" or ds.sizes["feature"] > MAX_FEATURES:
        return None
    W = ds["W"].transpose(..., SEED, "hidden", "feature")
    dims = W.dims[:-2]
    if any(d in ("n_features", "n_hidden") for d in dims):  # padded shapes: not worth it
        return None
    imp = ds["importance"].broadcast_like(ds["loss"]).transpose(*dims, "feature").values
    dens = ds["feature_density"].broadcast_like(ds["loss"]).transpose(*dims, "feature").values
    Wv, bv = W.values.reshape(-1, *W.shape[-2:]), ds["b"].transpose(*dims, "feature").values
    bv, imp, dens = (a.reshape(-1, a.shape[-1]).astype(float) for a in (bv, imp, dens))
    ok = usable.reshape(-1)
    out = np.full(ok.shape, np.nan)
    idx = np.flatnonzero(ok)
    for a in range(0, idx.size, EXACT_CHUNK):
        k = idx[a : a + EXACT_CHUNK]
        out[k] = expected_loss(Wv[k].astype(float), bv[k], imp[k], dens[k])
    return out.reshape(usable.shape)


def model_metrics(ds: xr.Dataset, settings: Settings) -> xr.Dataset:
    """Norms, superposition, dimensionality, D* and phase codes of every model in a store.

    Models that are unfinished or diverged get NaN metrics and phase -1; `usable` says which.
    """
    W = ds["W"].transpose(..., "hidden", "feature")
    dims = W.dims[:-2]  # grid dims..., seed
    usable = (ds["finished"] & ~ds["diverged"]).transpose(*dims).values  # (..., seed)
    Wv = np.where(usable[..., None, None], W.values.astype(float), np.nan)
    # An unusable model is all NaN, so metrics treat each of its features as absent; a padded
    # feature (shape grids) is absent too, which `present` below tells apart.
    feat = (*dims, "feature")
    phase = metrics.classify_phases(Wv, settings.norm_threshold, settings.superposition_threshold)
    mc = np.where(usable, ds["loss"].transpose(*dims).values, np.nan)
    exact = exact_losses(ds, usable)
    extra = {} if exact is None else {"loss_mc": (dims, mc)}
    return xr.Dataset(
        {
            "norm": (feat, metrics.feature_norms(Wv)),
            "superposition": (feat, metrics.superposition(Wv)),
            "dimensionality": (feat, metrics.feature_dimensionality(Wv)),
            "dims_per_feature": (dims, metrics.dimensions_per_feature(Wv)),
            "phase": (feat, phase),
            # Seeds are ranked by this loss: exact where computable, else the stored estimate.
            "loss": (dims, mc if exact is None else exact),
            **extra,
            "usable": (dims, usable),
        },
        coords={d: ds[d].values for d in (*dims, "feature")},
    )


def _mode_phase(phases: np.ndarray, loss_rank: np.ndarray) -> np.ndarray:
    """Mode over the last axis of phase codes >= 0 (ties: the best-ranked seed's phase).

    phases: (cell, seed) with -1 where a seed is not pooled; loss_rank: (cell, seed), 0 = lowest
    loss. Returns (cell,), -1 where no seed is pooled.
    """
    n_codes = max(len(metrics.PHASE_NAMES), int(phases.max(initial=0)) + 1)
    counts = np.stack([(phases == c).sum(-1) for c in range(n_codes)], -1)  # (cell, code)
    top = counts == counts.max(-1, keepdims=True)  # (cell, code): tied for the most seeds
    # Among seeds whose phase is one of the tied codes, the lowest-loss one decides.
    valid = phases >= 0
    tied_seed = valid & np.take_along_axis(top, np.where(valid, phases, 0), -1)
    rank = np.where(tied_seed, loss_rank, np.iinfo(np.int64).max)
    best = np.argmin(rank, axis=-1)
    out = np.take_along_axis(phases, best[:, None], -1)[:, 0]
    return np.where(valid.any(-1), out, ABSENT)


def aggregate_seeds(mm: xr.Dataset, rule: str = "drop_worst") -> xr.Dataset:
    """One value per cell from the per-model metrics of `model_metrics` (see the module doc)."""
    if rule not in RULES:
        raise ValueError(f"aggregate rule {rule!r}: expected one of {', '.join(RULES)}")
    mm = mm.transpose(..., SEED, "feature")
    cell_dims = [d for d in mm["loss"].dims if d != SEED]
    cell_shape = tuple(mm.sizes[d] for d in cell_dims)
    n_seed, n_feat = mm.sizes[SEED], mm.sizes["feature"]
    usable = mm["usable"].values.reshape(-1, n_seed)  # (cell, seed)
    loss = np.where(usable, mm["loss"].values.reshape(-1, n_seed), np.inf)
    # 1. Rank seeds by loss (unusable ones last) and choose the pooled seeds.
    order = np.argsort(loss, axis=-1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(n_seed)[None, :].repeat(len(order), 0), -1)
    n_usable = usable.sum(-1)  # (cell,)
    if rule == "drop_worst":
        # keep all usable seeds but the worst; one usable seed is kept as it is
        pooled = usable & ((rank < n_usable[:, None] - 1) | (n_usable[:, None] == 1))
    else:
        pooled = usable
    chosen = pooled & (rank == 0) if rule == "lowest_loss" else pooled  # seeds averaged over
    # 2. Continuous metrics: mean over the chosen seeds.
    out: dict[str, tuple] = {}
    w = chosen.astype(float)
    n_chosen = np.maximum(w.sum(-1), 1)
    for name in ("norm", "superposition", "dimensionality"):
        v = mm[name].values.reshape(-1, n_seed, n_feat)
        mean = np.nansum(np.where(chosen[..., None], v, 0.0), 1) / n_chosen[:, None]
        absent = ~np.any(chosen[..., None] & ~np.isnan(v), axis=1)
        out[name] = (
            (*cell_dims, "feature"),
            np.where(absent, np.nan, mean).reshape(*cell_shape, n_feat),
        )
    dpf = mm["dims_per_feature"].values.reshape(-1, n_seed)
    dpf_mean = np.nansum(np.where(chosen, dpf, 0.0), -1) / n_chosen
    out["dims_per_feature"] = (
        cell_dims,
        np.where(chosen.any(-1), dpf_mean, np.nan).reshape(cell_shape),
    )
    loss_mean = np.sum(np.where(chosen, loss, 0.0), -1) / n_chosen
    out["loss"] = (cell_dims, np.where(chosen.any(-1), loss_mean, np.nan).reshape(cell_shape))
    # 3. Phases: the mode over the chosen seeds (lowest_loss: one seed, so its phase).
    ph = mm["phase"].values.reshape(-1, n_seed, n_feat)
    cell_phase = np.stack(
        [_mode_phase(np.where(chosen, ph[..., f], ABSENT), rank) for f in range(n_feat)], -1
    )  # (cell, feature)
    # 4. Disagreement: the pooled seeds hold more than one phase for some present feature.
    pooled_ph = np.where(pooled[..., None], ph, ABSENT)  # (cell, seed, feature)
    hi = np.where(pooled_ph >= 0, pooled_ph, -10).max(1)
    lo = np.where(pooled_ph >= 0, pooled_ph, 10).min(1)
    disagree_feat = (pooled_ph >= 0).any(1) & (hi != lo)  # (cell, feature)
    same = (pooled_ph == cell_phase[:, None, :]) & (pooled_ph >= 0)
    share = same.sum(1) / np.maximum((pooled_ph >= 0).sum(1), 1)
    out["phase"] = ((*cell_dims, "feature"), cell_phase.reshape(*cell_shape, n_feat))
    out["phase_share"] = (
        (*cell_dims, "feature"),
        np.where(cell_phase >= 0, share, np.nan).reshape(*cell_shape, n_feat),
    )
    out["seeds_disagree_feature"] = (
        (*cell_dims, "feature"),
        disagree_feat.reshape(*cell_shape, n_feat),
    )
    out["seeds_disagree"] = (cell_dims, disagree_feat.any(-1).reshape(cell_shape))
    out["n_usable"] = (cell_dims, n_usable.reshape(cell_shape))
    out["n_pooled"] = (cell_dims, pooled.sum(-1).reshape(cell_shape))
    out["missing"] = (cell_dims, (n_usable == 0).reshape(cell_shape))
    agg = xr.Dataset(out, coords={d: mm[d].values for d in (*cell_dims, "feature")})
    agg.attrs["aggregate"] = rule
    agg.attrs["aggregate_rule"] = (
        "drop the highest-loss usable seed, mean of the rest; phase = mode of the rest "
        "(ties: lowest-loss seed's phase)"
        if rule == "drop_worst"
        else "the lowest-loss usable seed"
    )
    return agg


def analyse_store(ds: xr.Dataset, settings: Settings) -> xr.Dataset:
    """Per-model metrics (suffix `_seed`) and per-cell aggregates of a store, with counts."""
    ds = ds.load()
    mm = model_metrics(ds, settings)
    agg = aggregate_seeds(mm, settings.aggregate)
    for name in ("norm", "superposition", "phase", "loss"):
        agg[f"{name}_seed"] = mm[name]
    agg["usable_seed"] = mm["usable"]
    exact = "loss_mc" in mm
    if exact:
        agg["loss_mc_seed"] = mm["loss_mc"]
    for name in ("importance", "feature_density"):
        if name in ds:
            agg[name] = ds[name]
    n_models = int(ds["finished"].size)
    agg.attrs.update(
        {
            **settings.rule_settings(),
            "n_models": n_models,
            "n_unfinished": int((~ds["finished"]).sum()),
            "n_diverged": int((ds["finished"] & ds["diverged"]).sum()),
            "n_cells": int(agg["missing"].size),
            "n_missing_cells": int(agg["missing"].sum()),
            "n_disagreeing_cells": int((agg["seeds_disagree"] & ~agg["missing"]).sum()),
            "seed_loss": "exact expected loss (quadrature)" if exact else "stored Monte Carlo loss",
            "source_fingerprint": str(ds.attrs.get("fingerprint", "")),
            "source_grid_name": str(ds.attrs.get("grid_name", "")),
        }
    )
    return agg


def analysis_path(store_path: Path | str) -> Path:
    """Where a store's analysis dataset lives: beside it, `<parent>/<name>.analysis.zarr`.

    Beside and not inside, so the results store is never touched (and the engine's metadata
    consolidation never meets a second zarr group inside it).
    """
    p = Path(store_path).expanduser().absolute()
    return p.parent / f"{p.name}.analysis.zarr"


def write_atomic(ds: xr.Dataset, path: Path) -> Path:
    """Write ds as a zarr store at path: to a temporary sibling first, then renamed into place."""
    path = Path(path)
    if path.exists() and not (path / ".zmetadata").is_file():
        # Only an earlier output (a consolidated zarr store) is replaced: a file or a folder of
        # anything else there is the user's, and would be moved aside and deleted below.
        raise FileExistsError(f"{path} exists and is not an analysis store; move it away first")
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    old = path.parent / f".{path.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        ds.to_zarr(tmp, mode="w", zarr_format=2, consolidated=True)
        if path.exists():  # rename() cannot replace a non-empty directory: move it aside first
            os.rename(path, old)
        os.rename(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return path


def compare_with_theory(agg: xr.Dataset, kind: str) -> xr.Dataset:
    """Add the closed-form phase of the extra (last) feature and the agreement with it.

    Agreement = share of cells, leaving out missing ones and those next to an analytic boundary
    (theory.near_boundary), whose empirical phase of the extra feature equals the analytic one.
    """
    from analysis import theory

    r = agg["relative_importance"].values
    p = agg["density"].values
    analytic = theory.analytic_phase_map(kind, r, p)
    near = theory.near_boundary(kind, r, p)
    extra = agg["phase"].isel(feature=-1).transpose("relative_importance", "density")
    compared = ~agg["missing"].transpose("relative_importance", "density") & ~near
    agrees = extra == analytic
    out = agg.copy()
    analytic.attrs = {"description": f"closed-form phase of the extra feature ({kind})"}
    out["analytic_phase"] = analytic
    out["near_boundary"] = near
    out["compared"] = compared
    out["agrees"] = agrees & compared
    n = int(compared.sum())
    out.attrs.update(
        {
            "theory_kind": kind,
            "agreement": float((agrees & compared).sum() / n) if n else float("nan"),
            "n_compared": n,
            "n_agree": int((agrees & compared).sum()),
            "n_near_boundary": int(near.sum()),
        }
    )
    return out
