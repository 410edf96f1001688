"""Correlated and anticorrelated feature sets: the sampled data have the documented structure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sweep.groups import make_sampler

pytestmark = pytest.mark.unit


def sample(correlation: str, density: np.ndarray, set_size: int) -> np.ndarray:
    s = make_sampler(np.array([0, 1]), density, 8192, "data", torch.device("cpu"),
                     torch.float64, correlation, set_size)
    return torch.cat([s.sample() for _ in range(4)], dim=1).numpy()  # (inst, 32768, feat)


def test_correlated_sets_switch_on_together():
    density = np.array([[0.1] * 4 + [0.3] * 4, [0.5] * 8])
    x = sample("correlated", density, 4)
    active = x > 0
    for i in range(2):
        for start in (0, 4):
            members = active[i, :, start:start + 4]
            assert (members.all(-1) | ~members.any(-1)).all()  # all or none
            rate = members[:, 0].mean()
            p = density[i, start]
            assert abs(rate - p) < 5 * np.sqrt(p * (1 - p) / x.shape[1])
    # values within an active set are independent U[0, 1]
    both = active[1, :, 0] & active[1, :, 1]
    assert abs(np.corrcoef(x[1, both, 0], x[1, both, 1])[0, 1]) < 0.03


def test_anticorrelated_sets_have_one_member_at_most():
    density = np.array([[0.2] * 6, [0.9] * 6])
    x = sample("anticorrelated", density, 3)
    active = x > 0
    for i in range(2):
        for start in (0, 3):
            count = active[i, :, start:start + 3].sum(-1)
            assert count.max() == 1
            p = density[i, start]
            assert abs((count == 1).mean() - p) < 5 * np.sqrt(p * (1 - p) / x.shape[1])
            # the member is picked uniformly
            share = active[i, count == 1, start:start + 3].mean(0)
            assert np.all(np.abs(share - 1 / 3) < 0.02)
    vals = x[active]
    assert abs(vals.mean() - 0.5) < 0.01 and vals.max() < 1
