"""The fused training path does the same science as the autograd reference path."""

from __future__ import annotations

import numpy as np
import pytest

from sweep.grid import GridPlan
from sweep.train import train_block
from tests.conftest import make_config

GRID = ["+grid=phase", "grid.seeds=3", "grid.axes.density=[0.02,0.1,0.5,1.0]",
        "grid.axes.relative_importance=[0.1,1.0,10.0]"]


def train(backend: str, extra: list[str]):
    cfg = make_config([*GRID, f"train.backend={backend}", *extra])
    plan = GridPlan(cfg)
    (block,) = plan.blocks
    return train_block(plan.job([block]), progress=False)


def phase(W: np.ndarray) -> np.ndarray:
    """2→1 class of feature 2 per model: 0 ignored, 1 dedicated, 2 superposed (antipodal)."""
    on = np.abs(W[:, 0, :]) > 0.5  # (inst, feat): represented
    return np.where(~on[:, 1], 0, np.where(on[:, 0], 2, 1))


def test_gram_form_equals_autograd_in_float64():
    # 2→1 takes the fused path's gram form (the engine test's 5→2 takes the bmm form).
    extra = ["train.steps=200", "train.batch_size=64", "train.dtype=float64",
             "train.compile=false"]
    fused, ref = train("fused", extra), train("autograd", extra)
    np.testing.assert_allclose(fused.W, ref.W, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(fused.loss, ref.loss, rtol=1e-9)


@pytest.mark.parametrize("compile", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_fused_phases_and_losses_match_autograd(compile):
    # float32 and, compiled, reassociated sums: trajectories may part, the science may not.
    extra = ["train.steps=1500", f"train.compile={str(compile).lower()}"]
    fused, ref = train("fused", extra), train("autograd", extra)
    assert not fused.diverged.any()
    agree = (phase(fused.W) == phase(ref.W)).mean()
    assert agree >= 0.9, agree
    np.testing.assert_allclose(fused.loss.mean(), ref.loss.mean(), rtol=0.02)
    # per model, losses agree closely wherever both landed in the same phase
    same = phase(fused.W) == phase(ref.W)
    np.testing.assert_allclose(fused.loss[same], ref.loss[same], rtol=0.05, atol=1e-4)


@pytest.mark.unit
@pytest.mark.parametrize("kind", ["relu", "silu", "linear"])
@pytest.mark.parametrize(("n", "m"), [(2, 1), (3, 2), (4, 2), (8, 4)])
def test_gram_and_bmm_forms_give_autograds_gradients(kind, n, m):
    # Both hand-written forms against torch.autograd of the loss itself, in float64: the gram
    # form is written out per feature, so a wrong index in it shows here for every n it covers.
    import torch

    from sweep import fused, kinds

    spec = kinds.get(kind)
    g = torch.Generator().manual_seed(n * 10 + m)
    inst, batch = 6, 32
    W = torch.randn(inst, m, n, generator=g, dtype=torch.float64, requires_grad=True)
    b = (0.1 * torch.randn(inst, n, generator=g, dtype=torch.float64)).requires_grad_()
    x = torch.rand(inst, n, batch, generator=g, dtype=torch.float64)
    x = torch.where(x < 0.5, x * 2, 0)  # sparse, as the data: (inst, feat, batch)
    imp = torch.rand(inst, n, 1, generator=g, dtype=torch.float64) + 0.5
    xb = x.transpose(1, 2)  # (inst, batch, feat), the forward's layout
    r = spec.forward(W, b, xb) - xb
    loss = (imp.transpose(1, 2) * r.square()).sum(-1).mean(-1)  # (inst,)
    gW, gb = torch.autograd.grad(loss.sum(), [W, b])
    assert fused.use_gram(spec.fused, n, m) == (2 * n < 5 * m)
    for form in (fused.grads_gram, lambda *a: fused.grads_bmm(a[0], None, *a[1:])):
        got = form(spec.fused.output, x, imp, W.detach(), b.detach())
        for mine, truth in zip(got, (loss, gW, gb), strict=True):
            torch.testing.assert_close(mine, truth.detach(), rtol=1e-12, atol=1e-12)
