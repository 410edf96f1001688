"""The analysis: seed aggregation on hand-made data, agreement with theory, figures (checked as
matplotlib objects), `python -m analysis` on good and bad stores, and a small trained grid."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from analysis import aggregate, theory
from analysis.__main__ import main as analysis_main
from analysis.figs import features, phase, style
from analysis.metrics import ABSENT, DEDICATED, IGNORED, SUPERPOSED
from analysis.report import AnalysisError, analyse, phase_kind
from analysis.settings import SettingsError
from sweep import driver
from sweep.reader import StoreError, config_of
from tests.conftest import cells_written, make_config, run_cli, set_attr

# W (hidden=1, feature=2) of each phase of feature 2 in the 2->1 model
W_OF = {IGNORED: [1.0, 0.0], DEDICATED: [0.0, 1.0], SUPERPOSED: [1.0, -1.0]}


def fake_store(W: np.ndarray, loss: np.ndarray, finished=None, diverged=None) -> xr.Dataset:
    """A store-like dataset: W (r, p, seed, hidden, feature), loss (r, p, seed)."""
    nr, np_, ns, nh, nf = W.shape
    dims = ["relative_importance", "density", "seed"]
    return xr.Dataset(
        {
            "W": (dims + ["hidden", "feature"], W),
            "loss": (dims, loss),
            "finished": (dims, np.ones(loss.shape, bool) if finished is None else finished),
            "diverged": (dims, np.zeros(loss.shape, bool) if diverged is None else diverged),
        },
        coords={
            "relative_importance": np.geomspace(0.1, 10, nr),
            "density": np.geomspace(0.01, 1, np_),
            "seed": np.arange(ns),
            "feature": np.arange(nf),
        },
    )


def one_cell(phases: list[int], losses: list[float], **kw) -> xr.Dataset:
    W = np.array([[W_OF[ph]] for ph in phases], float)[None, None]  # (1, 1, seed, 1, 2)
    return fake_store(W, np.array(losses, float)[None, None], **kw)


def agg_of(ds: xr.Dataset, rule: str = "drop_worst") -> xr.Dataset:
    return aggregate.aggregate_seeds(aggregate.model_metrics(ds, aggregate.Settings()), rule)


# ---------------------------------------------------------------- aggregation


@pytest.mark.unit
def test_drop_worst_drops_highest_loss_seed_and_takes_mode():
    # the worst seed (loss 9) is the only ignored one: dropped, the rest agree
    a = agg_of(one_cell([SUPERPOSED, SUPERPOSED, IGNORED], [1.0, 2.0, 9.0]))
    assert int(a.phase[0, 0, 1]) == SUPERPOSED
    assert not bool(a.seeds_disagree[0, 0])
    assert int(a.n_pooled[0, 0]) == 2 and a.attrs["aggregate"] == "drop_worst"
    # norms are averaged over the kept seeds only: feature 1 has norm 1 in both
    np.testing.assert_allclose(a.norm[0, 0].values, [1.0, 1.0])


@pytest.mark.unit
def test_drop_worst_mode_and_tie_break():
    a = agg_of(one_cell([DEDICATED, IGNORED, IGNORED, SUPERPOSED], [3.0, 2.0, 4.0, 9.0]))
    assert int(a.phase[0, 0, 1]) == IGNORED  # 2 of the 3 kept seeds
    assert bool(a.seeds_disagree[0, 0])
    np.testing.assert_allclose(float(a.phase_share[0, 0, 1]), 2 / 3)
    # a tie (one each) goes to the lowest-loss seed's phase
    tie = agg_of(one_cell([DEDICATED, SUPERPOSED, IGNORED], [3.0, 1.0, 9.0]))
    assert int(tie.phase[0, 0, 1]) == SUPERPOSED and bool(tie.seeds_disagree[0, 0])


@pytest.mark.unit
def test_lowest_loss_rule():
    ds = one_cell([DEDICATED, SUPERPOSED, IGNORED], [3.0, 1.0, 2.0])
    a = agg_of(ds, "lowest_loss")
    assert int(a.phase[0, 0, 1]) == SUPERPOSED and a.attrs["aggregate"] == "lowest_loss"
    np.testing.assert_allclose(float(a.loss[0, 0]), 1.0)
    assert bool(a.seeds_disagree[0, 0])  # pooled over all usable seeds
    with pytest.raises(ValueError, match="aggregate rule 'median'"):
        agg_of(ds, "median")


@pytest.mark.unit
def test_diverged_and_unfinished_are_left_out_and_counted():
    W = np.array([[[W_OF[SUPERPOSED]], [W_OF[IGNORED]], [W_OF[SUPERPOSED]]]] * 2, float)
    W = W[None]  # (1 r, 2 p, 3 seeds, 1, 2)
    loss = np.array([[[1.0, 0.5, 2.0], [1.0, 1.0, 1.0]]])
    diverged = np.zeros(loss.shape, bool)
    diverged[0, 0, 1] = True  # the lowest loss, but diverged: must not count
    finished = np.ones(loss.shape, bool)
    finished[0, 1] = False  # the second cell is unfinished
    ds = fake_store(W, loss, finished, diverged)
    a = aggregate.analyse_store(ds, aggregate.Settings(aggregate="lowest_loss"))
    assert int(a.phase[0, 0, 1]) == SUPERPOSED and int(a.n_usable[0, 0]) == 2
    assert bool(a.missing[0, 1]) and int(a.phase[0, 1, 1]) == ABSENT
    assert np.isnan(a.norm[0, 1]).all()
    assert a.attrs["n_unfinished"] == 3 and a.attrs["n_diverged"] == 1
    assert a.attrs["n_missing_cells"] == 1
    # drop_worst with a single usable seed keeps it
    ds2 = fake_store(W, loss, finished, np.array([[[True, False, True], [False] * 3]]))
    b = aggregate.analyse_store(ds2, aggregate.Settings())
    assert int(b.phase[0, 0, 1]) == IGNORED and int(b.n_pooled[0, 0]) == 1


@pytest.mark.unit
def test_settings_from_config():
    assert aggregate.Settings.from_config({}) == aggregate.Settings()
    assert aggregate.Settings.from_config({"analysis": {"run": True}}).aggregate == "drop_worst"
    s = aggregate.Settings.from_config(
        {"analysis": {"aggregate": "lowest_loss", "norm_threshold": 0.3}}
    )
    assert s.aggregate == "lowest_loss" and s.norm_threshold == 0.3
    with pytest.raises(ValueError) as e:
        aggregate.Settings.from_config({"analysis": {"aggregate": "best"}})
    assert str(e.value) == (
        "analysis.aggregate=best is not allowed: expected one of drop_worst, lowest_loss"
    )
    with pytest.raises(ValueError, match=r"analysis.norm_threshold=-1 is not allowed: expected a"):
        aggregate.Settings.from_config({"analysis": {"norm_threshold": -1}})
    # the caller's settings win over the store's, None leaves the store's value
    s = aggregate.Settings.from_config({"analysis": {"aggregate": "lowest_loss"}})
    t = s.updated({"norm_threshold": 0.9, "aggregate": None, "figures": "a, b"})
    assert (t.aggregate, t.norm_threshold, t.figures) == ("lowest_loss", 0.9, ("a", "b"))


def analytic_store(kind: str = "2to1", n: int = 8) -> xr.Dataset:
    """Analysis of a fake 2->1 store whose every seed sits at the closed-form optimum."""
    r, p = np.geomspace(0.1, 10, n), np.geomspace(0.01, 1, n)
    phases = theory.analytic_phase_map(kind, r, p).values
    W = np.array([W_OF[c] for c in phases.ravel()]).reshape(n, n, 1, 1, 2).repeat(3, 2)
    ds = fake_store(W, np.random.default_rng(0).random((n, n, 3)))
    return aggregate.analyse_store(ds, aggregate.Settings())


@pytest.mark.unit
def test_agreement_counts_only_cells_away_from_boundaries():
    agg = analytic_store()
    a = aggregate.compare_with_theory(agg, "2to1")
    # plumbing: a store built from the closed form agrees with it by construction; the real
    # check is tests/test_pins.py (agreement recomputed from the paper's inequalities)
    assert a.attrs["agreement"] == 1.0
    near = theory.near_boundary("2to1", agg.relative_importance.values, agg.density.values)
    assert a.attrs["n_compared"] == int((~near).sum()) > 0
    # flip one compared cell and one near-boundary cell: only the first counts
    far_i, far_j = np.argwhere(~near.values)[0]
    near_i, near_j = np.argwhere(near.values)[0]
    for i, j in ((far_i, far_j), (near_i, near_j)):
        agg["phase"][i, j, 1] = (int(agg["phase"][i, j, 1]) + 1) % 3
    agg["missing"][-1, -1] = True  # a missing cell is left out as well
    b = aggregate.compare_with_theory(agg, "2to1")
    n = int((~near.values).sum()) - (0 if near.values[-1, -1] else 1)
    assert b.attrs["n_compared"] == n
    np.testing.assert_allclose(b.attrs["agreement"], (n - 1) / n)


# ---------------------------------------------------------------- figures


def test_phase_diagram_figure():
    a = aggregate.compare_with_theory(analytic_store(), "2to1")
    a["missing"][0, 0] = True
    a["phase"][0, 0, :] = ABSENT
    a["seeds_disagree_feature"][1, 1, 1] = True
    fig = phase.phase_diagram(a, "2to1")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_xlabel() == "relative importance r of feature 2"
    assert ax.get_ylabel() == "density p = 1 − S"
    assert "agreement with theory: 100.0%" in ax.get_title()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    for name in ("ignored", "dedicated", "superposed", "seeds disagree", "analytic boundary"):
        assert name in legend
    assert any("missing" in t for t in legend)
    # the axis spans the cells' log-space edges, symmetric around the first and last centre
    lo, hi = ax.get_xlim()
    np.testing.assert_allclose(np.log(0.1) - np.log(lo), np.log(hi) - np.log(10), rtol=1e-9)
    hatches = {p.get_hatch() for p in ax.patches}
    assert {style.MISSING_HATCH, style.DISAGREE_HATCH} <= hatches


def test_feature_heatmaps_figure():
    fig = features.feature_heatmaps(analytic_store())
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(axes) == 4  # (norm, superposition) x 2 features
    for ax in axes:
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert axes[2].get_xlabel() == "relative importance r"
    assert axes[0].get_ylabel() == "density p = 1 − S"


@pytest.mark.unit
def test_cell_edges_are_log_midpoints():
    e = style.cell_edges(np.array([0.01, 0.1, 1.0]), log=True)
    np.testing.assert_allclose(e, [10**-2.5, 10**-1.5, 10**-0.5, 10**0.5])
    assert style.is_log_axis([0.01, 1]) and not style.is_log_axis([1, 2, 3])


# ---------------------------------------------------------------- real stores and the CLI


def tree_state(path: Path) -> dict:
    """(mtime, sha256) of every file under path: to prove a store was not touched."""
    return {
        str(p.relative_to(path)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def phase_store(tmp_path_factory) -> Path:
    """A tiny trained 2->1 phase store (3 x 3 cells, 2 seeds, 40 steps)."""
    store = tmp_path_factory.mktemp("an") / "phase"
    cfg = make_config(
        [
            "+grid=phase",
            "train.steps=40",
            "grid.seeds=2",
            "grid.axes.density=[log,0.01,1.0,3]",
            "grid.axes.relative_importance=[log,0.1,10,3]",
        ],
        store=store,
    )
    assert driver.run(cfg) == 0
    return store


@pytest.fixture(scope="module")
def other_store(tmp_path_factory) -> Path:
    """A store that is no phase grid: name 'mystery', 3 -> 1, one density axis."""
    store = tmp_path_factory.mktemp("an") / "mystery"
    cfg = make_config(
        [
            "name=mystery",
            "model.n_features=3",
            "train.steps=5",
            "grid.seeds=1",
            "+grid.axes.density=[0.1,1.0]",
        ],
        store=store,
    )
    assert driver.run(cfg) == 0
    return store


def copy_store(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("figures"))
    return dst


def test_analyse_writes_figures_and_analysis_beside(phase_store, tmp_path, capsys):
    store = copy_store(phase_store, tmp_path / "phase")
    before = tree_state(store)
    assert analysis_main([str(store)]) == 0
    out = capsys.readouterr().out
    # conf/grid/phase.yaml: the lowest-loss seed is the phase (README, phase diagrams)
    assert out.startswith("agreement with theory (2to1, rule lowest_loss): ")
    figs = store / "figures"
    stems = ("phase_diagram_2to1", "boundaries_2to1", "boundary_distance_2to1")
    for stem in (*stems, "feature_panels", "loss_curves"):
        for ext in ("png", "svg"):
            f = figs / f"{stem}.{ext}"
            assert f.stat().st_size > 1000 and f"figure: {f}" in out
    ana = xr.open_zarr(aggregate.analysis_path(store))
    assert ana.attrs["aggregate"] == "lowest_loss"
    assert ana.boundary_density.dims == ("boundary", "relative_importance")
    assert ana.phase.dims == ("relative_importance", "density", "feature")
    # the agreement recomputed from the stored cells (`0 <= agreement <= 1` could not fail)
    r, p = ana.relative_importance.values, ana.density.values
    far = ~theory.near_boundary("2to1", r, p).values & ~ana.missing.values
    hit = ana.phase.values[..., -1] == theory.analytic_phase_2to1(r[:, None], p[None, :])
    np.testing.assert_allclose(ana.attrs["agreement"], hit[far].mean() if far.any() else np.nan)
    assert not list(tmp_path.glob(".*tmp*"))  # the temporary copy was renamed away
    # the results store itself is unchanged (only figures/ was added inside it)
    assert {k: v for k, v in tree_state(store).items() if not k.startswith("figures")} == before
    # a second run replaces the analysis dataset in place
    s = analyse(store, verbose=False)
    assert s["kind"] == "2to1" and s["n_unfinished"] == 0 and len(s["figures"]) == 10


def test_generic_store_gets_panels(tmp_path):
    store = tmp_path / "default"
    cfg = make_config(
        [
            "model.n_features=5",
            "model.n_hidden=2",
            "train.steps=5",
            "grid.seeds=2",
            "+grid.axes.density=[0.1,0.3,1.0]",
        ],
        store=store,
    )
    assert driver.run(cfg) == 0
    s = analyse(store, figures_dir=tmp_path / "figs", verbose=False)
    assert s["kind"] is None and s["agreement"] is None
    assert sorted(Path(p).name for p in s["figures"]) == [
        "feature_panels.png",
        "feature_panels.svg",
        "loss_curves.png",
        "loss_curves.svg",
    ]
    ana = xr.open_zarr(aggregate.analysis_path(store))
    fig = features.feature_overview(ana)
    assert fig.axes[1].get_xscale() == "log" and "density" in fig.axes[1].get_xlabel()


def test_unfinished_cells_warn_and_show_missing(phase_store, tmp_path, capsys):
    store = copy_store(phase_store, tmp_path / "phase")
    with cells_written(store, (0, slice(None), slice(None)), finished=False):
        pass  # the first relative importance: 3 cells x 2 seeds
    assert analysis_main([str(store)]) == 0
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: 6 of 18 models unfinished")
    assert "3 cells missing" in lines[0]
    ana = xr.open_zarr(aggregate.analysis_path(store))
    assert ana.missing[0].all() and not ana.missing[1:].any()
    assert (store / "figures" / "phase_diagram_2to1.png").stat().st_size > 1000


def _bad_schema(src: Path, dst: Path) -> Path:
    return set_attr(copy_store(src, dst), "schema_version", 99)


def _foreign_zarr(dst: Path) -> Path:
    xr.Dataset({"x": ("i", np.arange(3))}).to_zarr(dst, zarr_format=2, consolidated=True)
    return dst


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "no such store"),
        ("file", "is a file, not a store"),
        ("empty", "an empty directory, not a store"),
        ("foreign", "not a toysweep results store"),
        ("schema", "schema_version=99 but this toysweep reads schema_version=3"),
        ("not_a_mapping", "config_yaml attr cannot be read back"),
        (
            "bad_settings",
            "analysis.aggregate=median is not allowed: expected one of drop_worst, lowest_loss",
        ),
    ],
)
def test_bad_input_one_line_and_untouched(
    case, message, tmp_path, phase_store, other_store, capsys
):
    path = tmp_path / case
    if case == "file":
        path.write_text("not a store")
    elif case == "empty":
        path.mkdir()
    elif case == "foreign":
        _foreign_zarr(path)
    elif case == "schema":
        _bad_schema(phase_store, path)
    elif case == "not_a_mapping":
        set_attr(copy_store(other_store, path), "config_yaml", "[1, 2]")
    elif case == "bad_settings":
        cfg = config_of(xr.open_zarr(other_store))
        cfg["analysis"]["aggregate"] = "median"
        text = yaml.safe_dump(cfg, sort_keys=False)
        set_attr(copy_store(other_store, path), "config_yaml", text)
    before = tree_state(path) if path.is_dir() else None
    assert analysis_main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err and str(path) in err
    if before is not None:
        assert tree_state(path) == before and not (path / "figures").exists()
    assert not aggregate.analysis_path(path).exists()


def test_cli_exit_code_and_stderr(tmp_path):
    r = run_cli(["-m", "analysis", str(tmp_path / "nope")], cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == f"error: {tmp_path / 'nope'}: no such store"


def test_errors_are_typed(tmp_path, other_store):
    with pytest.raises(StoreError):
        analyse(tmp_path / "nope")
    with pytest.raises(StoreError, match="config_yaml attr cannot be read back"):
        analyse(set_attr(copy_store(other_store, tmp_path / "s"), "config_yaml", "[1]"))
    with pytest.raises(SettingsError):
        analyse(other_store, settings={"figures": ["nope"]})
    # a store whose config names a family this analysis lacks: refused, unless the caller picks
    cfg = config_of(xr.open_zarr(other_store))
    cfg["analysis"]["figures"] = ["renamed_family"]
    text = yaml.safe_dump(cfg, sort_keys=False)
    renamed = set_attr(copy_store(other_store, tmp_path / "r"), "config_yaml", text)
    with pytest.raises(AnalysisError, match="analysis.figures=renamed_family is not allowed"):
        analyse(renamed)
    s = analyse(renamed, settings={"figures": ["loss_curves"]}, verbose=False)
    assert [Path(p).name for p in s["figures"]] == ["loss_curves.png", "loss_curves.svg"]


def test_phase_kind_detection(phase_store, other_store):
    for store, kind in ((phase_store, "2to1"), (other_store, None)):
        ds = xr.open_zarr(store)
        assert phase_kind(config_of(ds), ds) == kind


# ---------------------------------------------------------------- science


@pytest.mark.slow
def test_trained_2to1_grid_agrees_with_theory(tmp_path):
    """6 x 6 cells x 3 seeds, 4,000 steps: >= 95 % of cells away from boundaries agree."""
    store = tmp_path / "phase"
    cfg = make_config(
        [
            "+grid=phase",
            "train.steps=4000",
            "grid.seeds=3",
            "grid.axes.density=[log,0.01,1.0,6]",
            "grid.axes.relative_importance=[log,0.1,10,6]",
        ],
        store=store,
    )
    assert driver.run(cfg) == 0
    s = analyse(store, verbose=False)
    assert s["n_compared"] >= 15
    assert s["agreement"] >= 0.95, s


@pytest.mark.unit
def test_3to2_phase_diagram_and_kind():
    W3 = {  # (hidden=2, feature=3) of each phase of feature 3 in the 3->2 model
        IGNORED: [[1, 0, 0], [0, 1, 0]],
        DEDICATED: [[1, -1, 0], [0, 0, 1]],
        SUPERPOSED: [[1, 0, 0], [0, 1, -1]],
    }
    n = 6
    r, p = np.geomspace(0.1, 10, n), np.geomspace(0.01, 1, n)
    phases = theory.analytic_phase_map("3to2", r, p).values
    W = np.array([W3[c] for c in phases.ravel()], float).reshape(n, n, 1, 2, 3).repeat(2, 2)
    ds = fake_store(W, np.random.default_rng(1).random((n, n, 2)))
    a = aggregate.compare_with_theory(aggregate.analyse_store(ds, aggregate.Settings()), "3to2")
    # plumbing (built from the closed form itself); the 3->2 closed form is checked against the
    # exact minimum in tests/test_theory.py and trained models in tests/test_science_boundaries.py
    assert a.attrs["agreement"] == 1.0
    fig = phase.phase_diagram(a, "3to2")
    assert fig.axes[0].get_xlabel() == "relative importance r of feature 3"
    assert fig.axes[0].get_xscale() == "log" and fig.axes[0].get_yscale() == "log"
    cfg = {
        "model": {"kind": "relu", "n_features": 3, "n_hidden": 2},
        "data": {
            "importance": {"schedule": "constant", "value": 1.0},
            "relative_importance_features": [2],
            "density_features": None,
        },
    }
    assert phase_kind(cfg, ds) == "3to2"
    cfg["data"]["relative_importance_features"] = [0]
    assert phase_kind(cfg, ds) is None
