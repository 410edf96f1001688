"""Reading a results store for the public API (toysweep/) and the tidy export (analysis.export).

The one place outside analysis.report where store data comes from the engine: the read-only
reader's checked `open_store`, `config_of` and `finished` flags (sweep.reader), so a change in
how stores are read is one edit here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from sweep import reader
from sweep.reader import StoreError

# StoreError: re-exported, so callers meet the engine's reader only here
__all__ = ["StoreError", "config", "finished", "finished_only", "open_lazy", "store_path"]

# Flags and the variables fixed by the config: never masked by `finished_only`.
UNMASKED = ("finished", "diverged", "importance", "feature_density")


def open_lazy(path: Path | str) -> xr.Dataset:
    """The store at path, dask-backed (nothing read but metadata and coordinates).

    A path that is not a toysweep store raises StoreError with one line (sweep.reader).
    """
    p = Path(path).expanduser().absolute()
    ds = reader.open_store(p)
    ds.encoding["toysweep_path"] = str(p)  # figures and the export name their source
    return ds


def store_path(ds: xr.Dataset) -> Path | None:
    """Where a dataset opened by `open_lazy` came from (None for one built in memory)."""
    where = ds.encoding.get("toysweep_path") or ds.encoding.get("source")
    return Path(where) if where else None


def config(ds: xr.Dataset) -> dict[str, Any]:
    """The resolved config the store was swept with."""
    return reader.config_of(ds)


def finished(ds: xr.Dataset) -> xr.DataArray:
    """(cells..., seed) True where a model's results are written (read first: a flag read
    before the values covers values already on disk)."""
    return reader.finished(ds)


def finished_only(ds: xr.Dataset) -> xr.Dataset:
    """ds with every model that is not finished masked: its trained variables NaN, and the
    labels of any grid axis (or seed) with no finished model at all dropped.

    Stays lazy: only the `finished` flags are read. Flags and the config's variables
    (UNMASKED) are kept as they are, so `finished` still says which entries were masked.
    """
    fin = finished(ds)
    keep = {
        d: np.flatnonzero(fin.any([o for o in fin.dims if o != d]).values) for d in fin.dims
    }  # d -> the labels along d holding at least one finished model
    out = ds.isel(keep)
    fin = finished(out)
    masked = {
        name: var.where(fin)
        for name, var in out.data_vars.items()
        if name not in UNMASKED and set(fin.dims) <= set(var.dims)
    }
    out = out.assign(masked)
    out.attrs = dict(ds.attrs)
    out.encoding = dict(ds.encoding)
    return out
