"""Correlated and anticorrelated feature sets (the paper's "Superposition and correlated
features").

Features are cut into consecutive sets of `set_size`. Within a correlated set, all members are
zero or nonzero together (one draw per set decides), their values independent U[0, 1]. Within an
anticorrelated set, with probability 1 − p the whole set is zero, else exactly one member, picked
uniformly, is nonzero ~ U[0, 1]. As in `sweep.data`, every draw comes from the instance seed's own
stream, so a cell's data never depend on how the grid is chunked.
"""

from __future__ import annotations

import numpy as np
import torch

from sweep.data import FeatureSampler
from sweep.validate import CORRELATIONS


class GroupedSampler(FeatureSampler):
    """Draws (inst, batch, feat) inputs whose features come in correlated or anticorrelated sets.

    The activity of a set is decided against the density of its first feature.
    """

    def __init__(
        self,
        seeds: np.ndarray,
        density: np.ndarray,
        batch: int,
        purpose: str,
        device: torch.device,
        dtype: torch.dtype,
        correlation: str,
        set_size: int,
    ):
        super().__init__(seeds, density, batch, purpose, device, dtype)
        n = density.shape[1]
        if correlation not in CORRELATIONS[1:] or n % set_size:
            raise ValueError(f"correlation={correlation!r} with set_size={set_size} and n={n}")
        self.kind, self.size, self.sets = correlation, set_size, n // set_size
        first = torch.arange(self.sets, device=device) * set_size
        self.p_set = self.p[:, :, first]  # (inst, 1, sets)
        self.member = torch.arange(n, device=device) % set_size  # (feat,) place in its set

    def uniforms(self) -> torch.Tensor:
        """One draw per seed: per-element values, then per-set activity and member choice:
        (seeds, batch, feat + 2 sets)."""
        return torch.stack(
            [
                torch.rand(
                    (self.batch, self.n + 2 * self.sets),
                    generator=g,
                    device=self.device,
                    dtype=self.dtype,
                )
                for g in self.gens
            ]
        )

    def sample(self) -> torch.Tensor:
        u = self.uniforms()[self.seed_index]  # (inst, batch, feat + 2 sets)
        values = u[..., : self.n]  # (inst, batch, feat)
        active = u[..., self.n : self.n + self.sets] < self.p_set  # (inst, batch, sets)
        active = active.repeat_interleave(self.size, dim=-1)  # (inst, batch, feat)
        if self.kind == "anticorrelated":
            pick = (u[..., self.n + self.sets :] * self.size).long().clamp_max(self.size - 1)
            active = active & (pick.repeat_interleave(self.size, dim=-1) == self.member)
        return torch.where(active, values, torch.zeros((), dtype=self.dtype, device=self.device))


def make_sampler(
    seeds: np.ndarray,
    density: np.ndarray,
    batch: int,
    purpose: str,
    device: torch.device,
    dtype: torch.dtype,
    correlation: str = "none",
    set_size: int = 1,
    signed: bool = False,
) -> FeatureSampler:
    """The sampler for a block: independent features (values in [0, 1), or [-1, 1) when
    signed), or correlated/anticorrelated sets."""
    if correlation == "none":
        return FeatureSampler(seeds, density, batch, purpose, device, dtype, signed)
    if signed:
        raise ValueError("signed values with correlated feature sets are not supported")
    return GroupedSampler(seeds, density, batch, purpose, device, dtype, correlation, set_size)
