"""toysweep's public Python API: one import path for notebooks and scripts.

    import toysweep
    path = toysweep.sweep("phase", ["train.steps=1500", "store.path=/tmp/phase"])
    ds = toysweep.open(path, finished_only=True)   # lazy, dask-backed xarray.Dataset
    ds.toysweep.phases()                           # every model's and cell's phases
    toysweep.figure("phase_diagram", ds)           # a matplotlib Figure

The reference is docs/api.md. Everything here calls the engine (sweep/) and the analysis
(analysis/) that `python -m sweep` and `python -m analysis` run, so the numbers are theirs.
"""

from __future__ import annotations

from pathlib import Path

import xarray as xr

from analysis import source
from analysis.report import AnalysisError
from analysis.settings import SettingsError
from analysis.source import StoreError
from toysweep.accessor import ToysweepAccessor
from toysweep.figures import figure, figures
from toysweep.run import SweepError, sweep

__all__ = [
    "AnalysisError",
    "SettingsError",
    "StoreError",
    "SweepError",
    "ToysweepAccessor",
    "figure",
    "figures",
    "open",
    "sweep",
]


def open(path: str | Path, finished_only: bool = False) -> xr.Dataset:  # noqa: A001 - the API's verb
    """A store as a lazy (dask-backed) xarray.Dataset, with the `ds.toysweep` accessor.

    finished_only: models not yet finished (a sweep still running, or interrupted) are masked,
    their trained variables NaN, and grid values (or seeds) with no finished model are dropped;
    the `finished`/`diverged` flags and importance/feature_density are kept as they are.
    A path that is not a toysweep store raises StoreError with one line, as `python -m
    analysis` says it.
    """
    ds = source.open_lazy(path)
    return source.finished_only(ds) if finished_only else ds
