"""Sweeps through a live SLURM cluster (e.g. the local one from slurm/start.sh), end to end.

The same tiny phase sweep runs through `launcher=slurm` and the results are compared with a
local run, number for number; then the failure paths: concurrent writers, a cancelled task, a
task that raises, a driver killed mid-sweep, a preempted task that resumes from its checkpoint.

Skipped when SLURM is not installed, unless TOYSWEEP_REQUIRE_SLURM=1 (then they fail), as in
tests/test_slurm_cluster.py. Every wait is bounded; jobs a test leaves behind are cancelled.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sweep import driver, writes
from sweep.grid import GridPlan
from sweep.layout import open_checked as open_store
from tests.conftest import ROOT, make_config, run_cli
from tests.test_writes import GRID, ROUNDS, WRITERS, assert_same_store

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("require_slurm")]

PARTITION = os.environ.get("TOYSWEEP_SLURM_PARTITION", "debug")
# 12 cells in 4 blocks of 4, 2, 4, 2 models: 4 array tasks.
TINY = ["+grid=phase", "grid.seeds=2", "grid.axes.density=[log,0.1,1.0,3]",
        "grid.axes.relative_importance=[0.5,2.0]", "chunk.max_instances=4"]
QUIET = ["analysis.run=false", "progress=false"]
# One CPU per task, so the 8 CPUs the local node advertises run all tasks at once.
SLURM = ["launcher=slurm", f"hydra.launcher.partition={PARTITION}", "hydra.launcher.mem_gb=1",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10"]
DEADLINE_S = 120  # a sweep here takes 15-40 s; a busy machine gets 3x slack, never a hang


@pytest.fixture(autouse=True)
def _cancel_leftovers(tmp_path: Path):
    """Cancel every job submitted from under tmp_path (submitit names a folder per job id)."""
    yield
    ids = {p.name.split("_")[0] for p in tmp_path.glob("**/.jobs/slurm/*") if p.is_dir()}
    ids |= {p.name.split("_")[0] for p in tmp_path.glob("submitit/*") if p.is_dir()}
    ids = sorted(i for i in ids if i.isdigit())
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30)


def _cli(store_path: Path, *extra: str) -> list[str]:
    return ["-m", "sweep", *TINY, *QUIET, *SLURM, f"store.path={store_path}", *extra]


def _popen(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def _reference(tmp_path: Path, overrides: list[str], name: str = "reference") -> Path:
    """The sweep of these overrides trained in this process (no launcher)."""
    cfg = make_config(overrides, store=tmp_path / name)
    assert driver.run(cfg) == 0
    return tmp_path / name


def _wait_for(what: str, check, deadline_s: float = DEADLINE_S, every: float = 0.5):
    deadline = time.monotonic() + deadline_s
    while not (result := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {deadline_s} s waiting for {what}", pytrace=False)
        time.sleep(every)
    return result


def _running_tasks(store_path: Path) -> list[str]:
    """SLURM ids (array_task) of this store's running jobs, from squeue."""
    ids = {p.name for p in (store_path / ".jobs" / "slurm").glob("*") if p.is_dir()}
    out = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True,
                         timeout=30).stdout.split("\n")
    return [i for i, s in (line.split() for line in out if line.strip())
            if s == "RUNNING" and (i in ids or i.split("_")[0] in ids)]


def _trained(output: str) -> int:
    m = re.search(r"trained (\d+) models", output)
    assert m, f"no summary line in:\n{output}"
    return int(m[1])


def test_slurm_sweep_equals_local_run(tmp_path: Path) -> None:
    """Same chunking, same numbers: SLURM tasks at 1 thread, the local run at the default
    (2 here). The fused, uncompiled path used at this size gives the same bits at any thread
    count; the compiled path (train.compile, auto for very large jobs) differs at float32
    rounding level between thread counts, so pin OMP_NUM_THREADS alike to compare those."""
    steps = ["train.steps=100"]
    local = run_cli(["-m", "sweep", *TINY, *QUIET, *steps, "launcher=local",
                     f"store.path={tmp_path / 'local'}"], cwd=tmp_path, timeout=DEADLINE_S)
    assert local.returncode == 0, local.stderr
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    slurm = subprocess.run([sys.executable, *_cli(tmp_path / "slurm", *steps)], cwd=tmp_path,
                           capture_output=True, text=True, timeout=DEADLINE_S, env=env)
    assert slurm.returncode == 0, slurm.stdout + slurm.stderr
    assert "12/12 cells finished" in slurm.stdout
    tasks = sorted(p.name for p in (tmp_path / "slurm" / ".jobs" / "slurm").iterdir()
                   if re.fullmatch(r"\d+_\d+", p.name))
    assert len(tasks) == 4 and len({t.split("_")[0] for t in tasks}) == 1, tasks  # one array
    assert_same_store(tmp_path / "slurm", tmp_path / "local")


def test_concurrent_array_tasks_lose_nothing(tmp_path: Path) -> None:
    """WRITERS array tasks at once, ROUNDS rounds, each round released by a file barrier."""
    import submitit

    cfg = make_config(GRID, store=tmp_path / "store")
    sweep = driver.prepare(cfg)
    sweep.lock.close()
    blocks = [b.key() for b in sweep.plan.blocks]
    store_path = sweep.path
    gate = tmp_path / "barrier"
    gate.mkdir()

    # A closure (pickled by value): the job cannot import this test module.
    def writer(index: int) -> list[tuple[str, float, float]]:
        import time

        from sweep import driver

        spans = []
        for rnd, key in enumerate(blocks[index::WRITERS]):
            (gate / f"{rnd}-{index}").touch()
            deadline = time.monotonic() + 120
            while len(list(gate.glob(f"{rnd}-*"))) < WRITERS:
                assert time.monotonic() < deadline, f"round {rnd}: not all writers arrived"
                time.sleep(0.02)
            start = time.time()
            driver.run_block(driver.job_config(cfg, store_path, key))
            spans.append((key, start, time.time()))
        return spans

    executor = submitit.AutoExecutor(folder=tmp_path / "submitit" / "%j", cluster="slurm")
    executor.update_parameters(slurm_partition=PARTITION, timeout_min=5, mem_gb=1,
                               cpus_per_task=1, name="toysweep-writers")
    jobs = executor.map_array(writer, range(WRITERS))
    _wait_for("the writer tasks", lambda: all(j.done(force_check=True) for j in jobs))
    spans = [s for j in jobs for s in j.result()]
    assert sorted(k for k, _, _ in spans) == sorted(blocks)
    for rnd in range(ROUNDS):  # the writers of each round overlapped in time
        keys = set(blocks[rnd * WRITERS:(rnd + 1) * WRITERS])
        r = [(s, e) for k, s, e in spans if k in keys]
        assert max(s for s, _ in r) < min(e for _, e in r), f"round {rnd}: {r}"
    assert_same_store(store_path, _reference(tmp_path, GRID))


def test_cancelled_task_is_retried(tmp_path: Path) -> None:
    path = tmp_path / "store"
    proc = _popen(_cli(path, "train.steps=100"), cwd=tmp_path)
    try:
        task = _wait_for("a running task", lambda: _running_tasks(path))[0]
        subprocess.run(["scancel", task], check=True, timeout=30)
        out, _ = proc.communicate(timeout=DEADLINE_S)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert re.search(rf"failed: job \S+: job {task} ended without a result "
                     rf"\(state: CANCELLED", out), out
    assert "retrying 1 unfinished job(s), attempt 2 of 3" in out, out
    assert "12/12 cells finished" in out
    assert_same_store(path, _reference(tmp_path, [*TINY, "train.steps=100"]))


# Makes training raise inside SLURM tasks only (SLURM_JOB_ID is set there, not in the driver):
# a failure that no check before the sweep can see (a bad setting, e.g. train.device=cuda, is
# now refused up front). Loaded by `site` from the tasks' PYTHONPATH.
FAILING_TASK = """
import os
if os.environ.get("SLURM_JOB_ID"):
    import sweep.train

    def train_block(*args, **kwargs):
        raise RuntimeError("planted failure inside the task")

    sweep.train.train_block = train_block
"""


def test_failing_task_is_reported(tmp_path: Path) -> None:
    """A task that raises: job id and log in the summary, exit 1."""
    path = tmp_path / "store"
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(FAILING_TASK)
    res = subprocess.run([sys.executable, *_cli(path, "train.steps=20", "retries=0")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=DEADLINE_S,
                         env={**os.environ, "PYTHONPATH": f"{inject}:{ROOT}"})
    assert res.returncode == 1, res.stdout + res.stderr
    assert "trained 0 models" in res.stdout and "0/12 cells finished" in res.stdout
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("  unfinished: ")]
    blocks = [b.key() for b in GridPlan(make_config([*TINY, "train.steps=20"])).blocks]
    assert len(lines) == len(blocks), res.stderr
    for line, block in zip(sorted(lines), sorted(blocks), strict=True):
        m = re.fullmatch(rf"  unfinished: job {block}: (\w+): .* \(job (\d+_\d), "
                         rf"log (\S+_log\.out)\)", line)
        assert m, line
        log = Path(m[3])
        assert log.parent.name == m[2] and log.is_file(), line
        text = log.read_text()  # the traceback is in the log the summary names
        assert f"job {block} failed" in text and "Traceback" in text and m[1] in text
    assert "error: 12 cells unfinished; rerun the same command" in res.stderr


def test_killed_driver_rerun_trains_only_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "store"
    # Two tasks at a time, so the driver dies with some blocks done and some not.
    proc = _popen(_cli(path, "train.steps=100", "hydra.launcher.array_parallelism=2"),
                  cwd=tmp_path)
    try:
        cfg = make_config([*TINY, "train.steps=100"], store=path)
        plan = GridPlan(cfg)
        done = _wait_for("a finished block",
                         lambda: path.exists() and writes.finished_chunks(path, plan), every=0.2)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and anything it started locally
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert len(done) < len(plan.blocks), "the sweep ended before the driver was killed"
    done = writes.finished_chunks(path, plan)  # blocks finished before the rerun
    ds = open_store(path)
    before = {v: ds[v].values.copy() for v in ("W", "b", "loss", "loss_curve")}
    fin = ds["finished"].values.copy()
    chunk_files = []  # the W chunk file of each finished block (one chunk per block here)
    for block in (plan.block(k) for k in done):
        index = [block.slices[d].start // plan.chunks[d] for d in plan.cell_dims]
        chunk_files.append(path / "W" / ".".join(map(str, [*index, 0, 0])))
    mtimes = {p: p.stat().st_mtime_ns for p in chunk_files}
    unfinished_models = int((~fin).sum())

    # Tasks of the killed driver still run (SLURM does not know the driver died); the rerun
    # waits for them on the blocks they hold and trains the rest.
    rerun = subprocess.run([sys.executable, *_cli(path, "train.steps=100",
                                                  "hydra.launcher.array_parallelism=2")],
                           cwd=tmp_path, capture_output=True, text=True, timeout=DEADLINE_S,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "12/12 cells finished" in rerun.stdout
    assert _trained(rerun.stdout) <= unfinished_models < 12
    after = open_store(path)
    for v, old in before.items():  # cells finished before the kill: not rewritten, not changed
        np.testing.assert_array_equal(after[v].values[fin], old[fin], err_msg=v)
    assert {p: p.stat().st_mtime_ns for p in chunk_files} == mtimes, "finished blocks rewritten"
    assert_same_store(path, _reference(tmp_path, [*TINY, "train.steps=100"]))


def test_preempted_task_resumes_from_checkpoint(tmp_path: Path) -> None:
    """USR2, as SLURM sends before a time limit or on preemption: submitit checkpoints the
    launcher, requeues the task, and the requeued task resumes training from its checkpoint."""
    path = tmp_path / "store"
    one_block = ["train.steps=600", "chunk.max_instances=null", "train.checkpoint_seconds=0.1"]
    proc = _popen(_cli(path, *one_block), cwd=tmp_path)
    try:
        ckpt = path / ".jobs" / "checkpoints" / "relu-2-1-c0.pt"
        _wait_for("a checkpoint", ckpt.exists, every=0.1)
        (job,) = _running_tasks(path)
        subprocess.run(["scancel", "--signal=USR2", job], check=True, timeout=30)
        # The uninterrupted run, trained here while the requeued task waits to start again
        # (SLURM holds a requeued job for AuthInfo=cred_expire, 30 s on the local cluster).
        reference = _reference(tmp_path, [*TINY, *one_block])
        out, _ = proc.communicate(timeout=DEADLINE_S)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert "12/12 cells finished" in out
    log = (path / ".jobs" / "slurm" / job / f"{job}_0_log.out").read_text()
    # submitit calls every USR2 a timeout when timeout_min <= 10 (its guaranteed walltime is
    # then 0); either way it checkpoints and requeues.
    assert "this job is preempted" in log or "this job is timed-out" in log, log
    assert f"Requeued job {job}" in log, log
    m = re.search(r"resumed from step (\d+)", log)
    assert m and 0 < int(m[1]) < 600, log
    assert_same_store(path, reference)


def test_refinement_levels_run_as_slurm_jobs(tmp_path: Path) -> None:
    """An adaptive refinement through launcher=slurm: every level is one submission, and the
    store equals the same refinement run in this process, point for point (which points got
    trained, and their numbers), so each level decided the same as the local run."""
    from sweep import refine

    over = ["+grid=phase-refine", "grid.axes.relative_importance=[0.3,3.0]",
            "grid.axes.density=[log,0.1,1.0,3]", "grid.seeds=2", "train.steps=300",
            "train.lr=0.01", "refine.levels=2", "refine.budget=40",
            "chunk.max_instances=4"]  # 2 points a job: the coarse pass is an array of 3 tasks
    assert refine.run(make_config(over, store=tmp_path / "local")) == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = ["-m", "sweep", *over, *QUIET, *SLURM, f"store.path={tmp_path / 'slurm'}"]
    out = subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True, text=True,
                         timeout=3 * DEADLINE_S, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    # a level of one job is a plain job (folder <id>), of several an array (<id>_<task>)
    tasks = [p.name for p in (tmp_path / "slurm" / ".jobs" / "slurm").iterdir()
             if re.fullmatch(r"\d+(_\d+)?", p.name)]
    levels = open_store(tmp_path / "slurm").attrs["refine_points_per_level"]
    assert len({t.split("_")[0] for t in tasks}) == len(levels) >= 2, (tasks, levels)
    assert sum("_" in t for t in tasks) == 3, tasks  # the coarse pass: 6 points, 3 tasks
    a, b = open_store(tmp_path / "slurm"), open_store(tmp_path / "local")
    assert int(a["finished"].all("seed").sum()) == sum(levels)
    for name in ("finished", *writes.TRAINED):
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
