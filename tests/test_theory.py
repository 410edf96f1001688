import numpy as np
import pytest

from analysis.exact_loss import minimise_expected_loss, numerical_phase_map
from analysis.metrics import DEDICATED, IGNORED, SUPERPOSED, classify_phases
from analysis.theory import (
    CANDIDATES,
    analytic_phase_2to1,
    analytic_phase_3to2,
    analytic_phase_map,
    boundaries_2to1,
    boundaries_3to2,
    boundaries_from_roots,
    candidate_losses,
    candidate_params,
    importances,
    near_boundary,
)
from sweep import quadrature
from sweep.quadrature import expected_loss

pytestmark = pytest.mark.unit


def sample(n, density, samples, seed):
    """x (sample, feat): 0 with probability 1 - p, else U[0, 1] (u < p gives u / p ~ U[0, 1])."""
    u = np.random.default_rng(seed).random((samples, n))
    return np.where(u < density, u / density, 0.0)


def monte_carlo_loss(x, W, b, importance):
    """Direct sample average of sum_i I_i (x_i - x'_i)^2 and its standard error."""
    x_hat = np.maximum(x @ (W.T @ W) + b, 0.0)  # (sample, feat); W^T W is symmetric
    per_sample = ((x - x_hat) ** 2) @ importance
    return per_sample.mean(), per_sample.std() / np.sqrt(len(x))


@pytest.mark.parametrize("kind", CANDIDATES)
@pytest.mark.parametrize(("r", "p"), [(0.4, 0.3), (2.5, 0.8)])
def test_closed_forms_match_monte_carlo_and_quadrature(kind, r, p):
    importance = importances(kind, r)
    x = sample(len(importance), p, samples=1_000_000, seed=0)
    for name, closed in candidate_losses(kind, r, p).items():
        W, b = candidate_params(kind, name, p)
        mean, sem = monte_carlo_loss(x, W, b, importance)
        assert abs(mean - closed) < 5 * sem, (name, mean, sem, closed)
        exact = float(expected_loss(W, b, importance, p))
        assert exact == pytest.approx(float(closed), rel=1e-12, abs=1e-15), name


def test_quadrature_matches_monte_carlo_and_finer_rule_at_random_weights(monkeypatch):
    rng = np.random.default_rng(1)
    for n, m in [(2, 1), (3, 2), (4, 2)]:
        W, b = rng.normal(size=(m, n)), rng.normal(scale=0.3, size=n)
        importance, density = rng.uniform(0.2, 2, size=n), rng.uniform(0.05, 1, size=n)
        loss = float(expected_loss(W, b, importance, density))
        x = sample(n, density, samples=400_000, seed=n)
        mean, sem = monte_carlo_loss(x, W, b, importance)
        assert abs(mean - loss) < 5 * sem
        if n == 4:  # 4x the panels in 3 outer dimensions is 64x the work: skip
            continue
        with monkeypatch.context() as patch:  # the same rule with 4x the panels
            finer_rule = quadrature._plan(n, panels=4 * quadrature._PANELS)
            patch.setattr(quadrature, "_plan", lambda n, rule=finer_rule: rule)
            finer = float(expected_loss(W, b, importance, density))
        assert loss == pytest.approx(finer, rel=1e-6)


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    W, b = rng.normal(size=(2, 3)), rng.normal(scale=0.3, size=3)
    importance, density = np.array([1.0, 1.0, 0.5]), np.array([0.3, 0.1, 0.6])
    _, g_W, g_b = quadrature._loss_and_grad(W, b, importance, density)
    eps = 1e-6
    for idx in np.ndindex(W.shape):
        step = np.zeros_like(W)
        step[idx] = eps
        diff = expected_loss(W + step, b, importance, density) - expected_loss(
            W - step, b, importance, density
        )
        assert diff / (2 * eps) == pytest.approx(g_W[idx], abs=1e-8)
    for i in range(3):
        step = eps * np.eye(3)[i]
        diff = expected_loss(W, b + step, importance, density) - expected_loss(
            W, b - step, importance, density
        )
        assert diff / (2 * eps) == pytest.approx(g_b[i], abs=1e-8)


def test_expected_loss_broadcasts_over_leading_axes():
    rng = np.random.default_rng(3)
    W, b = rng.normal(size=(5, 1, 2)), rng.normal(scale=0.3, size=(5, 2))
    batched = expected_loss(W, b, [1.0, 0.5], 0.2)
    assert batched.shape == (5,)
    single = [float(expected_loss(W[k], b[k], [1.0, 0.5], 0.2)) for k in range(5)]
    np.testing.assert_allclose(batched, single, rtol=1e-13)


def test_2to1_published_points_and_triple_point():
    assert analytic_phase_2to1(0.1, 1.0) == IGNORED
    assert analytic_phase_2to1(1.0, 0.02) == SUPERPOSED
    assert analytic_phase_2to1(10.0, 1.0) == DEDICATED
    # All three phases meet at r = 1, p = 4/7.
    np.testing.assert_allclose(boundaries_2to1(1.0), [4 / 7, 4 / 7])
    eps = 0.01
    assert analytic_phase_2to1(1 - eps, 4 / 7 + eps) == IGNORED
    assert analytic_phase_2to1(1 + eps, 4 / 7 + eps) == DEDICATED
    assert analytic_phase_2to1(1 - eps, 4 / 7 - eps) == SUPERPOSED
    assert analytic_phase_2to1(1 + eps, 4 / 7 - eps) == SUPERPOSED


def test_2to1_boundaries_match_phase_map_and_root_finding():
    r = np.geomspace(0.1, 10, 25)
    closed = boundaries_2to1(r)
    p_star = np.where(r <= 1, closed.superposed_ignored, closed.superposed_dedicated)
    assert np.all(analytic_phase_2to1(r, p_star * (1 - 1e-6)) == SUPERPOSED)
    above = analytic_phase_2to1(r, p_star * (1 + 1e-6))
    np.testing.assert_array_equal(above, np.where(r <= 1, IGNORED, DEDICATED))
    roots = boundaries_from_roots("2to1", r)
    np.testing.assert_allclose(roots.superposed_ignored, closed.superposed_ignored, rtol=1e-10)
    np.testing.assert_allclose(roots.superposed_dedicated, closed.superposed_dedicated, rtol=1e-10)


def test_2to1_symmetric_under_inverting_r():
    r = np.geomspace(0.1, 10, 41)
    r = r[np.abs(np.log(r)) > 1e-9]  # at r = 1 ignore and dedicate tie
    p = np.geomspace(0.01, 1, 37)[None, :]
    swap = np.array([DEDICATED, IGNORED, SUPERPOSED])  # ignored <-> dedicated
    np.testing.assert_array_equal(
        analytic_phase_2to1(r[:, None], p), swap[analytic_phase_2to1(1 / r[:, None], p)]
    )


def test_3to2_closed_forms():
    assert analytic_phase_3to2(0.2, 1.0) == IGNORED
    assert analytic_phase_3to2(0.5, 0.05) == SUPERPOSED
    assert analytic_phase_3to2(5.0, 0.05) == DEDICATED  # the other two form an antipodal pair
    assert analytic_phase_3to2(5.0, 1.0) == DEDICATED  # one unit-importance feature dropped
    r = np.array([0.1, 0.3, 0.7, 2.0, 10.0])
    bounds = boundaries_3to2(r)
    # With these candidates the extra feature is superposed only for r < 1, p < 4r/(2+5r).
    expected = np.where(r < 1, 4 * r / (2 + 5 * r), np.nan)
    np.testing.assert_allclose(bounds.superposed_ignored, expected, rtol=1e-10)
    assert np.all(np.isnan(bounds.superposed_dedicated))


def test_phase_maps_and_near_boundary():
    r, p = np.geomspace(0.1, 10, 9), np.geomspace(0.01, 1, 7)
    phase = analytic_phase_map("2to1", r, p)
    assert phase.dims == ("relative_importance", "density")
    np.testing.assert_allclose(phase.relative_importance, r)
    near = near_boundary("2to1", r, p).values
    values = phase.values
    for i, j in np.ndindex(values.shape):
        block = values[max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2]
        assert near[i, j] == np.any(block != values[i, j])
    assert not near[0, 0] and not near[-1, -1] and near.any()
    with pytest.raises(ValueError, match="kind"):
        analytic_phase_map("4to2", r, p)


@pytest.mark.parametrize(
    ("r", "p"), [(0.2, 1.0), (5.0, 1.0), (0.15, 0.6), (1.0, 0.03), (0.3, 0.05), (4.0, 0.08)]
)
def test_minimiser_agrees_with_closed_form_2to1(r, p):
    W, b, loss = minimise_expected_loss(2, 1, [1.0, r], p)
    assert classify_phases(W)[1] == analytic_phase_2to1(r, p)
    # The candidates are feasible points, so the free optimum can only be lower.
    best = min(candidate_losses("2to1", r, p).values())
    assert loss <= best * (1 + 1e-9)
    assert float(expected_loss(W, b, [1.0, r], p)) == pytest.approx(loss)


def test_numerical_map_agrees_away_from_boundaries_2to1():
    r, p = np.geomspace(0.1, 10, 5), np.geomspace(0.01, 1, 5)
    numerical = numerical_phase_map(2, 1, r, p, starts=4)
    analytic = analytic_phase_map("2to1", r, p)
    away = ~near_boundary("2to1", r, p)
    assert away.sum() >= 10
    np.testing.assert_array_equal(numerical.values[away.values], analytic.values[away.values])


def test_minimiser_agrees_with_closed_form_3to2():
    W, _, loss = minimise_expected_loss(3, 2, [1.0, 1.0, 0.3], 0.03, starts=4)
    np.testing.assert_array_equal(classify_phases(W), [DEDICATED, SUPERPOSED, SUPERPOSED])
    assert loss <= min(candidate_losses("3to2", 0.3, 0.03).values()) * (1 + 1e-9)


def test_bad_inputs_name_the_value():
    with pytest.raises(ValueError, match="starts=0"):
        minimise_expected_loss(2, 1, [1.0, 1.0], 0.1, starts=0)
    with pytest.raises(ValueError, match="n=5"):
        expected_loss(np.ones((2, 5)), np.zeros(5), 1.0, 0.1)
