"""silu: x' = SiLU(WᵀWx + b), SiLU(z) = z·σ(z), the ReLU model with a smooth output.

Like GELU, SiLU lets some negative interference through (its minimum is ≈ -0.28, at
z ≈ -1.28), and it is smooth at 0. It trains on the fused path: its elementwise output piece
below is all `sweep.fused` needs, which writes the gram and bmm forms around it.
"""

from __future__ import annotations

from sweep.kinds.base import Fused, KindSpec


def forward(W, b, x, W_out=None):
    import torch

    h = torch.bmm(x, W.transpose(1, 2))  # (inst, batch, hidden)
    return torch.nn.functional.silu(torch.baddbmm(b.unsqueeze(1), h, W))  # (inst, batch, feat)


def output(z, x):
    """SiLU(z) − x and its gradient factor; SiLU'(z) = σ(z)·(1 + z·(1 − σ(z)))."""
    import torch

    s = torch.sigmoid(z)
    r = z * s - x
    return r, r * (s * (1 + z * (1 - s)))


KIND = KindSpec("silu", "SiLU(WᵀWx + b)", forward, fused=Fused(output=output))
