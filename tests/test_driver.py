"""What goes wrong in real sweeps: diverging models, interrupted and concurrent sweeps,
damaged or foreign stores, unsafe checkpoints."""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from sweep import driver
from tests.conftest import ROOT, make_config, run_cli

SMALL = ["+grid=phase", "train.steps=40", "grid.seeds=2", "analysis.run=false",
         "grid.axes.density=[log,0.05,1.0,4]", "grid.axes.relative_importance=[0.5,2.0,4.0]"]


def test_diverging_instances_are_marked_and_others_train_on(tmp_path):
    # An importance of 1e36 overflows float32 in the loss: those models blow up (inf),
    # the others must not notice.
    over = ["grid.axes.relative_importance=[1.0,1e36]", "grid.axes.density=[0.1,1.0]"]
    cfg = make_config([*SMALL, *over], store=tmp_path / "mixed")
    assert driver.run(cfg) == 0
    ds = xr.open_zarr(tmp_path / "mixed").load()
    blown = ~np.isfinite(ds.loss.values) | ~np.isfinite(ds.W.values).all((-2, -1))
    np.testing.assert_array_equal(ds.diverged.values, blown)  # exactly the blown-up models
    assert blown.any()
    assert not blown[list(ds.relative_importance.values).index(1.0)].any()
    assert bool(ds.finished.all())
    alone = make_config([*SMALL, "grid.axes.relative_importance=[1.0]",
                         "grid.axes.density=[0.1,1.0]"], store=tmp_path / "alone")
    assert driver.run(alone) == 0
    ref = xr.open_zarr(tmp_path / "alone").load()
    np.testing.assert_allclose(ds.W.sel(relative_importance=[1.0]).values, ref.W.values,
                               rtol=1e-6, atol=1e-7)


def test_diverged_count_reported(tmp_path):
    r = run_cli(["-m", "sweep", *SMALL, "grid.axes.relative_importance=[1.0,1e36]",
                 f"store.path={tmp_path / 's'}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    diverged = int(xr.open_zarr(tmp_path / "s").diverged.sum())
    assert diverged > 0 and f"{diverged} diverged" in r.stdout


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The small grid run without interruption, in blocks of 4 models."""
    path = tmp_path_factory.mktemp("ref") / "store"
    assert driver.run(make_config([*SMALL, "chunk.max_instances=4", "train.steps=300"],
                                  store=path)) == 0
    return xr.open_zarr(path).load()


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "sweep", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _assert_finished_cells_match(path: Path, ref: xr.Dataset) -> int:
    ds = xr.open_zarr(path)  # always opens
    # `finished` first, then the values: a worker left by the killed driver may still be
    # writing, and it writes a block's values before its flags, so a flag read now covers
    # values already on disk (values read first could predate a flag read after them).
    done = ds.finished.values
    ds = ds.load()
    np.testing.assert_allclose(ds.W.values[done], ref.W.values[done], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ds.loss.values[done], ref.loss.values[done], rtol=1e-5)
    return int(done.sum())


@pytest.mark.slow
def test_kill_and_term_at_random_points_then_resume(tmp_path, reference):
    rng = random.Random(7)
    args = [*SMALL, "chunk.max_instances=4", "train.steps=300", "train.checkpoint_seconds=0.2"]
    for round_ in range(2):  # one SIGKILL, one SIGTERM
        path = tmp_path / f"round{round_}"
        sig = signal.SIGKILL if round_ % 2 == 0 else signal.SIGTERM
        proc = _start([*args, f"store.path={path}"], tmp_path)
        time.sleep(rng.uniform(2.5, 8.0))  # start-up (imports) takes ~2-3 s
        proc.send_signal(sig)
        # The driver only, as `kill` would: its local worker processes may live on to finish
        # (and write) the block they hold, and keep its output pipes open, so wait for the
        # driver itself and stop reading.
        proc.wait(timeout=60)
        proc.stdout.close()
        proc.stderr.close()
        if path.exists():
            _assert_finished_cells_match(path, reference)
        rerun = run_cli(["-m", "sweep", *args, f"store.path={path}"], cwd=tmp_path)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        assert _assert_finished_cells_match(path, reference) == reference.finished.size


def test_second_sweep_on_same_store_is_refused(tmp_path):
    path = tmp_path / "store"
    first = _start([*SMALL, "train.steps=1000000", "workers=1", f"store.path={path}"], tmp_path)
    try:
        deadline = time.time() + 60
        while not (path / ".zmetadata").exists():
            assert time.time() < deadline and first.poll() is None, first.stderr.read()
            time.sleep(0.2)
        second = run_cli(["-m", "sweep", *SMALL, "train.steps=1000000", f"store.path={path}"],
                         cwd=tmp_path)
        assert second.returncode == 2
        (line,) = second.stderr.strip().splitlines()
        assert "in use by another sweep" in line and str(first.pid) in line
    finally:
        first.kill()
        first.communicate()


def _finished_store(tmp_path: Path) -> Path:
    """A finished store, made in-process (the CLI run that follows is the one under test)."""
    path = tmp_path / "store"
    assert driver.run(make_config([*SMALL, "chunk.max_instances=8"], store=path)) == 0
    return path


def _snapshot(path: Path) -> dict:
    return {p: p.read_bytes() for p in path.rglob("*") if p.is_file() and ".jobs" not in p.parts}


def test_deleted_chunk_is_retrained(tmp_path):
    path = _finished_store(tmp_path)
    before = xr.open_zarr(path).load()
    victim = sorted((path / "W").glob("[0-9]*"))[1]
    victim.unlink()
    r = run_cli(["-m", "sweep", *SMALL, "chunk.max_instances=8", f"store.path={path}"],
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "trained 8 models" in r.stdout  # exactly the damaged block
    after = xr.open_zarr(path).load()
    np.testing.assert_allclose(after.W.values, before.W.values, rtol=1e-6)


@pytest.mark.parametrize("damage", ["garbage_metadata", "old_schema", "no_attrs"])
def test_damaged_store_is_refused_untouched(tmp_path, damage):
    path = _finished_store(tmp_path)
    meta = path / ".zmetadata"
    if damage == "garbage_metadata":
        meta.write_text('{"zarr_consolidated_format": 1, "metadata": {')  # truncated JSON
        (path / ".zattrs").write_text("{")
    else:
        m = json.loads(meta.read_text())
        attrs = m["metadata"][".zattrs"]
        if damage == "old_schema":
            attrs["schema_version"] = 0
        else:
            attrs.clear()
        meta.write_text(json.dumps(m))
        (path / ".zattrs").write_text(json.dumps(attrs))
    snap = _snapshot(path)
    r = run_cli(["-m", "sweep", *SMALL, "chunk.max_instances=8", f"store.path={path}"],
                cwd=tmp_path)
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    expected = {"garbage_metadata": "cannot be opened", "old_schema": "schema_version=0",
                "no_attrs": "not a toysweep results store"}[damage]
    assert expected in line and "refusing to touch it" in line
    assert _snapshot(path) == snap


def test_foreign_zarr_store_and_foreign_directory_refused(tmp_path):
    foreign = tmp_path / "foreign"
    xr.Dataset({"x": ("t", np.arange(3))}).to_zarr(foreign, zarr_format=2)
    notzarr = tmp_path / "notzarr"
    notzarr.mkdir()
    (notzarr / "thesis.tex").write_text("precious")
    for path, expected in ((foreign, "not a toysweep results store"),
                           (notzarr, "not a zarr store")):
        snap = _snapshot(path)
        r = run_cli(["-m", "sweep", *SMALL, f"store.path={path}"], cwd=tmp_path)
        assert r.returncode == 2 and expected in r.stderr
        assert _snapshot(path) == snap


def test_checkpoints_are_never_unpickled(tmp_path):
    """A checkpoint holding a pickled callable is refused, not executed: it is set aside as
    corrupt and the block trains from step 0."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    cfg = make_config(SMALL, store=tmp_path / "store")
    sweep = driver.prepare(cfg)
    key = sweep.todo[0]
    ckpt = sweep.path / ".jobs" / "checkpoints" / f"{key}.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    ckpt.write_bytes(pickle.dumps({"step": Evil()}))
    out = driver.run_block(driver.job_config(cfg, sweep.path, key))
    assert not marker.exists()
    assert out["models"] > 0 and not out.get("resumed_from")
    assert not ckpt.exists() and len(list(ckpt.parent.glob(f"{key}.pt.corrupt-*"))) == 1
    assert (sweep.path / ".jobs").stat().st_mode & 0o077 == 0  # job folders: owner only
