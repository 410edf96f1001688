"""The local launcher: a sweep's blocks run at once in `workers` processes on this machine.

Hydra's joblib launcher (loky processes, reused across jobs) does the work; this subclass only
takes its number of processes from the sweep's one setting, `workers`, instead of its own
`n_jobs`, and gives each job its share of the cores (`train.threads=0`: cores ÷ jobs at once).
A sweep with one block (or workers=1) runs in this process, as Hydra's basic launcher would:
no worker to start, so small sweeps and tests pay nothing.

Chosen by measurement on the 2-core build machine (README, Performance): joblib's workers
import torch once each and are reused for every block; submitit's local executor starts a
fresh interpreter per block (~10 s of imports each, 40 s against 9 s for a tiny sweep).

Workers stop when the driver dies, by any signal (`DriverWatch`): loky's workers otherwise train
on for minutes after a SIGKILL of the driver, orphaned to init.
"""

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra_plugins.hydra_joblib_launcher.config import JobLibLauncherConf
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher


@dataclass
class LocalWorkersLauncherConf(JobLibLauncherConf):
    _target_: str = "hydra_plugins.toysweep.toysweep_launcher.LocalWorkersLauncher"


ConfigStore.instance().store(
    group="hydra/launcher",
    name="toysweep_local",
    node=LocalWorkersLauncherConf,
    provider="toysweep",
)


def job_threads(setting: int, jobs_at_once: int) -> int:
    """Torch threads of one job: the setting, or (0) its share of the idle cores."""
    from sweep.cores import threads_per_job

    return setting if setting > 0 else threads_per_job(jobs_at_once)


# How often a worker looks for its driver: a dead driver's workers stop within this (plus the
# time to leave a torch kernel), and a check costs one getppid() call.
WATCH_SECONDS = 0.5
_watching: set[int] = set()  # drivers this process watches already (loky reuses workers)


def _exit_quickly() -> None:
    """A worker's exit (its first atexit handler to run): logging's and multiprocessing's exit
    handlers (which release the worker's semaphores: a killed worker leaked them, with a
    warning), then leave without tearing down torch's thousands of modules, which took
    seconds per worker at the end of every sweep (the driver waits for its workers)."""
    from multiprocessing import util

    logging.shutdown()
    util._exit_function()  # multiprocessing's exit handler: finalizers, semaphores released
    os._exit(0)


def watch_driver(driver: int) -> None:
    """Exit this process as soon as the process `driver` is gone (a daemon thread polls).

    Why a thread and not prctl(PR_SET_PDEATHSIG): the death signal is Linux-only, and it fires
    when the *thread* that forked the worker ends, not its process: loky forks replacement
    workers from its executor-manager thread, which may end while the driver lives. Why not the
    process group: a SIGKILL of the driver signals nobody else. loky's workers are direct
    children of the driver (checked: `ps --forest` during a sweep), so the driver is gone when
    getppid() no longer names it (the kernel re-parents orphans), which a reused pid cannot
    fake; a worker started otherwise falls back to probing the pid.
    """
    if driver == os.getpid() or driver in _watching:
        return
    if not _watching:
        atexit.register(_exit_quickly)
    _watching.add(driver)
    direct = os.getppid() == driver

    def alive() -> bool:
        if direct:
            return os.getppid() == driver
        try:
            os.kill(driver, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, another user's (the pid was reused)
            return True
        return True

    def watch() -> None:
        while alive():
            time.sleep(WATCH_SECONDS)
        logging.getLogger(__name__).error(
            f"the driver (pid {driver}) is gone: stopping this worker (pid {os.getpid()}); "
            "rerun the sweep to train its unfinished blocks"
        )
        # os._exit, not sys.exit: this thread cannot raise into the training thread. Chunk
        # writes are atomic and `finished` comes last, so a block cut short is retrained.
        os._exit(1)

    threading.Thread(target=watch, name=f"watch-driver-{driver}", daemon=True).start()


class DriverWatch:
    """The task function of a worker's job: first watch the driver, then run the job.

    Pickled to the worker with each job (joblib sends the task function), so the driver's pid
    travels in the job itself, not in an environment a SLURM job could inherit.
    """

    def __init__(self, task: Callable[..., Any], driver: int):
        self.task, self.driver = task, driver

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        watch_driver(self.driver)
        return self.task(*args, **kwargs)


def warm() -> None:
    """What a worker's first job would import (the engine, torch), imported while the driver
    writes the store's template instead of after it. Not Dynamo nor Inductor: compiled steps
    load from their packages without them (sweep.packages), and a job that must build one
    imports them then (2-3 s of CPU per process on the 2-core machine, paid only cold)."""
    import torch  # noqa: F401
    import zarr  # noqa: F401 - a job's first look at its chunks (sweep.integrity) reads with it

    import sweep.__main__  # noqa: F401 - the task function's module: Hydra, the schema
    import sweep.driver  # noqa: F401
    import sweep.train  # noqa: F401


class LocalWorkersLauncher(JoblibLauncher):
    _warming: threading.Thread | None = None

    def prewarm(self, jobs: int) -> None:
        """Start the worker processes a launch of `jobs` jobs will use (none for one job: it
        runs in this process), each importing what its jobs need (`warm`), in the background.
        joblib keeps loky's processes for its next call of the same size: the launch's."""
        from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg
        from joblib import Parallel, delayed

        from sweep.cores import resolve_workers

        assert self.config is not None
        n = min(resolve_workers(self.config.get("workers", 1)), jobs)
        if n < 2:
            return
        task = DriverWatch(warm, os.getpid())
        # the launch's own joblib settings (Hydra's, as its launch completes them): loky's
        # processes are reused only by a call with the same executor settings
        settings = {**self.joblib, "n_jobs": n, "backend": "loky"}
        process_joblib_cfg(settings)

        def start() -> None:
            try:
                Parallel(**settings)(delayed(task)() for _ in range(n))
            except Exception as e:  # noqa: BLE001 - only a head start: the launch starts them
                logging.getLogger(__name__).debug(f"worker warm-up failed: {e}")

        self._warming = threading.Thread(target=start, name="toysweep-warm-up", daemon=True)
        self._warming.start()

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from sweep.cores import resolve_workers

        assert self.config is not None
        if self._warming is not None:  # the warm-up's processes, ready: this launch uses them
            self._warming.join()
            self._warming = None
        jobs = min(resolve_workers(self.config.get("workers", 1)), len(job_overrides))
        threads = job_threads(int(self.config.train.get("threads", 0)), jobs)
        self.joblib["n_jobs"] = jobs  # 1: joblib runs the jobs in this process
        overrides = [[*o, f"train.threads={threads}"] for o in job_overrides]
        task = self.task_function
        if jobs > 1 and task is not None:  # worker processes: each watches this driver
            self.task_function = DriverWatch(task, os.getpid())
        try:
            return super().launch(overrides, initial_job_idx)
        finally:
            self.task_function = task
