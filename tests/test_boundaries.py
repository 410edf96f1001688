"""Phase boundaries (issue 16): extraction and bootstrap on synthetic stores whose phases come
from a known curve, the exact-minimum curves against paper.md's note and the closed forms, and
adaptive refinement with a small real training across one boundary row."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from analysis import boundaries, theory
from analysis import exact_minimum as exact
from analysis.metrics import IGNORED, SUPERPOSED
from sweep import quadrature

R, P = "relative_importance", "density"
NAME = "superposed|ignored"


def truth(r: np.ndarray) -> np.ndarray:
    """A made-up boundary p*(r), smooth and not aligned with any grid."""
    return 0.03 + 0.4 * np.asarray(r) ** 0.7


def synthetic(
    r: np.ndarray,
    p: np.ndarray,
    n_seed: int,
    stuck: float | None,
    seed: int = 0,
    jitter: float = 0.0,
    per_seed: bool = False,
) -> tuple[xr.DataArray, xr.DataArray]:
    """(phase_seed, loss_seed) over (r, p, seed) with the boundary at truth(r).

    Each seed sits in the superposed or the ignored minimum (both exist at every p); the
    superposed one is lower below p* by a gap with gap/p = log(p/p*) (linear in log p, so the
    loss-gap interpolation is exact). stuck=None: seeds alternate phases (both present
    everywhere); else each seed is in the ignored basin with probability `stuck`, drawn per
    cell, or with per_seed once per row for all its cells (as in training, where a seed's
    initial W, shared by the row's cells, decides which minimum it reaches).
    """
    rng = np.random.default_rng(seed)
    rr, pp = np.meshgrid(r, p, indexing="ij")
    base = pp / 3  # any smooth loss level
    gap = pp * np.log(pp / truth(rr))  # (r, p): superposed minus ignored
    if stuck is None:
        sup = np.broadcast_to(np.arange(n_seed) % 2 == 0, (*rr.shape, n_seed))
    else:
        shape = (len(r), 1, n_seed) if per_seed else (*rr.shape, n_seed)
        sup = np.broadcast_to(rng.random(shape) >= stuck, (*rr.shape, n_seed))
    phase = np.where(sup, SUPERPOSED, IGNORED)
    loss = base[..., None] + np.where(sup, gap[..., None], 0.0)
    loss = loss + jitter * pp[..., None] * rng.random(loss.shape)  # seeds above their minimum
    coords = {R: r, P: p, "seed": np.arange(n_seed)}
    dims = (R, P, "seed")
    return xr.DataArray(phase, coords, dims), xr.DataArray(loss, coords, dims)


@pytest.mark.unit
def test_interpolation_recovers_known_curve_exactly() -> None:
    r, p = np.geomspace(0.1, 1, 7), np.geomspace(0.01, 1, 15)
    ph, loss = synthetic(r, p, 4, stuck=None)
    out = boundaries.locate(ph, loss, [NAME], n_boot=20)
    np.testing.assert_allclose(out["boundary_density"].sel(boundary=NAME), truth(r), rtol=1e-9)


@pytest.mark.unit
def test_midpoint_within_half_spacing_and_band_covers_truth() -> None:
    r, p = np.geomspace(0.1, 1, 9), np.geomspace(0.01, 1, 101)  # 0.02 decades apart
    ph, loss = synthetic(r, p, 5, stuck=0.4, seed=1, jitter=0.05, per_seed=True)
    out = boundaries.locate(ph, loss, [NAME], n_boot=200, interpolate=False)
    b = out.sel(boundary=NAME)
    err = np.abs(np.log10(b["boundary_density"].values / truth(r)))
    # Lowest-loss seed: every cell with a superposed seed below p* is superposed, so the step is
    # exact up to the grid (half a spacing, 0.01 decades) and the jitter: seeds up to 0.05 p
    # above their minimum move the loss crossing by up to 0.05 in ln p (0.0217 decades).
    assert np.all(err <= 0.01 + 0.05 / np.log(10) + 1e-12), err
    covered = (b["boundary_density_lo"] <= truth(r)) & (truth(r) <= b["boundary_density_hi"])
    assert covered.mean() >= 0.85, (b["boundary_density_lo"].values, truth(r))
    half = np.log10(b["boundary_density_hi"] / b["boundary_density_lo"]).values / 2
    # A band, not the whole axis; wider where few seeds reach the superposed minimum there.
    assert np.median(half) < 0.05 and np.all(half < 0.3), half


@pytest.mark.unit
def test_untrained_points_are_skipped_and_isolated_flip_ignored() -> None:
    r, p = np.array([0.3]), np.geomspace(0.01, 1, 41)
    ph, loss = synthetic(r, p, 3, stuck=None)
    loss = loss.copy()
    loss[:, 1::2, :] = np.nan  # a refined grid: every other point untrained
    ph = ph.copy()
    ph[0, 2, :] = IGNORED  # one noisy cell far below the boundary
    loss[0, 2, :] = 0.0  # ... whose seeds are all ignored (it is the lowest there)
    v = boundaries.locate_row(p, ph.values[0], loss.values[0], NAME, interpolate=False)
    trained = p[np.isfinite(loss.values[0]).any(-1)]
    k = np.searchsorted(trained, truth(0.3))
    assert trained[k - 1] < v < trained[k]  # between the trained points around p*


@pytest.mark.unit
def test_missing_phase_gives_nan() -> None:
    r, p = np.array([0.3]), np.geomspace(0.5, 1, 5)  # all above p*: no superposed cell
    ph, loss = synthetic(r, p, 3, stuck=None)
    assert np.isnan(boundaries.locate_row(p, ph.values[0], loss.values[0], NAME))


@pytest.mark.unit
def test_bootstrap_band_widens_when_few_seeds_find_the_minimum() -> None:
    # Near the boundary only seed 0 is superposed: resampling drops it a third of the time.
    r, p = np.array([0.3]), np.geomspace(0.01, 1, 101)
    ph, loss = synthetic(r, p, 5, stuck=None)
    ph, loss = ph.copy(), loss.copy()
    near = (p > truth(0.3) / 1.5) & (p < truth(0.3))
    ph[0, near, 1:] = IGNORED
    loss[0, near, 1:] = (p[near] / 3)[:, None]
    out = boundaries.locate(ph, loss, [NAME], n_boot=300).sel(boundary=NAME)
    lo, hi = float(out["boundary_density_lo"][0]), float(out["boundary_density_hi"][0])
    # Below: down to where seeds 2 and 4 are superposed again. Above: a cell whose resample
    # holds only superposed seeds (0, 2, 4) reads superposed, a few 0.02-decade points up.
    assert lo < truth(0.3) / 1.3 and 0 <= np.log10(hi / truth(0.3)) < 0.07


@pytest.mark.unit
def test_bootstrap_resamples_a_rows_seeds_together() -> None:
    """Seed 0 is superposed and seed 1 ignored at every point of the row (a seed's initial W
    decides its basin everywhere). A resample of whole seeds holds both (and finds the one
    boundary the data have, at the same place) or one (and finds none); seeds resampled cell
    by cell would mix them point by point and move the split."""
    r, p = np.array([0.3]), np.geomspace(0.01, 1, 61)
    ph, loss = synthetic(r, p, 2, stuck=None)
    x, phase, lo = p, ph.values[0], loss.values[0]
    at = boundaries.locate_row(x, phase, lo, NAME)
    assert np.isfinite(at)
    boots = boundaries.bootstrap_row(x, phase, lo, NAME, n_boot=200, seed=1)[:, 0]
    found = boots[np.isfinite(boots)]
    assert 60 <= len(found) <= 140  # both seeds drawn: half the resamples
    np.testing.assert_array_equal(found, at)


# ---------------------------------------------------------------- exact minimum


def test_note_finding_at_r_01() -> None:
    """paper.md: closed form p = 0.16, exact minimum near 0.18; |W2| ~ 0.72 at p = 0.17."""
    found = exact.boundaries_at("2to1", 0.1, p_min=0.1, p_max=0.3, scan=5, tol_decades=1e-3)
    assert [n for n, _ in found] == [NAME]
    p_exact = found[0][1]
    assert 0.178 < p_exact < 0.185
    assert abs(float(theory.boundaries_2to1(0.1).superposed_ignored) - 0.16) < 1e-12
    mn = exact.global_minimum("2to1", 0.1, 0.17)
    assert mn.phase == SUPERPOSED
    assert 0.69 < abs(mn.W[0, 1]) < 0.75 and np.all(mn.b > 0)
    # The ignored phase's best is the closed-form candidate: the shift is the superposed side's.
    W, b = theory.candidate_params("2to1", "ignore_extra", 0.19)
    np.testing.assert_allclose(
        quadrature.expected_loss(W, b, [1, 0.1], 0.19), theory.drop_loss(0.1, 0.19), rtol=1e-9
    )
    assert exact.global_minimum("2to1", 0.1, 0.19).phase == IGNORED


def test_table_matches_a_fresh_computation() -> None:
    r = 0.3162278  # a table row
    found = dict(exact.boundaries_at("2to1", r, p_min=0.2, p_max=0.6, scan=5, tol_decades=1e-3))
    table = float(exact.boundary_curve("2to1", NAME, r))
    assert abs(np.log10(found[NAME] / table)) < 1e-3


@pytest.mark.parametrize("kind", ["2to1", "3to2"])
@pytest.mark.unit
def test_exact_curve_against_closed_form(kind: str) -> None:
    """Free norms and biases only help the superposed phase (the ignored phase's optimum is the
    candidate), so the exact boundary lies at or above the closed form, within 0.12 decades on
    r <= 1: closest far from the triple point (~0.04 decades), farthest at it."""
    r, p = exact.boundary_table(kind, NAME)
    cf = exact.closed_form_curve(kind, NAME, r)
    d = np.log10(p / cf)
    assert np.all(d > -1e-3), d
    assert np.all(d < 0.12), d
    far = (r > 0.25) & (r < 0.6)
    assert np.all(d[far] < 0.045) and d[np.argmax(r)] > d[far].max() + 0.01, d
    if kind == "2to1":
        # The mirrored boundary exists for r > 1; the triple point moves up from 4/7 to ~0.71.
        rs, ps = exact.boundary_table(kind, "superposed|dedicated")
        assert rs.min() >= 1 and np.all(np.diff(ps) < 0)
        assert 0.69 < exact.boundary_curve(kind, NAME, 1.0) < 0.73
        # r -> 1/r symmetry (features swapped, loss scaled by r) where the classification is
        # symmetric too: for 1.2 < r < 4 the other feature's norm at the crossing exceeds
        # 1/sqrt(2) (nearer r = 1 and beyond 4 it drops below first: 0.7 % earlier at r = 1.12)
        near = (rs > 1.2) & (rs < 4)
        mirrored = exact.boundary_curve(kind, NAME, 1 / rs[near])
        np.testing.assert_allclose(ps[near], mirrored, rtol=2e-3)


@pytest.mark.unit
def test_3to2_decouples_into_2to1_far_from_r_1() -> None:
    """For r <= 0.52 the 3→2 minimum is one feature dedicated plus the 2→1 problem (1, r) in
    the other dimension, so its boundary is 2→1's (computed independently); nearer r = 1 a
    three-feature minimum keeps the extra feature superposed to higher density."""
    r, p = exact.boundary_table("3to2", NAME)
    two = exact.boundary_curve("2to1", NAME, r)
    d = np.log10(p / two)
    assert np.all(np.abs(d[r <= 0.52]) < 1e-3), d
    assert np.all(d[r > 0.7] > 0.01), d


# ---------------------------------------------------------------- real training, one row


@pytest.mark.slow
def test_refinement_locates_a_real_boundary(tmp_path) -> None:
    """2→1 at r = 0.3: 3 coarse densities, 3 levels; points go only to the boundary, the rerun
    trains nothing, and the located boundary is near the exact minimum's."""
    from omegaconf import OmegaConf

    from sweep import refine
    from sweep.__main__ import CONF

    overrides = [
        "+grid=phase-refine",
        "grid.axes.relative_importance=[0.3]",
        "grid.axes.density=[log,0.1,1.0,3]",
        "grid.seeds=4",
        "train.steps=2000",
        "train.lr=0.01",
        "train.compile=false",
        "refine.levels=3",
        "refine.budget=60",
        "analysis.run=false",
        "progress=false",
        f"store.path={tmp_path / 's'}",
    ]
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    assert refine.run(cfg) == 0
    ds = xr.open_zarr(tmp_path / "s")
    assert ds.sizes[P] == 2 * 8 + 1  # 2 coarse intervals bisected 3 times
    done = ds["finished"].all("seed").values[0]
    assert done[::8].all()  # the coarse pass
    assert np.isnan(ds["W"].values[0][~done]).all()  # untrained points are NaN
    assert done.sum() <= 60 // 4
    from analysis import aggregate, report

    _, store, _, settings = report.load(tmp_path / "s")
    agg = aggregate.analyse_store(store, settings)
    bd = boundaries.boundary_dataset(agg, store, "2to1", n_boot=100).sel(boundary=NAME)
    measured = float(bd["boundary_density"][0])
    assert float(bd["boundary_density_spacing"][0]) < 0.07  # bisected: 0.5 / 8 decades
    assert abs(np.log10(measured / exact.boundary_curve("2to1", NAME, 0.3))) < 0.06
    assert OmegaConf.select(cfg, "refine.levels") == 3
    # Resume: the same command re-derives the levels and trains nothing.
    before = ds["loss"].values.copy()
    assert refine.run(cfg) == 0
    np.testing.assert_array_equal(xr.open_zarr(tmp_path / "s")["loss"].values, before)


@pytest.mark.unit
def test_refine_helpers() -> None:
    from sweep import refine

    fine = refine.fine_axis([0.01, 0.1, 1.0], 2)
    np.testing.assert_allclose(fine, np.geomspace(0.01, 1, 9))
    # Same rule as analysis.metrics.classify_phases on the last feature.
    rng = np.random.default_rng(0)
    W = rng.normal(size=(200, 2, 3)) * rng.random((200, 1, 3))
    from analysis.metrics import classify_phases

    np.testing.assert_array_equal(refine.extra_phase(W), classify_phases(W)[..., -1])
    trained = np.zeros((2, 9), bool)
    trained[:, ::4] = True
    best = np.full((2, 9), -1)
    best[0, ::4] = [2, 0, 0]  # a change in the first interval of row 0
    best[1, ::4] = [2, 2, 2]
    sets = np.where(best >= 0, 1 << np.maximum(best, 0), 0)
    sets[1, 8] = 0b101  # seeds disagree at the end of row 1
    picked = refine.select(trained, best, sets, seeds_too=True)
    assert [(i, j) for *_, i, j in picked] == [(0, 2), (1, 6)]
    assert [(i, j) for *_, i, j in refine.select(trained, best, sets, False)] == [(0, 2)]
    # ignored <-> dedicated (the r = 1 row's coin flips) comes after the p-boundaries
    best[1, ::4] = [1, 0, 1]
    sets = np.where(best >= 0, 1 << np.maximum(best, 0), 0)
    picked = refine.select(trained, best, sets, seeds_too=False)
    assert [(c[0], c[2], c[3]) for c in picked] == [(0, 0, 2), (1, 1, 2), (1, 1, 6)]


def test_refine_refuses_overwrite_and_bad_levels(tmp_path, capsys) -> None:
    from hydra import compose, initialize_config_dir

    from sweep import refine
    from sweep.__main__ import CONF

    for extra, words in (
        (["store.mode=overwrite"], "store.mode=overwrite is not allowed"),
        (["grid.axes.density=[0.5]"], "is not allowed for refinement"),
    ):
        overrides = ["+grid=phase-refine", f"store.path={tmp_path / 's'}", *extra]
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        with pytest.raises(SystemExit) as e:
            refine.run(cfg)
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and words in err[0], err
    assert not (tmp_path / "s").exists() or not any((tmp_path / "s").iterdir())


@pytest.mark.unit
def test_refinement_ranks_seeds_by_exact_loss_not_the_noisy_stored_one() -> None:
    """At r = 0.1, p = 0.17 the superposed minimum (|W2| = 0.72, the exact minimum) beats
    ignoring feature 2 by 4.6 %; a stored Monte Carlo loss that says the opposite (as 8,192
    samples did on 5 of 15 rows near the boundary) must not decide where refinement bisects."""
    from omegaconf import OmegaConf

    from sweep import refine

    W = np.array([[[-1.024, 0.720]], [[1.0, 0.0]]])[None, None]  # (r, p, seed, hidden, feature)
    b = np.array([[0.002, 0.047], [0.0, 0.085]])[None, None]
    coords = {R: [0.1], P: [0.17], "seed": [0, 1], "feature": [0, 1]}
    ds = xr.Dataset(
        {
            "W": ((R, P, "seed", "hidden", "feature"), W),
            "b": ((R, P, "seed", "feature"), b),
            "loss": ((R, P, "seed"), [[[0.00500, 0.00490]]]),  # sampled: favours ignored
            "finished": ((R, P, "seed"), np.ones((1, 1, 2), bool)),
            "diverged": ((R, P, "seed"), np.zeros((1, 1, 2), bool)),
            "importance": ((R, P, "feature"), [[[1.0, 0.1]]]),
            "feature_density": ((R, P, "feature"), [[[0.17, 0.17]]]),
        },
        coords=coords,
    )
    exact = refine.ranking_loss(ds, np.ones((1, 1, 2), bool), exact=True)[0, 0]
    # Independent truth for seed 1: feature 1 dedicated (W1 = 1, b1 = 0) costs nothing and
    # feature 2 dropped with its bias at the mean p/2 costs r (p/3 - p^2/4), the closed form.
    assert exact[1] == pytest.approx(float(theory.drop_loss(0.1, 0.17)), rel=1e-6)
    assert exact[0] < exact[1] * 0.96
    fin = np.ones((1, 1, 2), bool)
    best_exact, _ = refine.cell_phases(ds, fin, True, 0.5, 0.5)
    best_mc, _ = refine.cell_phases(ds, fin, False, 0.5, 0.5)
    assert best_exact[0, 0] == SUPERPOSED and best_mc[0, 0] == IGNORED
    cfg = OmegaConf.create(
        {"model": {"kind": "relu", "n_features": 3}, "data": {"correlation": "none"}}
    )
    assert refine.exact_ranking(cfg)
    for change in ({"model": {"kind": "gelu"}}, {"model": {"n_features": 5}}):
        assert not refine.exact_ranking(OmegaConf.merge(cfg, change))
