"""Toy models with a leading instance axis, and their seeded initialisation.

Every parameter's first axis is the instance: W: (inst, hidden, feat), b: (inst, feat).
Instances never interact: each has its own weights, data settings and seed.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from sweep import kinds


def stream_seed(seed: int, purpose: str, *shape: int) -> int:
    """A 63-bit seed for one random stream, from the instance seed, a purpose and a shape.

    Hashing keeps streams of different purposes (init, data, eval) independent while making
    each depend only on the instance's own seed and shape, never on its place in a tensor.
    """
    key = f"{purpose}:{seed}:{':'.join(map(str, shape))}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def init_weights(seeds: np.ndarray, n: int, m: int, purpose: str = "init") -> torch.Tensor:
    """Xavier-normal W (inst, m, n) in float64 on the CPU, one draw per distinct seed."""
    std = (2.0 / (n + m)) ** 0.5
    per_seed = {}
    for s in np.unique(seeds):
        g = torch.Generator().manual_seed(stream_seed(int(s), purpose, n, m))
        per_seed[int(s)] = torch.randn((m, n), generator=g, dtype=torch.float64) * std
    return torch.stack([per_seed[int(s)] for s in seeds])  # (inst, m, n)


class ToyModels(torch.nn.Module):
    """Many toy models of one kind evaluated at once; the kind's maths is in `sweep.kinds`.

    W: (inst, hidden, feat), b: (inst, feat); W_out: (inst, feat, hidden) for kinds with untied
    output weights (absval).
    """

    def __init__(
        self, kind: str, W: torch.Tensor, b: torch.Tensor, W_out: torch.Tensor | None = None
    ):
        super().__init__()
        self.kind, self.spec = str(kind), kinds.get(kind)
        self.W = torch.nn.Parameter(W)  # (inst, hidden, feat)
        self.b = torch.nn.Parameter(b)  # (inst, feat)
        if self.spec.untied:
            assert W_out is not None, f"{kind} needs its untied output weights"
            self.W_out = torch.nn.Parameter(W_out)  # (inst, feat, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (inst, batch, feat) -> (inst, batch, feat)
        return self.spec.forward(self.W, self.b, x, getattr(self, "W_out", None))

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """What the model must output (x itself, or e.g. |x| for absval)."""
        return self.spec.target(x)


def instance_losses(out: torch.Tensor, x: torch.Tensor, importance: torch.Tensor) -> torch.Tensor:
    """Σ_i I_i (x_i − x'_i)², averaged over the batch: one loss per instance, (inst,)."""
    return (importance * (x - out).square()).sum(-1).mean(-1)
