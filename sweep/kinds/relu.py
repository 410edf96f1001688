"""relu: x' = ReLU(WᵀWx + b), the paper's main model."""

from __future__ import annotations

from sweep.kinds.base import KindSpec


def forward(W, b, x, W_out=None):
    import torch

    h = torch.bmm(x, W.transpose(1, 2))  # (inst, batch, hidden)
    return torch.relu(torch.baddbmm(b.unsqueeze(1), h, W))  # (inst, batch, feat)


# fused: sweep.fused.grads_gram / grads_bmm with kind "relu"
KIND = KindSpec("relu", "ReLU(WᵀWx + b)", forward, fused="relu")
