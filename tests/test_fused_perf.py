"""The speed work keeps the numbers: fused absval and grouped features equal autograd, results
do not depend on workers or blocks, and the planner and compile rules do what they say."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr

from sweep import fused, jobs
from sweep.grid import GridPlan
from sweep.train import train_block
from tests.conftest import make_config, run_cli

F64 = ["train.steps=150", "train.batch_size=64", "train.dtype=float64", "train.compile=false"]


def train(overrides: list[str], backend: str):
    cfg = make_config([*overrides, f"train.backend={backend}"])
    plan = GridPlan(cfg)
    out = []
    for block in plan.blocks:
        out.append(
            train_block(plan.job([block]), progress=False)
        )
    return out


@pytest.mark.parametrize(
    "grid",
    [
        [
            "+grid=absval",
            "model.n_features=5",
            "model.n_hidden=3",
            "grid.seeds=2",
            "grid.axes.density=[0.05,0.3,1.0]",
        ],
        ["+grid=correlated", "grid.seeds=2", "grid.axes.density=[0.1,0.6]"],  # both correlations
        [
            "+grid=correlated",
            "model.n_features=6",
            "data.set_size=3",
            "grid.seeds=[1,4]",
            "grid.axes.density=[0.2,0.9]",
            "chunk.max_instances=3",
        ],  # sets of 3, untiled blocks
    ],
)
def test_fused_equals_autograd_in_float64(grid):
    # absval (its own gradients, signed inputs) and correlated/anticorrelated sets now train on
    # the fused path: the same trajectory as autograd + torch.optim.AdamW, to rounding.
    fast, ref = train([*grid, *F64], "fused"), train([*grid, *F64], "autograd")
    assert len(fast) == len(ref) >= 1
    for f, r in zip(fast, ref, strict=True):
        np.testing.assert_allclose(f.W, r.W, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(f.b, r.b, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(f.loss, r.loss, rtol=1e-9)
        np.testing.assert_allclose(f.curve, r.curve, rtol=1e-9)
        if r.W_out is not None:
            np.testing.assert_allclose(f.W_out, r.W_out, rtol=1e-9, atol=1e-11)
        assert not np.allclose(r.W, r.W[:1])  # the models really trained apart


def test_padding_leaves_models_unchanged():
    # A block padded to equal chunks trains each real model exactly as alone (seed 3 at 0.3).
    saved = fused.CHUNK_ELEMENTS
    over = [
        "+grid=phase",
        "grid.seeds=[0,3]",
        "grid.axes.density=[0.05,0.3,1.0]",
        "grid.axes.relative_importance=[1.0]",
        *F64,
    ]
    try:
        fused.CHUNK_ELEMENTS = 2 * 2 * 64  # chunks of 2 instances: 6 → 3 chunks, 4 → 2 + pad
        (whole,) = train(over, "fused")
        (alone,) = train(
            [*over[:1], "grid.seeds=[3]", "grid.axes.density=[0.3]", *over[3:]], "fused"
        )
    finally:
        fused.CHUNK_ELEMENTS = saved
    np.testing.assert_array_equal(whole.W[3], alone.W[0])
    np.testing.assert_array_equal(whole.loss[3], alone.loss[0])


@pytest.mark.parametrize("workers", [2, 3, 16])
def test_jobs_feed_the_workers(workers):
    # Enough work: every worker gets a job, jobs are balanced and tile the grid once.
    cfg = make_config(["+grid=phase", f"workers={workers}"])
    plan = GridPlan(cfg)
    names = jobs.group(plan, [b.key() for b in plan.blocks])
    assert len(names) == min(workers, len(plan.blocks))  # 15 chunks: at most 15 jobs
    sizes = [sum(b.size for b in jobs.chunks_of(plan, n)) for n in names]
    assert sum(sizes) == plan.n_cells == 1125
    assert max(sizes) <= math.ceil(1125 / workers) * 1.5
    seen = np.zeros([len(plan.coords[d]) for d in plan.cell_dims], int)
    for n in names:
        for b in jobs.chunks_of(plan, n):
            seen[tuple(b.slices[d] for d in plan.cell_dims)] += 1
    assert (seen == 1).all()


def test_small_grids_are_one_job():
    small = GridPlan(make_config(["+grid=phase", "workers=8", "train.steps=100"]))
    assert jobs.group(small, [b.key() for b in small.blocks]) == ["relu-2-1-c0..c14"]
    assert jobs.SPLIT_WORK > 1125 * 1024 * 2 * 100  # not worth another process
    one = GridPlan(make_config(["+grid=phase", "workers=1"]))
    assert len(jobs.group(one, [b.key() for b in one.blocks])) == 1


@pytest.mark.parametrize("bad", ["workers=0", "workers=-2", "workers=many", "workers=1.5"])
def test_bad_workers_is_one_line(bad, tmp_path):
    out = run_cli(["-m", "sweep", "+grid=phase", bad, f"store.path={tmp_path / 's'}"], cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: workers=") and "expected" in lines[0]
    assert not (tmp_path / "s").exists()


def test_stores_identical_whatever_workers_and_blocks(tmp_path):
    # The same tiny sweep: one block in this process (workers=1), and six blocks on two local
    # worker processes (each at 1 thread). Every stored number must be equal.
    tiny = [
        "+grid=phase",
        "grid.seeds=2",
        "grid.axes.density=[0.03,0.2,1.0]",
        "grid.axes.relative_importance=[0.3,1.0,3.0]",
        "train.steps=300",
        "train.compile=false",
        "analysis.run=false",
        "progress=false",
    ]
    runs = {"one": ["workers=1"], "many": ["workers=2", "chunk.max_instances=3"]}
    for name, extra in runs.items():
        out = run_cli(["-m", "sweep", *tiny, *extra, f"store.path={tmp_path / name}"], cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-2000:]
        assert "18/18 cells finished" in out.stdout
    one, many = xr.open_zarr(tmp_path / "one"), xr.open_zarr(tmp_path / "many")
    assert many.W.encoding["chunks"][0] < one.W.encoding["chunks"][0]  # really other blocks
    for var in ("W", "b", "loss", "loss_curve", "diverged", "finished"):
        np.testing.assert_array_equal(one[var].values, many[var].values, err_msg=var)


@pytest.mark.slow
def test_compile_cache_makes_the_second_job_warm(tmp_path):
    # A job compiles into train.compile_cache; the next job of the same shape (a fresh
    # process) loads its kernels from there, and trains to the same numbers.
    args = [
        "-m",
        "sweep",
        "+grid=phase",
        "grid.seeds=2",
        "grid.axes.density=[0.1,1.0]",
        "grid.axes.relative_importance=[1.0]",
        "train.steps=50",
        "train.compile=true",
        "analysis.run=false",
        "workers=1",
        f"train.compile_cache={tmp_path / 'cache'}",
    ]
    first = run_cli([*args, f"store.path={tmp_path / 'a'}"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    assert any((tmp_path / "cache").glob("aoti/train_chunk-*.pt2"))  # the step's package
    second = run_cli([*args, f"store.path={tmp_path / 'b'}"], cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    a, b = xr.open_zarr(tmp_path / "a"), xr.open_zarr(tmp_path / "b")
    np.testing.assert_array_equal(a.W.values, b.W.values)
