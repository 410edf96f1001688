"""Checks on a composed config, run before anything is created.

Types and choices (model kinds, schedules, modes, unknown keys) are checked by OmegaConf against
the schema in `sweep.config` as the config is composed. Here: the ranges the schema declares
beside each field, and the rules that tie several settings together. Every failure is one line
naming the key, the bad value and what is allowed.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from typing import Any

from omegaconf import OmegaConf

from sweep.blocks import snapshot_steps
from sweep.config import Correlation, range_words, ranged_keys
from sweep.errors import ConfigError

CORRELATIONS = tuple(c.value for c in Correlation)
# Size guards: beyond these the driver's own bookkeeping (the store template's per-cell flags
# and settings, built cell by cell in Python) needs minutes and gigabytes before any training.
# Split such a sweep into several stores.
MAX_CELLS = 10_000_000
MAX_AXIS = 100_000  # values on one axis (or seeds)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def require(cond: bool, key: str, value: Any, allowed: str) -> None:
    if not cond:
        raise ConfigError(key, value, allowed)


def _plain(v: Any) -> Any:
    """A config value as plain Python (lists, dicts, enum values as strings)."""
    if OmegaConf.is_config(v):
        return OmegaConf.to_container(v, resolve=True, enum_to_str=True)
    return v.value if hasattr(v, "value") and not isinstance(v, (int, float, str)) else v


def _in_range(v: Any, lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> bool:
    if lo is not None and (v < lo or (lo_open and v == lo)):
        return False
    return not (hi is not None and (v > hi or (hi_open and v == hi)))


def _range_text(integer: bool, lo: Any, hi: Any, lo_open: bool, hi_open: bool) -> str:
    what = "an integer" if integer else "a finite number"
    if lo is not None and hi is not None:
        return f"{what} in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{what} {'>' if lo_open else '>='} {lo}"
    return f"{what} {'<' if hi_open else '<='} {hi}"


def check_ranges(cfg: Any) -> None:
    """Every setting with a range declared in the schema (analysis.* included)."""
    for key in ranged_keys():
        v = OmegaConf.select(cfg, key, default=None)
        if v is None:
            continue
        lo, hi, lo_open, hi_open = range_words(key) or (None, None, False, False)
        require(
            _number(v) and _in_range(v, lo, hi, lo_open, hi_open),
            key,
            v,
            _range_text(_integer(v), lo, hi, lo_open, hi_open),
        )


def check_analysis(cfg: Any) -> None:
    """The analysis settings alone (the analysis callback calls this too, before training)."""
    for key in ("analysis.norm_threshold", "analysis.superposition_threshold"):
        v = OmegaConf.select(cfg, key, default=None)
        lo, hi, lo_open, hi_open = range_words(key) or (None, None, False, False)
        require(
            _number(v) and _in_range(v, lo, hi, lo_open, hi_open),
            key,
            v,
            _range_text(False, lo, hi, lo_open, hi_open),
        )
    figs = OmegaConf.select(cfg, "analysis.figures", default=None)
    if figs is not None:
        figs = list(figs)
        require(len(figs) == len(set(figs)), "analysis.figures", figs, "distinct names")


def check_config(cfg: Any) -> None:
    """Validate a sweep config: ranges, then the rules tying settings together."""
    check_ranges(cfg)
    check_analysis(cfg)
    m, d, t = cfg.model, cfg.data, cfg.train
    imp = d.importance
    if str(imp.schedule) == "exponential":
        for key in ("start", "end"):
            require(
                imp[key] > 0,
                f"data.importance.{key}",
                imp[key],
                "a number > 0 (exponential spacing)",
            )
    axes = cfg.grid.get("axes") or {}
    # Every n a feature index must fit: the model's, the n_features axis', the zipped shapes'.
    ns = {m.n_features, *_ints(axes.get("n_features")), *_zipped_ints(axes.get("shape"))}
    ns = {n for n in ns if n >= 1}  # n < 1 is reported by the axis checks
    n_min = min(ns)
    for key in ("relative_importance_features", "density_features"):
        feats = d[key]
        if feats is None:
            require(key == "density_features", f"data.{key}", None, "a list of feature indices")
            continue
        feats = list(feats)
        for f in feats:
            # Negative indices count from the last feature of each shape (-1: the last), so one
            # grid over several n can scale "the extra feature" of each.
            require(
                _integer(f) and -n_min <= f < n_min,
                f"data.{key}",
                feats,
                f"feature indices in [{-n_min}, {n_min - 1}] (n_features={n_min}; -1: the last)",
            )
        # A repeated index would scale (or set) that feature twice: r² instead of r; 1 and -1
        # are one feature where n = 2.
        for n in sorted(ns):
            require(
                len({f % n for f in feats}) == len(feats),
                f"data.{key}",
                feats,
                f"distinct features (no duplicates; at n_features={n}, "
                f"{[f % n for f in feats]} counted from 0)",
            )
    # one line naming train.snapshots if bad
    snapshot_steps(OmegaConf.select(cfg, "train.snapshots", default=None), int(t.steps))
    require(
        t.warmup_steps < t.steps,
        "train.warmup_steps",
        t.warmup_steps,
        f"an integer in [0, train.steps={t.steps})",
    )
    dev = str(t.device)
    head, _, tail = dev.partition(":")
    require(
        dev == "auto" or dev == "cpu" or (head == "cuda" and (tail == "" or tail.isdigit())),
        "train.device",
        dev,
        "auto, cpu, cuda or cuda:N",
    )
    require(
        t.compile in ("auto", True, False),
        "train.compile",
        _plain(t.compile),
        "auto, true or false",
    )
    seeds = _plain(cfg.grid.seeds)
    if _integer(seeds):
        require(
            1 <= seeds <= MAX_AXIS,
            "grid.seeds",
            seeds,
            f"an integer in [1, {MAX_AXIS}] or a list of seeds",
        )
    else:
        require(
            isinstance(seeds, list)
            and 0 < len(seeds) <= MAX_AXIS
            and all(_integer(s) and s >= 0 for s in seeds),
            "grid.seeds",
            seeds,
            "an integer >= 1 or a non-empty list of integers >= 0",
        )
        require(len(set(seeds)) == len(seeds), "grid.seeds", seeds, "distinct seeds")


def check_machine(cfg: Any) -> None:
    """What this machine must offer: the device asked for, the launcher's commands."""
    dev = str(cfg.train.device)
    if dev.startswith("cuda"):
        import torch

        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(dev.partition(":")[2] or 0)
        require(
            index < n,
            "train.device",
            dev,
            f"auto or cpu (this machine has {n} CUDA device{'s' if n != 1 else ''})",
        )
    target = str(OmegaConf.select(cfg, "hydra.launcher._target_", default="") or "")
    if "SlurmLauncher" in target:
        missing = [c for c in ("sbatch", "sacct") if shutil.which(c) is None]
        require(
            not missing,
            "launcher",
            "slurm",
            f"a machine with SLURM's commands on PATH ({', '.join(missing)} not found); "
            "use launcher=local or launcher=submitit_local here",
        )


def _zipped_ints(v: Any) -> list:
    """The integer n_features of the entries of a zipped shape axis (the rest is reported by
    sweep.grid.zipped_shapes)."""
    if isinstance(v, Sequence) and not isinstance(v, str):
        return _ints([e.get("n_features") for e in v if hasattr(e, "get")])
    return []


def _ints(v: Any) -> list:
    """The integers of a list-like axis (anything else is reported by the axis checks)."""
    if isinstance(v, Sequence) and not isinstance(v, str):
        return [x for x in v if _integer(x)]
    return []
