"""Issue 25, a small sweep in seconds: what the start-up cuts must keep.

- A sweep's numbers do not depend on whether its jobs ran in worker processes (warmed up while
  the driver writes the template) or in the driver's own process: bit for bit.
- No process of a sweep imports matplotlib unless it draws (the figure registry is lazy), nor
  Dynamo unless it builds a compiled step (a warm one loads from its package), nor xarray in a
  worker (a job writes with zarr alone), so workers and the driver's checks skip seconds of
  imports.
- The figures written by parallel processes are the files one process writes.
- The timing record (sweep/timing.py) writes one JSON line per phase, from every process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from tests.conftest import ROOT

# Two shapes (relu and linear), so two jobs: one per worker with workers=2.
TWO_JOBS = [
    "-m",
    "sweep",
    "+grid=phase",
    "+grid.axes.model=[relu,linear]",
    "grid.axes.density=[0.05,0.3,1.0]",
    "grid.axes.relative_importance=[0.5,2.0]",
    "grid.seeds=2",
    "train.steps=40",
    "train.compile=false",
    "analysis.run=false",
    "progress=false",
]

# Records, in every process of a sweep (sitecustomize runs in the driver and in each worker,
# which inherit PYTHONPATH), which process imported torch, Dynamo, matplotlib and xarray.
SPY = """
import os, sys

class Spy:
    def find_spec(self, name, path=None, target=None):
        if name in ("torch", "torch._dynamo", "matplotlib", "xarray"):
            with open(os.environ["SPY_FILE"], "a") as f:
                f.write(f"{os.getpid()} {name}\\n")
        return None

sys.meta_path.insert(0, Spy())
"""


def _sweep(tmp_path: Path, store: str, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    spy = tmp_path / "spy"
    spy.mkdir(exist_ok=True)
    (spy / "sitecustomize.py").write_text(SPY)
    log = tmp_path / f"{store}.imports"
    env = {**os.environ, "PYTHONPATH": f"{spy}:{ROOT}", "SPY_FILE": str(log)}
    proc = subprocess.Popen(
        [sys.executable, *TWO_JOBS, f"store.path={tmp_path / store}", *extra],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = proc.communicate(timeout=600)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    imports: dict[str, set[int]] = {
        "torch": set(),
        "torch._dynamo": set(),
        "matplotlib": set(),
        "xarray": set(),
        "driver": {proc.pid},
    }
    for line in log.read_text().splitlines() if log.exists() else []:
        pid, name = line.split()
        imports[name].add(int(pid))
    return done, imports


@pytest.mark.slow
def test_worker_and_in_process_runs_store_the_same_bits_and_import_no_matplotlib(tmp_path):
    """The same two-job grid through the CLI: in 2 worker processes (started ahead, while the
    driver writes the template; stopped at the end without a warning), then in the driver's
    process alone (workers=1): every array equal bit for bit. With analysis.run=false no
    process imports matplotlib, and with train.compile=false none imports Dynamo (1 s each);
    torch is imported by the workers (so they ran the jobs)."""
    workers, seen = _sweep(tmp_path, "workers", "workers=2")
    assert workers.returncode == 0, workers.stderr[-2000:]
    # the workers stopped at the end left nothing behind (e.g. tqdm's semaphores, once)
    assert "leaked" not in workers.stderr and "Traceback" not in workers.stderr, workers.stderr
    assert seen["torch"] - seen["driver"], "no worker process trained"
    assert not seen["matplotlib"], f"processes that imported matplotlib: {seen}"
    assert not seen["torch._dynamo"], f"processes that imported Dynamo: {seen}"
    # a job writes its chunks with zarr alone: xarray (~0.4 s of every worker's start) is the
    # driver's, for the template and the summary
    assert seen["xarray"] == seen["driver"], f"processes that imported xarray: {seen}"
    alone, seen1 = _sweep(tmp_path, "alone", "workers=1")
    assert alone.returncode == 0, alone.stderr[-2000:]
    assert seen1["torch"] == seen1["driver"]  # in-process: no other process imported torch
    assert not seen1["torch._dynamo"], f"processes that imported Dynamo: {seen1}"
    a, b = xr.open_zarr(tmp_path / "workers"), xr.open_zarr(tmp_path / "alone")
    assert bool(a["finished"].all()) and bool(b["finished"].all())
    for name in ("W", "b", "loss", "loss_curve", "diverged"):
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    assert a.attrs["fingerprint"] == b.attrs["fingerprint"]


@pytest.mark.slow
def test_a_warm_compiled_sweep_imports_no_dynamo_and_stores_its_cold_bits(tmp_path):
    """The two-job grid compiled: the first run builds each shape's package (sweep/packages.py)
    in its workers; a second run with that cache loads them without importing Dynamo, in
    worker processes or in the driver's, and stores the first run's numbers bit for bit."""
    compiled = ["train.compile=true", f"train.compile_cache={tmp_path / 'cache'}"]
    cold, _ = _sweep(tmp_path, "cold", "workers=2", *compiled)
    assert cold.returncode == 0, cold.stderr[-2000:]
    assert len(list((tmp_path / "cache" / "aoti").glob("train_chunk-*.pt2"))) == 2  # 2 shapes
    first = xr.open_zarr(tmp_path / "cold")
    for store, workers in (("warm", "workers=2"), ("alone", "workers=1")):
        warm, seen = _sweep(tmp_path, store, workers, *compiled)
        assert warm.returncode == 0, warm.stderr[-2000:]
        assert seen["torch"], "nothing trained"
        assert not seen["torch._dynamo"], f"{store}: processes that imported Dynamo: {seen}"
        again = xr.open_zarr(tmp_path / store)
        for name in ("W", "b", "loss", "loss_curve", "diverged", "finished"):
            np.testing.assert_array_equal(first[name].values, again[name].values, err_msg=name)


@pytest.mark.unit
def test_the_sweeps_analysis_check_imports_no_plotting_library():
    """The callback's check of `analysis.*` (run before every sweep, and the callback is built
    in every job process) knows the figure names without importing the figure modules."""
    code = (
        "import sys; from omegaconf import OmegaConf; from analysis import callback; "
        "cfg = OmegaConf.create({'analysis': {'figures': ['phase_diagram', 'loss_curves']}}); "
        "callback.check(cfg); print(sorted(m for m in ('matplotlib', 'seaborn', 'torch') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    from analysis import registry

    assert registry.FIGURES["loss_curves"].__module__ == "analysis.figs.curves"
    with pytest.raises(KeyError):
        registry.FIGURES["no_such_family"]


@pytest.mark.unit
def test_figures_written_in_parallel_are_the_files_one_process_writes(tmp_path, monkeypatch):
    """analysis.saving.Staged (a forked writer per family) against the same families
    drawn and written in this process: the same paths in the same order, the same PNG bytes,
    an SVG beside each, the skipped family named. A family that cannot draw leaves the folder
    as it was: nothing of the families that did draw is moved in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis import saving

    made: list = []  # the figures drawn in this process (the in-process run's)

    def family(k: int, n: int):
        def draw() -> dict:
            out = {}
            for j in range(n):
                fig, ax = plt.subplots(figsize=(2, 2))
                ax.plot(np.arange(10) ** (k + j + 1), label=f"$k={k}$")
                ax.legend()
                out[f"fig{k}{j}"] = fig
                made.append(fig)
            return out

        return draw

    def draw_and_save(families: dict, directory):
        with saving.Staged(directory) as figures:
            skipped = figures.draw(families)
            return figures.commit(), skipped

    families = {"a": family(0, 2), "none": family(1, 0), "b": family(2, 1), "c": family(3, 1)}
    many, skipped = draw_and_save(families, tmp_path / "many")
    monkeypatch.setattr(saving, "available_cores", lambda: 1)
    one, skipped_one = draw_and_save(families, tmp_path / "one")
    assert skipped == skipped_one == ["none"]
    assert [p.name for p in many] == [p.name for p in one] == [
        f"fig{s}.{e}" for s in ("00", "01", "20", "30") for e in ("png", "svg")
    ]
    assert [p.parent for p in many] == [tmp_path / "many"] * len(one)
    for a, b in zip(one, many, strict=True):
        if a.suffix == ".png":
            assert a.read_bytes() == b.read_bytes(), a.name
        else:
            assert b.stat().st_size > 0
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == sorted(p.name for p in many)
    # every figure drawn here is closed (other tests of this process may hold figures of theirs)
    assert made and not [f for f in made if plt.fignum_exists(f.number)]

    def refused() -> dict:
        raise ValueError("no density axis")

    monkeypatch.undo()
    before = {p.name: p.read_bytes() for p in (tmp_path / "many").iterdir()}
    with pytest.raises(saving.Refused, match="^bad: ValueError: no density axis$"):
        draw_and_save({"d": family(4, 1), "bad": refused}, tmp_path / "many")
    assert {p.name: p.read_bytes() for p in (tmp_path / "many").iterdir()} == before
    with pytest.raises(saving.Refused):
        draw_and_save({"d": family(4, 1), "bad": refused}, tmp_path / "new")
    assert not (tmp_path / "new").exists()
    # the staging folder of an analysis killed half-way goes; a running one's stays
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / "many" / f".new-{dead}-x1").mkdir()
    (tmp_path / "many" / f".new-{os.getpid()}-x2").mkdir()
    draw_and_save({"d": family(4, 1)}, tmp_path / "many")
    assert sorted(p.name for p in (tmp_path / "many").glob(".new-*")) == [f".new-{os.getpid()}-x2"]


@pytest.mark.unit
def test_timing_marks_one_json_line_per_phase_from_every_process(tmp_path, monkeypatch):
    """TOYSWEEP_TIMING=<file>: each mark appends a JSON line (phase, time, pid, details), from
    this process and from a child that inherits the variable; unset, nothing is written."""
    from sweep import timing

    marks = tmp_path / "marks.jsonl"
    timing.mark("nothing")  # unset: no file
    assert not marks.exists()
    monkeypatch.setenv(timing.VAR, str(marks))
    timing.mark("first", block="x-c0")
    child = subprocess.run(
        [sys.executable, "-c", "from sweep import timing; timing.mark('child')"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert child.returncode == 0
    timing.mark("last")
    lines = [json.loads(line) for line in marks.read_text().splitlines()]
    assert [m["phase"] for m in lines] == ["first", "child", "last"]
    assert lines[0]["block"] == "x-c0" and lines[0]["pid"] == lines[2]["pid"] == os.getpid()
    assert lines[1]["pid"] != os.getpid()
    assert lines[0]["t"] <= lines[1]["t"] <= lines[2]["t"]
