"""Phase boundaries located, not just phases counted: one axis swept finely across a boundary,
the trained boundary within one grid step of theory.

Referee: the boundary of the *exact* minimum of the expected loss (bisection in p on
analysis.exact_loss.minimise_expected_loss), not the fixed-candidate closed form, which puts it
~9 % lower at these r (shared/notes/paper.md: trained models follow the free minimum). r is
far from the triple point r = 1. The trained phase at each density is that of the seed with
the lowest *exact* loss of its stored W, b: the stored loss (8,192 samples, shared across
cells) has a ~4 % Monte Carlo error here, enough to pick the wrong seed next to a boundary.

To train in seconds these use lr 0.01 with cosine decay over 3,000 steps instead of the
notebook's constant 1e-3 for 10,000 (the same minima, reached sooner).
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from analysis.exact_loss import minimise_expected_loss
from analysis.metrics import classify_phases
from analysis.theory import boundaries_2to1, boundaries_3to2
from sweep import driver
from sweep.quadrature import expected_loss
from tests.conftest import make_config

pytestmark = pytest.mark.slow

P_LO, P_HI, POINTS = 0.25, 0.55, 12  # log grid: one step is a factor 1.074
STEP = np.log(P_HI / P_LO) / (POINTS - 1)


def exact_phase(n: int, m: int, r: float, p: float) -> int:
    importance = np.ones(n)
    importance[-1] = r
    W, _, _ = minimise_expected_loss(n, m, importance, p, starts=4)
    return int(classify_phases(W)[-1])


def exact_boundary(n: int, m: int, r: float, lo: float = 0.1, hi: float = 0.9) -> float:
    """Density where the exact minimum's phase of the extra feature changes (bisection)."""
    below, above = exact_phase(n, m, r, lo), exact_phase(n, m, r, hi)
    assert below != above
    for _ in range(8):  # to a factor 9^(1/256) = 1.009, well under a grid step
        mid = float(np.sqrt(lo * hi))
        if exact_phase(n, m, r, mid) == below:
            lo = mid
        else:
            hi = mid
    return float(np.sqrt(lo * hi))


def trained_phases(grid: str, r: float, store) -> tuple[np.ndarray, np.ndarray]:
    """Density grid and the phase of the extra feature per density (best seed by exact loss)."""
    cfg = make_config([f"+grid={grid}", "train.steps=3000", "train.lr=0.01",
                       "train.lr_schedule=cosine", "grid.seeds=3",
                       f"grid.axes.density=[log,{P_LO},{P_HI},{POINTS}]",
                       f"grid.axes.relative_importance=[{r}]"], store=store)
    assert driver.run(cfg) == 0
    ds = xr.open_zarr(store).load().isel(relative_importance=0)
    W, b = ds.W.values.astype(float), ds.b.values.astype(float)  # (p, seed, m, n), (p, seed, n)
    exact = expected_loss(W, b, ds.importance.values[:, None], ds.feature_density.values[:, None])
    best = np.argmin(exact, axis=1)  # (p,)
    phases = classify_phases(W)[..., -1]  # (p, seed)
    return ds.density.values, phases[np.arange(len(best)), best]


def located(p: np.ndarray, phases: np.ndarray) -> float:
    """The one place the phase sequence changes (geometric midpoint of the two cells)."""
    changes = np.flatnonzero(phases[1:] != phases[:-1])
    assert len(changes) == 1, f"not one boundary: {dict(zip(p.round(3), phases, strict=True))}"
    k = changes[0]
    return float(np.sqrt(p[k] * p[k + 1]))


@pytest.mark.parametrize(
    ("grid", "n", "m", "r", "closed_form"),
    [
        ("phase", 2, 1, 0.3, lambda r: boundaries_2to1(r).superposed_ignored),
        ("phase", 2, 1, 3.0, lambda r: boundaries_2to1(r).superposed_dedicated),
        ("phase3", 3, 2, 0.3, lambda r: boundaries_3to2(r).superposed_ignored),
    ],
    ids=["2to1-r0.3", "2to1-r3", "3to2-r0.3"],
)
def test_trained_boundary_within_one_grid_step(grid, n, m, r, closed_form, tmp_path):
    referee = exact_boundary(n, m, r)
    assert P_LO * np.exp(2 * STEP) < referee < P_HI * np.exp(-2 * STEP)  # inside the sweep
    # the closed form is near (an approximation, ~9 % low here), not the referee
    assert abs(np.log(float(closed_form(r)) / referee)) < 0.15
    p, phases = trained_phases(grid, r, tmp_path / "store")
    assert phases[0] == 2 and phases[-1] != 2  # superposed when sparse, not when dense
    trained = located(p, phases)
    assert abs(np.log(trained / referee)) < STEP, (trained, referee, STEP)
