"""Learning dynamics: `train.snapshots` stores W and b during training.

The truth for a snapshot at step k is a model trained alone for k steps (same seed, so the same
initial weights and data stream, and a constant lr, so its first k steps are the same steps).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import xarray as xr

from sweep import driver
from sweep.blocks import snapshot_steps
from sweep.grid import GridPlan
from sweep.train import train_block
from sweep.validate import ConfigError
from tests.conftest import ROOT, make_config, run_cli

SMALL = ["+grid=phase", "train.batch_size=64", "train.dtype=float64", "train.compile=false",
         "grid.seeds=[0,3]", "model.n_features=5", "model.n_hidden=2",
         "grid.axes.density=[0.1,1.0]", "grid.axes.relative_importance=[1.0]"]


@pytest.mark.parametrize("kind", ["relu", "absval"])
@pytest.mark.unit
def test_snapshot_equals_model_trained_for_that_many_steps(kind, tmp_path):
    steps, snaps = 60, [1, 20, 60]
    cfg = make_config([*SMALL, f"model.kind={kind}", f"train.steps={steps}",
                       f"train.snapshots={snaps}"], store=tmp_path / "long")
    assert driver.run(cfg) == 0
    ds = xr.open_zarr(tmp_path / "long").load()
    assert list(ds.snapshot_step.values) == snaps
    names = ["W", "b"] + (["W_out"] if kind == "absval" else [])
    last = ds.sel(snapshot_step=steps)
    for name in names:  # the last snapshot is the final model
        np.testing.assert_array_equal(last[f"{name}_snapshot"].values, ds[name].values)
    for k in (1, 20):
        short = make_config([*SMALL, f"model.kind={kind}", f"train.steps={k}"],
                            store=tmp_path / f"k{k}")
        assert driver.run(short) == 0
        alone = xr.open_zarr(tmp_path / f"k{k}").load()
        assert "W_snapshot" not in alone  # no snapshots asked, none stored
        for name in names:
            np.testing.assert_allclose(ds[f"{name}_snapshot"].sel(snapshot_step=k).values,
                                       alone[name].values, rtol=1e-6, atol=1e-7)
    # the weights move between snapshots (the test could fail)
    assert not np.allclose(ds.W_snapshot.sel(snapshot_step=1), ds.W_snapshot.sel(snapshot_step=20))


def test_resume_keeps_snapshots_taken_before_the_stop(tmp_path):
    cfg = make_config([*SMALL, "train.steps=60", "train.snapshots=[5,10,25,40,60]"])
    plan = GridPlan(cfg)
    job = plan.job(plan.blocks[:1])
    full = train_block(job, progress=False)
    ckpt = tmp_path / "ckpt.pt"
    assert train_block(job, checkpoint=ckpt, progress=False, stop_at=30) is None
    saved = torch.load(ckpt, weights_only=True)["snapshots"]["W"].numpy()  # (inst, 5, m, n)
    assert np.isfinite(saved[:, :3]).all() and np.isnan(saved[:, 3:]).all()
    resumed = train_block(job, checkpoint=ckpt, progress=False)
    assert resumed.resumed_from == 30
    # steps 5, 10, 25 come only from the checkpoint; 40, 60 from the resumed training
    np.testing.assert_allclose(resumed.W_snapshot, full.W_snapshot, rtol=1e-12)
    np.testing.assert_allclose(resumed.b_snapshot, full.b_snapshot, rtol=1e-12)
    # a checkpoint of other snapshot steps is not resumed from (its buffers do not fit)
    other = make_config([*SMALL, "train.steps=60", "train.snapshots=[5,60]"])
    ckpt.unlink()  # train_block leaves it (the driver removes it once the block is written)
    assert train_block(job, checkpoint=ckpt, progress=False, stop_at=30) is None
    again = train_block(GridPlan(other).job(plan.blocks[:1]), checkpoint=ckpt, progress=False)
    assert again.resumed_from == 0
    np.testing.assert_allclose(again.W_snapshot, full.W_snapshot[:, [0, 4]], rtol=1e-12)


def test_sweep_killed_then_rerun_keeps_snapshots(tmp_path):
    args = [*SMALL, "train.steps=3000", "train.snapshots=[log,1,3000,10]",
            "train.checkpoint_seconds=0.1", "analysis.run=false", "progress=false",
            "train.dtype=float32"]
    ref = tmp_path / "ref"
    assert driver.run(make_config(args, store=ref)) == 0
    path = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "sweep", *args, f"store.path={path}"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpts = path / ".jobs" / "checkpoints"
    step, deadline = 0, time.time() + 120
    try:
        while step < 200 and time.time() < deadline:  # past the first snapshots (1..32)
            time.sleep(0.2)
            for f in ckpts.glob("*.pt") if ckpts.exists() else []:
                with contextlib.suppress(Exception):  # being replaced right now
                    step = int(torch.load(f, weights_only=True)["step"])
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    assert 200 <= step < 3000, f"no usable checkpoint to resume from (step {step})"
    rerun = run_cli(["-m", "sweep", *args, f"store.path={path}"], cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    logs = "".join(p.read_text() for p in (path / ".jobs").rglob("*.log"))
    assert "resumed from step" in logs + rerun.stderr + rerun.stdout
    a, b = xr.open_zarr(ref).load(), xr.open_zarr(path).load()
    np.testing.assert_allclose(b.W_snapshot.values, a.W_snapshot.values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.b_snapshot.values, a.b_snapshot.values, rtol=1e-5, atol=1e-6)


@pytest.mark.unit
def test_snapshot_steps_expand_once():
    np.testing.assert_array_equal(snapshot_steps(None, 100), [])
    np.testing.assert_array_equal(snapshot_steps([50, 1, 100], 100), [1, 50, 100])
    # log spacing rounds to integer steps; the merged early steps are kept once
    s = snapshot_steps(["log", 1, 1000, 30], 1000)
    assert s[0] == 1 and s[-1] == 1000 and np.all(np.diff(s) > 0) and len(s) < 30
    np.testing.assert_array_equal(snapshot_steps(["lin", 10, 50, 5], 50), [10, 20, 30, 40, 50])


@pytest.mark.parametrize("bad", ["[0,10]", "[10,101]", "[10,10]", "[1.5,10]", "abc",
                                 "[log,0,100,5]", "[log,1,1000,5]", "[log,1,100,0]",
                                 "[lin,1,100]", "[true]"])
@pytest.mark.unit
def test_bad_snapshots_refused_in_process(bad):
    with pytest.raises(ConfigError, match=r"^train\.snapshots="):
        GridPlan(make_config([*SMALL, "train.steps=100", f"train.snapshots={bad}"]))


def test_bad_snapshots_refused_by_the_cli_before_anything_exists(tmp_path):
    r = run_cli(["-m", "sweep", *SMALL, "train.steps=100", "train.snapshots=[50,200]",
                 f"store.path={tmp_path / 's'}"], cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: train.snapshots=[50, 200] is not "
                                                   "allowed: expected"), r.stderr
    assert not (tmp_path / "s").exists()
