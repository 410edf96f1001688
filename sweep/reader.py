"""Reading a store: open it (refusing what is not ours, another format, or an edited config),
its recorded config, which cells are finished, one cell's values.

The analysis and the explorer open stores only through here. It imports neither torch nor the
grid planner (a test checks sys.modules), so reading a store stays cheap.

Format 3 (this toysweep): the storage chunks are a function of the grid and the memory budget
only (sweep.grid), the fingerprint is the hash of the recorded config_yaml, and each chunk's
commit record hashes its flag file too (sweep.integrity). Format 1 cut its chunks for a worker
count; format 2's records left the flags out. `python -m sweep.migrate <store>` rewrites either
as format 3.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from sweep import integrity
from sweep.identity import fingerprint_of_yaml

if TYPE_CHECKING:  # imported where used: a job's process writes with zarr alone (~0.4 s less)
    import xarray as xr

SCHEMA_VERSION = 3  # 3: each chunk's record hashes its flag file too (sweep.integrity)
OLDER = (1, 2)  # formats `python -m sweep.migrate` converts
MIGRATE = "python -m sweep.migrate"


class StoreError(RuntimeError):
    """A store that cannot be used as asked; str() is a one-line message."""


def is_store(path: Path) -> bool:
    """Whether a folder is a toysweep store (any format): its root attrs say so."""
    return schema_version(path) is not None


def schema_version(path: Path) -> Any:
    """The schema_version a folder's root attrs record, or None (not a toysweep store)."""
    import json

    try:
        attrs = json.loads((Path(path) / ".zattrs").read_text())
    except (OSError, ValueError):
        return None
    return attrs.get("schema_version") if isinstance(attrs, dict) else None


def open_store(path: Path, verify: bool = True) -> xr.Dataset:
    """Open a store of this format whose recorded config hashes to its fingerprint.

    verify: `finished` is replaced by the cells sweep.integrity finds intact (committed, every
    chunk file as its record says), so every reader (the analysis, the explorer, the export,
    the API) counts only what a resume would keep; a damaged chunk reads as unfinished until a
    resume repairs it. The engine passes False: it judges cells through sweep.integrity itself.
    """
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such store")
    if not (path / ".zmetadata").exists() and not (path / ".zgroup").exists():
        raise StoreError(f"{path}: not a zarr store (no .zgroup/.zmetadata)")
    import xarray as xr

    try:
        ds = xr.open_zarr(path, consolidated=True)
    except Exception as e:  # zarr raises many kinds for damaged metadata
        raise StoreError(
            f"{path}: cannot be opened as a zarr store ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''})"
        ) from None
    version = ds.attrs.get("schema_version")
    if version is None or "fingerprint" not in ds.attrs:
        raise StoreError(
            f"{path}: a zarr store but not a toysweep results store "
            "(no schema_version/fingerprint attrs)"
        )
    if version in OLDER:
        raise StoreError(
            f"{path}: schema_version={version}, an older format; convert it with `{MIGRATE} {path}`"
        )
    if version != SCHEMA_VERSION:
        raise StoreError(
            f"{path}: schema_version={version!r} but this toysweep reads "
            f"schema_version={SCHEMA_VERSION}"
        )
    try:
        recorded = fingerprint_of_yaml(str(ds.attrs.get("config_yaml")))
    except ValueError as e:
        raise StoreError(f"{path}: its config_yaml attr cannot be read back ({e})") from None
    if recorded != ds.attrs["fingerprint"]:
        raise StoreError(
            f"{path}: its config_yaml hashes to {recorded}, not to its fingerprint "
            f"{ds.attrs['fingerprint']}: the recorded config was edited, so it no longer says "
            "how the store was made"
        )
    if verify:
        if not (path / integrity.RECORDS).is_dir():  # every store has one from its template on
            raise StoreError(
                f"{path}: its commit records ({integrity.RECORDS}/) are missing, so none of its "
                "cells can be trusted: was it copied without its hidden folders? Copy the "
                "store's folder itself (cp -r, rsync -a)"
            )
        try:
            ok = integrity.intact(path)
        except integrity.IntegrityError as e:
            raise StoreError(str(e)) from None
        ds["finished"] = ds["finished"].copy(data=ok)
    return ds


def config_of(ds: xr.Dataset) -> dict:
    """The resolved config a store was made with."""
    return yaml.safe_load(ds.attrs["config_yaml"])


def finished(ds: xr.Dataset) -> xr.DataArray:
    """Which cells are finished: of a store opened by `open_store`, those found intact when it
    was opened (a sweep may be writing the store; a cell's record is written after its
    values, so what was intact then is on disk)."""
    return ds["finished"].load().astype(bool)


def read_cell(ds: xr.Dataset, **coords: Any) -> xr.Dataset:
    """One cell's trained values (every seed unless `seed` is given), padding cut off: W is
    (seed, hidden, feature) over the cell's own n_hidden and n_features."""
    cell = ds.sel(coords)
    feats = np.isfinite(cell["importance"].values)  # NaN where padded
    config = config_of(ds)
    n = int(feats.sum())
    # n_hidden: a coord of the cell (its axis, or along a zipped `shape` axis), else the model's
    one = "n_hidden" in cell.coords and cell["n_hidden"].size == 1
    m = int(cell["n_hidden"]) if one else int(config["model"]["n_hidden"])
    return cell.isel(hidden=slice(0, m), feature=slice(0, n))
