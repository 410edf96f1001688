"""Phase boundaries located between trained points, with seed-bootstrap confidence bands.

The phase of a cell is the phase of its *lowest-expected-loss* seed (the physics: the diagram
maps the global minimum; seeds stuck in a local minimum say how hard it is to reach, which the
seed-agreement variables show separately). Seeds are ranked by the *exact* expected loss of
their trained W, b (analysis.theory's quadrature, n <= 4): the store's loss is an estimate on
8,192 fresh samples per seed, different samples for each seed, whose noise (~1 %) exceeds the
loss gap between the competing minima near a boundary (< 0.5 %), so it would decide the phase
there by chance.

Along each row r (fixed relative importance), a boundary "a|b" (phase a at lower density, b
at higher) is located by a step fit: among the trained densities whose cell phase is a or b,
the split that misclassifies the fewest cells (a above, b below), the maximum-likelihood step
under independent label noise; ties go to the middle optimal split. Its location is then

- the zero of the loss gap (best a seed minus best b seed, divided by p) interpolated linearly
  in log p between the two points either side of the split, when both points hold seeds of
  both phases (the gap changes sign there by construction, and it is smooth in p);
- else the geometric midpoint of those two points (error at most half their spacing).

The bootstrap resamples seeds with replacement, the same draw for every cell of a row, and
recomputes each cell's phase by lowest loss and re-locates. Why one draw per row: a seed is one
initial W used at every cell (sweep.train's init depends on the seed alone), and which minimum
a run reaches is mostly decided by that initial W (2→1: the sign of W1·W2; 2 of 5 seeds reach
the superposed minimum at every density near the boundary), so the seed is the sampling unit
and a row's cells are not independent samples. Drawn per cell, resamples lost the successful
seeds at one cell but not at its neighbours and moved the split to trained points 2-8 fine
steps away (bands 0.03-0.14 decades on a row whose phases all seeds order the same way). A
resample with no seed of one of the two phases finds no boundary and is left out; the share
that found it is `_boot_valid`. The band runs from the 2.5 % quantile of the trained point
below each resample's split to the 97.5 % quantile of the point above it, so it covers the
grid's resolution as well as the seeds' uncertainty (a band of locations alone collapses to a
point wherever all seeds agree, however coarse the grid). Untrained cells
(a refined grid's NaN points) have no usable seed and are skipped, so neighbours are the
nearest trained points. Nothing here imports torch.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from analysis.metrics import ABSENT, PHASE_NAMES
from sweep.quadrature import expected_loss

R, P = "relative_importance", "density"
BOOTSTRAP = 400
BAND = (2.5, 97.5)


def names_for(kind: str) -> list[str]:
    """Boundaries "a|b" drawn as p(r) curves for a phase-diagram kind.

    2→1: superposed|ignored (r < 1) and superposed|dedicated (r > 1); the third, ignored|
    dedicated, is the line r = 1 above the triple point (by the r → 1/r symmetry), a boundary
    in r rather than p, located along density columns (`locate_columns`). 3→2: the extra
    feature is superposed or ignored for r < 1 and dedicated for r > 1 at every density (closed
    form and exact minimum alike), so its one p(r) boundary is superposed|ignored.
    """
    return {"2to1": ["superposed|ignored", "superposed|dedicated"], "3to2": ["superposed|ignored"]}[
        kind
    ]


# Where along r each boundary is looked for. Keeping the less important feature (2→1: feature
# 2 dedicated at r < 1, ignored at r > 1) is never the global minimum, so a transition to it
# on the wrong side of r = 1 is a seed stuck in a local minimum, not a boundary.
DOMAIN = {"superposed|ignored": (0.0, 1.0), "superposed|dedicated": (1.0, np.inf)}


def _codes(name: str) -> tuple[int, int]:
    a, b = name.split("|")
    return PHASE_NAMES.index(a), PHASE_NAMES.index(b)


def exact_seed_losses(store: xr.Dataset) -> xr.DataArray:
    """Exact expected loss of every usable model (NaN otherwise), dims (cells..., seed).

    Needs the store's W (…, hidden, feature), b, importance and feature_density; n <= 4.
    """
    W = store["W"].transpose(..., "seed", "hidden", "feature")
    dims = W.dims[:-2]
    usable = (store["finished"] & ~store["diverged"]).transpose(*dims).values
    b = store["b"].transpose(*dims, "feature").values
    imp = store["importance"].broadcast_like(store["finished"]).transpose(*dims, "feature").values
    dens = (
        store["feature_density"]
        .broadcast_like(store["finished"])
        .transpose(*dims, "feature")
        .values
    )
    Wv = W.values
    out = np.full(usable.shape, np.nan)
    idx = np.flatnonzero(usable.ravel())
    flat = lambda a: a.reshape(-1, *a.shape[len(dims) :])  # noqa: E731 - (model, ...)
    Wf, bf, imf, df = flat(Wv), flat(b), flat(imp), flat(dens)
    for start in range(0, idx.size, 256):  # 256 models at a time: the quadrature is (model, row)
        sl = idx[start : start + 256]
        out.ravel()[sl] = expected_loss(Wf[sl].astype(float), bf[sl].astype(float), imf[sl], df[sl])
    return xr.DataArray(
        out, dims=dims, coords={d: store[d].values for d in dims}, name="exact_loss_seed"
    )


# ---------------------------------------------------------------- one row


def _cell_phase(phase: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """(..., seed) phases and losses (NaN loss: unusable) -> (...) lowest-loss phase."""
    has = np.isfinite(loss).any(-1)
    best = np.argmin(np.where(np.isfinite(loss), loss, np.inf), axis=-1)
    return np.where(has, np.take_along_axis(phase, best[..., None], -1)[..., 0], ABSENT)


def _best_of(phase: np.ndarray, loss: np.ndarray, code: int) -> np.ndarray:
    """(...) lowest loss among seeds of phase `code` (inf where there is none)."""
    return np.where((phase == code) & np.isfinite(loss), loss, np.inf).min(-1)


def locate_row(
    x: np.ndarray, phase: np.ndarray, loss: np.ndarray, name: str, interpolate: bool = True
) -> float:
    """Location in x (positive, sorted ascending) of boundary `name` along one row, or NaN.

    phase, loss: (point, seed) per-seed phase codes of the extra feature and their losses
    (NaN = unusable). NaN when the row has no cell of phase a or none of phase b.
    """
    return _locate_row(x, phase, loss, name, interpolate)[0]


def _locate_row(
    x: np.ndarray, phase: np.ndarray, loss: np.ndarray, name: str, interpolate: bool = True
) -> tuple[float, float, float]:
    """(location, x below, x above): the location and the two points of the split."""
    loc, below, above = _locate_rows(x, phase[None], loss[None], name, interpolate)[0]
    return float(loc), float(below), float(above)


def _locate_rows(
    x: np.ndarray, phase: np.ndarray, loss: np.ndarray, name: str, interpolate: bool = True
) -> np.ndarray:
    """(rows, 3): `_locate_row` of many rows over the same x at once (a bootstrap's resamples:
    one Python call, not one per resample). phase, loss: (rows, point, seed).

    Per row: the cells of phase a or b (the lowest-loss seed's phase) are kept; the split
    between two consecutive kept points with the fewest errors (b at or below, a above) wins,
    the middle one of ties; the location is interpolated where the loss gap between a's and
    b's best seeds changes sign across the split, else the geometric midpoint."""
    a, b = _codes(name)
    rows, n = phase.shape[:2]
    if n == 0:  # a row with no trained point
        return np.full((rows, 3), np.nan)
    cell = _cell_phase(phase, loss)  # (rows, point)
    is_a, is_b = cell == a, cell == b
    keep = is_a | is_b
    found = is_a.any(-1) & is_b.any(-1)
    point = np.arange(n)
    # the next kept point strictly after each point (n: none)
    at_or_after = np.minimum.accumulate(np.where(keep, point, n)[:, ::-1], axis=1)[:, ::-1]
    after = np.concatenate([at_or_after[:, 1:], np.full((rows, 1), n)], axis=1)
    # errors of the split after kept point p: b at or below p, plus a above p
    errors = np.cumsum(is_b, 1) + is_a.sum(1, keepdims=True) - np.cumsum(is_a, 1)
    split = keep & (after < n)
    errors = np.where(split, errors, n + 1)
    tie = split & (errors == errors.min(1, keepdims=True))
    middle = tie & (np.cumsum(tie, 1) - 1 == tie.sum(1, keepdims=True) // 2)
    i = np.argmax(middle, axis=1)  # (rows,): the point below the split
    j = np.minimum(after[np.arange(rows), i], n - 1)  # the point above it
    lx = np.log(x)
    lo, hi = lx[i], lx[j]
    loc = np.exp((lo + hi) / 2)
    if interpolate:  # loss gap per unit density at the two points: O(1) across the diagram
        with np.errstate(invalid="ignore", divide="ignore"):
            gap = (_best_of(phase, loss, a) - _best_of(phase, loss, b)) / x  # (rows, point)
            g0, g1 = gap[np.arange(rows), i], gap[np.arange(rows), j]
            cross = np.isfinite(g0) & np.isfinite(g1) & (g0 < 0) & (g1 > 0)
            t = g0 / (g0 - g1)
            loc = np.where(cross, np.exp(lo + t * (hi - lo)), loc)
    out = np.stack([loc, np.exp(lo), np.exp(hi)], axis=1)
    out[~found] = np.nan
    return out


def bootstrap_row(
    x: np.ndarray,
    phase: np.ndarray,
    loss: np.ndarray,
    name: str,
    n_boot: int = BOOTSTRAP,
    seed: int = 0,
    interpolate: bool = True,
) -> np.ndarray:
    """(n_boot, 3): location and the two points of the split (below, above) of seed-resampled
    rows, the row's seeds drawn with replacement (one draw for all its points: a seed is one
    initial W at every point); NaN where a resample finds no boundary."""
    rng = np.random.default_rng(seed)
    n_pt, n_seed = phase.shape
    draws = rng.integers(0, n_seed, size=(n_boot, 1, n_seed))  # = one call per resample
    pick = np.broadcast_to(draws, (n_boot, n_pt, n_seed))  # every point takes its row's draw
    return _locate_rows(
        x,
        np.take_along_axis(phase[None], pick, -1),
        np.take_along_axis(loss[None], pick, -1),
        name,
        interpolate,
    )


def locate(
    phase_seed: xr.DataArray,
    loss_seed: xr.DataArray,
    names: list[str],
    along: str = P,
    n_boot: int = BOOTSTRAP,
    interpolate: bool = True,
    seed: int = 0,
) -> xr.Dataset:
    """Boundaries along `along` for every value of the other axis, with bootstrap bands.

    phase_seed: (r, p, seed) phase codes of the extra feature; loss_seed: same dims, NaN where
    unusable. Returns variables over (boundary, <other axis>): `boundary` (location), `_lo`,
    `_hi` (band), `_boot_valid` (share of resamples that found the boundary), `_spacing`
    (decades between the two trained points either side: the grid's resolution there).
    """
    other = R if along == P else P
    ph = phase_seed.transpose(other, along, "seed").values
    ls = loss_seed.transpose(other, along, "seed").values
    x = phase_seed[along].values.astype(float)
    rows = phase_seed[other].values
    shape = (len(names), len(rows))
    loc, lo, hi, valid, spacing = (np.full(shape, np.nan) for _ in range(5))
    for ib, name in enumerate(names):
        lo_r, hi_r = DOMAIN.get(name, (-np.inf, np.inf)) if along == P else (-np.inf, np.inf)
        for ir in range(len(rows)):
            if not lo_r - 1e-9 <= float(rows[ir]) <= hi_r + 1e-9:
                continue
            trained = np.isfinite(ls[ir]).any(-1)
            xs, p_, l_ = x[trained], ph[ir][trained], ls[ir][trained]
            v, below, above = _locate_row(xs, p_, l_, name, interpolate)
            loc[ib, ir] = v
            if np.isnan(v):
                continue
            spacing[ib, ir] = np.log10(above / below)
            boots = bootstrap_row(xs, p_, l_, name, n_boot, seed + ir, interpolate)
            ok = np.isfinite(boots[:, 0])
            valid[ib, ir] = ok.mean()
            if ok.any():
                # The boundary lies between the two points of a resample's split: the band runs
                # from the 2.5 % quantile of the lower point to the 97.5 % one of the upper, so
                # it holds the grid's resolution as well as the seeds' uncertainty.
                lo[ib, ir] = np.exp(np.percentile(np.log(boots[ok, 1]), BAND[0]))
                hi[ib, ir] = np.exp(np.percentile(np.log(boots[ok, 2]), BAND[1]))
    dims = ("boundary", other)
    coords = {"boundary": names, other: rows}
    tag = "density" if along == P else "importance"
    return xr.Dataset(
        {
            f"boundary_{tag}": (dims, loc),
            f"boundary_{tag}_lo": (dims, lo),
            f"boundary_{tag}_hi": (dims, hi),
            f"boundary_{tag}_boot_valid": (dims, valid),
            f"boundary_{tag}_spacing": (dims, spacing),
        },
        coords=coords,
    )


# ---------------------------------------------------------------- analysis dataset


def boundary_dataset(
    agg: xr.Dataset,
    store: xr.Dataset,
    kind: str,
    n_boot: int = BOOTSTRAP,
    exact_loss: bool = True,
) -> xr.Dataset:
    """Measured boundaries p(r) of a phase store with bands and both theories' curves.

    Returns variables over (boundary, relative_importance): boundary_density (+ _lo, _hi,
    _boot_valid, _spacing), boundary_exact and boundary_closed_form (theory), and the distances
    log10(measured / theory) in decades with `*_within_band` (theory inside the band). Also
    `phase_lowest_loss` (r, p), the per-cell phase these boundaries are located on.
    """
    from analysis import exact_minimum as exact  # its table is read only when needed

    phase_seed = agg["phase_seed"].isel(feature=-1)
    loss = exact_seed_losses(store) if exact_loss else agg["loss_seed"]
    loss = loss.where(agg["usable_seed"])
    names = names_for(kind)
    out = locate(phase_seed, loss, names, P, n_boot)
    r = out[R].values
    for theory_name, fn in (
        ("exact", exact.boundary_curve),
        ("closed_form", exact.closed_form_curve),
    ):
        curve = np.stack([fn(kind, n, r) for n in names])  # (boundary, r)
        out[f"boundary_{theory_name}"] = (("boundary", R), curve)
        out[f"boundary_distance_{theory_name}"] = (
            ("boundary", R),
            np.log10(out["boundary_density"].values / curve),
        )
        out[f"boundary_within_band_{theory_name}"] = (
            ("boundary", R),
            (curve >= out["boundary_density_lo"].values)
            & (curve <= out["boundary_density_hi"].values),
        )
    cell = _cell_phase(
        phase_seed.transpose(R, P, "seed").values.reshape(-1, phase_seed.sizes["seed"]),
        loss.transpose(R, P, "seed").values.reshape(-1, phase_seed.sizes["seed"]),
    ).reshape(phase_seed.sizes[R], phase_seed.sizes[P])
    out["phase_lowest_loss"] = ((R, P), cell)
    out.coords[P] = phase_seed[P].values
    out.attrs.update(
        {
            "boundary_rule": "phase of a cell = phase of its lowest exact-expected-loss seed; "
            "step fit along p; loss-gap interpolation in log p, else geometric midpoint",
            "boundary_bootstrap": n_boot,
            "boundary_band_percentiles": list(BAND),
            "boundary_loss": "exact (quadrature)" if exact_loss else "store loss (sampled)",
        }
    )
    return out


def add_boundaries(
    agg: xr.Dataset, store: xr.Dataset, kind: str, n_boot: int = BOOTSTRAP
) -> xr.Dataset:
    """agg with the boundary variables of `boundary_dataset` merged in (attrs kept)."""
    bd = boundary_dataset(agg, store, kind, n_boot)
    out = agg.merge(bd, compat="override")
    out.attrs = {**agg.attrs, **bd.attrs}
    return out


def summary(agg: xr.Dataset) -> str:
    """One line per boundary: rows located, max |distance| to each theory, band coverage."""
    lines = []
    for name in agg["boundary"].values:
        b = agg.sel(boundary=name)
        ok = np.isfinite(b["boundary_density"].values)
        if not ok.any():
            lines.append(f"boundary {name}: not found")
            continue
        ratio = b["boundary_density_hi"].values / b["boundary_density_lo"].values
        half = np.log10(ratio[ok]) / 2
        parts = [
            f"boundary {name}: {ok.sum()} rows, band half-width median "
            f"{np.nanmedian(half):.3f} max {np.nanmax(half):.3f} decades"
        ]
        for th in ("exact", "closed_form"):
            d = b[f"boundary_distance_{th}"].values[ok]
            inside = b[f"boundary_within_band_{th}"].values[
                ok & np.isfinite(b[f"boundary_{th}"].values)
            ]
            if np.isfinite(d).any():
                parts.append(
                    f"{th}: max |Δ| {np.nanmax(np.abs(d)):.3f} dec, "
                    f"inside band {inside.sum()}/{inside.size}"
                )
        lines.append("; ".join(parts))
    return "\n".join(lines)
