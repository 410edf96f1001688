"""Synthetic sparse features, sampled on the training device every step.

x_i = 0 with probability 1 - p_i, else U[0, 1]. One uniform u per element gives both: the
feature is active when u < p_i, and then u / p_i is uniform on [0, 1). The uniforms come from
one generator per *seed* (not per instance), so every instance with seed s sees the same u
stream whatever tensor it sits in: a cell's data never depends on how the grid is chunked, and
cells that share a seed share their random numbers (common random numbers across the grid,
which makes neighbouring cells directly comparable).
"""

from __future__ import annotations

import numpy as np
import torch

from sweep.models import stream_seed


class FeatureSampler:
    """Draws (inst, batch, feat) inputs for a block of instances."""

    def __init__(
        self,
        seeds: np.ndarray,
        density: np.ndarray,
        batch: int,
        purpose: str,
        device: torch.device,
        dtype: torch.dtype,
        signed: bool = False,
    ):
        n = density.shape[1]
        self.signed = signed  # values U[-1, 1] instead of U[0, 1] (the absolute-value task)
        self.batch, self.n, self.device, self.dtype = batch, n, device, dtype
        self.unique = [int(s) for s in np.unique(seeds)]
        self.gens = [
            torch.Generator(device=device).manual_seed(stream_seed(s, purpose, n))
            for s in self.unique
        ]
        where = {s: i for i, s in enumerate(self.unique)}
        self.seed_index = torch.tensor([where[int(s)] for s in seeds], device=device)  # (inst,)
        # Instances laid out as (cells, seeds), every seed once per cell in order (the grid's C
        # order when a block holds all seeds): the draws then broadcast over cells, ungathered.
        k = len(self.unique)
        self.tiled = len(seeds) % k == 0 and bool(
            (self.seed_index.view(-1, k) == torch.arange(k, device=device)).all()
        )
        self.p = torch.as_tensor(density, dtype=dtype, device=device).unsqueeze(1)  # (inst,1,feat)

    def uniforms(self) -> torch.Tensor:
        """One (batch, feat) draw per distinct seed: (seeds, batch, feat)."""
        return torch.stack(
            [
                torch.rand((self.batch, self.n), generator=g, device=self.device, dtype=self.dtype)
                for g in self.gens
            ]
        )

    def sample(self) -> torch.Tensor:
        u = self.uniforms()  # (seeds, batch, feat)
        if self.tiled:
            u, p = u.unsqueeze(0), self.p.view(-1, len(self.unique), 1, self.n)
            return self._values(u, p).flatten(0, 1)  # (inst, batch, feat)
        return self._values(u[self.seed_index], self.p)  # (inst, batch, feat)

    def _values(self, u: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        # active when u < p; then u / p is U[0, 1), and 2u / p − 1 is U[−1, 1)
        return torch.where(u < p, 2 * u / p - 1 if self.signed else u / p, 0)

    def state(self) -> list[torch.Tensor]:
        return [g.get_state() for g in self.gens]

    def set_state(self, states: list[torch.Tensor]) -> None:
        for g, s in zip(self.gens, states, strict=False):
            g.set_state(s)
