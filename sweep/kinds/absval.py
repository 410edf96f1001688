"""absval (computation in superposition): h = ReLU(Wx), y' = ReLU(W_out h + b), target |x|,
with untied output weights W_out (inst, feat, hidden) and inputs U[-1, 1]."""

from __future__ import annotations

from sweep.kinds.base import KindSpec


def forward(W, b, x, W_out=None):
    import torch

    assert W_out is not None, "absval needs its untied output weights"
    h = torch.relu(torch.bmm(x, W.transpose(1, 2)))  # (inst, batch, hidden)
    return torch.relu(torch.baddbmm(b.unsqueeze(1), h, W_out.transpose(1, 2)))


def target(x):
    return x.abs()


def check(shape) -> str | None:
    if shape.correlation != "none":
        return "correlation=none (absval samples signed inputs, which correlated sets lack)"
    return None


KIND = KindSpec(
    "absval",
    "ReLU(W_out ReLU(Wx) + b) ≈ |x|",
    forward,
    target=target,
    untied=True,
    signed=True,
    fused="absval",
    check=check,
)
