"""Writing a store: each chunk's region (its values, then its `finished` flags), whether a
chunk is complete, and the attrs the driver records.

The two seams every write and every resume goes through: `write_chunk` (the only writer of a
chunk's trained values) and `chunk_complete` (the only judge of whether a chunk may be skipped).
A region covers whole zarr chunks, so concurrent writers of other chunks never touch these
chunk files (zarr has no locks); the flags go last, so a cell is finished exactly when its
results are on disk.
"""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from sweep.blocks import TrainResult
from sweep.grid import Block, GridPlan
from sweep.identity import check_identity
from sweep.layout import open_checked, read_region

TRAINED = ("W", "b", "loss", "loss_curve", "diverged")


def region(plan: GridPlan, block: Block) -> dict[str, slice]:
    return {d: block.slices[d] for d in plan.cell_dims}


def _chunks_intact(group: Any, name: str, idx: tuple) -> bool:
    """The chunk files of a region, checked against their own blosc headers.

    A truncated chunk can decode without an error (blosc trusts its header and reads past the
    end of the data), so its length is compared with the compressed size the header records.
    A chunk file that is absent is fine here (it reads as the fill value, judged by the caller).
    """
    arr = group[name]
    comp = getattr(arr, "compressors", None) or ()
    if not any(type(c).__name__ == "Blosc" for c in comp):
        return True
    folder = Path(str(group.store.root)) / name
    ranges = []
    for k, c in enumerate(arr.chunks):
        sl = idx[k] if k < len(idx) else slice(0, arr.shape[k])
        ranges.append(range(sl.start // c, (sl.stop - 1) // c + 1))
    for key in itertools.product(*ranges):
        f = folder / ".".join(map(str, key))
        if not f.exists():
            continue
        data = f.read_bytes()
        # blosc's 16-byte header: version, versionlz, flags, typesize, then uint32 LE nbytes,
        # blocksize, cbytes (the whole buffer's length, header included)
        if len(data) < 16 or int.from_bytes(data[12:16], "little") != len(data):
            return False
    return True


def chunk_complete(group: Any, plan: GridPlan, block: Block) -> bool:
    """Whether a chunk may be skipped: every cell flagged finished with all its results
    readable and present. The one judge of it (a resume, a retry, a job about to train).

    A cell counts as unfinished when any of its variables cannot be read or reads back missing
    (a chunk file deleted, truncated or overwritten by hand), so the next run retrains it.
    """
    idx = tuple(region(plan, block).values())
    n, m = block.shape.n_features, block.shape.n_hidden
    read = {
        v: read_region(group, v, idx)
        for v in (*TRAINED, "finished", *(["W_out"] if "W_out" in group else []))
    }
    got = {k: v for k, v in read.items() if v is not None}
    if len(got) < len(read):
        return False
    if not all(_chunks_intact(group, v, idx) for v in got):
        return False
    ok = got["finished"].astype(bool)
    # any(): a deleted chunk reads back all NaN; a trained cell has finite values somewhere
    present = (
        np.isfinite(got["loss"])
        & np.isfinite(got["W"][..., :m, :n]).any((-2, -1))
        & np.isfinite(got["b"][..., :n]).any(-1)
        & np.isfinite(got["loss_curve"]).any(-1)
    )
    if "W_out" in got:
        present &= np.isfinite(got["W_out"][..., :m, :n]).any((-2, -1))
    return bool((ok & (present | got["diverged"].astype(bool))).all())


def _group(path: Path) -> Any:
    import zarr

    return zarr.open_group(str(path), mode="r", zarr_format=2, use_consolidated=True)


def finished_chunks(path: Path, plan: GridPlan) -> set[str]:
    """Keys of the chunks whose every cell is finished and has its results on disk.

    Reads every trained variable of every chunk (a verify of the whole store): a missing,
    unreadable or NaN-filled chunk file of any of them marks its chunk unfinished.
    """
    open_checked(path)  # refuses stores that are not ours
    group = _group(path)
    return {b.key() for b in plan.blocks if chunk_complete(group, plan, b)}


def chunk_finished(path: Path, plan: GridPlan, block: Block) -> bool:
    """chunk_complete for one chunk, reading only its files (what a job needs)."""
    return chunk_complete(_group(path), plan, block)


def write_chunk(
    path: Path,
    plan: GridPlan,
    block: Block,
    res: TrainResult,
    expected: dict | None = None,
    done: np.ndarray | None = None,
) -> None:
    """Write one chunk's results into its region, then flag its cells finished. The only
    writer of trained values (jobs, refinement, migration).

    res holds the chunk's models in C order of its region. With `expected` (the run identity
    the job was launched for), the store's identity is checked first and a mismatch
    (StaleWrite) writes nothing. `done` (the chunk's cells, bool) flags only those cells (a
    migrated chunk of which some cells were finished); default all.
    """
    dims = plan.cell_dims
    shape = plan.instances(block).block_shape
    nh, nf = plan.max_hidden, plan.max_features
    inst, m, n = res.W.shape
    W = np.full((inst, nh, nf), np.nan, np.float32)
    W[:, :m, :n] = res.W
    b = np.full((inst, nf), np.nan, np.float32)
    b[:, :n] = res.b
    out = {}
    if res.W_out is not None:
        W_out = np.full((inst, nh, nf), np.nan, np.float32)
        W_out[:, :m, :n] = res.W_out.transpose(0, 2, 1)
        out["W_out"] = (dims + ["hidden", "feature"], W_out.reshape(*shape, nh, nf))
    snap = plan.cell_dims + ["snapshot_step"]
    # padded like W; W_out transposed to (hidden, feature)
    if res.W_snapshot is not None and res.b_snapshot is not None:
        k = res.W_snapshot.shape[1]
        Ws = np.full((inst, k, nh, nf), np.nan, np.float32)
        Ws[:, :, :m, :n] = res.W_snapshot
        out["W_snapshot"] = (snap + ["hidden", "feature"], Ws.reshape(*shape, k, nh, nf))
        bs = np.full((inst, k, nf), np.nan, np.float32)
        bs[:, :, :n] = res.b_snapshot
        out["b_snapshot"] = (snap + ["feature"], bs.reshape(*shape, k, nf))
        if res.W_out_snapshot is not None:
            Wos = np.full((inst, k, nh, nf), np.nan, np.float32)
            Wos[:, :, :m, :n] = res.W_out_snapshot.transpose(0, 1, 3, 2)
            out["W_out_snapshot"] = (snap + ["hidden", "feature"], Wos.reshape(*shape, k, nh, nf))
    ds = xr.Dataset(
        {
            **out,
            "W": (dims + ["hidden", "feature"], W.reshape(*shape, nh, nf)),
            "b": (dims + ["feature"], b.reshape(*shape, nf)),
            "loss": (dims, res.loss.astype(np.float32).reshape(shape)),
            "loss_curve": (dims + ["curve_step"], res.curve.astype(np.float32).reshape(*shape, -1)),
            "diverged": (dims, res.diverged.reshape(shape)),
        }
    )
    flags = np.ones(shape, bool) if done is None else np.asarray(done, bool).reshape(shape)
    _write_region(path, ds, region(plan, block), flags, expected)


def _write_region(
    path: Path, ds: xr.Dataset, reg: dict[str, slice], flags: np.ndarray, expected: dict | None
) -> None:
    """Write ds's variables into their region, then set the `finished` flags there.

    Written straight to the zarr arrays (xarray's region writer lists the group, which warns
    about the job folders kept inside the store). The region covers whole chunks, so writers
    of other blocks never touch these chunk files. The flag goes last: a cell is marked done
    only after all its data are on disk.
    """
    import zarr

    if expected is not None:
        check_identity(path, expected)
    group: Any = zarr.open_group(str(path), mode="r+", zarr_format=2, use_consolidated=True)
    idx = tuple(reg.values())
    for name, var in ds.data_vars.items():
        arr = group[name]
        arr[idx] = var.values.astype(arr.dtype)
    if expected is not None:  # once more before the flag: an overwrite may have come between
        check_identity(path, expected)
    group["finished"][idx] = flags


def update_attrs(path: Path, attrs: dict) -> None:
    """Add attrs to a store and refresh its consolidated metadata (driver only)."""
    import zarr

    group = zarr.open_group(str(path), mode="r+", zarr_format=2, use_consolidated=False)
    group.attrs.update(attrs)
    with warnings.catch_warnings():  # listing meets .jobs/ and figures/, which are ours
        warnings.filterwarnings("ignore", "Object at", UserWarning)
        zarr.consolidate_metadata(str(path))
