"""Checks against a live SLURM cluster, e.g. the local one from slurm/start.sh.

Skipped when SLURM is not installed (no `sinfo` on PATH), unless TOYSWEEP_REQUIRE_SLURM=1,
which turns the skip into a failure (CI sets it so that a broken cluster set-up cannot pass
silently as skipped tests).

Callables sent to the cluster are standard-library functions or closures: cloudpickle pickles
those by value, whereas functions of this test module would be pickled by reference and the job
could not import them.
"""

from __future__ import annotations

import operator
import os
import subprocess
import time

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("require_slurm")]

PARTITION = os.environ.get("TOYSWEEP_SLURM_PARTITION", "debug")
JOB_DEADLINE_S = 25  # a job on an idle local cluster finishes in a few seconds


def _run(*cmd: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr}"
    return proc.stdout


def _executor(folder):
    import submitit

    executor = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    # timeout_min must exceed submitit's signal_delay_s (90 s) plus slurmctld's 30 s check
    # period: with 2 minutes SLURM may send the timeout warning (SIGUSR2) right at the start.
    executor.update_parameters(
        slurm_partition=PARTITION, timeout_min=5, mem_gb=1, cpus_per_task=1, name="toysweep-test"
    )
    return executor


def _wait_done(jobs, deadline_s: float = JOB_DEADLINE_S) -> None:
    """Wait for the jobs without risking a hang (job.result() has no timeout)."""
    deadline = time.monotonic() + deadline_s
    while not all(job.done(force_check=True) for job in jobs):
        if time.monotonic() > deadline:
            states = {job.job_id: job.watcher.get_state(job.job_id, mode="force") for job in jobs}
            for job in jobs:
                job.cancel(check=False)
            pytest.fail(f"jobs not done after {deadline_s}s: {states}", pytrace=False)
        time.sleep(0.5)


def test_cluster_is_up_with_accounting() -> None:
    states = _run("sinfo", "-h", "-p", PARTITION, "-o", "%T").split()
    assert states, f"partition {PARTITION!r} has no nodes (is slurm/start.sh done?)"
    # mixed: other jobs hold part of the node; completing: a cancelled submitit job is within
    # KillWait (submitit ignores SIGTERM, so it lingers until SIGKILL).
    usable = {"idle", "mixed", "completing"}
    assert usable & set(states), f"no idle node in partition {PARTITION!r}: {states}"
    # submitit relies on accounting (sacct) to notice jobs that died without a result.
    assert _run("sacctmgr", "-n", "-P", "show", "cluster", "format=cluster").strip()
    _run("sacct", "-n", "-X", "-S", "now-1minutes")


def test_submitit_job_returns_value(tmp_path) -> None:
    job = _executor(tmp_path).submit(operator.mul, 6, 7)
    _wait_done([job])
    assert job.result() == 42


def test_job_array_of_four_runs_concurrently(tmp_path) -> None:
    def stamp(index: int) -> tuple[int, float, float]:
        import time

        start = time.time()
        time.sleep(3)
        return index, start, time.time()

    jobs = _executor(tmp_path).map_array(stamp, range(4))
    assert len({job.job_id.split("_")[0] for job in jobs}) == 1, "expected one job array"
    _wait_done(jobs)
    results = [job.result() for job in jobs]
    assert [index for index, _, _ in results] == [0, 1, 2, 3]
    # Overlapping run times show the node runs several array tasks at once.
    latest_start = max(start for _, start, _ in results)
    earliest_end = min(end for _, _, end in results)
    assert latest_start < earliest_end, f"array tasks ran one after another: {results}"


def test_cancelled_job_raises_instead_of_hanging(tmp_path) -> None:
    import submitit

    job = _executor(tmp_path).submit(time.sleep, 120)
    deadline = time.monotonic() + JOB_DEADLINE_S
    while job.watcher.get_state(job.job_id, mode="force") != "RUNNING":
        assert time.monotonic() < deadline, f"job {job.job_id} never started"
        time.sleep(0.5)
    job.cancel()
    _wait_done([job])  # needs accounting: the job never writes a result
    job._results_timeout_s = 0  # submitit otherwise waits 15 s for a late result file
    with pytest.raises(submitit.core.utils.UncompletedJobError):
        job.result()
    assert job.state.startswith("CANCELLED")
