"""The sweep's single zarr-backed xarray dataset.

Layout: dims are the grid axes in config order, then `seed`, then `hidden`/`feature` (and
`curve_step` for loss curves). A grid over several shapes (model kind, n_features, n_hidden
as axes) pads W and b with NaN up to the largest shape; the axis coords say which entries are
real. The driver writes a *template* before any job starts (coords, static variables, and
metadata for the trained ones); each job then writes one block of cells, a region that covers
whole zarr chunks, so concurrent writers never touch the same chunk file (zarr has no locks).
A job writes its results first and its `finished` flags last, so a cell is finished exactly
when its results are complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import yaml
from omegaconf import OmegaConf

from sweep import kinds
from sweep.blocks import TrainResult, curve_steps, snapshot_steps
from sweep.grid import Block, GridPlan

SCHEMA_VERSION = 1
# Config sections that decide the numbers in a store; two configs with the same sections (and
# so the same fingerprint) can resume each other's stores.
RESULT_SECTIONS = ("name", "model", "data", "train", "grid", "chunk")
NOT_RESULTS = {"train": ("device", "checkpoint_seconds", "compile_cache")}
TRAINED = ("W", "b", "loss", "loss_curve", "diverged")


class StoreError(RuntimeError):
    """A store that cannot be used as asked; str() is a one-line message."""


def fingerprint(cfg: Any) -> str:
    """Hash of the config sections that decide a store's layout and numbers."""
    c = OmegaConf.to_container(cfg, resolve=True)
    part = {k: c.get(k) for k in RESULT_SECTIONS}
    for section, keys in NOT_RESULTS.items():
        part[section] = {k: v for k, v in (part[section] or {}).items() if k not in keys}
    train: Any = part["train"]
    if isinstance(train, dict) and "snapshots" in train and train["snapshots"] is None:
        del train["snapshots"]  # unset: the fingerprint of stores made before the key
    fed = GridPlan(cfg).fed  # blocks cut for this many workers: a different count, other chunks
    if fed > 1:
        part["workers"] = fed
    return hashlib.sha256(json.dumps(part, sort_keys=True).encode()).hexdigest()[:16]


def provenance(cfg: Any) -> dict:
    """Attrs recording how a store was made: config, versions, commit, machine."""
    import torch

    from sweep import __version__

    libs = {}
    for lib in ("torch", "numpy", "xarray", "zarr", "hydra-core", "submitit", "dask"):
        try:
            libs[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            libs[lib] = "absent"
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    device = "cuda: " + torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    return {
        "schema_version": SCHEMA_VERSION,
        "grid_name": str(cfg.name),
        "fingerprint": fingerprint(cfg),
        "config_yaml": OmegaConf.to_yaml(cfg, resolve=True),
        "toysweep_version": __version__,
        "git_commit": commit or "unknown",
        "library_versions": json.dumps(libs),
        "device": device,
        "host": platform.node(),
    }


def _padded(values: list[np.ndarray], n: int) -> np.ndarray:
    out = np.full((len(values), n), np.nan)
    for i, v in enumerate(values):
        out[i, : len(v)] = v
    return out


def template(plan: GridPlan, cfg: Any) -> xr.Dataset:
    """The empty dataset of a sweep: coords, static variables, lazily-filled trained ones."""
    import dask.array as da

    dims = plan.cell_dims
    sizes = [len(plan.coords[d]) for d in dims]
    chunks = [plan.chunks[d] for d in dims]
    nh, nf = plan.max_hidden, plan.max_features
    record = curve_steps(int(cfg.train.steps), int(cfg.train.curve_points))
    points = len(record)

    def lazy(extra_dims: tuple, extra_sizes: tuple, dtype: Any, fill: Any):
        arr = da.full(sizes + list(extra_sizes), fill, dtype=dtype,
                      chunks=chunks + list(extra_sizes))
        return (dims + list(extra_dims), arr)

    # Importance and density per cell and feature are fixed by the config: written now.
    cell_dims = [d for d in dims if d != "seed"]
    imp, dens = [], []
    for cell in np.ndindex(*[len(plan.coords[d]) for d in cell_dims]):
        c = {d: plan.coords[d][i] for d, i in zip(cell_dims, cell, strict=False)}
        _, d_cell, i_cell = plan.cell_settings(c)
        imp.append(i_cell)
        dens.append(d_cell)
    cell_shape = [len(plan.coords[d]) for d in cell_dims]
    ds = xr.Dataset(
        {
            "W": lazy(("hidden", "feature"), (nh, nf), np.float32, np.nan),
            "b": lazy(("feature",), (nf,), np.float32, np.nan),
            "loss": lazy((), (), np.float32, np.nan),
            "loss_curve": lazy(("curve_step",), (points,), np.float32, np.nan),
            "diverged": (dims, np.zeros(sizes, bool)),
            "finished": (dims, np.zeros(sizes, bool)),
            "importance": (cell_dims + ["feature"], _padded(imp, nf).reshape(cell_shape + [nf])),
            "feature_density": (cell_dims + ["feature"],
                                _padded(dens, nf).reshape(cell_shape + [nf])),
        },
        coords={**{d: plan.coords[d] for d in dims}, "hidden": np.arange(nh),
                "feature": np.arange(nf),
                "curve_step": record + 1},
    )
    untied = any(kinds.get(s.model).untied for s in plan.shapes)
    if untied:
        dims_, arr = lazy(("hidden", "feature"), (nh, nf), np.float32, np.nan)
        ds["W_out"] = (dims_, arr)
        ds["W_out"].attrs["description"] = ("absval output weights W_out (feature, hidden), "
                                            "stored transposed as (hidden, feature)")
    snaps = snapshot_steps(cfg.train.get("snapshots"), int(cfg.train.steps))
    if len(snaps):  # learning dynamics: the weights at train.snapshots' steps
        k = len(snaps)
        ds = ds.assign_coords(snapshot_step=snaps)
        ds["W_snapshot"] = lazy(("snapshot_step", "hidden", "feature"), (k, nh, nf),
                                np.float32, np.nan)
        ds["b_snapshot"] = lazy(("snapshot_step", "feature"), (k, nf), np.float32, np.nan)
        if untied:
            ds["W_out_snapshot"] = lazy(("snapshot_step", "hidden", "feature"), (k, nh, nf),
                                        np.float32, np.nan)
        ds["W_snapshot"].attrs["description"] = ("W after snapshot_step training steps "
                                                 "(train.snapshots); NaN until written")
    ds["finished"].encoding["chunks"] = tuple(chunks)
    ds["diverged"].encoding["chunks"] = tuple(chunks)
    ds["W"].attrs["description"] = "weights, (hidden, feature) per model; NaN where padded"
    ds["loss"].attrs["description"] = "expected loss after training, on fresh samples"
    ds["loss_curve"].attrs["description"] = "training loss at curve_step (1-based step)"
    ds["finished"].attrs["description"] = "True once the cell's results are written"
    ds["diverged"].attrs["description"] = "True where training produced NaN or inf"
    ds.attrs.update(provenance(cfg))
    return ds


def create(path: Path, plan: GridPlan, cfg: Any) -> None:
    """Write the template store (metadata and static variables; no trained values yet).

    Written beside the target and renamed into place, so a store path holds either nothing,
    the previous store, or a complete template, never half a template. An existing store
    (store.mode=overwrite) is moved aside first and removed only once the new one is in place.
    """
    tmp = path.with_name(f".{path.name}.new-{os.getpid()}")
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    template(plan, cfg).to_zarr(tmp, mode="w", compute=False, zarr_format=2, consolidated=True)
    (tmp / ".jobs").mkdir(mode=0o700)  # logs and checkpoints: the user's eyes only
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def open_store(path: Path) -> xr.Dataset:
    """Open a sweep store, refusing paths that are not ours or are of another schema."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{path}: no such store")
    if not (path / ".zmetadata").exists() and not (path / ".zgroup").exists():
        raise StoreError(f"{path}: not a zarr store (no .zgroup/.zmetadata)")
    try:
        ds = xr.open_zarr(path, consolidated=True)
    except Exception as e:  # zarr raises many kinds for damaged metadata
        raise StoreError(f"{path}: cannot be opened as a zarr store ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    version = ds.attrs.get("schema_version")
    if version is None or "fingerprint" not in ds.attrs:
        raise StoreError(f"{path}: a zarr store but not a toysweep results store "
                         "(no schema_version/fingerprint attrs)")
    if version != SCHEMA_VERSION:
        raise StoreError(f"{path}: schema_version={version} but this toysweep reads "
                         f"schema_version={SCHEMA_VERSION}; re-run the sweep into a new store")
    return ds


def region(plan: GridPlan, block: Block) -> dict[str, slice]:
    return {d: block.slices[d] for d in plan.cell_dims}


def _complete(ds: xr.Dataset) -> np.ndarray:
    """Per cell: flagged finished and its results on disk (or flagged diverged)."""
    present = np.isfinite(ds["loss"].values) & np.isfinite(ds["W"].values).any((-2, -1))
    return ds["finished"].values & (present | ds["diverged"].values)


def finished_blocks(path: Path, plan: GridPlan) -> set[str]:
    """Keys of the blocks whose every cell is finished and has its results on disk.

    A cell flagged finished whose loss or weights read back as missing (a chunk file deleted
    or damaged by hand) counts as unfinished, so the next run trains it again.
    """
    ok = _complete(open_store(path))
    return {b.key() for b in plan.blocks if ok[tuple(region(plan, b).values())].all()}


def block_finished(path: Path, plan: GridPlan, block: Block) -> bool:
    """finished_blocks for one block, reading only that block's chunks (what a job needs)."""
    return bool(_complete(open_store(path).isel(region(plan, block))).all())


def write_block(path: Path, plan: GridPlan, block: Block, res: TrainResult) -> None:
    """Write one block's results into its region, then mark its cells finished."""
    dims = plan.cell_dims
    shape = plan.instances(block).block_shape
    nh, nf = plan.max_hidden, plan.max_features
    inst, m, n = res.W.shape
    W = np.full((inst, nh, nf), np.nan, np.float32)
    W[:, :m, :n] = res.W
    b = np.full((inst, nf), np.nan, np.float32)
    b[:, :n] = res.b
    out = {}
    if getattr(res, "W_out", None) is not None:
        W_out = np.full((inst, nh, nf), np.nan, np.float32)
        W_out[:, :m, :n] = res.W_out.transpose(0, 2, 1)
        out["W_out"] = (dims + ["hidden", "feature"], W_out.reshape(*shape, nh, nf))
    snap = plan.cell_dims + ["snapshot_step"]
    # padded like W; W_out transposed to (hidden, feature)
    Wsnap, bsnap = getattr(res, "W_snapshot", None), getattr(res, "b_snapshot", None)
    Wout_snap = getattr(res, "W_out_snapshot", None)
    if Wsnap is not None and bsnap is not None:
        k = Wsnap.shape[1]
        Ws = np.full((inst, k, nh, nf), np.nan, np.float32)
        Ws[:, :, :m, :n] = Wsnap
        out["W_snapshot"] = (snap + ["hidden", "feature"], Ws.reshape(*shape, k, nh, nf))
        bs = np.full((inst, k, nf), np.nan, np.float32)
        bs[:, :, :n] = bsnap
        out["b_snapshot"] = (snap + ["feature"], bs.reshape(*shape, k, nf))
        if Wout_snap is not None:
            Wos = np.full((inst, k, nh, nf), np.nan, np.float32)
            Wos[:, :, :m, :n] = Wout_snap.transpose(0, 1, 3, 2)
            out["W_out_snapshot"] = (snap + ["hidden", "feature"], Wos.reshape(*shape, k, nh, nf))
    ds = xr.Dataset({
        **out,
        "W": (dims + ["hidden", "feature"], W.reshape(*shape, nh, nf)),
        "b": (dims + ["feature"], b.reshape(*shape, nf)),
        "loss": (dims, res.loss.astype(np.float32).reshape(shape)),
        "loss_curve": (dims + ["curve_step"], res.curve.astype(np.float32).reshape(*shape, -1)),
        "diverged": (dims, res.diverged.reshape(shape)),
    })
    _write_region(path, ds, region(plan, block), "finished")


def _write_region(path: Path, ds: xr.Dataset, reg: dict[str, slice], flag: str) -> None:
    """Write ds's variables into their region, then set `flag` there.

    Written straight to the zarr arrays (xarray's region writer lists the group, which warns
    about the job folders kept inside the store). The region covers whole chunks, so writers
    of other blocks never touch these chunk files. The flag goes last: a cell is marked done
    only after all its data are on disk.
    """
    import zarr

    group = zarr.open_group(str(path), mode="r+", zarr_format=2, use_consolidated=True)
    idx = tuple(reg.values())
    for name, var in ds.data_vars.items():
        arr = group[name]
        arr[idx] = var.values.astype(arr.dtype)
    group[flag][idx] = np.ones(group[flag][idx].shape, group[flag].dtype)


def update_attrs(path: Path, attrs: dict) -> None:
    """Add attrs to a store and refresh its consolidated metadata (driver only)."""
    import zarr

    group = zarr.open_group(str(path), mode="r+", zarr_format=2, use_consolidated=False)
    group.attrs.update(attrs)
    with warnings.catch_warnings():  # listing meets .jobs/ and figures/, which are ours
        warnings.filterwarnings("ignore", "Object at", UserWarning)
        zarr.consolidate_metadata(str(path))


def config_of(ds: xr.Dataset) -> dict:
    """The resolved config a store was made with."""
    return yaml.safe_load(ds.attrs["config_yaml"])
