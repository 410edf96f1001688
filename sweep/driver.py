"""What a sweep does around training: check the config and the store, plan the jobs, train one
block per job, and report. The Hydra sweeper (hydra_plugins/toysweep) calls `prepare` and
`finish` around its launcher; `run` does the same in-process without Hydra's machinery."""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from sweep import store
from sweep.grid import GridPlan
from sweep.train import train_block
from sweep.validate import ConfigError

log = logging.getLogger(__name__)


@dataclass
class Sweep:
    """A prepared sweep: its plan, store path, the blocks left to train and the driver lock."""

    cfg: DictConfig
    plan: GridPlan
    path: Path
    todo: list[str]
    lock: Any
    started: float = field(default_factory=time.perf_counter)


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error and exit: used for every refusal before work starts."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _lock(path: Path) -> Any:
    """Hold an exclusive lock beside the store for the driver's lifetime.

    The lock file sits next to the store (not inside it) so that store.mode=overwrite can
    remove the store while holding it. flock is released by the kernel if the driver dies.
    """
    lock_path = path.parent / f".{path.name}.lock"
    handle = open(lock_path, "a+")  # noqa: SIM115 - held open until the sweep ends
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        handle.close()
        fail(f"store {path} is in use by another sweep (driver pid {owner}); wait for it to "
             "finish or point store.path elsewhere")
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _check_writable(path: Path, given: str) -> None:
    """Refuse a store path whose nearest existing parent is not a writable directory.

    Tried for real (a probe file) rather than with os.access, which says yes to root.
    """
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        fail(f"store.path={given!r} lies under {parent}, which is a file: expected a path "
             "whose parents are directories")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".toysweep-probe-")
        os.close(fd)
        os.unlink(probe)
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"store.path={given!r} is not writable ({parent}: {e.strerror}): expected a "
             "directory you can write to")


def prepare(cfg: DictConfig) -> Sweep:
    """Validate everything, then create or resume the store. Exits with one line on bad input."""
    cfg = task_config(cfg)
    try:
        plan = GridPlan(cfg)
    except ConfigError as e:
        fail(f"{e} (in the sweep config)")
    path = Path(str(cfg.store.path)).expanduser().absolute()
    if path.exists() and not path.is_dir():
        fail(f"store.path={str(cfg.store.path)!r} is a file, expected a directory for the "
             "zarr store")
    _check_writable(path, str(cfg.store.path))
    lock = _lock(path)
    # Leftovers of a store.create killed half-way (we hold the lock: nobody else is creating).
    for stale in path.parent.glob(f".{path.name}.new-*"):
        shutil.rmtree(stale, ignore_errors=True)
    fresh = not path.exists() or not any(path.iterdir())
    if not fresh:
        try:
            existing = store.open_store(path)
        except store.StoreError as e:
            fail(f"store.path={str(cfg.store.path)!r}: {e}; refusing to touch it")
        if cfg.store.mode == "overwrite":
            fresh = True  # store.create replaces it only once the new template is complete
        elif existing.attrs["fingerprint"] != store.fingerprint(cfg):
            fail(f"store {path} was made by a different grid or settings (fingerprint "
                 f"{existing.attrs['fingerprint']} != {store.fingerprint(cfg)}); pass "
                 "store.mode=overwrite to replace it, or store.path=<new path> for a new store")
    if fresh:
        store.create(path, plan, cfg)
    done = store.finished_blocks(path, plan)
    todo = [b.key() for b in plan.blocks if b.key() not in done]
    return Sweep(cfg, plan, path, todo, lock)


def task_config(cfg: DictConfig) -> DictConfig:
    """The sweep's own settings, without Hydra's node (which only resolves inside a job)."""
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])


def job_config(cfg: DictConfig, path: Path, block: str) -> DictConfig:
    """The config of one job: the sweep's, with the block and an absolute store path."""
    job = task_config(cfg)
    with open_dict(job):
        job.block = block
        job.store.path = str(path)
    return job


def _block_lock(path: Path, key: str) -> Any:
    """An open file holding an exclusive lock on one block (released when closed or on exit).

    Two jobs can get the same block, e.g. one left running by a driver that was killed and one
    from the rerun: the second waits here, then finds the block finished and skips it, rather
    than training it again beside the first and sharing its checkpoint file. On a file system
    without flock (some network mounts) jobs go on unlocked, as before.
    """
    locks = path / ".jobs" / "locks"
    locks.mkdir(parents=True, exist_ok=True, mode=0o700)
    handle = open(locks / f"{key}.lock", "a")  # noqa: SIM115 - closed by the caller's `with`
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
    except OSError as e:
        log.warning(f"block {key}: no lock on {handle.name} ({e.strerror}); going on without")
    return handle


def run_block(cfg: DictConfig) -> dict:
    """Train and write one block (the body of every job). Skips a block that is finished."""
    plan = GridPlan(cfg)
    block = plan.block(str(cfg.block))
    path = Path(str(cfg.store.path))
    with _block_lock(path, block.key()):
        if store.block_finished(path, plan, block):
            return {"block": block.key(), "models": 0, "skipped": True}
        try:
            inst = plan.instances(block)
            ckpt_dir = path / ".jobs" / "checkpoints"
            ckpt_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            ckpt = ckpt_dir / f"{block.key()}.pt"
            res = train_block(block.shape.model, inst.seed, inst.density, inst.importance,
                              block.shape.n_hidden, cfg.train, checkpoint=ckpt,
                              progress=bool(cfg.progress), desc=block.key(),
                              correlation=block.shape.correlation,
                              set_size=int(cfg.data.set_size))
            store.write_block(path, plan, block, res)
            ckpt.unlink(missing_ok=True)
        except Exception:
            # The traceback goes to the job's log (its stdout under a launcher), which the
            # driver's summary points to; the launcher only carries the exception back.
            log.exception(f"block {block.key()} failed")
            raise
    return {"block": block.key(), "models": len(inst.seed), "seconds": res.seconds,
            "diverged": int(res.diverged.sum()), "resumed_from": res.resumed_from}


def finish(sweep: Sweep, failures: list[str]) -> int:
    """Record the run in the store, print the summary, run the analysis; return an exit code."""
    plan, path = sweep.plan, sweep.path
    wall = time.perf_counter() - sweep.started
    ds = store.open_store(path)
    finished = int(ds["finished"].sum())
    diverged = int(ds["diverged"].sum())
    done = store.finished_blocks(path, plan)  # models count once their block is written
    todo = set(sweep.todo)
    trained = sum(b.size for b in plan.blocks if b.key() in done and b.key() in todo)
    store.update_attrs(path, {"last_run_wall_seconds": round(wall, 2),
                              "finished_cells": finished, "total_cells": plan.n_cells})
    print(f"sweep {sweep.cfg.name}: trained {trained} models in {wall:.1f} s "
          f"({trained / max(wall, 1e-9):.1f} models/s); {finished}/{plan.n_cells} cells "
          f"finished, {diverged} diverged; store {path}")
    if finished < plan.n_cells:
        for line in failures:
            print(f"  unfinished: {line}", file=sys.stderr)
        print(f"error: {plan.n_cells - finished} cells unfinished; rerun the same command to "
              "train only those", file=sys.stderr)
        return 1
    # The analysis runs after this, as a Hydra callback (conf/config.yaml: hydra.callbacks;
    # analysis/callback.py): the engine never imports analysis/.
    return 0


def run(cfg: DictConfig) -> int:
    """Run a whole sweep in this process (no launcher): for tests and RUN mode."""
    sweep = prepare(cfg)
    failures = []
    for key in sweep.todo:
        try:
            run_block(job_config(cfg, sweep.path, key))
        except Exception as e:  # report, keep going with the other blocks
            failures.append(f"block {key}: {type(e).__name__}: {e}")
    return finish(sweep, failures)
