"""The public API (toysweep/): its numbers against a recount from the stored weights and
against the CLI's own analysis, its refusals, and a sweep that stores what the CLI stores."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr
from matplotlib.collections import QuadMesh
from matplotlib.figure import Figure

import toysweep
from analysis import registry
from analysis.report import analyse
from sweep import driver
from sweep.quadrature import expected_loss
from sweep.reader import open_store
from tests.conftest import cells_written, make_config, run_cli

R, P = "relative_importance", "density"
TINY = ["train.steps=300", "grid.seeds=2", "train.compile=false", "train.curve_points=5"]
AXES = ["grid.axes.relative_importance=[log,0.1,10,3]", "grid.axes.density=[log,0.01,1,3]"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A trained 2->1 phase store, 3 x 3 cells, 2 seeds (r, p both 0.1..10 / 0.01..1)."""
    path = tmp_path_factory.mktemp("api") / "phase"
    assert driver.run(make_config(["+grid=phase", *TINY, *AXES], store=path)) == 0
    return path


def recount(W: np.ndarray, norm_t: float, sup_t: float) -> np.ndarray:
    """Phase codes (..., feature) from W (..., hidden, feature), written from the definitions:
    ignored if ‖W_i‖ < norm_t; else superposed if Σ_j≠i (W_i·W_j / ‖W_i‖)² >= sup_t."""
    W = W.astype(float)
    norms = np.sqrt((W**2).sum(-2))  # (..., feature)
    dots = np.einsum("...hi,...hj->...ij", W, W)  # (..., feature, feature)
    n = W.shape[-1]
    sup = np.zeros(norms.shape)
    for i in range(n):
        for j in range(n):
            if i != j:
                sup[..., i] += (dots[..., i, j] / norms[..., i]) ** 2
    return np.where(norms < norm_t, 0, np.where(sup >= sup_t - 1e-9, 2, 1))


@pytest.mark.unit
def test_open_is_lazy_and_refuses_what_is_not_a_store(store, tmp_path):
    ds = toysweep.open(store)
    assert "dask" in type(ds["W"].data).__module__  # nothing read yet
    assert ds.toysweep.cell(relative_importance=1, density=0.1)["W"].shape == (2, 1, 2)
    plain = tmp_path / "plain.zarr"
    xr.Dataset({"x": ("a", [1.0])}).to_zarr(plain, zarr_format=2, consolidated=True)
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    for bad in (tmp_path / "nothing", tmp_path / "file", tmp_path / "empty", plain):
        with pytest.raises(toysweep.StoreError) as api:
            toysweep.open(bad)
        with pytest.raises(toysweep.StoreError) as engine:
            open_store(bad)
        assert str(api.value) == str(engine.value) and "\n" not in str(api.value)
    assert not (tmp_path / "nothing").exists()


@pytest.mark.unit
def test_finished_only_masks_unfinished_models_and_drops_empty_labels(store, tmp_path):
    part = tmp_path / "part"
    shutil.copytree(store, part)
    with cells_written(part, (slice(None), 2, slice(None)), finished=False):
        pass  # the densest column (r, p, seed): nothing finished
    with cells_written(part, (0, 0, 1), finished=False):
        pass  # one model
    ds = toysweep.open(part, finished_only=True)
    full = toysweep.open(part)
    assert list(ds[P].values) == list(full[P].values[:2])  # the empty column is dropped
    assert "dask" in type(ds["W"].data).__module__
    W, W_full = ds["W"].values, full["W"].isel({P: slice(0, 2)}).values
    assert np.isnan(W[0, 0, 1]).all() and np.isnan(ds["loss"].values[0, 0, 1])
    keep = np.ones(W.shape[:3], bool)
    keep[0, 0, 1] = False
    np.testing.assert_array_equal(W[keep], W_full[keep])
    assert not ds["finished"].values[0, 0, 1]  # flags are kept, not masked


@pytest.mark.unit
def test_phases_equal_a_recount_from_the_stored_weights(store):
    ds = toysweep.open(store)
    W = ds["W"].transpose(R, P, "seed", "hidden", "feature").values
    for norm_t, sup_t in ((0.5, 0.5), (0.9, 0.2)):
        ph = ds.toysweep.phases(norm_threshold=norm_t, superposition_threshold=sup_t)
        truth = recount(W, norm_t, sup_t)
        got = ph["phase_seed"].transpose(R, P, "seed", "feature").values
        np.testing.assert_array_equal(got, truth)
    # The cell's phase (rule lowest_loss): the phase of the seed with the lowest exact
    # expected loss (quadrature of the stored W, b).
    ph = ds.toysweep.phases(rule="lowest_loss")
    b = ds["b"].transpose(R, P, "seed", "feature").values
    imp = ds["importance"].transpose(R, P, "feature").values
    dens = ds["feature_density"].transpose(R, P, "feature").values
    truth = recount(W, 0.5, 0.5)
    for i in range(W.shape[0]):
        for j in range(W.shape[1]):
            losses = expected_loss(
                W[i, j].astype(float), b[i, j].astype(float), imp[i, j][None], dens[i, j][None]
            )
            best = int(np.argmin(losses))
            np.testing.assert_array_equal(
                ph["phase"].transpose(R, P, "feature").values[i, j], truth[i, j, best]
            )
    assert ph["phase"].attrs["flag_meanings"] == "absent ignored dedicated superposed"
    assert "dask" in type(ds["W"].data).__module__  # the analysis read a copy: ds stays lazy


@pytest.mark.unit
def test_agreement_boundaries_and_analysis_are_the_clis(store, tmp_path):
    summary = analyse(store, tmp_path / "figs", verbose=False, settings={"figures": []})
    written = xr.open_zarr(summary["analysis"])
    ds = toysweep.open(store)
    ag = ds.toysweep.agreement()
    assert ag.attrs["agreement"] == summary["agreement"]
    assert ag.attrs["n_compared"] == summary["n_compared"]
    # physics, not code: dense features and one dimension hold only the more important one
    analytic = ag["analytic_phase"]
    assert int(analytic.sel({R: 0.1, P: 1.0})) == 0  # the extra feature: ignored
    assert int(analytic.sel({R: 10.0, P: 1.0})) == 1  # dedicated
    bd = ds.toysweep.boundaries()
    for name in ("boundary_density", "boundary_density_lo", "boundary_density_hi"):
        np.testing.assert_array_equal(bd[name].values, written[name].values)
    full = ds.toysweep.analysis()
    for name in ("phase", "best_seed", "agrees", "dimensionality_best"):
        np.testing.assert_array_equal(full[name].values, written[name].values)


@pytest.mark.unit
def test_cell_gives_its_models_and_gram(store):
    ds = toysweep.open(store)
    cell = ds.toysweep.cell(relative_importance=9.0, density=0.012)  # nearest: 10, 0.01
    W = ds["W"].sel({R: 10.0, P: 0.01}).transpose("seed", "hidden", "feature").values
    np.testing.assert_array_equal(cell["W"].transpose("seed", "hidden", "feature").values, W)
    np.testing.assert_allclose(cell["gram"].values, np.stack([w.T @ w for w in W]), rtol=1e-6)
    with pytest.raises(ValueError, match=r"expected one coordinate per grid axis") as e:
        ds.toysweep.cell(density=0.1)
    assert "\n" not in str(e.value)


@pytest.mark.unit
def test_cell_of_a_shape_grid_has_no_padding(tmp_path):
    path = tmp_path / "shapes"
    axes = ["grid.axes.relative_importance=[1.0]", "grid.axes.density=[0.1]"]
    shape_axes = ["+grid.axes.n_features=[2,3]", "+grid.axes.model=[relu,linear]"]
    assert driver.run(make_config(["+grid=phase", *TINY, *axes, *shape_axes], store=path)) == 0
    ds = toysweep.open(path)
    cell = ds.toysweep.cell(relative_importance=1, density=0.1, n_features=2, model="linear")
    W = ds["W"].sel(n_features=2, model="linear").isel({R: 0, P: 0})
    assert cell["W"].shape == (2, 1, 2) and not np.isnan(cell["gram"].values).any()
    W = W.transpose("seed", "hidden", "feature").values
    np.testing.assert_array_equal(
        cell["W"].transpose("seed", "hidden", "feature").values, W[..., :2]
    )
    with pytest.raises(ValueError, match=r"model='tanh' is not on the grid: expected one of"):
        ds.toysweep.cell(relative_importance=1, density=0.1, n_features=2, model="tanh")


@pytest.mark.unit
def test_figures_draw_into_an_axes_or_refuse_in_one_line(store):
    ds = toysweep.open(store)
    fig = toysweep.figure("phase_diagram", store)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert set(toysweep.figures("boundaries", ds)) == {"boundaries_2to1", "boundary_distance_2to1"}
    mine, ax = plt.subplots()
    assert toysweep.figure("phase_diagram", ds, ax=ax) is mine
    mesh = [c for c in ax.collections if isinstance(c, QuadMesh)]
    cells = ds.toysweep.phases()["phase"].isel(feature=-1).transpose(R, P).values
    np.testing.assert_array_equal(np.asarray(mesh[0].get_array()).reshape(3, 3), cells.T)
    assert set(registry.AXES) <= set(registry.FIGURES)
    for name, kw, match in (
        ("loss_curves", {"ax": ax}, "has no single-axes form"),
        ("boundaries", {}, "draws 2 figures"),
        ("nope", {}, "figures=nope is not allowed"),
    ):
        with pytest.raises((toysweep.AnalysisError, toysweep.SettingsError), match=match) as e:
            toysweep.figure(name, ds, **kw)
        assert "\n" not in str(e.value)
    plt.close("all")


@pytest.mark.unit
def test_sweep_refuses_a_bad_setting_in_this_process_and_creates_nothing(tmp_path, monkeypatch):
    def no_child(*a, **k):
        raise AssertionError("a refused sweep must not start the CLI")

    monkeypatch.setattr(toysweep.run.subprocess, "Popen", no_child)
    target = tmp_path / "s"
    cases = (
        (["train.steps=-1"], "train.steps=-1 is not allowed: expected an integer in [1, "),
        (["grid.seeds=0"], "grid.seeds=0 is not allowed"),
        (["analysis.figures=[nope]"], "analysis.figures=nope is not allowed"),
    )
    for overrides, start in cases:
        with pytest.raises(toysweep.SweepError) as e:
            toysweep.sweep("phase", [*overrides, f"store.path={target}"], echo=False)
        assert str(e.value).startswith(start) and "\n" not in str(e.value), str(e.value)
        assert e.value.code == 2
    with pytest.raises(toysweep.SweepError, match="grid='nope'"):
        toysweep.sweep("nope", [f"store.path={target}"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_sweep_runs_the_cli(tmp_path):
    """toysweep.sweep stores the numbers the command line stores; a bad override raises with
    the very line the CLI prints. (Two CLI runs and one refused: ~40 s on the 2-core CPU.)"""
    args = ["+grid=phase", *TINY, *AXES, "progress=false", "analysis.run=false"]
    cli = run_cli(["-m", "sweep", *args, f"store.path={tmp_path / 'cli'}"], tmp_path)
    assert cli.returncode == 0, cli.stderr
    got = toysweep.sweep("phase", [*args[1:], f"store.path={tmp_path / 'api'}"], echo=False)
    assert got == (tmp_path / "api").resolve()
    a, b = toysweep.open(got), toysweep.open(tmp_path / "cli")
    assert a.attrs["fingerprint"] == b.attrs["fingerprint"]
    for name in ("W", "b", "loss", "loss_curve", "finished", "diverged"):
        np.testing.assert_array_equal(a[name].values, b[name].values)
    bad = ["+grid=phase", "train.lr=-1", f"store.path={tmp_path / 'bad'}"]
    cli = run_cli(["-m", "sweep", *bad], tmp_path)
    with pytest.raises(toysweep.SweepError) as e, warnings.catch_warnings():
        toysweep.sweep("phase", bad[1:], echo=False)
    assert cli.returncode == 2 and cli.stderr.strip() == f"error: {e.value}"
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_an_interrupt_reaches_the_cli_and_is_raised_again(tmp_path, capfd):
    """Ctrl-C in a notebook reaches only its kernel: toysweep.sweep passes it on, the CLI stops
    with its one line and keeps the store, and the interrupt is raised again."""
    store = tmp_path / "s"

    def interrupt_once_training() -> None:  # the store's template: the CLI is past its checks
        deadline = time.monotonic() + 600
        while not (store / ".zmetadata").exists():
            if time.monotonic() > deadline:
                return  # never interrupt pytest itself; the assertion below then fails
            time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_once_training, daemon=True).start()
    overrides = [*TINY, *AXES, "train.steps=2000000", "progress=false", f"store.path={store}"]
    with pytest.raises(KeyboardInterrupt):
        toysweep.sweep("phase", overrides)
    said = capfd.readouterr().out.strip().splitlines()
    assert said[-1].startswith("error: interrupted"), said[-5:]
    assert toysweep.open(store)["W"].shape[:2] == (3, 3)  # the store is kept, and opens
