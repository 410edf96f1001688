"""The vectorised engine: one instance trains exactly like a model alone, whatever the chunking;
sampled data match their settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

from sweep import driver
from sweep.data import FeatureSampler
from sweep.grid import GridPlan
from sweep.models import stream_seed
from sweep.train import train_block
from tests.conftest import make_config


def train_alone(kind: str, seed: int, density: np.ndarray, importance: np.ndarray, m: int,
                steps: int, batch: int) -> np.ndarray:
    """A plain single model (no instance axis), written independently of sweep.models."""
    n = len(density)
    g = torch.Generator().manual_seed(stream_seed(seed, "init", n, m))
    W = (torch.randn((m, n), generator=g, dtype=torch.float64) * (2 / (n + m)) ** 0.5)
    W.requires_grad_(True)
    b = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.AdamW([W, b], lr=1e-3, weight_decay=0.01)
    data = torch.Generator().manual_seed(stream_seed(seed, "data", n))
    p = torch.tensor(density)
    imp = torch.tensor(importance)
    for _ in range(steps):
        u = torch.rand((batch, n), generator=data, dtype=torch.float64)
        x = torch.where(u < p, u / p, 0.0)
        h = x @ W.T
        if kind == "privileged":
            h = torch.relu(h)
        out = h @ W + b
        if kind != "linear":
            out = torch.relu(out)
        loss = (imp * (x - out) ** 2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return W.detach().numpy()


@pytest.mark.parametrize("backend", ["fused", "autograd"])
@pytest.mark.parametrize("kind", ["relu", "linear", "privileged"])
@pytest.mark.unit
def test_instance_equals_model_trained_alone(kind, backend, tmp_path):
    cfg = make_config(["+grid=phase", "train.steps=150", "train.batch_size=64",
                       f"train.backend={backend}", "train.compile=false",
                       "train.dtype=float64", "grid.seeds=[3,7]", f"model.kind={kind}",
                       "model.n_features=5", "model.n_hidden=2",
                       "data.relative_importance_features=[1,4]",
                       "grid.axes.density=[0.1,0.6]", "grid.axes.relative_importance=[0.5,3.0]"])
    plan = GridPlan(cfg)
    (block,) = plan.blocks
    inst = plan.instances(block)
    res = train_block(plan.job([block]), progress=False)
    for i in (0, 5, len(inst.seed) - 1):
        alone = train_alone(kind, int(inst.seed[i]), inst.density[i], inst.importance[i], 2,
                            150, 64)
        np.testing.assert_allclose(res.W[i], alone, rtol=1e-9, atol=1e-10)


def test_result_independent_of_chunking(tmp_path):
    base = ["+grid=phase", "train.steps=40", "grid.seeds=3",
            "grid.axes.density=[log,0.05,1.0,4]", "grid.axes.relative_importance=[0.3,1.0,3.0]"]
    whole = make_config(base, store=tmp_path / "whole")
    chunked = make_config([*base, "chunk.max_instances=5"], store=tmp_path / "chunked")
    assert len(GridPlan(whole).blocks) == 1
    assert len(GridPlan(chunked).blocks) > 3
    assert driver.run(whole) == 0 and driver.run(chunked) == 0
    a, b = xr.open_zarr(tmp_path / "whole"), xr.open_zarr(tmp_path / "chunked")
    assert bool(b.finished.all())
    np.testing.assert_allclose(a.W.values, b.W.values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.loss.values, b.loss.values, rtol=1e-5)


@pytest.mark.unit
def test_sampled_data_match_density():
    density = np.array([[0.05, 0.5, 1.0], [0.2, 0.02, 0.9], [0.5, 0.5, 0.5]])
    sampler = FeatureSampler(np.array([0, 0, 1]), density, 4096, "data", torch.device("cpu"),
                             torch.float64)
    x = torch.cat([sampler.sample() for _ in range(10)], dim=1).numpy()  # (inst, 40960, feat)
    n = x.shape[1]
    active = (x > 0).mean(1)
    sigma = np.sqrt(density * (1 - density) / n)
    assert np.all(np.abs(active - density) <= 5 * sigma + 1e-12)
    # active values are U[0, 1]: mean 1/2, variance 1/12
    for i, f in np.ndindex(*density.shape):
        vals = x[i, :, f][x[i, :, f] > 0]
        assert abs(vals.mean() - 0.5) < 5 * np.sqrt(1 / 12 / len(vals))
        assert vals.max() < 1.0


@pytest.mark.parametrize("backend", ["fused", "autograd"])
def test_checkpoint_resume_equals_uninterrupted(backend, tmp_path):
    cfg = make_config(["+grid=phase", "train.steps=60", "grid.seeds=2", "train.dtype=float64",
                       f"train.backend={backend}",
                       "grid.axes.density=[0.1,1.0]", "grid.axes.relative_importance=[1.0]"])
    plan = GridPlan(cfg)
    job = plan.job(plan.blocks[:1])
    full = train_block(job, progress=False)
    ckpt = tmp_path / "ckpt.pt"
    # A job stopped after step 25 (its state saved), then the same job run again.
    assert train_block(job, checkpoint=ckpt, progress=False, stop_at=25) is None
    assert ckpt.exists()
    resumed = train_block(job, checkpoint=ckpt, progress=False)
    assert resumed.resumed_from == 25
    np.testing.assert_allclose(resumed.W, full.W, rtol=1e-12)
    np.testing.assert_allclose(resumed.curve, full.curve, rtol=1e-12)
