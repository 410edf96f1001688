"""The minimum of the exact expected loss of the ReLU output model (sweep.quadrature).

The quadrature itself lives in the engine (sweep.quadrature: the refinement ranks seeds by
it). Used to check the closed forms (tests), the exact boundary tables (analysis.exact_minimum)
and the stored losses of trained models.
"""

from __future__ import annotations

import itertools

import numpy as np
import xarray as xr
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from analysis.metrics import classify_phases
from sweep.constants import NORM_THRESHOLD, SUPERPOSITION_THRESHOLD
from sweep.quadrature import ArrayLike, _loss_and_grad


def minimise_expected_loss(
    n: int, m: int, importance: ArrayLike, density: ArrayLike, starts: int = 8, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, float]:
    """Best (W, b, loss) over L-BFGS-B runs from `starts` xavier-normal starts (b = 0)."""
    if starts < 1:
        raise ValueError(f"starts must be an integer >= 1; got starts={starts}")
    importance = np.broadcast_to(np.asarray(importance, dtype=float), (n,))
    density = np.broadcast_to(np.asarray(density, dtype=float), (n,))
    # Loss at W = 0, b = 0; dividing by it keeps the objective O(1) at any density so that the
    # optimiser's absolute tolerances mean the same thing across the diagram.
    scale = max(float(np.sum(importance * density)) / 3, 1e-300)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        W, b = theta[: m * n].reshape(m, n), theta[m * n :]
        loss, g_W, g_b = _loss_and_grad(W, b, importance, density)
        assert g_W is not None and g_b is not None  # grad=True always returns them
        return float(loss) / scale, np.concatenate([g_W.ravel(), g_b]) / scale

    rng = np.random.default_rng(seed)
    best = (np.zeros((m, n)), np.zeros(n), np.inf)
    # L-BFGS-B calls BLAS on tiny matrices, where threads only add overhead; on a busy machine
    # their spinning made the minimisation ~15x slower. One limit around all starts: entering it
    # is not free.
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(starts):
            W0 = rng.normal(0.0, np.sqrt(2 / (m + n)), size=(m, n))
            theta0 = np.concatenate([W0.ravel(), np.zeros(n)])
            res = minimize(
                objective,
                theta0,
                jac=True,
                method="L-BFGS-B",
                options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9},
            )
            loss = float(res.fun) * scale
            if loss < best[2]:
                best = (res.x[: m * n].reshape(m, n), res.x[m * n :], loss)
    return best


def numerical_phase_map(
    n: int,
    m: int,
    r_values: np.ndarray,
    p_values: np.ndarray,
    extra_feature: int = -1,
    starts: int = 8,
    seed: int = 0,
    norm_threshold: float = NORM_THRESHOLD,
    superposition_threshold: float = SUPERPOSITION_THRESHOLD,
) -> xr.DataArray:
    """Phase of the extra feature (importance r, others 1) at the minimised exact loss."""
    r_values = np.asarray(r_values, dtype=float)
    p_values = np.asarray(p_values, dtype=float)
    phase = np.empty((r_values.size, p_values.size), dtype=np.int64)
    for (ir, r), (ip, p) in itertools.product(enumerate(r_values), enumerate(p_values)):
        importance = np.ones(n)
        importance[extra_feature] = r
        W, _, _ = minimise_expected_loss(n, m, importance, p, starts=starts, seed=seed)
        codes = classify_phases(W, norm_threshold, superposition_threshold)
        phase[ir, ip] = codes[extra_feature]
    return xr.DataArray(
        phase,
        dims=("relative_importance", "density"),
        coords={"relative_importance": r_values, "density": p_values},
        name="phase",
        attrs={"n": n, "m": m, "source": "minimised exact expected loss", "starts": starts},
    )
