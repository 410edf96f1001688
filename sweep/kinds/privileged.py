"""privileged: h = ReLU(Wx), x' = ReLU(Wᵀh + b), a privileged hidden basis."""

from __future__ import annotations

from sweep.kinds import relu
from sweep.kinds.base import Fused, KindSpec


def forward(W, b, x, W_out=None):
    import torch

    h = torch.relu(torch.bmm(x, W.transpose(1, 2)))  # (inst, batch, hidden)
    return torch.relu(torch.baddbmm(b.unsqueeze(1), h, W))  # (inst, batch, feat)


def hidden(h):
    """ReLU on the hidden layer (inst, hidden, batch), and its backward: pass where h > 0."""
    import torch

    return torch.relu(h), lambda dh: torch.where(h > 0, dh, 0)


KIND = KindSpec(
    "privileged",
    "ReLU(Wᵀ ReLU(Wx) + b)",
    forward,
    fused=Fused(output=relu.output, hidden=hidden),
)
