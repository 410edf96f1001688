"""The extra-feature diagram across dimension (issue 23, the `dimension` grid): per (n, m) shape
of a zipped `shape` axis, the extra (last) feature's phase over (r, p), the counts of ignored,
dedicated and superposed features, D*, and the extra feature's boundaries p(r) with seed-
bootstrap bands, beside the exact expected-loss minimum where one is tabulated.

One seed stands for each cell, the lowest-loss usable one, and every per-cell number here is
that seed's (`dimension_seed`), so the counts can be recounted from the stored W. Seeds are
ranked by their *exact* expected loss (quadrature) where it reaches, n <= 4, and by the stored
loss beyond: the stored loss is an estimate on 8,192 samples whose noise (~1 %) exceeds the
loss gap between competing minima near a boundary (analysis.boundaries). Which loss ranked a
shape's seeds is the coord `seed_loss` along `shape`.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from analysis import boundaries, metrics
from analysis.metrics import PHASE_NAMES
from sweep.quadrature import MAX_FEATURES

R, P, S = "relative_importance", "density", "shape"
# Both boundaries of the extra feature along p: below r = 1 it is superposed or ignored, above
# it superposed or dedicated (analysis.boundaries.DOMAIN); a shape without one gives NaN.
NAMES = ["superposed|ignored", "superposed|dedicated"]
EXACT_P = 8  # densities of one r row per quadrature call (8 x seeds models, ~1 GB at n = 4)
# Shapes whose exact-minimum boundaries can be tabulated (analysis.exact_minimum: the quadrature
# reaches n <= 4); the tables, analysis/data/exact_boundaries_*.csv, say at which r.
EXACT_KINDS = {(2, 1): "2to1", (3, 2): "3to2", (4, 2): "4to2", (4, 3): "4to3"}


def applies(store: xr.Dataset) -> bool:
    """A store over a zipped (n, m) shape axis, relative importance and density."""
    return S in store.dims and "n_features" in store.coords and {R, P} <= set(store.dims)


def shape_sizes(store: xr.Dataset) -> list[tuple[str, int, int]]:
    """(label, n, m) of every shape of the store, in store order."""
    ns = store["n_features"].values
    ms = store["n_hidden"].values if "n_hidden" in store.coords else np.zeros_like(ns)
    return [(str(s), int(n), int(m)) for s, n, m in zip(store[S].values, ns, ms, strict=True)]


def seed_losses(store: xr.Dataset, agg: xr.Dataset, label: str, n: int, m: int) -> xr.DataArray:
    """(r, p, seed) loss that ranks one shape's seeds: exact for n <= MAX_FEATURES, else the
    stored one; NaN where a model is unusable."""
    usable = agg["usable_seed"].sel({S: label})
    if n <= MAX_FEATURES:
        one = store.sel({S: label}).isel(hidden=slice(0, m), feature=slice(0, n))
        # a few cells at a time: at n = 4 the quadrature's work arrays take ~24 MB per model,
        # and exact_seed_losses takes 256 models at once (measured: 6.2 GB peak on the grid)
        loss = xr.concat(
            [
                xr.concat(
                    [
                        boundaries.exact_seed_losses(one.isel({R: [i], P: slice(j, j + EXACT_P)}))
                        for j in range(0, one.sizes[P], EXACT_P)
                    ],
                    P,
                )
                for i in range(one.sizes[R])
            ],
            R,
        )
    else:
        loss = agg["loss_seed"].sel({S: label})
    return loss.where(usable).transpose(R, P, "seed")


def dimension_dataset(store: xr.Dataset, agg: xr.Dataset, n_boot: int = boundaries.BOOTSTRAP):
    """Per cell (shape, r, p): `extra_phase`, `n_ignored`, `n_dedicated`, `n_superposed`,
    `dstar` (D* = m / ‖W‖_F²) and `dimension_seed` (the seed they come from, -1: no usable
    seed); per (extra_boundary, shape, r): `extra_boundary_density` with `_lo`, `_hi` (95 %
    band), `_spacing`, `_boot_valid`, `extra_boundary_exact` (NaN where no exact minimum is
    tabulated), `extra_boundary_distance_exact` (decades) and
    `extra_boundary_within_band_exact`."""
    from analysis import exact_minimum as exact

    shapes = shape_sizes(store)
    nr, np_ = store.sizes[R], store.sizes[P]
    cells = (len(shapes), nr, np_)
    extra = np.full(cells, metrics.ABSENT, np.int64)
    counts = np.full((3, *cells), np.nan)
    dstar = np.full(cells, np.nan)
    seed = np.full(cells, -1, np.int64)
    rows = []
    seed_loss, reference = [], []
    phase_all = agg["phase_seed"].transpose(S, R, P, "seed", "feature")
    for k, (label, n, m) in enumerate(shapes):
        loss = seed_losses(store, agg, label, n, m)  # (r, p, seed)
        seed_loss.append("exact" if n <= MAX_FEATURES else "stored")
        ph = phase_all.sel({S: label}).values[..., :n]  # (r, p, seed, feature): real features
        lv = loss.values
        has = np.isfinite(lv).any(-1)
        best = np.argmin(np.where(np.isfinite(lv), lv, np.inf), -1)  # (r, p)
        seed[k] = np.where(has, best, -1)
        at = np.take_along_axis(ph, best[..., None, None], 2)[:, :, 0]  # (r, p, feature)
        extra[k] = np.where(has, at[..., n - 1], metrics.ABSENT)
        for code in range(3):
            counts[code, k] = np.where(has, (at == code).sum(-1), np.nan)
        W = store["W"].sel({S: label}).transpose(R, P, "seed", "hidden", "feature").values
        W = np.take_along_axis(W, best[..., None, None, None], 2)[:, :, 0, :m, :n]
        dstar[k] = np.where(has, metrics.dimensions_per_feature(W.astype(float)), np.nan)
        phase_extra = xr.DataArray(
            phase_all.sel({S: label}).values[..., n - 1],
            dims=(R, P, "seed"),
            coords={R: store[R].values, P: store[P].values},
        )
        found = boundaries.locate(phase_extra, loss, NAMES, P, n_boot)
        kind = EXACT_KINDS.get((n, m))
        r = store[R].values
        curve = np.stack(
            [
                exact.boundary_curve(kind, name, r) if kind else np.full(r.shape, np.nan)
                for name in NAMES
            ]
        )
        found_any = bool(np.isfinite(curve).any())
        reference.append("exact minimum" if found_any else "none tabulated")
        found["boundary_exact"] = (("boundary", R), curve)
        rows.append(found)
    # Named apart from a phase grid's boundary variables (analysis.boundaries), which the
    # report summarises by their dim `boundary`: here every variable has a `shape` dim too.
    out = xr.concat(rows, dim=S).rename({v: f"extra_{v}" for v in ("boundary", *rows[0].data_vars)})
    b = out["extra_boundary_density"]
    out["extra_boundary_distance_exact"] = np.log10(b / out["extra_boundary_exact"])
    out["extra_boundary_within_band_exact"] = (
        out["extra_boundary_exact"] >= out["extra_boundary_density_lo"]
    ) & (out["extra_boundary_exact"] <= out["extra_boundary_density_hi"])
    dims = (S, R, P)
    seed_doc = "the cell's lowest-loss usable seed (index along seed), -1: none usable"
    out = out.assign(
        {
            "extra_phase": (dims, extra, {"description": "phase code of the extra (last) feature"}),
            **{
                f"n_{name}": (dims, counts[code], {"description": f"{name} features"})
                for code, name in enumerate(PHASE_NAMES)
            },
            "dstar": (dims, dstar, {"description": "D* = m / ‖W‖_F² of the cell's seed"}),
            "dimension_seed": (dims, seed, {"description": seed_doc}),
        }
    )
    out = out.assign_coords(
        {
            S: store[S].values,
            "seed_loss": (S, seed_loss),
            "boundary_reference": (S, reference),
            P: store[P].values,
        }
    )
    out.attrs["dimension_rule"] = (
        "one seed per cell, the lowest-loss usable one (exact expected loss for n <= "
        f"{MAX_FEATURES}, stored loss beyond); boundaries as analysis.boundaries, per shape"
    )
    return out
