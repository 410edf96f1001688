"""The extra-feature diagram across dimension (issue 23, grid `dimension`): (n, m) pairs of shape
axes in one store, the last feature of each shape as the extra one, and the per-cell numbers.

Truths used: the plan's per-cell importances against the definition (n − 1 ones, r last,
nothing beyond n); the counts, the extra feature's phase and D* recounted from the stored W by
the paper's definitions, written here; and the (2, 1) and (3, 2) rows against the phase and
phase3 grids trained on their own (the same models, and the boundaries inside those grids'
bands).
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from analysis.report import analyse
from sweep import driver
from sweep.__main__ import preflight
from sweep.errors import ConfigError
from sweep.grid import GridPlan
from sweep.layout import template
from sweep.quadrature import expected_loss
from tests.conftest import make_config

PAIRS = (
    "grid.axes.shape="
    "[{n_features:2,n_hidden:1},{n_features:3,n_hidden:2},{n_features:5,n_hidden:2}]"
)


@pytest.mark.unit
def test_pairs_are_swept_as_pairs_with_the_last_feature_scaled():
    cfg = make_config(["+grid=dimension", PAIRS, "grid.axes.relative_importance=[0.25,4.0]"])
    plan = GridPlan(cfg)
    # the pairs, not the product of n and m (which would hold 2-2, 3-1, 5-1, ...)
    assert [(s.n_features, s.n_hidden) for s in plan.shapes] == [(2, 1), (3, 2), (5, 2)]
    assert plan.cell_dims == ["shape", "relative_importance", "density", "seed"]
    assert plan.coords["shape"] == ["2-1", "3-2", "5-2"]
    for shape in plan.shapes:
        for r in (0.25, 4.0):
            imp = plan.importance(shape, r)
            want = np.r_[np.ones(shape.n_features - 1), r]  # n − 1 ones, the extra one last
            np.testing.assert_array_equal(imp, want)
    # the store: one chunk holds one shape; (n, m) are coords along `shape`; padding is NaN
    assert all(b.slices["shape"].stop - b.slices["shape"].start == 1 for b in plan.blocks)
    ds = template(plan, cfg)
    assert ds["n_features"].dims == ("shape",) and list(ds["n_features"].values) == [2, 3, 5]
    assert list(ds["n_hidden"].values) == [1, 2, 2]
    assert ds["W"].shape[-2:] == (2, 5)
    imp = ds["importance"].sel(shape="3-2", relative_importance=4.0).isel(density=0).values
    np.testing.assert_array_equal(imp[:3], [1, 1, 4])
    assert np.isnan(imp[3:]).all()


@pytest.mark.unit
@pytest.mark.parametrize(
    ("override", "key", "words"),
    [
        (
            "grid.axes.shape=[{n_features:2,n_hidden:1},{n_features:2,n_hidden:1}]",
            "grid.axes.shape",
            "listed twice",
        ),
        (
            "grid.axes.shape=[{n_features:2,n_hidden:1},{n_features:3}]",
            "grid.axes.shape",
            "the keys of the first entry",
        ),
        (
            "grid.axes.shape=[{n_features:0,n_hidden:1}]",
            "grid.axes.shape",
            "n_features: integers >= 1",
        ),
        (
            "grid.axes.shape=[{n_features:2,n_hidden:x}]",
            "grid.axes.shape",
            "n_hidden: integers >= 1",
        ),
        ("grid.axes.shape=[{n_features:2,width:1}]", "grid.axes.shape", "keys among"),
        ("grid.axes.shape=[{model:tanh,n_features:2}]", "grid.axes.shape", "model: one of"),
        ("grid.axes.shape=[]", "grid.axes.shape", "a non-empty list of mappings"),
        ("grid.axes.shape=3", "grid.axes.shape", "a non-empty list of mappings"),
        ("+grid.axes.n_hidden=[1,2]", "grid.axes.shape", "which grid.axes.n_hidden sweeps"),
        (
            "data.relative_importance_features=[1,-1]",
            "data.relative_importance_features",
            "distinct features",
        ),
        ("data.relative_importance_features=[-3]", "data.relative_importance_features", "[-2, 1]"),
    ],
)
def test_bad_pairs_are_one_line_before_anything_is_created(override, key, words, tmp_path, capsys):
    store = tmp_path / "s"
    with pytest.raises(SystemExit) as exc:
        preflight(["+grid=dimension", override, f"store.path={store}"])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2
    assert line.startswith(f"error: {key}=") and words in line, line
    assert not store.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.unit
def test_minus_one_is_the_last_feature_of_every_shape():
    plan = GridPlan(
        make_config(["+grid=dimension", PAIRS, "data.relative_importance_features=[0,-1]"])
    )
    for shape in plan.shapes:
        imp = plan.importance(shape, 3.0)
        assert imp[0] == imp[-1] == 3.0 and (imp[1:-1] == 1).all()
    with pytest.raises(ConfigError, match="n_features=2"):  # 1 and -1 are one feature at n = 2
        GridPlan(
            make_config(["+grid=dimension", PAIRS, "data.relative_importance_features=[1,-1]"])
        )


# ---------------------------------------------------------------- a trained store

SMALL = [
    "+grid=dimension",
    PAIRS,
    "grid.axes.relative_importance=[0.3,3.0]",
    "grid.axes.density=[0.03,0.2,0.8]",
    "grid.seeds=3",
    "train.steps=2000",
]


@pytest.fixture(scope="module")
def dimension_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("dimension") / "s"
    assert driver.run(make_config(SMALL, store=path)) == 0
    figs = ["dimension_diagrams", "dimension_boundaries"]
    analyse(path, verbose=False, settings={"figures": figs})
    return path


def recount(W: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Phase code per feature of one real (m, n) W, by the definitions of paper.md: ‖W_i‖ <
    threshold ignored (0); else superposed (2) when Σ_{j≠i} (Ŵ_i · W_j)² ≥ threshold, dedicated
    (1) otherwise."""
    norms = np.linalg.norm(W, axis=0)
    unit = W / np.maximum(norms, 1e-12)
    overlap = (unit.T @ W) ** 2
    sup = overlap.sum(1) - np.diag(overlap)
    return np.where(norms < threshold, 0, np.where(sup >= threshold - 1e-9, 2, 1))


@pytest.mark.slow
def test_counts_phase_and_dstar_equal_a_recount_from_the_stored_weights(dimension_store):
    store = xr.open_zarr(dimension_store)
    ana = xr.open_zarr(f"{dimension_store}.analysis.zarr")
    checked = 0
    for label, n, m in zip(
        store["shape"].values, store["n_features"].values, store["n_hidden"].values, strict=True
    ):
        for r in store["relative_importance"].values:
            for p in store["density"].values:
                cell = {"shape": label, "relative_importance": r, "density": p}
                one = store.sel(cell)
                W = one["W"].values[:, :m, :n].astype(float)  # (seed, m, n): the real block
                assert np.isnan(one["W"].values[:, m:, :]).all()
                assert np.isnan(one["W"].values[:, :, n:]).all()
                # the seed: lowest exact expected loss for n <= 4, lowest stored loss beyond
                if n <= 4:
                    imp = one["importance"].values[:n]
                    dens = one["feature_density"].values[:n]
                    b = one["b"].values[:, :n].astype(float)
                    loss = expected_loss(W, b, np.tile(imp, (3, 1)), np.tile(dens, (3, 1)))
                else:
                    loss = one["loss"].values
                seed = int(np.argmin(loss))
                assert int(ana["dimension_seed"].sel(cell)) == seed, (cell, loss)
                phases = recount(W[seed])
                for code, name in enumerate(("ignored", "dedicated", "superposed")):
                    assert int(ana[f"n_{name}"].sel(cell)) == (phases == code).sum(), (cell, name)
                assert int(ana["extra_phase"].sel(cell)) == phases[-1]
                dstar = m / (W[seed] ** 2).sum()
                assert float(ana["dstar"].sel(cell)) == pytest.approx(dstar, rel=1e-5)
                checked += 1
    assert checked == 3 * 2 * 3
    for stem in ("dimension_diagrams", "dimension_boundaries"):
        assert (dimension_store / "figures" / f"{stem}.png").stat().st_size > 20_000


# ---------------------------------------------------------------- against the phase grids

R = "grid.axes.relative_importance=[0.2,0.4]"
P = "grid.axes.density=[log,0.05,1.0,9]"
COMMON = [R, P, "grid.seeds=4", "train.steps=1500", "train.weight_decay=0.0", "train.compile=false"]


@pytest.mark.slow
def test_pair_rows_reproduce_the_phase_and_phase3_grids(tmp_path):
    """The (2, 1) and (3, 2) rows of one dimension store are the phase and phase3 grids' models
    (a model depends only on its seed and shape), and their boundaries lie inside those grids'
    bootstrap bands, located by the per-shape analysis against the phase-grid one."""
    dim = tmp_path / "dim"
    pairs = "grid.axes.shape=[{n_features:2,n_hidden:1},{n_features:3,n_hidden:2}]"
    assert driver.run(make_config(["+grid=dimension", pairs, *COMMON], store=dim)) == 0
    analyse(dim, verbose=False, settings={"figures": []})
    ana = xr.open_zarr(f"{dim}.analysis.zarr")
    store = xr.open_zarr(dim)
    found = 0
    for grid, label, n in (("phase", "2-1", 2), ("phase3", "3-2", 3)):
        ref = tmp_path / grid
        assert driver.run(make_config([f"+grid={grid}", *COMMON], store=ref)) == 0
        analyse(ref, verbose=False, settings={"figures": []})
        ref_store = xr.open_zarr(ref)
        mine = store["W"].sel(shape=label).values[..., : n - 1, :n]
        np.testing.assert_allclose(mine, ref_store["W"].values, rtol=0, atol=1e-6)
        ref_ana = xr.open_zarr(f"{ref}.analysis.zarr")
        b = ref_ana.sel(boundary="superposed|ignored")
        got = ana["extra_boundary_density"].sel(shape=label, extra_boundary="superposed|ignored")
        for r in b["relative_importance"].values:
            want = float(b["boundary_density"].sel(relative_importance=r))
            have = float(got.sel(relative_importance=r))
            assert np.isfinite(want) == np.isfinite(have), (grid, r, want, have)
            if np.isfinite(want):
                lo = float(b["boundary_density_lo"].sel(relative_importance=r))
                hi = float(b["boundary_density_hi"].sel(relative_importance=r))
                assert lo <= have <= hi, (grid, r, have, lo, hi)
                found += 1
    assert found >= 3  # the check saw boundaries, not only rows without one


# ---------------------------------------------------------------- refinement per shape

REFINE = [
    "grid.axes.relative_importance=[0.3]",
    "grid.axes.density=[log,0.05,1.0,3]",
    "refine.levels=2",
    "refine.budget=null",
    "grid.seeds=3",
    "train.steps=1500",
    "train.compile=false",
]


@pytest.mark.slow
def test_each_shape_is_refined_as_its_own_grid(tmp_path):
    """A refined dimension store trains, for each shape, exactly the points (and models) that
    refining that shape's phase grid alone trains: rows are refined on their own."""
    from sweep import refine

    pairs = "grid.axes.shape=[{n_features:2,n_hidden:1},{n_features:3,n_hidden:2}]"
    dim = tmp_path / "dim"
    assert refine.run(make_config(["+grid=dimension-refine", pairs, *REFINE], store=dim)) == 0
    store = xr.open_zarr(dim)
    levels = 0
    for grid, label, n in (("phase-refine", "2-1", 2), ("phase3-refine", "3-2", 3)):
        alone = tmp_path / grid
        assert refine.run(make_config([f"+grid={grid}", *REFINE], store=alone)) == 0
        ref = xr.open_zarr(alone)
        mine = store.sel(shape=label)
        np.testing.assert_array_equal(mine["finished"].values, ref["finished"].values)
        done = ref["finished"].values
        np.testing.assert_array_equal(
            mine["W"].values[..., : n - 1, :n][done], ref["W"].values[done]
        )
        levels = max(levels, len(ref.attrs["refine_points_per_level"]))
    assert levels > 1  # some level refined something, so the comparison saw refinement
    assert store.attrs["refine_seed_ranking"] == "exact expected loss"


# ---------------------------------------------------------------- the explorer


@pytest.mark.browser
def test_explorer_chooses_the_shape_and_a_click_shows_its_models(dimension_store, tmp_path):
    """In the exported explorer of a dimension store (headless Chromium), choosing (n, m) = (3, 2)
    in the shape selector and clicking a cell shows that shape's models: 3 features, W's two
    rows as arrows, the stored loss, b and norms of that cell's seeds."""
    from tests.conftest import ROOT, run_cli
    from tests.test_explore import CELL_XY_JS, CHROMIUM, CHROMIUM_ARGS, READY_JS

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    out = tmp_path / "explorer.html"
    r = run_cli(["-m", "analysis.explore", str(dimension_store), "--export", str(out)], cwd=ROOT)
    assert r.returncode == 0, r.stderr
    store = xr.open_zarr(dimension_store)
    cell = store.isel(shape=1, relative_importance=1, density=1).load()
    assert str(cell["shape"].values) == "3-2"
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1500})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(out.as_uri())
        page.wait_for_function(READY_JS, timeout=60_000)
        page.evaluate("() => { Bokeh.documents[0].get_model_by_name('sel_shape').value = '3-2'; }")
        page.wait_for_timeout(500)
        page.mouse.click(*page.evaluate(CELL_XY_JS, "1,1,1"))
        page.wait_for_selector(".seed-loss", timeout=30_000)
        header = page.locator(".cell-header").inner_text()
        assert "3-2" in header and "model 3 features → 2 hidden" in header, header
        for k, seed in enumerate(cell["seed"].values):
            box = page.locator(f'.seed[data-seed="{int(seed)}"]')
            assert float(box.locator(".seed-loss").inner_text()) == pytest.approx(
                float(cell["loss"].values[k]), rel=1e-5
            )
            W = cell["W"].values[k, :2, :3].astype(float)  # (m, n) = (2, 3): the real block
            norms = [float(v) for v in box.locator(".seed-norms").inner_text().split()]
            np.testing.assert_allclose(norms, np.linalg.norm(W, axis=0), rtol=1e-5, atol=1e-7)
            x1 = page.evaluate(
                f"() => Array.from(Bokeh.documents[0].get_model_by_name('arrows{k}').data.x1)"
            )
            np.testing.assert_allclose(x1, W[0], rtol=1e-6, atol=1e-7)
        page.screenshot(path=str(tmp_path / "explorer-dimension.png"), full_page=True)
        assert not errors, errors
        browser.close()
