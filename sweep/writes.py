"""Writing a store: each chunk's region (its values, then its `finished` flags), whether a
chunk is complete, and the attrs the driver records.

The two seams every write and every resume goes through: `write_chunk` (the only writer of a
chunk's trained values) and `sweep.integrity` (the only judge of whether a chunk may be
skipped: its commit record, written here after the values and the flags, must still match
every chunk file of every array, the flags' included). A region covers whole zarr chunks, or
part of one under the chunk's lock, so no two writers rewrite one chunk file at once (zarr has
no locks); the flags go last, so a cell is finished exactly when its results are on disk.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from sweep import integrity
from sweep.blocks import TrainResult
from sweep.grid import Block, GridPlan
from sweep.identity import check_identity
from sweep.layout import open_checked

TRAINED = ("W", "b", "loss", "loss_curve", "diverged")  # tests name them; the engine does not


def region(plan: GridPlan, block: Block) -> dict[str, slice]:
    return {d: block.slices[d] for d in plan.cell_dims}


def finished_chunks(path: Path, plan: GridPlan) -> set[str]:
    """Keys of the chunks whose every cell is finished and intact (sweep.integrity: every chunk
    file of every array as the chunk's commit record says)."""
    open_checked(path)  # refuses stores that are not ours
    ok = integrity.intact(path)  # (cells) bool, over the store's cell dims
    return {b.key() for b in plan.blocks if ok[tuple(region(plan, b).values())].all()}


def chunk_finished(path: Path, plan: GridPlan, block: Block) -> bool:
    """finished_chunks for one chunk, hashing only its files (what a job needs)."""
    return integrity.complete(path, region(plan, block))


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
        out["W_out"] = W_out.reshape(*shape, nh, nf)
    # padded like W; W_out transposed to (hidden, feature)
    if res.W_snapshot is not None and res.b_snapshot is not None:
        k = res.W_snapshot.shape[1]
        Ws = np.full((inst, k, nh, nf), np.nan, np.float32)
        Ws[:, :, :m, :n] = res.W_snapshot
        out["W_snapshot"] = Ws.reshape(*shape, k, nh, nf)
        bs = np.full((inst, k, nf), np.nan, np.float32)
        bs[:, :, :n] = res.b_snapshot
        out["b_snapshot"] = bs.reshape(*shape, k, nf)
        if res.W_out_snapshot is not None:
            Wos = np.full((inst, k, nh, nf), np.nan, np.float32)
            Wos[:, :, :m, :n] = res.W_out_snapshot.transpose(0, 1, 3, 2)
            out["W_out_snapshot"] = Wos.reshape(*shape, k, nh, nf)
    arrays = {  # each in its array's dims: the cell dims, then the array's own
        **out,
        "W": W.reshape(*shape, nh, nf),
        "b": b.reshape(*shape, nf),
        "loss": res.loss.astype(np.float32).reshape(shape),
        "loss_curve": res.curve.astype(np.float32).reshape(*shape, -1),
        "diverged": res.diverged.reshape(shape),
    }
    flags = np.ones(shape, bool) if done is None else np.asarray(done, bool).reshape(shape)
    _write_region(path, arrays, region(plan, block), flags, expected)


def _write_region(
    path: Path,
    arrays: dict[str, np.ndarray],
    reg: dict[str, slice],
    flags: np.ndarray,
    expected: dict | None,
) -> None:
    """Write each array (name -> its values over the region) into its region, then set the
    `finished` flags there and record the chunks' files (sweep.integrity.writing).

    Written straight to the zarr arrays (xarray's region writer lists the group, which warns
    about the job folders kept inside the store). A region covers whole chunks, or part of one
    (a refinement point) under the chunk's lock (sweep.integrity.writing), so no two writers
    rewrite one chunk file at once. The flags go last: a cell is marked done only after all
    its data are on disk.
    """
    import zarr

    if expected is not None:
        check_identity(path, expected)
    group: Any = zarr.open_group(str(path), mode="r+", zarr_format=2, use_consolidated=True)
    idx = tuple(reg.values())
    targets = {name: group[name] for name in arrays}
    for name, arr in targets.items():  # all checked before any is written
        # zarr, as numpy, would broadcast e.g. one curve point over the region's curve_step:
        # values must fill the region exactly
        want = tuple(len(range(*s.indices(n))) for s, n in zip(idx, arr.shape, strict=False))
        want += tuple(arr.shape[len(idx) :])
        if arrays[name].shape != want:
            raise ValueError(
                f"{name}: values of shape {arrays[name].shape} for its region of shape {want}"
            )
    with integrity.writing(path, reg) as commit:
        for name, arr in targets.items():
            arr[idx] = arrays[name].astype(arr.dtype)
        if expected is not None:  # once more: an overwrite may have come between
            check_identity(path, expected)
        commit(flags)  # each chunk's flags, written whole, then its record


def update_attrs(path: Path, attrs: dict) -> None:
    """Add attrs to a store and refresh its consolidated metadata (driver only)."""
    import zarr

    group = zarr.open_group(str(path), mode="r+", zarr_format=2, use_consolidated=False)
    group.attrs.update(attrs)
    with warnings.catch_warnings():  # listing meets .jobs/ and figures/, which are ours
        warnings.filterwarnings("ignore", "Object at", UserWarning)
        zarr.consolidate_metadata(str(path))
