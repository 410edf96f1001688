"""The real command line: a shrunk phase grid end to end, resume, and bad input refused in one
line before any work, with nothing written."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from sweep import driver
from sweep.__main__ import preflight
from sweep.reader import SCHEMA_VERSION, open_store
from tests.conftest import BASE, ROOT, make_config, run_cli

TINY = [
    "+grid=phase",
    "train.steps=20",
    "grid.seeds=2",
    "analysis.run=false",
    "grid.axes.density=[log,0.1,1.0,3]",
    "grid.axes.relative_importance=[0.5,2.0]",
]


def test_phase_grid_end_to_end(tmp_path):
    store = tmp_path / "phase"
    r = run_cli(["-m", "sweep", *TINY, f"store.path={store}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "trained 12 models" in r.stdout and str(store) in r.stdout
    ds = xr.open_zarr(store)
    assert dict(ds.sizes) == {
        "relative_importance": 2,
        "density": 3,
        "seed": 2,
        "hidden": 1,
        "feature": 2,
        "curve_step": 20,
    }
    assert ds.W.dims == ("relative_importance", "density", "seed", "hidden", "feature")
    np.testing.assert_allclose(ds.density.values, [0.1, 0.1**0.5, 1.0])
    assert list(ds.seed.values) == [0, 1]
    assert bool(ds.finished.all()) and not bool(ds.diverged.any())
    assert np.isfinite(ds.W.values).all() and np.isfinite(ds.loss_curve.values).all()
    cell = ds.sel(density=1.0, relative_importance=2.0)
    assert cell.W.shape == (2, 1, 2)
    np.testing.assert_allclose(cell.importance.values, [1.0, 2.0])
    attrs = ds.attrs
    cfg = yaml.safe_load(attrs["config_yaml"])
    assert cfg["train"]["steps"] == 20 and cfg["name"] == "phase"
    assert attrs["schema_version"] == SCHEMA_VERSION and attrs["device"] == "cpu"
    assert "torch" in json.loads(attrs["library_versions"])
    assert attrs["git_commit"] and attrs["toysweep_version"]

    # Rerunning the same command trains nothing; a changed grid is refused.
    again = run_cli(["-m", "sweep", *TINY, f"store.path={store}"], cwd=tmp_path)
    assert again.returncode == 0 and "trained 0 models" in again.stdout
    before = xr.open_zarr(store).W.values
    changed = run_cli(["-m", "sweep", *TINY, "train.steps=21", f"store.path={store}"], cwd=tmp_path)
    assert changed.returncode == 2
    assert (
        "different grid or settings (train.steps=21 (the store's: 20))" in changed.stderr
        and "store.mode=overwrite" in changed.stderr
    )
    np.testing.assert_array_equal(xr.open_zarr(store).W.values, before)


BAD = [
    ("grid.axes.density=[0.5,1.5]", "grid.axes.density=1.5"),
    ("grid.axes.density=[0.0,0.5]", "grid.axes.density=0.0"),
    ("grid.axes.density=[]", "grid.axes.density='[]'"),
    ("grid.axes.density=[a,b]", "grid.axes.density='a'"),
    ("grid.axes.relative_importance=[-1.0,2.0]", "grid.axes.relative_importance=-1.0"),
    ("data.importance.schedule=geometric data.importance.ratio=-0.5", "data.importance.ratio"),
    ("data.importance.value=abc", "data.importance.value='abc'"),
    ("train.steps=0", "train.steps=0"),
    ("train.steps=-5", "train.steps=-5"),
    ("train.batch_size=0", "train.batch_size=0"),
    ("model.kind=sigmoid", "model.kind='sigmoid'"),
    ("data.importance.schedule=cubic", "data.importance.schedule='cubic'"),
    ("train.lr_schedule=step", "train.lr_schedule='step'"),
    ("model.n_features=0", "model.n_features=0"),
    ("model.n_hidden=0", "model.n_hidden=0"),
    ("+grid.axes.n_hidden=[0,1]", "grid.axes.n_hidden=0"),
    ("+grid.axes.temperature=[1,2]", "grid.axes='temperature'"),
    ("grid.seeds=0", "grid.seeds=0"),
    ("grid.seeds=[1,1]", "grid.seeds=[1, 1]"),
    ("grid.axes.density=[0.5,0.5]", "distinct values"),
    ("grid.axes.density=[log,0,1,3]", "start, stop > 0"),
    ("+grid.axes.model=[relu,softmax]", "grid.axes.model='softmax'"),
    ("model.n_features=2.5", "model.n_features=2.5"),
    ("train.lr=0", "train.lr=0"),
    ("train.lr=fast", "train.lr='fast'"),
    ("train.weight_decay=-0.1", "train.weight_decay=-0.1"),
    ("train.warmup_steps=50", "train.warmup_steps=50"),  # conflicts with train.steps=20
    ("train.device=tpu", "train.device='tpu'"),
    ("train.dtype=float16", "train.dtype='float16'"),
    ("data.relative_importance_features=[5]", "data.relative_importance_features=[5]"),
    ("chunk.memory_mb=0.001", "chunk.memory_mb=0.001"),
    ("store.mode=append", "store.mode='append'"),
    ("retries=-1", "retries=-1"),
    ("no_such_key=1", "no_such_key"),
    ("launcher=pbs", "launcher/pbs"),
    ("train.steps=[1,2", "train.steps=[1,2"),
    ("store.path=/proc/toysweep/phase", "not writable"),
    # from the typed schema (sweep/config.py) and the checks made before anything is created
    ("analysis.aggregate=bogus", "analysis.aggregate='bogus'"),
    ("data.relative_importance_features=[1,1]", "no duplicates"),
    ("grid.seeds=1000000000", "grid.seeds=1000000000"),
    ("train.device=cuda:7", "train.device='cuda:7'"),
]


# Through the real command, one input per kind of check (a process costs ~10 s of imports on
# the 2-core machine): a schema choice and a type, a range, a rule across settings, an axis, a
# key, the grammar and a config group (Hydra's own), a store path and a device. Every input of
# BAD is also refused in-process below, through the same checks (preflight, then the store's).
THROUGH_THE_COMMAND = {
    "model.kind=sigmoid",
    "train.lr=fast",
    "train.steps=0",
    "train.warmup_steps=50",
    "+grid.axes.temperature=[1,2]",
    "no_such_key=1",
    "train.steps=[1,2",
    "launcher=pbs",
    "store.path=/proc/toysweep/phase",
    "train.device=cuda:7",
}
CLI_BAD = [b for b in BAD if b[0] in THROUGH_THE_COMMAND]


def test_every_input_through_the_command_is_a_bad_one():
    assert len(CLI_BAD) == len(THROUGH_THE_COMMAND)


@pytest.mark.parametrize(("override", "expected"), CLI_BAD, ids=[b[0] for b in CLI_BAD])
def test_bad_input_one_line_nothing_written(tmp_path, override, expected):
    store = tmp_path / "phase"
    extra = [] if override.startswith("store.path=") else [f"store.path={store}"]
    r = run_cli(["-m", "sweep", *TINY, *override.split(), *extra], cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    # our checks say what is allowed; Hydra's own (unknown key, syntax) say where it came from
    assert "expected" in lines[0] or "(from the command line)" in lines[0]
    assert not store.exists()
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(("override", "expected"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_refused_in_process_nothing_written(tmp_path, monkeypatch, capsys, override,
                                                      expected):
    """The command's own checks, in this process: preflight (argv, composition, schema,
    settings), then the store's (driver.prepare), as `python -m sweep` runs them."""
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "phase"
    extra = [] if override.startswith("store.path=") else [f"store.path={store}"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        driver.prepare(preflight([*TINY, *override.split(), *extra])).lock.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines
    assert "expected" in lines[0] or "(from the command line)" in lines[0]
    assert not any(tmp_path.iterdir())


def test_unknown_grid_name(tmp_path):
    r = run_cli(["-m", "sweep", "+grid=nosuchgrid"], cwd=tmp_path)
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert "grid='nosuchgrid'" in line and "phase" in line
    assert not any(tmp_path.iterdir())


def test_bad_input_leaves_existing_store_untouched(tmp_path):
    store = tmp_path / "phase"
    ok = run_cli(["-m", "sweep", *TINY, f"store.path={store}"], cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    files = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
    bad = run_cli(["-m", "sweep", *TINY, "train.steps=0", f"store.path={store}"], cwd=tmp_path)
    assert bad.returncode == 2
    assert {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()} == files


def test_store_path_under_a_file(tmp_path):
    target = tmp_path / "afile"
    target.write_text("keep me")
    r = run_cli(["-m", "sweep", *TINY, f"store.path={target}/phase"], cwd=tmp_path)
    assert r.returncode == 2 and "which is a file" in r.stderr
    assert target.read_text() == "keep me"


def test_store_path_is_a_file(tmp_path):
    target = tmp_path / "afile"
    target.write_text("keep me")
    r = run_cli(["-m", "sweep", *TINY, f"store.path={target}"], cwd=tmp_path)
    assert r.returncode == 2 and "is a file" in r.stderr
    assert target.read_text() == "keep me"


@pytest.mark.unit
def test_a_flags_value_is_not_taken_for_an_override():
    """`python -m sweep --cfg job` prints the config (Hydra's flag and its value), as
    `--cfg=job` does: the checks read the overrides as Hydra's own parser does."""
    from sweep.__main__ import check_composes

    for argv in (["--cfg", "job", "+grid=phase"], ["--cfg=job", "+grid=phase"],
                 ["-c", "job", "+grid=phase", "train.steps=7"]):
        assert check_composes(argv).train.steps in (10000, 7), argv


# Hostile cases (issue 10) that only the command line or a process shows.
@pytest.mark.hostile
def test_analysis_settings_from_the_command_line_are_used(finished, tmp_path):
    from analysis.callback import run_analysis

    path = tmp_path / "s"
    shutil.copytree(finished, path)
    cfg = preflight(
        [
            *BASE,
            "analysis.aggregate=lowest_loss",
            "analysis.norm_threshold=0.9",
            "analysis.figures=[loss_curves]",
            f"store.path={path}",
        ]
    )
    summary = run_analysis(_with_run(cfg))
    assert summary["aggregate"] == "lowest_loss"
    ana = xr.open_zarr(Path(str(path) + ".analysis.zarr"))
    assert float(ana.attrs["norm_threshold"]) == 0.9


def _with_run(cfg):
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.analysis.run = True
    return cfg


# The real command line, for what only a process shows.
@pytest.mark.hostile
def test_cli_odd_path_quoted_for_jobs(tmp_path):
    odd = tmp_path / "a b (c), d$;é'q"
    quoted = driver.hydra_quote(str(odd))
    r = run_cli(["-m", "sweep", *BASE, f"store.path={quoted}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert bool(xr.open_zarr(odd).finished.all())


@pytest.mark.hostile
@pytest.mark.slow
def test_cli_odd_path_through_submitit_jobs(tmp_path):
    """The same through submitit's local executor: jobs in their own processes."""
    odd = tmp_path / "ü (1), $x;"
    r = run_cli(
        [
            "-m",
            "sweep",
            *BASE,
            "launcher=submitit_local",
            f"store.path={driver.hydra_quote(str(odd))}",
        ],
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert bool(xr.open_zarr(odd).finished.all())


@pytest.mark.hostile
def test_cli_keyboard_interrupt_one_line_then_resume(tmp_path):
    path = tmp_path / "s"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweep", *BASE, "train.steps=200000", f"store.path={path}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Waits on the store's template (the sweep is past its checks and training), with limits
    # generous enough for a loaded machine: no step here is sized for an idle one.
    deadline = time.time() + 600
    while not (path / ".zmetadata").exists():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("error: interrupted"), err[-3000:]
    open_store(path)  # the interrupted store still opens (a rerun resumes it)


@pytest.mark.hostile
def test_renamed_grid_is_analysed(tmp_path):
    """`+grid=intro name=intro_v2`: the figures come from the grid file's analysis.figures,
    recorded in the store, not from the store's name."""
    from analysis.report import analyse

    path = tmp_path / "v2"
    cfg = make_config(
        [
            "+grid=intro",
            "name=intro_v2",
            "train.steps=10",
            "grid.seeds=1",
            "grid.axes.density=[0.1,1.0]",
        ],
        store=path,
    )
    assert driver.run(cfg) == 0
    summary = analyse(path, verbose=False)
    assert summary["figures"]
