"""privileged: h = ReLU(Wx), x' = ReLU(Wᵀh + b), a privileged hidden basis."""

from __future__ import annotations

from sweep.kinds.base import KindSpec


def forward(W, b, x, W_out=None):
    import torch

    h = torch.relu(torch.bmm(x, W.transpose(1, 2)))  # (inst, batch, hidden)
    return torch.relu(torch.baddbmm(b.unsqueeze(1), h, W))  # (inst, batch, feat)


# fused: sweep.fused.grads_bmm with kind "privileged" (never the gram form)
KIND = KindSpec("privileged", "ReLU(Wᵀ ReLU(Wx) + b)", forward, fused="privileged")
