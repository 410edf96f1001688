"""A Hydra sweeper that groups a toysweep grid's storage chunks into Hydra jobs.

Hydra's basic sweeper takes its job list from `hydra.sweeper.params`, fixed before the config is
known; a toysweep grid needs the composed config (axes, memory budget) to decide how many
tensors, hence jobs, it makes. This sweeper plans the chunks, writes the store template, groups
the unfinished chunks into about `workers` jobs (sweep.jobs: a choice of this run, not the
store's), hands them to whatever Hydra launcher is configured (basic in-process, submitit
local or SLURM), relaunches the jobs left unfinished, and reports. It lives in the
`hydra_plugins` namespace because Hydra only instantiates sweepers found there.
"""

import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

import sweep.config  # noqa: F401 - registers the config schema (toysweep_schema) with Hydra

log = logging.getLogger(__name__)


# Options the sweeper sets for each job itself: a user's own spelling of them is dropped.
JOB_KEYS = ("block=", "store.path=", "store.run_id=", "workers=", "refine.cells=")


@dataclass
class ToySweeperConf:
    _target_: str = "hydra_plugins.toysweep.toysweep_sweeper.ToySweeper"


ConfigStore.instance().store(
    group="hydra/sweeper", name="toysweep", node=ToySweeperConf, provider="toysweep"
)


def _log_path(folder: str | None, job_id: str | None) -> str | None:
    """A submitit job's stdout log, where its traceback is (stderr sits beside it)."""
    if not folder or not job_id or "%j" not in folder:
        return None
    return str(Path(folder.replace("%j", job_id)).absolute() / f"{job_id}_0_log.out")


def _describe(ret: Any, folder: str | None) -> str:
    """Error and where to read the job's logs, for a Hydra job that raised.

    Read from the job's own Hydra config with select(): its launcher node holds interpolations
    (`${store.path}`) that only resolve in the sweep's config, hence `folder` from there.
    """
    err = ret._return_value
    job_id = OmegaConf.select(
        ret.hydra_cfg, "hydra.job.id", default=None, throw_on_resolution_failure=False
    )
    job_dir = OmegaConf.select(
        ret.hydra_cfg, "hydra.runtime.output_dir", default=None, throw_on_resolution_failure=False
    )
    logs = _log_path(folder, str(job_id) if job_id else None)
    where = f"job {job_id}, log {logs}" if logs else f"job dir {job_dir}"
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {first} ({where})"


def _report(ret: Any, folder: str | None) -> str | None:
    """What went wrong with one job, or None: a job that raised, or one that ended without
    writing because the store was not the run it was launched for (a stale job)."""
    if ret.status == JobStatus.FAILED:
        return _describe(ret, folder)
    value = ret._return_value
    if isinstance(value, dict) and value.get("stale"):
        return (
            "stale job, nothing written: the store's run id or settings are not the ones the "
            "job was launched with (was the store overwritten or changed meanwhile?)"
        )
    return None


# submitit's message for a job that ended without a result (cancelled, killed, out of memory):
# "Job <id> (task: <n>) with path <folder>/<id>_<n>_result.pkl\nhas not produced any output
# (state: <SLURM state>)..."; its exception carries nothing else, so the message is parsed.
_UNCOMPLETED = re.compile(
    r"Job (?P<id>\S+) \(task: \d+\) with path (?P<path>\S+)_result\.pkl"
    r"\s+has not produced any output \(state: (?P<state>[^)]*)\)"
)


def _lost(err: Exception) -> tuple[str, str] | None:
    """(job id, one-line report) for a job that ended without a result, else None."""
    m = _UNCOMPLETED.search(str(err))
    if m is None:
        return None
    return m[
        "id"
    ], f"job {m['id']} ended without a result (state: {m['state']}; log {m['path']}_log.out)"


def _gather_array(err: Exception, todo: list[str]) -> dict[str, str] | None:
    """After submitit raised for one task of a SLURM array, wait for all its tasks.

    Hydra's submitit launcher collects results in order and gives up at the first task that
    ended without one, while the other tasks keep running; retrying then would start a second
    job on blocks still being trained. Task k of the array trains todo[k]. Returns block ->
    failure report for every task that failed or ended without a result; None when `err` is not
    from a SLURM array task (then nothing can be waited for).
    """
    import submitit
    from submitit.core.utils import UncompletedJobError

    m = _UNCOMPLETED.search(str(err))
    if m is None or not re.fullmatch(r"\d+_\d+", m["id"]):
        return None
    array = m["id"].split("_")[0]
    folder = str(Path(m["path"]).parent.parent / "%j")
    jobs = [submitit.SlurmJob(folder, f"{array}_{k}") for k in range(len(todo))]
    while not all(job.done() for job in jobs):  # done() asks sacct, at most every few seconds
        time.sleep(2)
    failed = {}
    for block, job in zip(todo, jobs, strict=True):
        job._results_timeout_s = 5  # its result is either there or never will be
        try:
            ret = job.results()[0]
        except UncompletedJobError as e:
            lost = _lost(e)
            failed[block] = lost[1] if lost else f"UncompletedJobError: {e}"
            continue
        except Exception as e:  # the task raised outside the Hydra job (e.g. unpickling)
            failed[block] = (
                f"{type(e).__name__}: {str(e).strip().splitlines()[0]} "
                f"(job {job.job_id}, log {job.paths.stdout})"
            )
            continue
        if ret.status == JobStatus.FAILED:
            failed[block] = _describe(ret, folder)
    return failed


class ToySweeper(Sweeper):
    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    @staticmethod
    def _ident(sweep: Any) -> list[str]:
        """The store's real path and its run id, each quoted for Hydra's grammar: a path may be
        spelt any way, and a run id (16 hex digits) unquoted reads as a float when it is digits
        around one `e`: about one in 1,300, e.g. 8e68538008424411 (inf), whose jobs then all
        refused their own store as stale."""
        from sweep import driver

        return [
            f"store.path={driver.hydra_quote(str(sweep.path))}",
            f"store.run_id={driver.hydra_quote(str(driver.identity(sweep.path)['run_id']))}",
        ]

    def _starting(self, plan: Any) -> None:
        """The store is about to be written: a launcher that can start its workers ahead
        (the local one) starts as many as this run's jobs can use, in the background."""
        from sweep.jobs import group

        prewarm = getattr(self.launcher, "prewarm", None)
        if prewarm is not None:
            prewarm(len(group(plan, plan.block_keys)))

    def _launch(
        self, keys: list[str], batch: list[list[str]], job_idx: int, folder: str | None
    ) -> dict[str, str]:
        """Run one batch of jobs (job k trains keys[k]); returns key -> failure report."""
        try:
            returns = self.launcher.launch(batch, initial_job_idx=job_idx)
            said = {k: _report(r, folder) for k, r in zip(keys, returns, strict=True)}
            return {k: line for k, line in said.items() if line}
        except Exception as e:  # a job cancelled or killed: submitit raises for it
            failed = _gather_array(e, keys)
            if failed is None:  # not a SLURM array task: report it as it came
                lost = _lost(e)
                said = " ".join(str(e).split())[:600]
                failed = {"?": lost[1] if lost else f"{type(e).__name__}: {said}"}
            return failed

    def sweep(self, arguments: list[str]) -> Any:
        import sys

        from sweep import driver, timing, writes
        from sweep.jobs import chunks_of, relaunch

        timing.mark("hydra")  # Hydra's own start: its composition, callbacks, this sweeper
        assert self.config is not None
        # -- adaptive refinement (issue 16): a grid with refine.levels > 0 is orchestrated
        # level by level by sweep/refine.py, in this process, into one fine-grid store.
        folder = OmegaConf.select(self.config, "hydra.launcher.submitit_folder", default=None)
        base = [a for a in arguments if not a.lstrip("+~").startswith(JOB_KEYS)]
        if OmegaConf.select(self.config, "refine.levels", default=None):
            from sweep import refine

            launched = [0]  # jobs launched so far: the next launch's first job index

            def launch(sweep: Any, jobs: list[tuple[str, str]]) -> dict[str, str]:
                """A level's jobs (tag, cells) through the configured launcher, as below."""
                batch = [
                    [*base, f"block={tag}", f"refine.cells={driver.hydra_quote(cells)}"]
                    + [*self._ident(sweep), f"workers={sweep.plan.workers}"]
                    for tag, cells in jobs
                ]
                launched[0] += len(batch)
                return self._launch([t for t, _ in jobs], batch, launched[0] - len(batch), folder)

            code = refine.run(self.config, launch=launch)
            if code:
                sys.exit(code)
            return None
        # -- end of adaptive refinement
        sweep = driver.prepare(self.config, starting=self._starting)
        with sweep.lock:  # the store's lock: released when this ends, not at garbage collection
            ident = self._ident(sweep)
            launched = [0]  # jobs launched so far: the next launch's first job index

            def unfinished() -> list[str]:
                """The jobs still unfinished, as grouped at the start (a relaunched job finds
                its checkpoint under its own name)."""
                done = writes.finished_chunks(sweep.path, sweep.plan)
                return [
                    j for j in sweep.jobs if not {b.key() for b in chunks_of(sweep.plan, j)} <= done
                ]

            def launch(todo: list[str]) -> dict[str, str]:
                # workers as resolved here: a job's plan (hence its chunks) must match this one
                # even where `auto` would resolve differently (a SLURM node's cores)
                batch = [
                    [*base, f"block={k}", *ident, f"workers={sweep.plan.workers}"] for k in todo
                ]
                failed = self._launch(todo, batch, launched[0], folder)
                launched[0] += len(batch)
                for k, line in failed.items():
                    log.error(f"failed: job {k}: {line}")
                return failed

            why = relaunch(unfinished, launch, int(self.config.retries))
            timing.mark("jobs")
            done = writes.finished_chunks(sweep.path, sweep.plan)
            failures = [
                f"job {j}: {why.get(j, 'no failure reported (its job may have died)')}"
                for j in sweep.jobs
                if not {b.key() for b in chunks_of(sweep.plan, j)} <= done
            ]
            if "?" in why and failures:  # a failure that names no job (not a SLURM array task)
                failures.append(f"job ?: {why['?']}")
            code = driver.finish(sweep, failures)
            timing.mark("finish")
            if code:
                sys.exit(code)
            return None
