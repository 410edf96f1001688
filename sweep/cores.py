"""How many worker processes a sweep runs at once on this machine, and threads per worker.

One setting, `workers` (auto = every core this process may use), decides both: the local
launcher runs that many blocks at once, and each job's torch gets cores ÷ workers threads.
Processes rather than threads, because the compiled kernels' OpenMP barriers stall whenever
one thread of a job is descheduled: on the shared 2-core build machine (load 5-13) a job at 2
threads ran up to 10× slower than at 1, while two 1-thread processes never wait on each other.
"""

from __future__ import annotations

import os
from typing import Any

from sweep.errors import ConfigError


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a SLURM allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_workers(setting: Any) -> int:
    """`workers`: auto (every available core) or an integer >= 1."""
    if setting is None or setting == "auto":
        return available_cores()
    if isinstance(setting, int) and not isinstance(setting, bool) and setting >= 1:
        return setting
    raise ConfigError("workers", setting, "auto or an integer >= 1 (worker processes at once)")


def threads_per_job(jobs_at_once: int) -> int:
    """Torch threads for one of `jobs_at_once` concurrent jobs: cores ÷ jobs, at least 1.

    When other processes already keep the cores busy (1-minute load average), a job gets only
    the idle cores: a thread that is descheduled holds up its job's other threads at every
    barrier, which cost the compiled step up to 10× on the loaded build machine.
    """
    cores = available_cores()
    share = max(1, cores // max(1, jobs_at_once))
    try:
        idle = cores - os.getloadavg()[0]
    except OSError:
        idle = cores
    return max(1, min(share, int(idle + 0.5) // max(1, jobs_at_once)))
