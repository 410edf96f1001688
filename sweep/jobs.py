"""How a run spreads a store's chunks over jobs: decided afresh by every run, never stored.

A job trains a contiguous run of chunks of one shape as one tensor and writes each chunk's
region (a model's numbers depend only on its seed and shape, so the grouping changes no
number). A job is named by its chunks, `<shape>-c3..c7` (or `<shape>-c3`), and its checkpoint
by that name and the store's run identity: a checkpoint of another grouping is simply not
loaded. The grouping is a pure function of the plan, `workers` and the unfinished chunks, so a
rerun with the same `workers` names the same jobs and resumes their checkpoints.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable

from sweep.errors import ConfigError
from sweep.grid import Block, GridPlan, job_name

log = logging.getLogger(__name__)

# A shape is spread over several jobs only when the grid holds at least this much training
# (instances × batch × features × steps). Each extra worker process costs ~3-5 s (importing
# torch, then loading or compiling its kernels: measured on the 2-core build machine); 4e9
# element-steps was ~9 s of compiled 2→1 training at 1 thread (4.5e8 per s). Since the gram
# form's one-loop rewrite it is ~2.5 s (1.6e9 per s), yet the 245-model grid (5e9) still took
# as long in one process as in two (14.8 s against 14.6 s wall, warm, figures included): the
# one process then imports torch itself and trains at 1 thread. Left as it was.
SPLIT_WORK = 4e9

_SPEC = re.compile(r"(?P<shape>.+)-c(?P<a>\d+)(?:\.\.c(?P<b>\d+))?")


def chunks_of(plan: GridPlan, spec: str) -> list[Block]:
    """The chunks a job names (ConfigError, one line, for anything else)."""
    m = _SPEC.fullmatch(str(spec))
    if m is None:
        raise ConfigError("block", spec, "<shape>-c<k> or <shape>-c<a>..c<b> of this grid")
    a = int(m["a"])
    b = int(m["b"]) if m["b"] is not None else a
    keys = [f"{m['shape']}-c{k}" for k in range(a, b + 1)]
    if b < a or any(k not in plan.block_keys for k in keys):
        raise ConfigError("block", spec, f"a range of the {len(plan.blocks)} chunks of this grid")
    return [plan.block(k) for k in keys]


def per_shape(plan: GridPlan, workers: int) -> int:
    """Jobs wanted per shape: enough to feed every worker, when the grid holds enough training
    to pay for another process (SPLIT_WORK); else one."""
    t = plan.cfg.train
    work = plan.n_cells * int(t.batch_size) * plan.max_features * int(t.steps)
    if work < SPLIT_WORK:
        return 1
    return max(1, math.ceil(workers / len(plan.shapes)))


def _balanced(blocks: list[Block], parts: int, cap: int) -> list[list[Block]]:
    """Contiguous groups of about equal models, each at most `cap` models (a chunk never
    exceeds cap: the plan cuts chunks under it)."""
    parts = max(1, min(parts, len(blocks)))
    while True:
        total = sum(b.size for b in blocks)
        groups: list[list[Block]] = [[] for _ in range(parts)]
        seen = 0
        for b in blocks:  # a chunk goes to the group its middle model falls in
            groups[min(parts - 1, int((seen + b.size / 2) * parts / total))].append(b)
            seen += b.size
        groups = [g for g in groups if g]
        if all(sum(b.size for b in g) <= cap for g in groups) or parts >= len(blocks):
            return groups
        parts += 1


def group(plan: GridPlan, todo: Iterable[str], workers: int | None = None) -> list[str]:
    """The jobs of a run: every shape's chunks cut into `per_shape` balanced contiguous groups
    (under the memory budget), each group keeping only its chunks in `todo`, split where
    they are not contiguous. Returns job names, shape by shape."""
    todo = set(todo)
    parts = per_shape(plan, plan.workers if workers is None else workers)
    out = []
    for shape in plan.shapes:
        mine = [b for b in plan.blocks if b.shape == shape]
        for g in _balanced(mine, parts, plan.job_cap):
            run: list[Block] = []
            for b in g:
                if b.key() in todo and (not run or b.index == run[-1].index + 1):
                    run.append(b)
                    continue
                if run:
                    out.append(job_name(run))
                run = [b] if b.key() in todo else []
            if run:
                out.append(job_name(run))
    return out


def relaunch(
    unfinished: Callable[[], list[str]],
    launch: Callable[[list[str]], dict[str, str]],
    retries: int,
    what: str = "job(s)",
) -> dict[str, str]:
    """Launch what is unfinished, then relaunch what is still unfinished at most `retries`
    more times: the one retry loop of a grid's jobs and of a refinement level's.

    unfinished() reads the store afresh each time (a job that died after writing counts as
    done); launch(todo) runs them and returns the failures it saw (name -> one line). Returns
    the last failure reported for each name."""
    why: dict[str, str] = {}
    for attempt in range(retries + 1):
        todo = unfinished()
        if not todo:
            break
        if attempt:
            log.warning(
                f"retrying {len(todo)} unfinished {what}, attempt {attempt + 1} of {retries + 1}"
            )
        why.update(launch(todo))
    return why
