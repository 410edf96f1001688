"""tanh: x' = tanh(WᵀWx + b), a model kind that lives outside toysweep.

Registered through the entry point group `toysweep.kinds` in this package's pyproject.toml;
without a `fused` record it trains on the autograd path. torch is imported inside the
function, as toysweep's own kinds do, so that reading the kind list stays cheap.
"""

from __future__ import annotations

from sweep.kinds import KindSpec


def forward(W, b, x, W_out=None):
    import torch

    h = torch.bmm(x, W.transpose(1, 2))  # (inst, batch, hidden)
    return torch.tanh(torch.baddbmm(b.unsqueeze(1), h, W))  # (inst, batch, feat)


KIND = KindSpec("tanh", "tanh(WᵀWx + b)", forward)
