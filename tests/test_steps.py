"""Analysis steps of issue 14 checked against constructed truths: jumps in D_i over training,
the |x| check of the absval model, the pentagon's split under one feature's sparsity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from analysis import steps
from analysis.context import Context
from analysis.settings import Settings

pytestmark = pytest.mark.unit


def test_jumps_found_where_d_changes_fast_and_only_there():
    t = np.unique(np.geomspace(10, 10000, 60).round())
    # feature 0: a plateau at 1/2, a step down to 3/8 between two snapshots near step 1000;
    # feature 1: drifts smoothly by 0.05 per decade (no jump); feature 2: two separated
    # transitions (0 -> 1/2 around step 50, 1/2 -> 1 around 5000)
    D = np.zeros((len(t), 3))
    D[:, 0] = np.where(t < 1000, 0.5, 0.375)
    D[:, 1] = 0.3 + 0.05 * np.log10(t)
    D[:, 2] = 0.5 / (1 + (50 / t) ** 8) + 0.5 / (1 + (5000 / t) ** 8)
    jump, n = steps.find_jumps(D[None], t)
    marked = t[jump[0]]
    assert len(marked) == 3, marked
    assert 35 <= marked[0] <= 75 and 900 <= marked[1] <= 1100 and 3500 <= marked[2] <= 7000
    assert list(n[0][jump[0]]) == [1, 1, 1]
    # smooth drift alone never jumps, however densely it is sampled
    dense = np.unique(np.geomspace(10, 10000, 300).round())
    j, _ = steps.find_jumps((0.3 + 0.05 * np.log10(dense))[None, :, None], dense)
    assert not j.any()


def _ctx(store: xr.Dataset, config: dict) -> Context:
    cells = [d for d in store["loss"].dims if d != "seed"]
    analysis = xr.Dataset(
        {
            "best_seed": (cells, np.zeros([store.sizes[d] for d in cells], np.int64)),
            "missing": (cells, np.zeros([store.sizes[d] for d in cells], bool)),
        },
        coords={d: store[d].values for d in cells},
    )
    return Context(Path("x"), store, analysis, config, Settings(), None)


def test_absval_step_on_the_exact_solution():
    """Two neurons per feature, ReLU(x_i) and ReLU(-x_i), summed: y' = |x| exactly (R² = 1,
    one feature per neuron); a neuron reading two features has participation ratio 2."""
    n = 3
    W = np.concatenate([np.eye(n), -np.eye(n)])  # (hidden 2n, feature n)
    W_out = np.concatenate([np.eye(n), np.eye(n)])  # stored (hidden, feature)
    mixed = W.copy()
    mixed[0, 1] = 1.0  # neuron 0 reads features 0 and 1 equally
    Ws = np.stack([W, mixed])[:, None]  # (density, seed, hidden, feature)
    store = xr.Dataset(
        {
            "W": (("density", "seed", "hidden", "feature"), Ws),
            "W_out": (("density", "seed", "hidden", "feature"), np.stack([W_out, W_out])[:, None]),
            "b": (("density", "seed", "feature"), np.zeros((2, 1, n))),
            "loss": (("density", "seed"), np.zeros((2, 1))),
            "feature_density": (("density", "feature"), np.ones((2, n))),
        },
        coords={"density": [1.0, 0.5], "seed": [0]},
    )
    out = steps.absval(_ctx(store, {}))
    np.testing.assert_allclose(out["absval_r2"].sel(density=1.0), 1.0, atol=1e-12)
    np.testing.assert_allclose(out["features_per_neuron"].sel(density=1.0), 1.0)
    assert float(out["features_per_neuron"].sel(density=0.5)[0]) == 2.0
    # the mixed neuron adds x_1 to feature 0's output where x_0 > 0: no longer exact
    assert float(out["absval_r2"].sel(density=0.5)[0]) < 0.9


def _pentagon() -> np.ndarray:
    a = 2 * np.pi * np.arange(5) / 5
    return np.stack([np.cos(a), np.sin(a)])  # (2, 5)


def test_perturbation_step_measures_the_split_ratio():
    base = 0.05
    k = np.array([0.5, 1.0, 2.0, 3.0, 4.0])
    digons = np.array([[0.0, 1, -1, 0, 0], [0.0, 0, 0, 1, -1]])  # feature 0 dropped
    Ws = np.stack([_pentagon() if kk <= 2 else digons for kk in k])[:, None]
    dens = base / k
    store = xr.Dataset(
        {
            "W": (("density", "seed", "hidden", "feature"), Ws),
            "b": (("density", "seed", "feature"), np.zeros((5, 1, 5))),
            "loss": (("density", "seed"), np.zeros((5, 1))),
        },
        coords={"density": dens, "seed": [0]},
    )
    cfg = {"data": {"density": base, "density_features": [0]}}
    out = steps.perturbation(_ctx(store, cfg))
    np.testing.assert_allclose(out["split_ratio"].values, [2.0, 3.0])
    D = out["dimensionality_perturbed"].sel(density=base / 4).values
    np.testing.assert_allclose(D, [0, 0.5, 0.5, 0.5, 0.5], atol=1e-12)
    np.testing.assert_allclose(out["dimensionality_perturbed"].sel(density=base).values, 0.4)
