"""A Hydra sweeper that expands a toysweep grid into one Hydra job per block of instances.

Hydra's basic sweeper takes its job list from `hydra.sweeper.params`, fixed before the config is
known; a toysweep grid needs the composed config (axes, memory budget) to decide how many
tensors, hence jobs, it makes. This sweeper plans the blocks, writes the store template, then
hands the jobs to whatever Hydra launcher is configured (basic in-process, submitit local or
SLURM), retries unfinished blocks, and reports. It lives in the `hydra_plugins` namespace
because Hydra only instantiates sweepers found there.
"""



import logging
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

log = logging.getLogger(__name__)


@dataclass
class ToySweeperConf:
    _target_: str = "hydra_plugins.toysweep.toysweep_sweeper.ToySweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="toysweep", node=ToySweeperConf,
                             provider="toysweep")


def _describe(ret: Any) -> str:
    """Block, error and where to read the job's logs, for a failed Hydra job."""
    block = ret.cfg.get("block") if ret.cfg is not None else "?"
    err = ret._return_value
    where = f"job dir {ret.working_dir}" if ret.working_dir else ""
    job_id = ret.hydra_cfg.hydra.job.get("id") if ret.hydra_cfg is not None else None
    folder = ret.hydra_cfg.hydra.launcher.get("submitit_folder") if ret.hydra_cfg else None
    if folder and job_id:
        where += f"; job {job_id}, logs {str(folder).replace('%j', str(job_id))}"
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"block {block}: {type(err).__name__}: {first} ({where})"


class ToySweeper(Sweeper):
    def __init__(self) -> None:
        self.config: DictConfig | None = None
        self.launcher: Any = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        import sys

        from sweep import driver

        assert self.config is not None
        sweep = driver.prepare(self.config)
        base = [a for a in arguments if not a.startswith(("block=", "store.path="))]
        failures: list[str] = []
        attempts = int(self.config.retries) + 1
        job_idx = 0
        for attempt in range(attempts):
            todo = driver.store.finished_blocks(sweep.path, sweep.plan)
            todo = [k for k in sweep.todo if k not in todo]
            if not todo:
                break
            if attempt:
                log.warning(f"retrying {len(todo)} unfinished block(s), attempt {attempt + 1}"
                            f" of {attempts}")
            batch = [[*base, f"block={k}", f"store.path={sweep.path}"] for k in todo]
            failures = []
            try:
                returns = self.launcher.launch(batch, initial_job_idx=job_idx)
                failures = [_describe(r) for r in returns if r.status == JobStatus.FAILED]
            except Exception as e:  # a job cancelled or killed: submitit raises for it
                failures = [f"{type(e).__name__}: {' '.join(str(e).split())[:600]}"]
            for line in failures:
                log.error(f"failed: {line}")
            job_idx += len(batch)
        code = driver.finish(sweep, failures)
        if code:
            sys.exit(code)
        return None
