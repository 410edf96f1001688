"""The local launcher: a sweep's blocks run at once in `workers` processes on this machine.

Hydra's joblib launcher (loky processes, reused across jobs) does the work; this subclass only
takes its number of processes from the sweep's one setting, `workers`, instead of its own
`n_jobs`, and gives each job its share of the cores (`train.threads=0`: cores ÷ jobs at once).
A sweep with one block (or workers=1) runs in this process, as Hydra's basic launcher would:
no worker to start, so small sweeps and tests pay nothing.

Chosen by measurement on the 2-core build machine (README, Performance): joblib's workers
import torch once each and are reused for every block; submitit's local executor starts a
fresh interpreter per block (~10 s of imports each, 40 s against 9 s for a tiny sweep).
"""

from collections.abc import Sequence
from dataclasses import dataclass

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


class LocalWorkersLauncher(JoblibLauncher):
    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from sweep.cores import resolve_workers

        assert self.config is not None
        jobs = min(resolve_workers(self.config.get("workers", 1)), len(job_overrides))
        threads = job_threads(int(self.config.train.get("threads", 0)), jobs)
        self.joblib["n_jobs"] = jobs  # 1: joblib runs the jobs in this process
        overrides = [[*o, f"train.threads={threads}"] for o in job_overrides]
        return super().launch(overrides, initial_job_idx)
