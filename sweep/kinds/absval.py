"""absval (computation in superposition): h = ReLU(Wx), y' = ReLU(W_out h + b), target |x|,
with untied output weights W_out (inst, feat, hidden) and inputs U[-1, 1]."""

from __future__ import annotations

from sweep.kinds.base import Fused, KindSpec


def forward(W, b, x, W_out=None):
    import torch

    assert W_out is not None, "absval needs its untied output weights"
    h = torch.relu(torch.bmm(x, W.transpose(1, 2)))  # (inst, batch, hidden)
    return torch.relu(torch.baddbmm(b.unsqueeze(1), h, W_out.transpose(1, 2)))


def target(x):
    return x.abs()


def grads(x, imp, W, b, Wo):
    """The fused step, x: (inst, n, batch). With g = dL/dy_pre: dL/dW_out = g hᵀ,
    dL/db = Σ_batch g, dL/dW = (W_outᵀ g ⊙ [h > 0]) xᵀ."""
    import torch

    batch = x.shape[-1]
    hpre = torch.bmm(W, x)  # (inst, m, batch)
    h = torch.relu(hpre)
    y = torch.baddbmm(b.unsqueeze(-1), Wo, h)  # (inst, n, batch), pre-activation
    t = x.abs()  # the target |x|
    r = torch.where(y > 0, y - t, -t)  # ReLU(y) - |x|
    g = torch.where(y > 0, r, 0)
    loss = (imp * r.square()).sum(1).mean(-1)  # (inst,)
    g = g * (imp * (2.0 / batch))  # dL/dy: (inst, n, batch)
    gWo = torch.bmm(g, h.transpose(1, 2))  # (inst, n, m)
    dh = torch.where(hpre > 0, torch.bmm(Wo.transpose(1, 2), g), 0)  # (inst, m, batch)
    gW = torch.bmm(dh, x.transpose(1, 2))  # (inst, m, n)
    return loss, gW, g.sum(-1), gWo


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
    fused=Fused(grads=grads),
    check=check,
)
