"""What travels between the plan, the trainer and the store, with no torch: one block's job
(`BlockJob`), its result (`TrainResult`) and the loss-curve steps both sides must agree on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def curve_steps(steps: int, points: int) -> np.ndarray:
    """Steps (0-based) at which the loss curve is recorded: evenly spaced, last step included."""
    return np.unique(np.linspace(0, steps - 1, min(points, steps)).round().astype(int))


@dataclass(frozen=True)
class BlockJob:
    """Everything one job trains: the models of one block, as one typed object.

    Built by `GridPlan.job(block)`; `train` is the typed train section (`sweep.config.
    TrainConfig`, or anything with the same attributes).
    """

    key: str
    kind: str
    n_hidden: int
    seeds: np.ndarray  # (inst,) int
    density: np.ndarray  # (inst, feat)
    importance: np.ndarray  # (inst, feat)
    train: Any
    correlation: str = "none"
    set_size: int = 1

    @property
    def n_features(self) -> int:
        return int(self.density.shape[1])

    @property
    def steps(self) -> int:
        return int(self.train.steps)

    @property
    def curve_steps(self) -> np.ndarray:
        return curve_steps(self.steps, int(self.train.curve_points))


@dataclass
class TrainResult:
    W: np.ndarray  # (inst, hidden, feat)
    b: np.ndarray  # (inst, feat)
    loss: np.ndarray  # (inst,) expected loss on fresh samples after training
    curve: np.ndarray  # (inst, curve_points) training loss at curve_steps
    diverged: np.ndarray  # (inst,) bool: non-finite weights or loss
    seconds: float
    resumed_from: int  # step the run resumed from (0 for a fresh start)
    W_out: np.ndarray | None = None  # (inst, feat, hidden): untied output weights (absval)
