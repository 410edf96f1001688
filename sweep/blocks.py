"""What travels between the plan, the trainer and the store, with no torch: one block's job
(`BlockJob`), its result (`TrainResult`) and the loss-curve steps both sides must agree on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from sweep.errors import ConfigError


def curve_steps(steps: int, points: int) -> np.ndarray:
    """Steps (0-based) at which the loss curve is recorded: evenly spaced, last step included."""
    return np.unique(np.linspace(0, steps - 1, min(points, steps)).round().astype(int))


SNAPSHOT_FORMS = (
    "null, a list of distinct integer steps, or [log|lin, start, stop, num] (steps counted from 1)"
)


def snapshot_steps(spec: Any, steps: int) -> np.ndarray:
    """`train.snapshots` expanded to the sorted training steps (1-based: W after k steps) at
    which W and b are stored; empty for null. The one expansion the trainer and the store use.

    Raises ConfigError (one line) for anything else or a step outside [1, steps].
    """
    if OmegaConf.is_config(spec):
        spec = OmegaConf.to_container(spec, resolve=True)
    if spec is None:
        return np.zeros(0, np.int64)
    within = f"[1, train.steps={steps}]"
    if not isinstance(spec, (list, tuple)):
        raise ConfigError("train.snapshots", spec, SNAPSHOT_FORMS)
    spec = list(spec)
    if spec and spec[0] in ("log", "lin"):
        args = spec[1:]
        if (
            len(args) != 3
            or not all(_integer(v) or isinstance(v, float) for v in args)
            or not _integer(args[2])
            or args[2] < 1
        ):
            raise ConfigError(
                "train.snapshots",
                spec,
                f"[{spec[0]}, start, stop, num] with numbers and an integer num >= 1",
            )
        if not all(1 <= v <= steps for v in args[:2]):
            raise ConfigError("train.snapshots", spec, f"start and stop in {within}")
        space = np.geomspace if spec[0] == "log" else np.linspace
        # Rounding merges the close early steps of a log spacing: kept once each.
        return np.unique(space(args[0], args[1], int(args[2])).round().astype(np.int64))
    if not all(_integer(v) for v in spec):
        raise ConfigError("train.snapshots", spec, SNAPSHOT_FORMS)
    if not all(1 <= v <= steps for v in spec):
        raise ConfigError("train.snapshots", spec, f"integer steps in {within}")
    if len(set(spec)) != len(spec):
        raise ConfigError("train.snapshots", spec, "distinct steps (no duplicates)")
    return np.array(sorted(spec), np.int64)


def _integer(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


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
    # models of this shape in the whole grid: train.compile=auto decides by the shape's work,
    # so that every grouping of its chunks into jobs trains them alike (None: this job's)
    shape_instances: int | None = None

    @property
    def n_features(self) -> int:
        return int(self.density.shape[1])

    @property
    def steps(self) -> int:
        return int(self.train.steps)

    @property
    def curve_steps(self) -> np.ndarray:
        return curve_steps(self.steps, int(self.train.curve_points))

    @property
    def snapshot_steps(self) -> np.ndarray:
        return snapshot_steps(getattr(self.train, "snapshots", None), self.steps)


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
    # Weights at train.snapshots' steps (None without snapshots): (inst, snap, hidden, feat),
    # (inst, snap, feat) and, for untied kinds, (inst, snap, feat, hidden).
    W_snapshot: np.ndarray | None = None
    b_snapshot: np.ndarray | None = None
    W_out_snapshot: np.ndarray | None = None

    def part(self, sl: slice) -> TrainResult:
        """The results of the instances `sl` (one chunk of a job that trained several)."""

        def cut(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[sl]

        return TrainResult(
            self.W[sl],
            self.b[sl],
            self.loss[sl],
            self.curve[sl],
            self.diverged[sl],
            self.seconds,
            self.resumed_from,
            cut(self.W_out),
            cut(self.W_snapshot),
            cut(self.b_snapshot),
            cut(self.W_out_snapshot),
        )
