import numpy as np
import pytest

from analysis.metrics import (
    DEDICATED,
    IGNORED,
    PHASE_NAMES,
    STICKY_VALUES,
    SUPERPOSED,
    classify_phases,
    dimensions_per_feature,
    feature_dimensionality,
    feature_norms,
    nearest_sticky,
    superposition,
)

pytestmark = pytest.mark.unit


def polygon(k: int) -> np.ndarray:
    """k unit vectors evenly spaced on the circle: W (2, k)."""
    angle = 2 * np.pi * np.arange(k) / k
    return np.stack([np.cos(angle), np.sin(angle)])


IDENTITY = np.eye(2)
ANTIPODAL = np.array([[1.0, -1.0]])
TRIANGLE = polygon(3)
PENTAGON = polygon(5)
ZERO_COLUMN = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
TETRAHEDRON = np.array([[1, 1, -1, -1], [1, -1, 1, -1], [1, -1, -1, 1]]) / np.sqrt(3)

# (W, D_i, superposition, phase codes, D*)
CASES = {
    "orthogonal": (IDENTITY, 1.0, 0.0, DEDICATED, 1.0),
    "antipodal": (ANTIPODAL, 1 / 2, 1.0, SUPERPOSED, 1 / 2),
    "triangle": (TRIANGLE, 2 / 3, 1 / 2, SUPERPOSED, 2 / 3),
    "pentagon": (PENTAGON, 2 / 5, 3 / 2, SUPERPOSED, 2 / 5),
    "tetrahedron": (TETRAHEDRON, 3 / 4, 1 / 3, DEDICATED, 3 / 4),  # 1/3 < default threshold
}


@pytest.mark.parametrize("name", CASES)
def test_hand_built_geometries(name):
    W, D, sup, phase, d_star = CASES[name]
    n = W.shape[1]
    np.testing.assert_allclose(feature_norms(W), np.ones(n))
    np.testing.assert_allclose(feature_dimensionality(W), np.full(n, D))
    np.testing.assert_allclose(superposition(W), np.full(n, sup), atol=1e-12)
    np.testing.assert_array_equal(classify_phases(W), np.full(n, phase))
    np.testing.assert_allclose(dimensions_per_feature(W), d_star)


def test_zero_column_is_ignored_with_zero_dimensionality():
    np.testing.assert_allclose(feature_norms(ZERO_COLUMN), [1, 1, 0])
    np.testing.assert_allclose(feature_dimensionality(ZERO_COLUMN), [1, 1, 0])
    np.testing.assert_allclose(superposition(ZERO_COLUMN), [0, 0, 0])
    np.testing.assert_array_equal(classify_phases(ZERO_COLUMN), [DEDICATED, DEDICATED, IGNORED])
    np.testing.assert_allclose(dimensions_per_feature(ZERO_COLUMN), 1.0)


def test_tight_frames_have_dimensionality_d_over_k():
    for k in range(3, 9):
        np.testing.assert_allclose(feature_dimensionality(polygon(k)), np.full(k, 2 / k))


def test_scale_and_small_norms():
    # Dimensionality is scale-free; a short vector on top of a long one has D near 0 and is
    # ignored by the norm threshold even though its direction is fully shared.
    np.testing.assert_allclose(feature_dimensionality(3.0 * ANTIPODAL), [0.5, 0.5])
    W = np.array([[1.0, 0.1]])
    D = feature_dimensionality(W)
    assert D[1] == pytest.approx(0.01 / 1.01)
    np.testing.assert_array_equal(classify_phases(W), [DEDICATED, IGNORED])
    np.testing.assert_array_equal(classify_phases(W, norm_threshold=0.05), [DEDICATED, SUPERPOSED])


def test_leading_axes_and_nan_padding():
    # Two instances padded to (hidden=2, feature=3): an antipodal pair (m=1, n=2) and a triangle.
    pad = np.full((2, 3), np.nan)
    pad[:1, :2] = ANTIPODAL
    W = np.stack([pad, TRIANGLE])  # (inst, hidden, feat)
    np.testing.assert_allclose(feature_norms(W), [[1, 1, np.nan], [1, 1, 1]])
    np.testing.assert_allclose(feature_dimensionality(W), [[0.5, 0.5, np.nan], [2 / 3] * 3])
    np.testing.assert_allclose(superposition(W), [[1, 1, np.nan], [0.5] * 3], atol=1e-12)
    np.testing.assert_array_equal(classify_phases(W), [[2, 2, -1], [2, 2, 2]])
    np.testing.assert_allclose(dimensions_per_feature(W), [1 / 2, 2 / 3])  # m = 1 for the pair
    # One more leading axis: results keep it.
    assert classify_phases(np.stack([W, W, W])).shape == (3, 2, 3)


def test_all_nan_and_all_zero():
    assert np.isnan(dimensions_per_feature(np.zeros((2, 3))))
    assert np.isnan(dimensions_per_feature(np.full((2, 3), np.nan)))
    np.testing.assert_array_equal(classify_phases(np.full((2, 3), np.nan)), [-1, -1, -1])


def test_phase_names_and_sticky_values():
    assert PHASE_NAMES[IGNORED] == "ignored"
    assert PHASE_NAMES[DEDICATED] == "dedicated"
    assert PHASE_NAMES[SUPERPOSED] == "superposed"
    names = [s.name for s in STICKY_VALUES]
    for name, value in [("triangle", 2 / 3), ("antipodal pair", 1 / 2), ("pentagon", 2 / 5)]:
        assert nearest_sticky(value) == names.index(name)
    assert nearest_sticky(0.37) == names.index("square antiprism")
    assert nearest_sticky(0.0) == names.index("not learned")
    D = np.array([[1.0, 0.74, 0.88], [np.nan, 0.2, 0.51]])
    expected = [[0, 1, -1], [-1, -1, 3]]
    np.testing.assert_array_equal(nearest_sticky(D), expected)
    np.testing.assert_array_equal(nearest_sticky(D, tol=0.2), [[0, 1, 0], [-1, 5, 3]])
