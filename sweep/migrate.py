"""`python -m sweep.migrate <store>`: rewrite a store of an older format as today's.

Format 1 cut its storage chunks for a worker count (`chunk.feed`) and hashed its settings under
rules since dropped. Format 2's commit records did not hash the flag files (a damaged flag
chunk could be read back as garbage flags). The migration plans the store under today's rules
from its recorded config (chunk.feed dropped), builds a store beside it (where a new store's
template is built), copies every value of the old store through the one write path
(sweep.writes.write_chunk, so whatever a chunk's write records is recorded for these too), with
each cell's `finished` flag as it was (format 2: and vouched for by its chunk's record), swaps
it in and keeps the old store as `<name>.v<version>-backup`. Cells that were not finished stay
unfinished: the next run of the sweep trains them.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import yaml
from omegaconf import open_dict

from sweep import cli, integrity, layout, writes
from sweep.blocks import TrainResult
from sweep.grid import Block, GridPlan
from sweep.identity import InUse, hold_store
from sweep.reader import OLDER, SCHEMA_VERSION, schema_version
from sweep.validate import ConfigError


class MigrateError(RuntimeError):
    """Why a store cannot be migrated; str() is one line."""


def migrate(path: Path) -> str:
    """Migrate the store at `path`; returns the one line to print (MigrateError otherwise)."""
    path = Path(path).expanduser().resolve()
    _check_version(path)  # before the lock: no lock file beside what is not a store
    try:
        # the sweep's own lock: no sweep, and no other migration, runs on it meanwhile
        held = hold_store(path)
    except InUse as e:
        raise MigrateError(
            f"{path} is in use by a sweep or another migration (pid {e.owner}); wait for it "
            "to finish"
        ) from None
    with held:
        done = _check_version(path)  # again, held: another migration may just have finished
        return done or _migrate_held(path)


def _check_version(path: Path) -> str | None:
    """None for a store of an older format; the line to print if it is already today's; else
    refused."""
    version = schema_version(path)
    if version == SCHEMA_VERSION:
        return f"{path} is already schema_version {SCHEMA_VERSION}; nothing to do"
    if version not in OLDER:
        what = "not a toysweep store" if version is None else f"schema_version={version!r}"
        raise MigrateError(
            f"{path}: {what}; expected a toysweep store of schema_version "
            + " or ".join(map(str, OLDER))
        )
    return None


def _migrate_held(path: Path) -> str:
    version = schema_version(path)
    backup = path.with_name(f"{path.name}.v{version}-backup")
    if backup.exists():
        raise MigrateError(f"{backup} exists; move it away first (it would be replaced)")
    old = xr.open_zarr(path, consolidated=True)
    cfg, plan = _plan(old, path)
    # format 2: a flag counts where its chunk's record vouches for the cell's values
    vouched = integrity.committed(path) if version == 2 else None
    side = layout.create(path, plan, cfg, beside=True)
    try:
        done = sum(_copy(old, side, plan, b, vouched) for b in plan.blocks)
        # what runs recorded (a refinement's levels and refine_complete, cell counts, wall
        # times): every attr of the old store that the new template does not set itself
        fresh = json.loads((side / ".zattrs").read_text())
        writes.update_attrs(
            side,
            {
                **{k: v for k, v in old.attrs.items() if k not in fresh},
                "migrated_from": {
                    "schema_version": version,
                    **{k: old.attrs.get(k) for k in ("run_id", "git_commit", "toysweep_version")},
                },
            },
        )
    except BaseException:
        shutil.rmtree(side, ignore_errors=True)
        raise
    os.replace(path, backup)
    os.replace(side, path)
    return (
        f"migrated {path} to schema_version {SCHEMA_VERSION} ({done} of {plan.n_cells} cells "
        f"finished, copied); the version-{version} store is kept at {backup}"
    )


def _plan(old: xr.Dataset, path: Path) -> tuple:
    """The store's recorded config under today's rules, and its plan."""
    try:
        raw = yaml.safe_load(old.attrs["config_yaml"])
        raw.get("chunk", {}).pop("feed", None)  # the worker count format 1 cut its chunks for
        # format 1's opt-in full check; format 2 checks every chunk's record on every run
        raw.get("store", {}).pop("verify", None)
        cfg = layout.typed_config(raw)
        with open_dict(cfg):
            cfg.store.path = str(path)
        plan = GridPlan(cfg)
    except (ConfigError, KeyError, AttributeError, ValueError, yaml.YAMLError) as e:
        raise MigrateError(f"{path}: its recorded config cannot be planned ({e})") from None
    want = {d: len(plan.coords[d]) for d in plan.cell_dims}
    have = {d: int(old.sizes.get(d, 0)) for d in plan.cell_dims}
    if want != have or list(old["finished"].dims) != plan.cell_dims:
        raise MigrateError(
            f"{path}: its arrays ({have}) disagree with its recorded config ({want}); "
            "the store is damaged or was edited"
        )
    return cfg, plan


def _copy(
    old: xr.Dataset, side: Path, plan: GridPlan, block: Block, vouched: np.ndarray | None
) -> int:
    """Copy one chunk's region of the old store through the write path; returns the number
    of finished cells in it. vouched: (cells) bool, the cells a flag may count for (None:
    every cell)."""
    part = old.isel(block.slices)
    done = part["finished"].values.astype(bool)
    if vouched is not None:
        done &= vouched[tuple(writes.region(plan, block).values())]
    if not done.any():
        return 0
    n, m = block.shape.n_features, block.shape.n_hidden
    inst = block.size

    def cells(name: str, *tail: int) -> Any:  # (inst, *tail) in C order of the region; None
        return part[name].values.reshape(inst, *tail) if name in part else None  # if absent

    W = cells("W", plan.max_hidden, plan.max_features)[:, :m, :n]
    W_out = cells("W_out", plan.max_hidden, plan.max_features)
    snaps = int(old.sizes.get("snapshot_step", 0))
    Ws = cells("W_snapshot", snaps, plan.max_hidden, plan.max_features)
    Wos = cells("W_out_snapshot", snaps, plan.max_hidden, plan.max_features)
    bs = cells("b_snapshot", snaps, plan.max_features)
    res = TrainResult(
        W,
        cells("b", plan.max_features)[:, :n],
        cells("loss"),
        cells("loss_curve", int(old.sizes["curve_step"])),
        cells("diverged").astype(bool),
        0.0,
        0,
        None if W_out is None else W_out[:, :m, :n].transpose(0, 2, 1),  # (inst, feat, hidden)
        None if Ws is None else Ws[:, :, :m, :n],
        None if bs is None else bs[:, :, :n],
        None if Wos is None else Wos[:, :, :m, :n].transpose(0, 1, 3, 2),
    )
    writes.write_chunk(side, plan, block, res, done=done)
    return int(done.sum())


@cli.one_line()  # any other failure: one line, exit 1; --debug adds the traceback
def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        print("error: expected one store: python -m sweep.migrate <store>", file=sys.stderr)
        return 2
    try:
        with cli.about(f"migrating {argv[0]}"):
            print(migrate(Path(argv[0])))
    except MigrateError as e:  # not a store of an older format: refused as such
        return cli.refused(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
