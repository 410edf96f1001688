"""relu: x' = ReLU(WᵀWx + b), the paper's main model."""

from __future__ import annotations

from sweep.kinds.base import Fused, KindSpec


def forward(W, b, x, W_out=None):
    import torch

    h = torch.bmm(x, W.transpose(1, 2))  # (inst, batch, hidden)
    return torch.relu(torch.baddbmm(b.unsqueeze(1), h, W))  # (inst, batch, feat)


def output(z, x):
    """ReLU(z) − x and its gradient factor, on (inst, feat, batch): ReLU' is 1 where z > 0."""
    import torch

    r = torch.where(z > 0, z - x, -x)
    return r, torch.where(z > 0, r, 0)


KIND = KindSpec("relu", "ReLU(WᵀWx + b)", forward, fused=Fused(output=output))
