"""Every analysis threshold pinned from both sides, the seed rules pinned by value, and the
agreement with theory recomputed from the paper's inequalities written out here.

Hand-made weights just above and just below each threshold: a threshold moved (0.5 → 0.2 or
0.8) flips one of them. The thresholds are defined once (sweep/constants.py;
tests/test_one_source.py fails on a second definition), so they are pinned where they are
used: the metrics' defaults, and a store's config as the sweep composes it, read back by the
analysis.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from omegaconf import OmegaConf

from analysis import aggregate, metrics
from analysis.metrics import DEDICATED, IGNORED, SUPERPOSED
from tests.conftest import make_config

pytestmark = pytest.mark.unit

EPS = 0.01  # how far each fixture sits from its threshold of 0.5


def two_features(norm1: float, cos2: float) -> np.ndarray:
    """W (hidden=2, feature=2): feature 0 = e₀; feature 1 of norm `norm1` at cos² `cos2` to it.

    Superposition of either feature is then cos2 (for feature 0: (ŵ₀·w₁)² = norm1² cos2, so
    norm1 = 1 there); feature 1's norm is norm1.
    """
    c = np.sqrt(cos2)
    return np.array([[1.0, norm1 * c], [0.0, norm1 * np.sqrt(1 - cos2)]])


# (W, expected phase of feature 1) on both sides of each threshold
CASES = {
    "norm just below": (two_features(0.5 - EPS, 0.0), IGNORED),
    "norm just above": (two_features(0.5 + EPS, 0.0), DEDICATED),
    "superposition just below": (two_features(1.0, 0.5 - EPS), DEDICATED),
    "superposition just above": (two_features(1.0, 0.5 + EPS), SUPERPOSED),
}


def test_fixtures_sit_where_they_say():
    for name, (W, _) in CASES.items():
        norm = metrics.feature_norms(W)[1]
        sup = metrics.superposition(W)[1]
        if name.startswith("norm"):
            assert abs(norm - 0.5) == pytest.approx(EPS) and sup == pytest.approx(0.0)
        else:
            assert norm == pytest.approx(1.0) and abs(sup - 0.5) == pytest.approx(EPS)


@pytest.mark.parametrize("name", CASES)
def test_metrics_default_thresholds(name):
    W, phase = CASES[name]
    assert metrics.classify_phases(W)[1] == phase


def store_of(Ws: list[np.ndarray]) -> xr.Dataset:
    """A store-like dataset with one cell per W (density axis), one seed."""
    W = np.stack(Ws)[None, :, None]  # (r=1, p=cells, seed=1, hidden, feature)
    dims = ["relative_importance", "density", "seed"]
    shape = W.shape[:3]
    return xr.Dataset(
        {"W": (dims + ["hidden", "feature"], W), "loss": (dims, np.ones(shape)),
         "finished": (dims, np.ones(shape, bool)), "diverged": (dims, np.zeros(shape, bool))},
        coords={"relative_importance": [1.0], "density": np.linspace(0.1, 1, len(Ws)),
                "seed": [0], "feature": [0, 1]},
    )


def phases_with(settings: aggregate.Settings) -> dict[str, int]:
    ds = store_of([W for W, _ in CASES.values()])
    agg = aggregate.analyse_store(ds, settings)
    return dict(zip(CASES, agg.phase.values[0, :, 1].tolist(), strict=True))


def test_config_default_thresholds_reach_the_analysis():
    """conf/config.yaml's analysis section, as a store's config_yaml carries it."""
    cfg = OmegaConf.to_container(make_config(["+grid=phase"]), resolve=True)
    settings = aggregate.Settings.from_config(cfg)
    assert phases_with(settings) == {k: ph for k, (_, ph) in CASES.items()}


def test_thresholds_are_used_not_ignored():
    """Moving a threshold past a fixture flips it: the setting is really read."""
    moved = phases_with(aggregate.Settings(norm_threshold=0.45, superposition_threshold=0.55))
    assert moved["norm just below"] == DEDICATED
    assert moved["superposition just above"] == DEDICATED


# ---------------------------------------------------------------- seed rules, by value


def one_cell(norms: list[float], losses: list[float]) -> xr.Dataset:
    """One 2→1 cell, a seed per entry: W = [n, -n] (an antipodal pair of norm n)."""
    W = np.array([[[n, -n]] for n in norms])[None, None]  # (1, 1, seed, 1, 2)
    dims = ["relative_importance", "density", "seed"]
    shape = W.shape[:3]
    return xr.Dataset(
        {"W": (dims + ["hidden", "feature"], W),
         "loss": (dims, np.array(losses, float)[None, None]),
         "finished": (dims, np.ones(shape, bool)), "diverged": (dims, np.zeros(shape, bool))},
        coords={"relative_importance": [1.0], "density": [0.1], "seed": np.arange(len(norms)),
                "feature": [0, 1]},
    )


def test_drop_worst_averages_all_but_the_highest_loss_seed():
    ds = one_cell([0.6, 0.7, 0.9, 0.8], [0.2, 0.4, 0.1, 0.3])  # worst: seed 1 (norm 0.7)
    agg = aggregate.analyse_store(ds, aggregate.Settings(aggregate="drop_worst"))
    assert float(agg.norm[0, 0, 1]) == pytest.approx((0.6 + 0.9 + 0.8) / 3)
    assert float(agg.loss[0, 0]) == pytest.approx((0.2 + 0.1 + 0.3) / 3)
    assert int(agg.n_pooled[0, 0]) == 3


def test_lowest_loss_takes_the_best_seed():
    ds = one_cell([0.6, 0.7, 0.9, 0.8], [0.2, 0.4, 0.1, 0.3])  # best: seed 2 (norm 0.9)
    agg = aggregate.analyse_store(ds, aggregate.Settings(aggregate="lowest_loss"))
    assert float(agg.norm[0, 0, 1]) == pytest.approx(0.9)
    assert float(agg.loss[0, 0]) == pytest.approx(0.1)


def test_drop_worst_phase_is_the_mode_of_the_kept_seeds():
    # seeds by loss: superposed (.1), ignored (.2), superposed (.3), ignored (.9, dropped):
    # kept S, I, S -> superposed; dropping the best instead would keep I, S, I -> ignored.
    ds = one_cell([1.0, 0.0, 1.0, 0.0], [0.1, 0.2, 0.3, 0.9])
    agg = aggregate.analyse_store(ds, aggregate.Settings())
    assert int(agg.phase[0, 0, 1]) == SUPERPOSED
    low = aggregate.analyse_store(ds, aggregate.Settings(aggregate="lowest_loss"))
    assert int(low.phase[0, 0, 1]) == SUPERPOSED


# ---------------------------------------------------------------- agreement, recomputed


def paper_phase_2to1(r: np.ndarray, p: np.ndarray) -> np.ndarray:
    """The paper's 2→1 closed form, written out: superposed below p = 4r/(2+5r) (r ≤ 1) or
    p = 4/(5+2r) (r ≥ 1); otherwise ignored for r < 1, dedicated for r > 1."""
    edge = np.where(r <= 1, 4 * r / (2 + 5 * r), 4 / (5 + 2 * r))
    return np.where(p < edge, SUPERPOSED, np.where(r < 1, IGNORED, DEDICATED))


def test_agreement_is_the_share_of_far_cells_that_match_the_paper():
    """A store with random phases: compare_with_theory's agreement equals the share recomputed
    here from the paper's inequalities (cells next to a differing neighbour left out)."""
    n = 9
    r, p = np.geomspace(0.1, 10, n), np.geomspace(0.01, 1, n)
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 3, size=(n, n))
    W_of = {IGNORED: [1.0, 0.0], DEDICATED: [0.0, 1.0], SUPERPOSED: [1.0, -1.0]}
    W = np.array([W_of[c] for c in codes.ravel()]).reshape(n, n, 1, 1, 2)
    dims = ["relative_importance", "density", "seed"]
    ds = xr.Dataset(
        {"W": (dims + ["hidden", "feature"], W), "loss": (dims, np.ones((n, n, 1))),
         "finished": (dims, np.ones((n, n, 1), bool)),
         "diverged": (dims, np.zeros((n, n, 1), bool))},
        coords={"relative_importance": r, "density": p, "seed": [0], "feature": [0, 1]},
    )
    out = aggregate.compare_with_theory(aggregate.analyse_store(ds, aggregate.Settings()),
                                        "2to1")
    truth = paper_phase_2to1(r[:, None], p[None, :])
    padded = np.pad(truth, 1, mode="edge")
    near = np.zeros_like(truth, bool)
    for di in range(3):
        for dj in range(3):
            near |= padded[di:di + n, dj:dj + n] != truth
    far = ~near
    assert far.sum() >= 20 and near.sum() >= 10
    expected = float((codes == truth)[far].mean())
    assert 0 < expected < 1  # random phases: some agree, some do not
    assert out.attrs["n_compared"] == int(far.sum())
    assert out.attrs["agreement"] == pytest.approx(expected, abs=1e-12)
