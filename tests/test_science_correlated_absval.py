"""Correlated and anticorrelated feature sets, and the absolute-value model, trained."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from analysis.figs.neurons import neuron_weights
from analysis.metrics import set_cosines
from analysis.report import analyse
from sweep import driver
from tests.conftest import make_config


def best(ds: xr.Dataset, **sel) -> np.ndarray:
    cell = ds.sel(**sel)
    return cell.W.isel(seed=int(np.argmin(cell.loss.values))).values


@pytest.mark.slow
def test_correlated_orthogonal_anticorrelated_antipodal(tmp_path):
    cfg = make_config(
        ["+grid=correlated", "train.steps=2000", "grid.seeds=3", "grid.axes.density=[0.1,0.3]"],
        store=tmp_path / "c",
    )
    assert driver.run(cfg) == 0
    ds = xr.open_zarr(tmp_path / "c").load()
    within, _ = set_cosines(best(ds, correlation="correlated", density=0.1), 2)
    assert abs(within) < 0.2
    within, across = set_cosines(best(ds, correlation="anticorrelated", density=0.3), 2)
    assert within < -0.9 and abs(across) < 0.2


def test_absval_store_and_figures(tmp_path):
    cfg = make_config(
        [
            "+grid=absval",
            "model.n_features=3",
            "model.n_hidden=6",
            "train.steps=200",
            "grid.axes.density=[1.0,0.1]",
        ],
        store=tmp_path / "a",
    )
    assert driver.run(cfg) == 0
    ds = xr.open_zarr(tmp_path / "a")
    assert ds.W_out.shape == ds.W.shape == (2, 1, 6, 3)
    assert np.isfinite(ds.W_out.values).all() and bool(ds.finished.all())
    summary = analyse(tmp_path / "a", verbose=False)
    assert any(str(p).endswith("neuron_weights.png") for p in summary["figures"])


def test_neuron_weights_scaled_and_ordered():
    W = np.array([[0.0, 2.0, -1.0], [4.0, 0.0, 1.0]])
    scaled = neuron_weights(W)
    np.testing.assert_allclose(np.abs(scaled).max(1), 1.0)
    np.testing.assert_allclose(scaled[0], [1.0, 0.0, 0.25])  # neuron 1 (feature 0) first
