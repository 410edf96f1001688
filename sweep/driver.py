"""What a sweep does around training: check the config and the store, group its unfinished
chunks into jobs (sweep.jobs), train each job's chunks as one tensor, and report. The Hydra
sweeper (hydra_plugins/toysweep) calls `prepare` and `finish` around its launcher; `run` does
the same in-process without Hydra's machinery."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from sweep import integrity, jobs, layout, timing, writes
from sweep.grid import Block, GridPlan, job_name
from sweep.identity import (
    InUse,
    StaleWrite,
    check_identity,
    differences,
    fingerprint,
    fingerprint_of_yaml,
    hold_store,
    identity,
)
from sweep.locks import flocked
from sweep.reader import SCHEMA_VERSION, StoreError
from sweep.validate import ConfigError, check_machine

log = logging.getLogger(__name__)


@dataclass
class Sweep:
    """A prepared sweep: its plan, store path, the chunks left to train, the jobs that train
    them (this run's grouping) and the driver lock."""

    cfg: DictConfig
    plan: GridPlan
    path: Path
    todo: list[str]
    jobs: list[str]
    lock: Any
    started: float = field(default_factory=time.perf_counter)


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error and exit: used for every refusal before work starts."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _lock(path: Path) -> Any:
    """Hold the store's lock (sweep.identity.hold_store) for the driver's lifetime."""
    try:
        return hold_store(path)
    except InUse as e:
        fail(
            f"store {path} is in use by another sweep (driver pid {e.owner}); wait for it to "
            "finish or point store.path elsewhere"
        )


def _check_writable(path: Path, given: str) -> None:
    """Refuse a store path whose nearest existing parent (or the store folder itself) is not a
    writable directory. Tried for real (a probe file) rather than with os.access, which says
    yes to root; nothing is created when the probe fails."""
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        fail(
            f"store.path={given!r} lies under {parent}, which is a file: expected a path "
            "whose parents are directories"
        )
    for where in [parent, *([path] if path.is_dir() else [])]:
        try:
            fd, probe = tempfile.mkstemp(dir=where, prefix=".toysweep-probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            fail(
                f"store.path={given!r} is not writable ({where}: {e.strerror}): expected a "
                "directory you can write to"
            )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(
            f"store.path={given!r} is not writable ({path.parent}: {e.strerror}): expected a "
            "directory you can write to"
        )


# Bytes the store's side files add to its folder's name: `.<name>.new-<16 hex run id>` (the
# template built beside it) is the longest.
SIDE_NAME = len("..new-") + 16


def _check_name_lengths(path: Path, given: str) -> None:
    """Refuse a path with a name longer than its file system takes (less the room the store's
    side files need beside it), before anything is created."""
    parent = path.parent
    while not os.path.isdir(parent):  # False, not an error, for a name too long to look up
        parent = parent.parent
    try:
        most = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        most = 255
    for part in path.parts[1:]:
        room = most - (SIDE_NAME if part == path.name else 0)
        if len(part.encode()) > room:
            fail(
                f"store.path={given!r} is not allowed: a name of {len(part.encode())} bytes in "
                f"it, expected at most {room} (the file system's {most}, less what the store's "
                "side files add)"
            )


def store_path(cfg: DictConfig) -> Path:
    """store.path resolved once: `~` expanded, symlinks followed to the real folder. Everything
    after (the lock, the jobs, an overwrite) uses this real path, so an alias of a running
    store meets its lock, and a symlink store path stays a symlink."""
    given = str(cfg.store.path)
    try:
        return Path(given).expanduser().resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop, an unreadable folder on the way
        fail(f"store.path={given!r} cannot be resolved ({e}): expected a path to a folder")
        raise  # unreachable: fail exits


def check(cfg: DictConfig) -> tuple[DictConfig, GridPlan, Path]:
    """Every check that needs nothing created: settings, machine, launcher, store path.

    Exits with one line (code 2) on the first problem. Returns the task config, its plan and
    the real store path.
    """
    try:
        task = task_config(cfg)
        OmegaConf.to_container(task, resolve=True)  # interpolations that cannot resolve
        plan = GridPlan(task)
        check_machine(cfg)
    except ConfigError as e:
        fail(f"{e} (in the sweep config)")
    except OmegaConfBaseException as e:
        fail(f"{' '.join(str(e).split())} (in the sweep config)")
    given = str(task.store.path)
    if not given.strip():
        fail(f"store.path={given!r} is not allowed: expected a path to a folder")
    path = store_path(task)
    if path.parent == Path(path.anchor):  # the root itself, or a folder right below it
        fail(
            f"store.path={given!r} is not allowed: expected a folder below a directory other "
            f"than the file system's root {path.anchor} (the store's locks sit beside it)"
        )
    _check_name_lengths(path, given)
    if path.exists() and not path.is_dir():
        fail(f"store.path={given!r} is a file, expected a directory for the zarr store")
    nested = layout.nesting(path)
    if nested:  # an outer store's overwrite would delete it; an inner one's files are foreign
        fail(f"store.path={given!r} is not allowed: {nested}; expected a path outside any store")
    _check_writable(path, given)
    return task, plan, path


def prepare(cfg: DictConfig, starting: Callable[[GridPlan], None] | None = None) -> Sweep:
    """Validate everything, then create or resume the store. Exits with one line on bad input.

    `starting(plan)` is called once every refusal is behind, before the store is written: the
    local launcher starts its worker processes there, while this process writes the template.

    store.mode=overwrite never destroys the old store before the new run has proved itself:
    the new store is built beside the old one, its first (smallest) block is trained here, in
    the driver, and only then does it replace the old store. A folder holding anything but our
    store is never replaced.
    """
    cfg, plan, path = check(cfg)
    timing.mark("plan", cells=plan.n_cells)
    lock = _lock(path)
    try:
        return _prepare_locked(cfg, plan, path, lock, starting)
    except BaseException:
        lock.close()  # an exit or a crash releases the store at once, not at garbage collection
        raise


def _prepare_locked(
    cfg: DictConfig,
    plan: GridPlan,
    path: Path,
    lock: Any,
    starting: Callable[[GridPlan], None] | None = None,
) -> Sweep:
    given = str(cfg.store.path)
    # Leftovers of a layout.create killed half-way (we hold the lock: nobody else is creating).
    for stale in path.parent.glob(f".{path.name}.new-*"):
        shutil.rmtree(stale, ignore_errors=True)
    fresh = not path.exists() or not any(path.iterdir())
    replace = False
    if not fresh:
        try:
            existing = _open(path, plan, cfg)
        except StoreError as e:
            fail(f"store.path={given!r}: {e}; refusing to touch it")
        foreign = layout.foreign_entries(path)
        if str(cfg.store.mode) == "overwrite":
            if foreign:
                fail(
                    f"store.path={given!r} holds {', '.join(foreign[:3])}, which are not part "
                    "of the store; store.mode=overwrite refuses to delete them (move them "
                    "away first)"
                )
            fresh = replace = True
        else:
            if fingerprint(cfg) != existing.attrs["fingerprint"]:
                diffs = differences(existing.attrs["config_yaml"], cfg) or [
                    f"fingerprint {fingerprint(cfg)}, the store's {existing.attrs['fingerprint']}"
                ]
                fail(
                    f"store {path} was made by a different grid or settings "
                    f"({'; '.join(diffs)}); pass store.mode=overwrite to replace it, or "
                    "store.path=<new path> for a new store"
                )
            _repair(path, plan, cfg)
    if starting is not None:
        starting(plan)
    proved = None
    try:
        if replace:
            proved = _replace(path, plan, cfg)
        elif fresh:
            layout.create(path, plan, cfg)
    except OSError as e:
        fail(
            f"store.path={given!r}: cannot write the store ({e.strerror or e}); nothing was changed"
        )
    done = writes.finished_chunks(path, plan)
    todo = [b.key() for b in plan.blocks if b.key() not in done]
    timing.mark("store")
    trained = todo + ([proved] if proved else [])  # the proved chunk counts as trained now
    return Sweep(cfg, plan, path, trained, jobs.group(plan, todo), lock)


def _open(path: Path, plan: GridPlan, cfg: DictConfig) -> Any:
    """layout.open_checked; a store that cannot be opened whose own attrs say it is of this
    format and was made with cfg's settings first gets its damaged static arrays rewritten
    from the plan (xarray reads the coordinates when it opens a store: one damaged chunk of
    `density` would otherwise refuse the whole store)."""
    try:
        return layout.open_checked(path)
    except StoreError:
        try:
            attrs = json.loads((path / ".zattrs").read_text())
            ours = attrs["schema_version"] == SCHEMA_VERSION and cfg.store.mode != "overwrite"
            recorded = fingerprint_of_yaml(str(attrs["config_yaml"]))
            same = attrs["fingerprint"] == recorded == fingerprint(cfg)
            fixed = layout.verify_static(path, plan, cfg) if ours and same else []
        except Exception:  # noqa: BLE001 - not repairable here: the first refusal stands
            fixed = []
        if not fixed:
            raise
        log.warning(f"store {path}: rewrote damaged {', '.join(fixed)}")
        return layout.open_checked(path)


def _repair(path: Path, plan: GridPlan, cfg: DictConfig) -> None:
    """Resuming a store: rebuild lost metadata, rewrite damaged static variables, empty the
    damaged chunks (sweep.integrity's records: a few files per chunk) so they are retrained."""
    rebuilt = layout.repair_metadata(path)
    if rebuilt:
        log.warning(f"store {path}: rebuilt missing metadata {', '.join(rebuilt)}")
    fixed = layout.verify_static(path, plan, cfg)
    if fixed:
        log.warning(f"store {path}: rewrote damaged {', '.join(fixed)}")
    repair = integrity.reset_damaged(path)
    if repair.reflagged:
        log.warning(
            f"store {path}: rewrote the damaged flags of {len(repair.reflagged)} chunk(s) "
            "from their records"
        )
    if repair.emptied:
        log.warning(
            f"store {path}: emptied {len(repair.emptied)} damaged chunk(s), to be retrained"
        )
    if rebuilt:
        writes.update_attrs(path, {})


def _replace(path: Path, plan: GridPlan, cfg: DictConfig) -> str:
    """store.mode=overwrite: build beside, prove the first chunk, then swap in (see prepare).
    Returns the key of the chunk trained here."""
    side = layout.create(path, plan, cfg, beside=True)
    first = min(plan.blocks, key=lambda b: b.size)
    try:
        run_block(job_config(cfg, side, first.key()))
    except Exception as e:  # noqa: BLE001 - reported in one line, the old store kept
        shutil.rmtree(side, ignore_errors=True)
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
        fail(
            f"store.mode=overwrite: the new run's first chunk {first.key()} failed "
            f"({type(e).__name__}: {first_line}); the store at {path} is untouched",
            code=1,
        )
    finally:
        side.with_name(f".{side.name}.swap").unlink(missing_ok=True)
    with swap_lock(path, exclusive=True):
        try:
            layout.swap_in(side, path)
        except StoreError as e:
            shutil.rmtree(side, ignore_errors=True)
            fail(f"store.path={str(cfg.store.path)!r}: {e}")
    return first.key()


def swap_lock(path: Path, exclusive: bool) -> contextlib.AbstractContextManager[bool]:
    """Jobs hold this shared while they check the store's identity and write; the driver holds
    it exclusive while it swaps a new store in. So no job writes into a store that replaced the
    one it checked (a job of an older, overwritten run then finds the new identity and stops)."""
    return flocked(path.parent / f".{path.name}.swap", shared=not exclusive)


def task_config(cfg: DictConfig) -> DictConfig:
    """The sweep's own settings, without Hydra's node (which only resolves inside a job)."""
    return OmegaConf.masked_copy(cfg, [str(k) for k in cfg if k != "hydra"])


def job_config(cfg: DictConfig, path: Path, block: str, run_id: str | None = None) -> DictConfig:
    """The config of one job: the sweep's, with its chunks (`block`: a job name of sweep.jobs),
    the store's real path and run id."""
    job = task_config(cfg)
    with open_dict(job):
        job.block = block
        job.store.path = str(path)
        job.store.run_id = run_id or identity(path).get("run_id")
    return job


def hydra_quote(value: str) -> str:
    """A string as one quoted value of Hydra's override grammar, whatever it holds (spaces,
    commas, parentheses, quotes, `$`, `;`, accents): single-quoted, with backslashes and
    quotes escaped and `${` escaped so that it is never read as an interpolation. (Hydra
    reads a backslash as an escape only before a quote or the closing quote.)"""
    inner = re.sub(r"(\\+)(?='|$)", r"\1\1", value)
    inner = inner.replace("'", "\\'").replace("${", "\\${")
    return f"'{inner}'"


def block_lock(path: Path, key: str) -> contextlib.AbstractContextManager[bool]:
    """An exclusive lock on one block, for a `with` block (sweep.locks).

    Two jobs can get the same block, e.g. one left running by a driver that was killed and one
    from the rerun: the second waits here, then finds the block finished and skips it, rather
    than training it again beside the first and sharing its checkpoint file. On a file system
    without flock (some network mounts) jobs go on unlocked, as before.
    """
    locks = path / ".jobs" / "locks"
    locks.mkdir(parents=True, exist_ok=True, mode=0o700)
    return flocked(locks / f"{key}.lock")


def run_block(cfg: DictConfig) -> dict:
    """The body of every job: train the chunks it names (`block`) that are not finished, as one
    tensor, and write each chunk's region. Writes nothing into a store that is not the run it
    was launched for (a stale job)."""
    timing.mark("job start", block=str(cfg.block))
    plan = GridPlan(cfg)
    name = str(cfg.block)
    chunks = jobs.chunks_of(plan, name)
    path = Path(str(cfg.store.path))
    expected = {"fingerprint": fingerprint(cfg), "run_id": cfg.store.run_id}
    try:
        check_identity(path, expected)
        with block_lock(path, name):
            todo = [b for b in chunks if not writes.chunk_finished(path, plan, b)]
            if not todo:
                return {"block": name, "models": 0, "skipped": True}
            key = name if len(todo) == len(chunks) else job_name(todo)
            res = train_chunks(plan, path, cfg, todo, key, expected)
    except StaleWrite as e:
        log.warning(f"job {name}: stale job, nothing written: {e}")
        return {"block": name, "models": 0, "stale": True}
    except Exception:
        # The traceback goes to the job's log (its stdout under a launcher), which the
        # driver's summary points to; the launcher only carries the exception back.
        log.exception(f"job {name} failed")
        raise
    return {
        "block": name,
        "models": len(res.loss),
        "seconds": res.seconds,
        "diverged": int(res.diverged.sum()),
        "resumed_from": res.resumed_from,
    }


def train_chunks(
    plan: GridPlan, path: Path, cfg: DictConfig, chunks: list[Block], key: str, expected: dict
) -> Any:
    """Train chunks of one shape as one tensor and write each chunk's region (its values, then
    its flags). The checkpoint is keyed by `key` (the job's chunk set) and stamped with the
    run identity, so another grouping's or another run's checkpoint is not loaded."""
    # imported here: a driver whose jobs all run in worker processes never loads torch (~2 s)
    from sweep.train import train_block

    ckpt_dir = path / ".jobs" / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    ckpt = ckpt_dir / f"{key}.pt"
    res = train_block(
        plan.job(chunks, key), checkpoint=ckpt, progress=bool(cfg.progress), identity=expected
    )
    assert res is not None  # None only with stop_at
    with swap_lock(path, exclusive=False):  # not while an overwrite swaps stores
        start = 0
        for b in chunks:  # the job's instances are its chunks' in order
            writes.write_chunk(path, plan, b, res.part(slice(start, start + b.size)), expected)
            start += b.size
    ckpt.unlink(missing_ok=True)
    timing.mark("writes", block=key)
    return res


def finish(sweep: Sweep, failures: list[str]) -> int:
    """Record the run in the store and print the summary; return an exit code."""
    plan, path = sweep.plan, sweep.path
    wall = time.perf_counter() - sweep.started
    ds = layout.open_checked(path)
    diverged = int(ds["diverged"].sum())
    done = writes.finished_chunks(path, plan)  # models count once their chunk is written
    # cells whose chunk is complete and readable (not merely flagged: a damaged one is not)
    finished = sum(b.size for b in plan.blocks if b.key() in done)
    todo = set(sweep.todo)
    trained = sum(b.size for b in plan.blocks if b.key() in done and b.key() in todo)
    writes.update_attrs(
        path,
        {
            "last_run_wall_seconds": round(wall, 2),
            "finished_cells": finished,
            "total_cells": plan.n_cells,
        },
    )
    print(
        f"sweep {sweep.cfg.name}: trained {trained} models in {wall:.1f} s "
        f"({trained / max(wall, 1e-9):.1f} models/s); {finished}/{plan.n_cells} cells "
        f"finished, {diverged} diverged; store {path}"
    )
    if finished < plan.n_cells:
        for line in failures:
            print(f"  unfinished: {line}", file=sys.stderr)
        print(
            f"error: {plan.n_cells - finished} cells unfinished; rerun the same command to "
            "train only those",
            file=sys.stderr,
        )
        return 1
    # The analysis runs after this, as a Hydra callback (conf/config.yaml: hydra.callbacks;
    # analysis/callback.py): the engine never imports analysis/.
    return 0


def run(cfg: DictConfig) -> int:
    """Run a whole grid in this process (no launcher): for tests and RUN mode.

    An adaptive refinement (refine.levels > 0) is sweep.refine.run's, which builds on this
    module; refused here in one line rather than trained as a plain grid."""
    levels = OmegaConf.select(cfg, "refine.levels", default=None)
    if levels:
        fail(
            f"refine.levels={levels!r} is not allowed here: expected 0 (an adaptive refinement "
            "runs through sweep.refine.run, as python -m sweep does)"
        )
    sweep = prepare(cfg)
    with sweep.lock:  # the store's lock: released when this ends, not at garbage collection
        failures = []
        for key in sweep.jobs:
            try:
                run_block(job_config(sweep.cfg, sweep.path, key))
            except Exception as e:  # report, keep going with the other jobs
                failures.append(f"job {key}: {type(e).__name__}: {e}")
        return finish(sweep, failures)
