"""Several processes writing blocks of one store at the same time lose nothing.

zarr has no locks: the store stays consistent only because every job writes a region made of
whole chunks of its own. Here 4 processes write 3 rounds of blocks, released together by a
barrier each round so that their writes overlap; the store must end with every cell finished
and every value equal to a sweep run in one process. (tests/test_slurm_sweep.py does the same
with SLURM array tasks.)
"""

from __future__ import annotations

import multiprocessing as mp
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig

from sweep import driver
from sweep.reader import open_store
from tests.conftest import BASE, make_config, refused, tree_hash

WRITERS, ROUNDS = 4, 3
# 12 chunks of 2 models (2 seeds x 4 densities x 3 relative importances, one chunk per cell).
GRID = ["+grid=phase", "train.steps=60", "grid.seeds=2", "grid.axes.density=[log,0.1,1.0,4]",
        "grid.axes.relative_importance=[0.5,1.0,2.0]", "chunk.max_instances=2"]
TRAINED = ("W", "b", "loss", "loss_curve", "diverged", "finished")


def assert_same_store(got: Path, want: Path) -> None:
    """Every cell finished and every trained variable equal, number for number."""
    a, b = open_store(got), open_store(want)
    assert bool(a["finished"].all()), f"unfinished cells: {int((~a['finished']).sum())}"
    for name in TRAINED:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


def _writer(cfg: DictConfig, path: str, keys: list[str], barrier, out) -> None:
    """One process: one block per round, all processes starting each round together."""
    for key in keys:
        barrier.wait(timeout=120)
        start = time.time()
        result = driver.run_block(driver.job_config(cfg, Path(path), key))
        out.put((key, start, time.time(), result["models"]))


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    cfg = make_config(GRID, store=tmp_path / "store")
    sweep = driver.prepare(cfg)  # the template store, as the driver writes it before any job
    sweep.lock.close()
    blocks = [b.key() for b in sweep.plan.blocks]
    assert len(blocks) == WRITERS * ROUNDS
    # A process per writer, forked from a server that imported the engine once but ran no
    # torch ops (forking a process that has used torch's thread pool is not safe; spawning
    # four interpreters that each import torch takes 20 s on a busy 2-core machine).
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["sweep.driver", "sweep.writes", "zarr", "dask.array"])
    barrier, out = ctx.Barrier(WRITERS), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(cfg, str(sweep.path), blocks[i::WRITERS],
                                               barrier, out)) for i in range(WRITERS)]
    for p in procs:
        p.start()
    records = [out.get(timeout=180) for _ in blocks]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0, f"writer {p.pid} exited with {p.exitcode}"
    assert sorted(r[0] for r in records) == sorted(blocks) and all(r[3] == 2 for r in records)
    # The writers of each round really overlapped (the barrier released them together).
    for rnd in range(ROUNDS):
        keys = set(blocks[rnd * WRITERS:(rnd + 1) * WRITERS])
        spans = [(s, e) for k, s, e, _ in records if k in keys]
        assert max(s for s, _ in spans) < min(e for _, e in spans), f"round {rnd}: {spans}"

    ref = make_config(GRID, store=tmp_path / "reference")
    assert driver.run(ref) == 0
    assert_same_store(sweep.path, tmp_path / "reference")


# Hostile cases (issue 10): a disk that fills up, a store on a read-only file system.
@pytest.mark.hostile
def test_full_disk_one_line_nothing_left(tmpfs, capsys):
    (tmpfs / "filler").write_bytes(b"\0" * 250_000)  # leaves a few KiB
    line = refused([*BASE, f"store.path={tmpfs / 's'}"], capsys)
    assert "cannot write the store" in line or "not writable" in line, line
    assert sorted(p.name for p in tmpfs.iterdir() if not p.name.startswith(".s.")) == ["filler"]
    assert not (tmpfs / "s").exists()


@pytest.mark.hostile
def test_read_only_store_one_line_untouched(tmpfs, finished, capsys):
    shutil.copytree(finished, tmpfs / "s")
    before = tree_hash(tmpfs / "s")
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    line = refused([*BASE, f"store.path={tmpfs / 's'}"], capsys)
    assert "not writable" in line
    assert tree_hash(tmpfs / "s") == before


def test_a_result_that_does_not_fill_its_region_writes_nothing(tmp_path: Path) -> None:
    """One loss-curve point per model would broadcast over the store's curve_step (zarr, as
    numpy, broadcasts): write_chunk refuses it before writing any array, the store unchanged."""
    from sweep import writes
    from sweep.blocks import TrainResult

    cfg = make_config(GRID, store=tmp_path / "store")
    sweep = driver.prepare(cfg)
    sweep.lock.close()
    block = sweep.plan.blocks[0]
    n = block.size
    before = tree_hash(sweep.path)
    res = TrainResult(np.ones((n, 1, 2), np.float32), np.ones((n, 2), np.float32),
                      np.ones(n, np.float32), np.ones((n, 1), np.float32), np.zeros(n, bool),
                      0.0, 0)
    with pytest.raises(ValueError, match=r"loss_curve: values of shape .* for its region"):
        writes.write_chunk(sweep.path, sweep.plan, block, res)
    assert tree_hash(sweep.path) == before
    assert not bool(open_store(sweep.path)["finished"].any())
