"""The paper's experiments (conf/grid/*.yaml): every grid runs and draws its figures at tiny size;
the slow tests check the science of the trained models (lowest-loss seed: local minima exist)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from analysis import aggregate, embedding, metrics, registry, report, steps
from sweep import driver, refine
from sweep.grid import axis_values
from tests.conftest import CONF, make_config

GRIDS = sorted(p.stem for p in (CONF / "grid").glob("*.yaml"))


def tiny_overrides(name: str) -> list[str]:
    """The grid at a size that trains in seconds: 5 steps, 1 seed, the first 2 values per axis."""
    cfg = make_config([f"+grid={name}"])
    axes = {k: axis_values(list(v), k) for k, v in (cfg.grid.axes or {}).items()}
    out = [
        f"+grid={name}",
        "train.steps=5",
        "grid.seeds=1",
        "train.curve_points=5",
        "train.compile=false",
    ]
    for key, values in axes.items():
        out.append(f"grid.axes.{key}=[{','.join(_override_value(v) for v in values[:2])}]")
    if cfg.train.get("snapshots") is not None:
        out.append("train.snapshots=[log,1,5,3]")  # within the 5 steps
    return out


def _override_value(v) -> str:
    """A value in Hydra's override grammar: a mapping (an entry of grid.axes.shape) as {k:v}."""
    if hasattr(v, "items"):
        return "{" + ",".join(f"{k}:{x}" for k, x in v.items()) + "}"
    return str(v)


def best_seed(ds: xr.Dataset) -> xr.Dataset:
    """The lowest-loss seed of each cell of a store."""
    return ds.isel(seed=ds["loss"].argmin("seed"))


@pytest.mark.parametrize("name", GRIDS)
def test_every_grid_runs_and_draws_its_figures(name, tmp_path):
    store = tmp_path / name
    cfg = make_config(tiny_overrides(name), store=store)
    assert (refine.run if cfg.get("refine", {}).get("levels") else driver.run)(cfg) == 0
    before = set(xr.open_zarr(store).data_vars)
    summary = report.analyse(store, tmp_path / "figures", verbose=False)
    paths = [Path(p) for p in summary["figures"]]
    assert paths and all(p.stat().st_size > 1000 for p in paths), paths
    assert {p.suffix for p in paths} == {".png", ".svg"}
    assert set(xr.open_zarr(store).data_vars) == before  # the results store is never modified
    # every family the grid names drew something (phase_diagram only on a phase grid)
    assert summary["figure_families"] == registry.grid_files()[name]["analysis"]["figures"]
    assert summary["skipped"] == [], summary
    assert len({p.stem for p in paths} - {"loss_curves"}) >= 1, paths
    if name == "geometry":
        ana = xr.open_zarr(aggregate.analysis_path(store))
        assert {"sticky_label", "sticky_count", "dimensionality_best"} <= set(ana.data_vars)
        # every present feature is counted once: under a sticky value or as "none"
        assert (ana["sticky_count"].sum("sticky") == ana.sizes["feature"]).all()


@pytest.mark.unit
def test_sticky_labels_of_known_frames():
    """A pentagon, antipodal pairs and a dedicated basis get their sticky names; counts add up."""
    angles = 2 * np.pi * np.arange(5) / 5
    pentagon = np.stack([np.cos(angles), np.sin(angles)])  # (2, 5)
    pairs = np.array([[1.0, -1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0, 0.0]])
    W = np.stack([pentagon, pairs])[:, None]  # (density, seed, hidden, feature)
    ds = xr.Dataset(
        {"W": (("density", "seed", "hidden", "feature"), W)},
        coords={"density": [0.05, 0.5], "seed": [0]},
    ).isel(seed=0)
    sticky = steps.sticky_dataset(ds)
    names = list(sticky["sticky"].values)
    codes = sticky["sticky_label"].values
    assert [names[c] for c in codes[0]] == ["pentagon"] * 5
    assert [names[c] for c in codes[1]] == ["antipodal pair"] * 4 + ["not learned"]
    assert sticky["sticky_count"].sum("sticky").values.tolist() == [5, 5]
    # shares among represented features (norm >= 0.5): the unlearned fifth feature is not one
    assert sticky["represented"].values.tolist() == [5, 4]
    share = sticky["sticky_share"].sel(sticky=["pentagon", "antipodal pair"]).values
    np.testing.assert_array_equal(share, [[1.0, 0.0], [0.0, 1.0]])
    # a dense model spreads every feature over its dimensions: D_i = m/n, nothing represented
    t = 2 * np.pi * np.arange(40)[:, None] * np.array([1, 2]) / 40  # a harmonic tight frame
    q = np.sqrt(2 / 40) * np.concatenate([np.cos(t), np.sin(t)], 1)  # (feature, hidden)
    spread = xr.Dataset({"W": (("density", "hidden", "feature"), q.T[None])},
                        coords={"density": [1.0]})
    dense = steps.sticky_dataset(spread)
    assert int(dense["represented"][0]) == 0
    np.testing.assert_allclose(dense["dimensionality_best"][0], 4 / 40)


@pytest.mark.unit
def test_monosemanticity():
    W = np.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 0.01]])  # (neuron, feature)
    np.testing.assert_allclose(metrics.monosemanticity(W), [1.0, 0.64, np.nan])


# ---------------------------------------------------------------- science (trained models)


@pytest.mark.slow
def test_intro_sparsest_density_is_a_pentagon(tmp_path):
    cfg = make_config(
        ["+grid=intro", "grid.axes.density=[0.05]", "grid.seeds=3", "train.steps=4000"],
        store=tmp_path / "s",
    )
    assert driver.run(cfg) == 0
    W = best_seed(xr.open_zarr(tmp_path / "s").load()).W.values[0]  # (hidden, feature)
    assert np.all(metrics.feature_norms(W) > 0.5), metrics.feature_norms(W)
    np.testing.assert_allclose(metrics.feature_dimensionality(W), 2 / 5, atol=0.04)


@pytest.mark.slow
def test_geometry_dimensions_per_feature_stick_at_one_half(tmp_path):
    """D* = m/‖W‖²_F falls from 1 (dense) to a plateau at 1/2 (antipodal pairs).

    At 100 → 10 (the grid's 400 → 30 is too slow for a test) the plateau spans p ≈ 0.28-0.4
    (the full grid: p ≈ 0.28-0.45).
    """
    cfg = make_config(
        [
            "+grid=geometry",
            "model.n_features=100",
            "model.n_hidden=10",
            "grid.axes.density=[0.6,0.38,0.33,0.28]",
            "train.steps=2000",
        ],
        store=tmp_path / "s",
    )
    assert driver.run(cfg) == 0
    ds = best_seed(xr.open_zarr(tmp_path / "s").load())
    dstar = metrics.dimensions_per_feature(ds.W.transpose("density", "hidden", "feature").values)
    seen = dict(zip(ds.density.values, dstar.round(3), strict=True))
    assert dstar[0] > 0.8, seen  # dense: about one feature per dimension
    assert (np.abs(dstar[1:] - 0.5) < 0.05).sum() >= 2, seen


@pytest.mark.slow
def test_privileged_model_is_monosemantic_when_dense(tmp_path):
    cfg = make_config(
        ["+grid=privileged", "grid.axes.density=[1.0]", "grid.seeds=3"], store=tmp_path / "s"
    )
    assert driver.run(cfg) == 0
    W = best_seed(xr.open_zarr(tmp_path / "s").load()).W.values[0]  # (neuron, feature)
    share = metrics.monosemanticity(W)
    assert np.all(share > 0.9), share  # each neuron's weights sit on one feature
    # and the 5 neurons hold the 5 most important features, one each
    assert sorted(np.abs(W).argmax(-1).tolist()) == [0, 1, 2, 3, 4]


def test_embedding_step_keeps_planar_distances_and_marks_collapsed():
    """Columns of W on a plane inside 3-D: MDS keeps every distance (ρ = 1); the features
    collapsed at the origin are flagged and left out of the "learned" subset."""
    rng = np.random.default_rng(0)
    plane = rng.normal(size=(8, 2)) * 2  # (feature, 2): well away from the origin
    W = np.concatenate([plane, np.zeros((8, 1))], 1).T  # (hidden=3, feature=8)
    W[:, :2] = 0.01  # two collapsed features
    best = xr.Dataset(
        {"W": (("n_hidden", "density", "hidden", "feature"), W[None, None])},
        coords={"n_hidden": [3], "density": [0.1], "feature": np.arange(8)},
    )
    emb = embedding.embedding_dataset(best, threshold=0.5)
    assert emb["collapsed"].values[0].tolist() == [True] * 2 + [False] * 6
    mds = emb.sel(embedding_method="mds", embed_cell=0)
    # SMACOF is iterative and stops at a relative stress change (sklearn's eps), so a planar
    # configuration is recovered up to that tolerance, not exactly: ρ ≥ 0.999 still says every
    # pairwise distance keeps its rank but a handful of near-ties (a random 2-D layout of these
    # points gives ρ ≈ 0.3-0.6; sklearn 1.9 gives 0.99973, earlier releases 1 - 1e-9).
    rho = mds["embedding_rho"].values  # (subset,): all features, learned ones
    assert np.all((rho >= 0.999) & (rho <= 1.0 + 1e-12)), rho
    learned = mds["embedding"].sel(subset="learned").values  # (feature, component)
    assert np.isnan(learned[:2]).all() and np.isfinite(learned[2:]).all()
