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
import uuid
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
NOT_RESULTS = {
    "train": ("device", "checkpoint_seconds", "threads", "compile_cache"),
    "chunk": ("feed",),  # the layout it sets is hashed below as "workers", as it always was
}
TRAINED = ("W", "b", "loss", "loss_curve", "diverged")


class StoreError(RuntimeError):
    """A store that cannot be used as asked; str() is a one-line message."""


def fingerprint(cfg: Any) -> str:
    """Hash of the config sections that decide a store's layout and numbers."""
    return hashlib.sha256(json.dumps(_hashed(cfg), sort_keys=True).encode()).hexdigest()[:16]


def differences(ds: xr.Dataset, cfg: Any, most: int = 3) -> list[str]:
    """The hashed settings in which cfg differs from a store's, as `key=now (the store's:
    then)`, at most `most` of them; [] when none can be named (e.g. an unreadable config)."""
    try:
        then, now = _flat(_hashed(layout_config(ds))), _flat(_hashed(cfg))
    except Exception:  # noqa: BLE001 - the caller falls back to the fingerprints
        return []
    for flat in (then, now):  # the hash names the blocks' cut "workers"; users set chunk.feed
        flat["chunk.feed"] = flat.pop("workers", 1)
    keys = [k for k in [*now, *(k for k in then if k not in now)] if now.get(k) != then.get(k)]
    return [f"{k}={_short(now.get(k))} (the store's: {_short(then.get(k))})" for k in keys[:most]]


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _short(v: Any) -> str:
    text = "unset" if v is None else json.dumps(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _hashed(cfg: Any) -> dict[str, Any]:
    """The part of a config that the fingerprint hashes."""
    c: dict[str, Any] = OmegaConf.to_container(  # type: ignore[assignment]
        cfg, resolve=True, enum_to_str=True
    )
    part: dict[str, Any] = {k: c.get(k) for k in RESULT_SECTIONS}
    # The schema types chunk.memory_mb as a float; stores made before it hashed the int 2048.
    mem = (part.get("chunk") or {}).get("memory_mb")
    if isinstance(mem, float) and mem.is_integer():
        part["chunk"] = {**part["chunk"], "memory_mb": int(mem)}
    for section, keys in NOT_RESULTS.items():
        part[section] = {k: v for k, v in (part[section] or {}).items() if k not in keys}
    train: Any = part["train"]
    if isinstance(train, dict) and "snapshots" in train and train["snapshots"] is None:
        del train["snapshots"]  # unset: the fingerprint of stores made before the key
    plan = GridPlan(cfg)
    if plan.fed > 1:  # blocks cut for this many workers: a different count, other chunks
        part["workers"] = plan.fed
    # The store's dims in order: the axes above are hashed as a mapping, without their order,
    # and a plan in another order would write its blocks across the wrong cells. (Stores
    # hashed before this resume through same_settings' re-hash, which records today's.)
    part["dims"] = list(plan.cell_dims)
    return part


class StaleWrite(StoreError):
    """A job about to write into a store that is not the one it was launched for."""


def new_run_id() -> str:
    """A store's creation id: unique per creation, so an overwritten store gets a new one."""
    return uuid.uuid4().hex[:16]


def identity(path: Path) -> dict:
    """The run identity of a store on disk: its fingerprint and creation id (read fresh from
    .zattrs, never from a cache, since an overwrite may just have replaced the store)."""
    try:
        attrs = json.loads((Path(path) / ".zattrs").read_text())
    except (OSError, ValueError):
        return {}
    return {"fingerprint": attrs.get("fingerprint"), "run_id": attrs.get("run_id")}


def check_identity(path: Path, expected: dict) -> None:
    """Refuse to touch a store whose identity is not the one a job was launched for: its
    creation id (unique to one creation) and its fingerprint (the job's own config's: a job
    whose settings differ from the store's, run id or not, would write other numbers there)."""
    found = identity(path)
    keys = [k for k in ("run_id", "fingerprint") if expected.get(k) is not None]
    if any(found.get(k) != expected.get(k) for k in keys):
        raise StaleWrite(
            f"{path}: the store there is run {found.get('run_id')} (fingerprint "
            f"{found.get('fingerprint')}), not run {expected.get('run_id')} "
            f"(fingerprint {expected.get('fingerprint')}) this job belongs to; "
            "it was overwritten or replaced, so this job writes nothing"
        )


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
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=10,
        ).stdout.strip()
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
    ds.attrs.update(provenance(cfg))
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
        if beside:
            return tmp
        if path.exists():  # only an empty folder gets here (stores go through swap_in)
            path.rmdir()
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


OURS = {".zattrs", ".zgroup", ".zmetadata", ".jobs", "figures"}


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
    if version != SCHEMA_VERSION:
        raise StoreError(
            f"{path}: schema_version={version} but this toysweep reads "
            f"schema_version={SCHEMA_VERSION}; re-run the sweep into a new store"
        )
    check_shapes(ds, path)
    return ds


def same_settings(ds: xr.Dataset, cfg: Any) -> bool:
    """Whether a store was made with the settings of cfg: its recorded fingerprint, or (a store
    of an older toysweep, hashed under older rules) its config_yaml hashed under today's."""
    fp = fingerprint(cfg)
    if ds.attrs.get("fingerprint") == fp:
        return True
    try:
        return fingerprint(layout_config(ds)) == fp
    except Exception:  # noqa: BLE001 - an unreadable config is simply not the same
        return False


# Most worker counts searched for the layout of a store made before chunk.feed was recorded
# (about 5 ms each for the phase grid; only such stores, and only with `workers: auto`).
MAX_FEED = 512


def layout_config(ds: xr.Dataset) -> Any:
    """A store's config with its blocks' layout pinned (chunk.feed), so that it plans the same
    blocks on any machine. A store made before the layout was recorded, with `workers: auto`,
    was cut for the cores of the machine that made it: that count is the one whose
    fingerprint is the store's (searched), else the one that gives the store's chunks."""
    cfg = typed_config(config_of(ds))
    if cfg.chunk.feed is not None or cfg.workers not in ("auto", None):
        return cfg
    cfg.chunk.feed = MAX_FEED
    if GridPlan(cfg).fed == 1:  # too little work to be cut for workers: one layout for all
        cfg.chunk.feed = 1
        return cfg
    chunks = tuple(ds["finished"].encoding.get("chunks") or ())
    by_chunks = None
    for k in range(1, MAX_FEED + 1):
        cfg.chunk.feed = k
        plan = GridPlan(cfg)
        if tuple(plan.chunks[d] for d in plan.cell_dims) != chunks:
            continue  # the store was made by a plan with its chunks: only those can match
        by_chunks = by_chunks or k
        if ds.attrs.get("fingerprint") == fingerprint(cfg):
            return cfg
    cfg.chunk.feed = by_chunks or 1
    return cfg


def stored_feed(ds: xr.Dataset) -> int:
    """The worker count a store's blocks were cut for (see layout_config)."""
    return GridPlan(layout_config(ds)).fed


def typed_config(raw: dict) -> Any:
    """A store's config read back through the schema (types and choices as when it ran)."""
    from sweep.config import SweepConfig

    return OmegaConf.merge(OmegaConf.structured(SweepConfig), raw)


def check_shapes(ds: xr.Dataset, path: Path) -> None:
    """Refuse a store whose config_yaml does not describe its arrays (e.g. edited by hand)."""
    try:
        cfg = layout_config(ds)
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
    """Rewrite the per-array metadata files (.zarray/.zattrs) that went missing, from the
    consolidated copy; returns what was rebuilt (e.g. a deleted `finished` array)."""
    try:
        meta = json.loads((path / ".zmetadata").read_text())["metadata"]
    except (OSError, ValueError, KeyError):
        return []
    rebuilt = []
    for key, value in meta.items():
        target = path / key
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(value, indent=4, sort_keys=True))
            rebuilt.append(key)
    return rebuilt


def region(plan: GridPlan, block: Block) -> dict[str, slice]:
    return {d: block.slices[d] for d in plan.cell_dims}


def _read(group: Any, name: str, idx: tuple) -> np.ndarray | None:
    """A region of one array, or None where its chunks cannot be read (garbage, truncated)."""
    try:
        return np.asarray(group[name][idx])
    except Exception:  # noqa: BLE001 - numcodecs/zarr raise many kinds for a damaged chunk
        return None


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
    import itertools

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


def _block_complete(group: Any, plan: GridPlan, block: Block) -> bool:
    """Every cell of the block flagged finished with all its results readable and present.

    A cell counts as unfinished when any of its variables cannot be read or reads back missing
    (a chunk file deleted, truncated or overwritten by hand), so the next run retrains it.
    """
    idx = tuple(region(plan, block).values())
    n, m = block.shape.n_features, block.shape.n_hidden
    read = {
        v: _read(group, v, idx)
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


def finished_blocks(path: Path, plan: GridPlan) -> set[str]:
    """Keys of the blocks whose every cell is finished and has its results on disk.

    Reads every trained variable of every block (a verify of the whole store): a missing,
    unreadable or NaN-filled chunk of any of them marks its block unfinished.
    """
    open_store(path)  # refuses stores that are not ours
    group = _group(path)
    return {b.key() for b in plan.blocks if _block_complete(group, plan, b)}


def block_finished(path: Path, plan: GridPlan, block: Block) -> bool:
    """finished_blocks for one block, reading only that block's chunks (what a job needs)."""
    return _block_complete(_group(path), plan, block)


def verify_static(path: Path, plan: GridPlan, cfg: Any) -> list[str]:
    """Compare the variables fixed by the config (importance, feature_density) with the plan's
    and rewrite those that are unreadable or differ; returns the names rewritten."""
    import zarr

    ref = template(plan, cfg)
    group: Any = zarr.open_group(str(path), mode="r+", zarr_format=2, use_consolidated=True)
    fixed = []
    for name in ("importance", "feature_density"):
        want = ref[name].values
        have = _read(group, name, (slice(None),))
        if (
            have is None
            or have.shape != want.shape
            or not np.array_equal(have, want, equal_nan=True)
        ):
            group[name][...] = want
            fixed.append(name)
    return fixed


def write_block(
    path: Path, plan: GridPlan, block: Block, res: TrainResult, expected: dict | None = None
) -> None:
    """Write one block's results into its region, then mark its cells finished.

    With `expected` (the run identity the job was launched for), the store's identity is
    checked first and a mismatch (StaleWrite) writes nothing.
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
    _write_region(path, ds, region(plan, block), "finished", expected)


def _write_region(
    path: Path, ds: xr.Dataset, reg: dict[str, slice], flag: str, expected: dict | None = None
) -> None:
    """Write ds's variables into their region, then set `flag` there.

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
    flag_arr = group[flag]
    flag_arr[idx] = np.ones(tuple(s.stop - s.start for s in idx), flag_arr.dtype)


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
