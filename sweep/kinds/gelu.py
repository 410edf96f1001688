"""gelu: x' = GELU(WᵀWx + b), the ReLU model with a smooth output nonlinearity.

GELU lets a little negative interference through (GELU(z) ≈ -0.17 at its minimum), so
unlike ReLU the output cannot filter it away entirely. Trains on the autograd path.
"""

from __future__ import annotations

from sweep.kinds.base import KindSpec


def forward(W, b, x, W_out=None):
    import torch

    h = torch.bmm(x, W.transpose(1, 2))  # (inst, batch, hidden)
    return torch.nn.functional.gelu(torch.baddbmm(b.unsqueeze(1), h, W))  # (inst, batch, feat)


KIND = KindSpec("gelu", "GELU(WᵀWx + b)", forward)
