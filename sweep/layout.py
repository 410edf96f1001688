"""A store's layout on disk: the template (coords, static variables, empty trained arrays
chunked as the plan's storage chunks), its creation beside the target and swap into place, the
check that a store's arrays are the ones its recorded config plans, and the repair of lost
metadata. Jobs write into this layout through sweep.writes.

Layout: dims are the grid axes in config order, then `seed`, then `hidden`/`feature` (and
`curve_step` for loss curves). A grid over several shapes (model kind, n_features, n_hidden
as axes) pads W and b with NaN up to the largest shape; the axis coords say which entries are
real. A zipped shape axis (`grid.axes.shape`, pairs such as (n, m)) is one dim `shape` whose
labels are `"n-m"`, with `n_features` and `n_hidden` as coords along it. The zarr chunks over
the cell dims are the plan's storage chunks (sweep.grid), a function of the grid and the memory
budget only.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import OmegaConf

from sweep import integrity, kinds
from sweep.blocks import curve_steps, snapshot_steps
from sweep.grid import ZIP_AXIS, GridPlan
from sweep.identity import new_run_id, provenance
from sweep.reader import SCHEMA_VERSION, StoreError, config_of, is_store, open_store

if TYPE_CHECKING:  # imported where used: a job's process writes with zarr alone (~0.4 s less)
    import xarray as xr


def _padded(values: list[np.ndarray], n: int) -> np.ndarray:
    out = np.full((len(values), n), np.nan)
    for i, v in enumerate(values):
        out[i, : len(v)] = v
    return out


def template(plan: GridPlan, cfg: Any) -> xr.Dataset:
    """The empty dataset of a sweep: coords, static variables, lazily-filled trained ones."""
    import dask.array as da
    import xarray as xr

    dims = plan.cell_dims
    sizes = [len(plan.coords[d]) for d in dims]
    chunks = [plan.chunks[d] for d in dims]
    nh, nf = plan.max_hidden, plan.max_features
    record = curve_steps(int(cfg.train.steps), int(cfg.train.curve_points))
    points = len(record)

    def lazy(extra_dims: tuple, extra_sizes: tuple, dtype: Any, fill: Any):
        arr = da.full(
            sizes + list(extra_sizes), fill, dtype=dtype, chunks=chunks + list(extra_sizes)
        )
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
            "feature_density": (
                cell_dims + ["feature"],
                _padded(dens, nf).reshape(cell_shape + [nf]),
            ),
        },
        coords={
            **{d: plan.coords[d] for d in dims},
            "hidden": np.arange(nh),
            "feature": np.arange(nf),
            "curve_step": record + 1,
        },
    )
    if plan.zipped:  # a zipped shape axis: its entries' values as coords along `shape`
        ds = ds.assign_coords({k: (ZIP_AXIS, [e[k] for e in plan.zipped]) for k in plan.zip_keys})
        for key in plan.zip_keys:  # chunked as the cell arrays along `shape`, so dask agrees
            ds[key].encoding["chunks"] = (plan.chunks[ZIP_AXIS],)
    untied = any(kinds.get(s.model).untied for s in plan.shapes)
    if untied:
        dims_, arr = lazy(("hidden", "feature"), (nh, nf), np.float32, np.nan)
        ds["W_out"] = (dims_, arr)
        ds["W_out"].attrs["description"] = (
            "absval output weights W_out (feature, hidden), stored transposed as (hidden, feature)"
        )
    snaps = snapshot_steps(cfg.train.get("snapshots"), int(cfg.train.steps))
    if len(snaps):  # learning dynamics: the weights at train.snapshots' steps
        k = len(snaps)
        ds = ds.assign_coords(snapshot_step=snaps)
        ds["W_snapshot"] = lazy(
            ("snapshot_step", "hidden", "feature"), (k, nh, nf), np.float32, np.nan
        )
        ds["b_snapshot"] = lazy(("snapshot_step", "feature"), (k, nf), np.float32, np.nan)
        if untied:
            ds["W_out_snapshot"] = lazy(
                ("snapshot_step", "hidden", "feature"), (k, nh, nf), np.float32, np.nan
            )
        ds["W_snapshot"].attrs["description"] = (
            "W after snapshot_step training steps (train.snapshots); NaN until written"
        )
    ds["finished"].encoding["chunks"] = tuple(chunks)
    ds["diverged"].encoding["chunks"] = tuple(chunks)
    ds["W"].attrs["description"] = "weights, (hidden, feature) per model; NaN where padded"
    ds["loss"].attrs["description"] = "expected loss after training, on fresh samples"
    ds["loss_curve"].attrs["description"] = "training loss at curve_step (1-based step)"
    ds["finished"].attrs["description"] = "True once the cell's results are written"
    ds["diverged"].attrs["description"] = "True where training produced NaN or inf"
    ds.attrs.update(provenance(cfg, SCHEMA_VERSION))
    return ds


def create(
    path: Path, plan: GridPlan, cfg: Any, run_id: str | None = None, beside: bool = False
) -> Path:
    """Write the template store (metadata and static variables; no trained values yet).

    Written beside the target and renamed into place, so a store path holds either nothing,
    the previous store, or a complete template, never half a template. With beside=True the
    template stays beside (`.<name>.new-<run id>`) and its path is returned: store.mode=
    overwrite trains a first block there and only then calls `swap_in`.
    """
    run_id = run_id or new_run_id()
    tmp = path.with_name(f".{path.name}.new-{run_id}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        ds = template(plan, cfg)
        ds.attrs["run_id"] = run_id
        ds.to_zarr(tmp, mode="w", compute=False, zarr_format=2, consolidated=True)
        (tmp / ".jobs").mkdir(mode=0o700)  # logs and checkpoints: the user's eyes only
        integrity.record_template(tmp)  # the coords and static variables, as written now
        if beside:
            return tmp
        if path.exists():  # only an empty folder gets here (stores go through swap_in)
            path.rmdir()
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


# what a store folder holds besides its arrays (.commits: the integrity records, sweep.integrity)
OURS = {".zattrs", ".zgroup", ".zmetadata", ".jobs", ".commits", "figures"}


def foreign_entries(path: Path) -> list[str]:
    """Entries of a store folder that are not part of the store (user files, other stores)."""
    try:
        meta = json.loads((path / ".zmetadata").read_text())["metadata"]
    except (OSError, ValueError, KeyError):
        return sorted(p.name for p in path.iterdir())
    arrays = {k.split("/")[0] for k in meta if "/" in k}
    return sorted(
        p.name
        for p in path.iterdir()
        if p.name not in OURS | arrays or (p.name in arrays and not p.is_dir())
    )


def swap_in(new: Path, path: Path) -> None:
    """Replace the store at `path` by the one built at `new`; remove the old one last.

    Refuses (StoreError) when the old folder holds anything but our store: overwrite never
    deletes what it did not create.
    """
    if path.exists():
        foreign = foreign_entries(path)
        if foreign:
            raise StoreError(
                f"{path} holds {', '.join(foreign[:3])}"
                f"{' …' if len(foreign) > 3 else ''}, which are not part of the "
                "store; refusing to replace it (move them away first)"
            )
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
        os.replace(new, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, path)


def open_checked(path: Path) -> xr.Dataset:
    """sweep.reader.open_store, and the check that its arrays are those its config plans."""
    ds = open_store(path, verify=False)  # the engine judges cells by sweep.integrity
    check_shapes(ds, Path(path))
    return ds


def typed_config(raw: dict) -> Any:
    """A store's config read back through the schema (types and choices as when it ran)."""
    return OmegaConf.merge(_schema(), raw)  # merge copies: the cached schema stays as it is


@functools.cache
def _schema() -> Any:
    # Built once: building it from the dataclasses took 0.10 s a call, merging onto it 0.03 s,
    # and a refinement reads its store's config back ~20 times a run.
    from sweep.config import SweepConfig

    return OmegaConf.structured(SweepConfig)


def check_shapes(ds: xr.Dataset, path: Path) -> None:
    """Refuse a store whose config_yaml does not describe its arrays (e.g. edited by hand)."""
    try:
        cfg = typed_config(config_of(ds))
        plan = GridPlan(cfg)
    except Exception as e:  # noqa: BLE001 - any unreadable or invalid config
        raise StoreError(
            f"{path}: its config_yaml attr cannot be read back "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None
    want = {
        **{d: len(plan.coords[d]) for d in plan.cell_dims},
        "hidden": plan.max_hidden,
        "feature": plan.max_features,
        "curve_step": len(curve_steps(int(cfg.train.steps), int(cfg.train.curve_points))),
    }
    snaps = len(snapshot_steps(cfg.train.get("snapshots"), int(cfg.train.steps)))
    if snaps:
        want["snapshot_step"] = snaps
    have = {d: int(n) for d, n in ds.sizes.items()}
    chunks = tuple(ds["finished"].encoding.get("chunks") or ())
    if chunks and chunks != tuple(plan.chunks[d] for d in plan.cell_dims):
        raise StoreError(
            f"{path}: its chunks {chunks} are not the blocks this toysweep plans "
            f"for its config ({tuple(plan.chunks[d] for d in plan.cell_dims)}); "
            "re-run the sweep into a new store"
        )
    if have != want or tuple(ds["W"].dims[:-2]) != tuple(plan.cell_dims):
        raise StoreError(
            f"{path}: its arrays ({_sizes(have)}) disagree with its config_yaml "
            f"({_sizes(want)}); the config was edited or the store is damaged"
        )


def _sizes(d: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items())


def repair_metadata(path: Path) -> list[str]:
    """Rewrite the metadata files that went missing, and the per-array ones (.zarray/.zattrs
    of an array) that no longer say what the consolidated copy says (truncated, garbage), from
    that copy; returns what was rebuilt (e.g. a deleted `finished` array). Readers use the
    consolidated copy, so a damaged array's file would otherwise stay unnoticed until something
    opened the array without it. (The store's own .zattrs is left as it is when present: it is
    what `writes.update_attrs` consolidates from.)"""
    try:
        meta = json.loads((path / ".zmetadata").read_text())["metadata"]
    except (OSError, ValueError, KeyError):
        return []
    rebuilt = []
    for key, value in meta.items():
        target = path / key
        if not target.exists() or ("/" in key and _json_or_none(target) != value):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(value, indent=4, sort_keys=True))
            rebuilt.append(key)
    return rebuilt


def _json_or_none(file: Path) -> Any:
    try:
        return json.loads(file.read_text())
    except (OSError, ValueError):
        return None


WALK = 10_000


def nesting(path: Path) -> str | None:
    """Why a store may not be created at `path`: an ancestor folder is a store (its `.jobs/`
    included), or `path` holds a store somewhere below; None when neither."""
    for parent in path.parents:
        if is_store(parent):
            return f"it lies inside the store {parent}"
    if path.is_dir() and not is_store(path):
        # At most WALK folders: a folder with more is refused anyway (not empty, not a store),
        # only with a vaguer line; store.path=$HOME must not walk the whole home.
        for folder, _subdirs, _files in itertools.islice(os.walk(path), WALK):
            if is_store(Path(folder)) and Path(folder) != path:
                return f"it holds the store {folder}"
    return None


def verify_static(path: Path, plan: GridPlan, cfg: Any) -> list[str]:
    """Rewrite, from the plan, the arrays fixed by the config (importance, feature_density,
    coords) whose files differ from the template's record (sweep.integrity); their names."""
    import zarr

    damaged = integrity.damaged_static(path)
    if not damaged:
        return []
    ref = template(plan, cfg)
    group: Any = zarr.open_group(str(path), mode="r+", zarr_format=2, use_consolidated=True)
    fixed = [n for n in damaged if n in ref.variables and n in group]
    for name in fixed:
        group[name][...] = ref[name].values
    integrity.record_template(path)
    return fixed
