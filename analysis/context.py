"""What every analysis step and figure family gets: one `Context`, and data selection on it.

A figure family is `draw(ctx) -> {stem: Figure}` (analysis.registry); it reads what analysis
steps wrote into `ctx.analysis` (analysis.steps) and the store, and only draws.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from analysis.settings import Settings

# Labels of the engine's model kinds in titles; a kind not listed is shown by its name.
MODEL_LABELS = {"linear": "linear", "relu": "ReLU", "privileged": "hidden-ReLU"}


@dataclass
class Context:
    """A store opened for analysis: the store, its analysis dataset, config and settings."""

    path: Path
    store: xr.Dataset
    analysis: xr.Dataset
    config: dict[str, Any]
    settings: Settings
    kind: str | None  # "2to1", "3to2" (a closed-form phase grid) or None

    def section(self, name: str) -> dict[str, Any]:
        """A section of the store's config (model, data, ...), {} when absent."""
        return dict(self.config.get(name) or {})


FigureFn = Callable[[Context], dict[str, Figure]]


def model_label(kind: Any) -> str:
    return MODEL_LABELS.get(str(kind), str(kind))


def best_models(ctx: Context, per_seed: tuple[str, ...] = ()) -> xr.Dataset:
    """W and b of the lowest-loss usable seed of every cell (NaN where a cell is missing), and
    that seed's values of the analysis's per-seed variables named in per_seed (`norm_seed` ...).

    The seed is the analysis's `best_seed` (analysis.steps.best_seed_index).
    """
    idx = ctx.analysis["best_seed"].clip(min=0)  # (cells...); -1 (missing) is masked below
    best = ctx.store[["W", "b"]].isel(seed=idx).drop_vars("seed", errors="ignore")
    if per_seed:
        values = ctx.analysis[list(per_seed)].isel(seed=idx).drop_vars("seed", errors="ignore")
        best = best.assign(values.data_vars)
    return best.where(~ctx.analysis["missing"])


def only(ds: xr.Dataset, keep: tuple[str, ...]) -> xr.Dataset:
    """The cells along `keep`; every other grid axis is held at its first value."""
    other = [d for d in ds["b"].dims if d not in (*keep, "feature")]
    return ds.isel({d: 0 for d in other})


def importance_of(ctx: Context) -> np.ndarray:
    """Importance of each feature (the first cell's: the experiments use one schedule)."""
    imp = ctx.store["importance"]
    return imp.isel({d: 0 for d in imp.dims if d != "feature"}).values.astype(float)


def real_W(W: np.ndarray) -> np.ndarray:
    """Drop the NaN padding rows (hidden dims beyond this shape's m) of one (hidden, feature) W."""
    W = np.asarray(W, float)
    return W[~np.all(np.isnan(W), axis=-1)]
