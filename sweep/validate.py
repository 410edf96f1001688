"""Checks on a composed config, run before any work starts. Every failure is one line that names
the config key, the bad value and what is allowed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

MODEL_KINDS = ("relu", "linear", "privileged", "absval")
SCHEDULES = ("constant", "geometric", "linear", "exponential")
LR_SCHEDULES = ("constant", "linear", "cosine")
STORE_MODES = ("resume", "overwrite")
DTYPES = ("float32", "float64")
CORRELATIONS = ("none", "correlated", "anticorrelated")


class ConfigError(ValueError):
    """A bad config value; str() is the one-line message shown to the user."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={value!r} is not allowed: expected {allowed}")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def require(cond: bool, key: str, value: Any, allowed: str) -> None:
    if not cond:
        raise ConfigError(key, value, allowed)


def check_config(cfg: Any) -> None:
    """Validate every scalar setting of a sweep config (axes are checked by the grid plan)."""
    m, d, t = cfg.model, cfg.data, cfg.train
    require(m.kind in MODEL_KINDS, "model.kind", m.kind, f"one of {', '.join(MODEL_KINDS)}")
    for key in ("n_features", "n_hidden"):
        v = m[key]
        require(_integer(v) and v >= 1, f"model.{key}", v, "an integer >= 1")
    require(_number(d.density) and 0 < d.density <= 1, "data.density", d.density,
            "a density in (0, 1]")
    require(d.correlation in CORRELATIONS, "data.correlation", d.correlation,
            f"one of {', '.join(CORRELATIONS)}")
    require(_integer(d.set_size) and d.set_size >= 1, "data.set_size", d.set_size,
            "an integer >= 1")
    imp = d.importance
    require(imp.schedule in SCHEDULES, "data.importance.schedule", imp.schedule,
            f"one of {', '.join(SCHEDULES)}")
    needed = {"constant": ("value",), "geometric": ("ratio",), "linear": ("start", "end"),
              "exponential": ("start", "end")}[imp.schedule]
    for key in needed:
        v = imp.get(key)
        require(_number(v) and v >= 0, f"data.importance.{key}", v, "a number >= 0")
    if imp.schedule == "exponential":
        for key in needed:
            require(imp[key] > 0, f"data.importance.{key}", imp[key],
                    "a number > 0 (exponential spacing)")
    n_min = min([m.n_features, *_ints((cfg.grid.get("axes") or {}).get("n_features"))])
    for key in ("relative_importance_features", "density_features"):
        feats = d[key]
        if feats is None and key == "density_features":
            continue
        require(isinstance(feats, (list, tuple)) or hasattr(feats, "__len__"), f"data.{key}",
                feats, "a list of feature indices")
        for f in feats:
            require(_integer(f) and 0 <= f < n_min, f"data.{key}", list(feats),
                    f"feature indices in [0, {n_min - 1}] (n_features={n_min})")
    require(_integer(t.steps) and t.steps >= 1, "train.steps", t.steps, "an integer >= 1")
    require(_integer(t.batch_size) and t.batch_size >= 1, "train.batch_size", t.batch_size,
            "an integer >= 1")
    require(_number(t.lr) and t.lr > 0, "train.lr", t.lr, "a number > 0")
    require(_number(t.weight_decay) and t.weight_decay >= 0, "train.weight_decay",
            t.weight_decay, "a number >= 0")
    require(t.lr_schedule in LR_SCHEDULES, "train.lr_schedule", t.lr_schedule,
            f"one of {', '.join(LR_SCHEDULES)}")
    require(_integer(t.warmup_steps) and 0 <= t.warmup_steps < t.steps, "train.warmup_steps",
            t.warmup_steps, f"an integer in [0, train.steps={t.steps})")
    require(_integer(t.curve_points) and t.curve_points >= 1, "train.curve_points",
            t.curve_points, "an integer >= 1")
    require(t.device == "auto" or str(t.device).split(":")[0] in ("cpu", "cuda"), "train.device",
            t.device, "auto, cpu, cuda or cuda:N")
    threads = t.get("threads", 1)
    require(_integer(threads) and threads >= 0, "train.threads", threads,
            "an integer >= 0 (0: torch's default, all cores)")
    require(t.dtype in DTYPES, "train.dtype", t.dtype, f"one of {', '.join(DTYPES)}")
    require(_number(t.checkpoint_seconds) and t.checkpoint_seconds > 0,
            "train.checkpoint_seconds", t.checkpoint_seconds, "a number > 0")
    require(t.backend in ("fused", "autograd"), "train.backend", t.backend, "fused or autograd")
    require(t.compile in ("auto", True, False), "train.compile", t.compile, "auto, true or false")
    seeds = cfg.grid.seeds
    if _integer(seeds):
        require(seeds >= 1, "grid.seeds", seeds, "an integer >= 1 or a list of seeds")
    else:
        require(hasattr(seeds, "__len__") and len(seeds) > 0
                and all(_integer(s) and s >= 0 for s in seeds), "grid.seeds", seeds,
                "an integer >= 1 or a non-empty list of integers >= 0")
        require(len(set(seeds)) == len(seeds), "grid.seeds", list(seeds), "distinct seeds")
    require(_number(cfg.chunk.memory_mb) and cfg.chunk.memory_mb > 0, "chunk.memory_mb",
            cfg.chunk.memory_mb, "a number of MiB > 0")
    mi = cfg.chunk.get("max_instances")
    require(mi is None or (_integer(mi) and mi >= 1), "chunk.max_instances", mi,
            "null or an integer >= 1")
    require(cfg.store.mode in STORE_MODES, "store.mode", cfg.store.mode,
            f"one of {', '.join(STORE_MODES)}")
    require(_integer(cfg.retries) and cfg.retries >= 0, "retries", cfg.retries,
            "an integer >= 0")


def _ints(v: Any) -> list:
    """The integers of a list-like axis (anything else is reported by the axis checks)."""
    if isinstance(v, Sequence) and not isinstance(v, str):
        return [x for x in v if _integer(x)]
    return []
