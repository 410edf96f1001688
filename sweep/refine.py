"""Adaptive refinement of a phase grid along density: train more points only near boundaries.

`python -m sweep +grid=phase-refine [refine.levels=4] [refine.budget=1125]`: the Hydra sweeper
hands a config with refine.levels > 0 to `run` here; the analysis callback then draws it.

The store is ONE regular grid, the *fine* grid: each interval of the grid file's density axis
is bisected in log space `refine.levels` times, so the coarse points are every 2^levels-th fine
point. Untrained points stay NaN with `finished` False (the analysis treats them as missing and
the boundary extraction skips them). Why a fine regular grid rather than a tidy point set: it
is the engine's own store (template, fingerprint, region writes, lock, resume), and it opens
and plots like every other sweep (`ds.W.sel(...)`, `ds.finished` says which points exist).

Level 0 trains the coarse points. After each level, along every row r the intervals between
consecutive trained points where the lowest-loss phase of the extra feature is superposed at
one end only are bisected (the log-midpoint, a fine point, is trained next level). Then, with
budget left, the other intervals whose phases differ (ignored vs dedicated: a boundary in r,
not p) and those whose seeds hold different sets of phases (`refine.seed_disagreement`). The
boundary intervals come first, widest first; the others get only what the later levels'
boundary intervals (assumed as many per level as now) leave of `refine.budget` (models,
coarse pass included).
Every decision is a pure function of stored results, so a rerun of the same command re-derives
the same levels and trains only the points not yet finished (resume).

The engine must not import analysis/, so the small classifier below (norm and superposition
thresholds, the same rule as analysis.metrics.classify_phases) lives here. Seeds are ranked by
their exact expected loss (sweep.quadrature) where it exists (ReLU output model, independent
features, n <= 4), as the analysis ranks them; else by the store's loss. Why: the stored loss is
a Monte Carlo estimate whose noise (~1 %) exceeds the gap between the competing minima near a
boundary; ranked by it, a 2→1 run picked the wrong phase next to the boundary on 5 of 15 rows
and bisected intervals the analysis then did not bracket the boundary with.

Levels are jobs like any other: `python -m sweep` hands each level's points, grouped into
about one job per worker (`block=refine-L<level>-<digest>`, `refine.cells=i:j,...`), to the
configured Hydra launcher (local workers or SLURM), waits for them, relaunches unfinished ones
up to `retries` times, and only then decides the next level from the store. A job trains its
points as one tensor and writes each point's region through the grid's own path
(driver.train_chunks), checks the store's identity and takes a lock per job, as the grid's
jobs do. Not done: the r axis is not
refined (the p(r) boundaries need rows; r = 1, where 2→1 has a boundary in r, is a row).

A store over a zipped shape axis (`grid.axes.shape`, the dimension grid: axes shape, r, p) is
refined row by row too: a row is one (shape, r), its extra feature the last of that shape's
real features, its seeds ranked by the exact loss where that shape has one (n <= 4); a job
trains points of one shape (one tensor). Internally rows are the (shape, r) pairs in C order,
and `refine.cells` names them by that row index.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from omegaconf import DictConfig, OmegaConf, open_dict

from sweep import driver, integrity, quadrature, writes
from sweep.constants import (
    DEDICATED,
    IGNORED,
    NORM_THRESHOLD,
    SUPERPOSED,
    SUPERPOSITION_THRESHOLD,
    TIE_TOL,
    ZERO_NORM,
)
from sweep.grid import ZIP_AXIS, Block, GridPlan, Shape, axis_values
from sweep.identity import StaleWrite, check_identity, fingerprint
from sweep.jobs import SPLIT_WORK, relaunch
from sweep.layout import open_checked
from sweep.validate import ConfigError

log = logging.getLogger(__name__)
R, P = "relative_importance", "density"


def extra_phase(
    W: np.ndarray,
    norm_threshold: float = NORM_THRESHOLD,
    superposition_threshold: float = SUPERPOSITION_THRESHOLD,
) -> np.ndarray:
    """Phase code of the last feature for W (..., hidden, feature); -1 where W is NaN."""
    W0 = np.nan_to_num(W)
    norms = np.linalg.norm(W0, axis=-2)  # (..., feature)
    safe = np.where(norms > ZERO_NORM, norms, 1.0)
    unit = W0[..., -1] / safe[..., -1:]  # (..., hidden): direction of the last feature
    overlap = np.einsum("...h,...hf->...f", unit, W0)[..., :-1]  # (..., feature - 1)
    sup = np.where(norms[..., -1] > ZERO_NORM, np.sum(overlap**2, -1), 0.0)
    phase = np.where(sup >= superposition_threshold - TIE_TOL, SUPERPOSED, DEDICATED)
    phase = np.where(norms[..., -1] < norm_threshold, IGNORED, phase)
    return np.where(np.isnan(W).all((-2, -1)), -1, phase)


def fine_axis(coarse: list[float], levels: int) -> list[float]:
    """Each interval of a sorted positive axis bisected in log space `levels` times."""
    c = np.log(np.asarray(sorted(coarse), dtype=float))
    k = 2**levels
    t = np.arange(k) / k
    fine = (c[:-1, None] + t[None, :] * np.diff(c)[:, None]).ravel()
    return [float(v) for v in np.exp(np.append(fine, c[-1]))]


def select(
    trained: np.ndarray, best: np.ndarray, sets: np.ndarray, seeds_too: bool
) -> list[tuple[int, int, int, int]]:
    """Intervals to bisect next, as (priority, -width, row, midpoint) sorted best first.

    trained: (row, fine point) bool; best: (row, point) lowest-loss phase (-1 untrained);
    sets: (row, point) bitmask of the phases among usable seeds.
    """
    out = []
    for i in range(trained.shape[0]):
        idx = np.flatnonzero(trained[i])
        for a, b in zip(idx[:-1], idx[1:], strict=True):
            if b - a < 2:
                continue  # already adjacent on the fine grid
            ends = {int(best[i, a]), int(best[i, b])}
            if -1 not in ends and len(ends) == 2 and SUPERPOSED in ends:
                prio = 0  # a p-boundary: superposed on one side only
            elif -1 not in ends and len(ends) == 2:
                # ignored <-> dedicated: a boundary in r (2→1 at r = 1), not in p, where the
                # two phases tie and the lowest-loss seed flips by chance: refine it last
                prio = 1
            elif seeds_too and sets[i, a] != sets[i, b]:
                prio = 1
            else:
                continue
            out.append((prio, -int(b - a), i, int(a + b) // 2))
    return sorted(out)


def exact_ranking(cfg: DictConfig, shape: Shape | None = None) -> bool:
    """Whether seeds can be ranked by their exact expected loss (sweep.quadrature), for the
    model of the config or one shape of its plan."""
    kind = shape.model if shape else str(cfg.model.kind)
    n = shape.n_features if shape else int(cfg.model.n_features)
    corr = shape.correlation if shape else str(cfg.data.correlation)
    return kind == "relu" and corr == "none" and n <= quadrature.MAX_FEATURES


def _lead(plan: GridPlan) -> list[str]:
    """The store dims that make a row: [relative_importance], or [shape, relative_importance]."""
    return [d for d in plan.cell_dims if d not in (P, "seed")]


def _one_shape(ds: Any, plan: GridPlan, k: int) -> Any:
    """The (r, p, seed, hidden, feature) store of shape k, its padding cut off."""
    if ZIP_AXIS not in ds.dims:
        return ds
    s = plan.shapes[k]
    return ds.isel({ZIP_AXIS: k, "hidden": slice(0, s.n_hidden), "feature": slice(0, s.n_features)})


def ranking_loss(ds: Any, usable: np.ndarray, exact: bool) -> np.ndarray:
    """(r, p, seed) loss the seeds are ranked by: exact expected loss or the stored one."""
    if not exact:
        return np.asarray(ds["loss"].transpose(R, P, "seed").values, dtype=float)
    W = ds["W"].transpose(R, P, "seed", "hidden", "feature").values.astype(float)
    b = ds["b"].transpose(R, P, "seed", "feature").values.astype(float)
    cells = ds["loss"].transpose(R, P, "seed")
    imp = ds["importance"].broadcast_like(cells).transpose(R, P, "seed", "feature").values
    dens = ds["feature_density"].broadcast_like(cells).transpose(R, P, "seed", "feature").values
    out = np.full(usable.shape, np.inf)
    idx = np.argwhere(usable)
    for a in range(0, len(idx), 128):  # work arrays (models, quadrature rows): ~100 MB at n = 4
        k = tuple(idx[a : a + 128].T)
        out[k] = quadrature.expected_loss(W[k], b[k], imp[k], dens[k])
    return out


def _cells(
    path: Path, plan: GridPlan, cfg: DictConfig, norm_t: float, sup_t: float
) -> tuple[np.ndarray, ...]:
    """(trained, best phase, phase-set bitmask) over (row, p) from a store, shape by shape: a
    point counts when it is finished and intact (sweep.integrity)."""
    ds = open_checked(path)
    fin = _intact(path, plan)  # (row, p, seed)
    n_r = len(plan.coords[R])
    best, sets = [], []
    for k, shape in enumerate(plan.shapes):
        rows = slice(k * n_r, (k + 1) * n_r)
        b, s = cell_phases(
            _one_shape(ds, plan, k), fin[rows], exact_ranking(cfg, shape), norm_t, sup_t
        )
        best.append(b)
        sets.append(s)
    return np.asarray(fin.all(-1)), np.concatenate(best), np.concatenate(sets)


def cell_phases(
    ds: Any, fin: np.ndarray, exact: bool, norm_t: float, sup_t: float
) -> tuple[np.ndarray, np.ndarray]:
    """(best phase, phase-set bitmask) over (r, p) of the seeds flagged in fin (r, p, seed) and
    not diverged: the phase of the seed with the lowest ranking loss (exact or stored)."""
    W = ds["W"].transpose(R, P, "seed", "hidden", "feature").values
    usable = fin & ~ds["diverged"].transpose(R, P, "seed").values
    loss = ranking_loss(ds, usable, exact)
    ph = np.where(usable, extra_phase(W, norm_t, sup_t), -1)  # (r, p, seed)
    best_seed = np.argmin(np.where(usable, loss, np.inf), -1)
    best = np.take_along_axis(ph, best_seed[..., None], -1)[..., 0]
    best = np.where(usable.any(-1), best, -1)
    sets = np.zeros(best.shape, int)
    for code in (IGNORED, DEDICATED, SUPERPOSED):
        sets |= np.where((ph == code).any(-1), 1 << code, 0)
    return best, sets


def _check(cfg: DictConfig, plan: GridPlan) -> tuple[int, int | None, bool]:
    ref = cfg.get("refine") or {}
    levels, budget = ref.get("levels", 0), ref.get("budget")
    seeds_too = ref.get("seed_disagreement", True)
    if isinstance(levels, bool) or not isinstance(levels, int) or not 0 <= levels <= 8:
        driver.fail(f"refine.levels={levels!r} is not allowed: expected an integer in [0, 8]")
    if budget is not None and (
        isinstance(budget, bool) or not isinstance(budget, int) or budget < 1
    ):
        driver.fail(f"refine.budget={budget!r} is not allowed: expected null or an integer >= 1")
    if not isinstance(seeds_too, bool):
        driver.fail(
            f"refine.seed_disagreement={seeds_too!r} is not allowed: expected true or false"
        )
    zipped = ZIP_AXIS in plan.axes
    if set(plan.axes) - {ZIP_AXIS} != {R, P} or (len(plan.shapes) != 1 and not zipped):
        driver.fail(
            f"grid.axes={sorted(plan.axes)} is not allowed for refinement: expected "
            "exactly the axes relative_importance and density, one model shape or a "
            f"{ZIP_AXIS} axis of shapes"
        )
    if list(plan.axes) != [ZIP_AXIS] * zipped + [R, P]:
        driver.fail(
            f"grid.axes order {list(plan.axes)} is not allowed for refinement: expected "
            + (f"{ZIP_AXIS}, then " if zipped else "")
            + "relative_importance, then density"
        )
    vals = plan.axes[P]
    if any(v <= 0 for v in vals) or sorted(vals) != list(vals) or len(vals) < 2:
        driver.fail(
            f"grid.axes.density={vals} is not allowed for refinement: expected at least "
            "two increasing positive densities"
        )
    return levels, budget, seeds_too


def fine_config(cfg: DictConfig) -> DictConfig:
    """The sweep config whose density axis is the fine grid (what the store records)."""
    cfg = driver.task_config(cfg)
    levels = int(cfg.refine.levels)
    coarse = (
        axis_values(OmegaConf.to_container(cfg.grid.axes[P], resolve=True), f"grid.axes.{P}")
        if P in (cfg.grid.axes or {})
        else []
    )
    if coarse and isinstance(levels, int) and not isinstance(levels, bool) and 0 <= levels <= 8:
        with open_dict(cfg):
            cfg.grid.axes[P] = fine_axis([float(v) for v in coarse], levels)
    return cfg


def cells_spec(cells: list[tuple[int, int]]) -> str:
    """A job's cells as `refine.cells`: "i:j,i:j" ((r, p) indices on the fine grid)."""
    return ",".join(f"{i}:{j}" for i, j in cells)


def parse_cells(spec: str, n_r: int, n_p: int) -> list[tuple[int, int]]:
    """`refine.cells` back to (row, p) indices (n_r rows); ValueError on anything else."""
    cells = []
    for part in str(spec).split(","):
        i, j = (int(v) for v in part.split(":"))
        if not (0 <= i < n_r and 0 <= j < n_p):
            raise ValueError(f"cell {part} is outside the {n_r} x {n_p} fine grid")
        cells.append((i, j))
    return cells


def _points(plan: GridPlan, cells: list[tuple[int, int]]) -> list[Block]:
    """The regions of the given (r, p) points, all seeds each: parts of the grid's storage
    chunks, written as part-chunk regions (sweep.integrity locks a chunk while one is written
    and keeps the cells its record vouched for). Why not one chunk per point: the fine grid
    has thousands of points, and every completeness check costs per chunk (1,695 chunks of the
    default phase-refine grid: 5.5 s per check on the loaded build machine)."""
    n_r, n_p, n_seed = len(plan.coords[R]), len(plan.coords[P]), len(plan.seeds)
    out = []
    for row, j in cells:
        k, i = divmod(row, n_r)  # row = (shape k, r index i) in C order
        where = {R: slice(i, i + 1), P: slice(j, j + 1), "seed": slice(0, n_seed)}
        if ZIP_AXIS in plan.axes:
            where = {ZIP_AXIS: slice(k, k + 1), **where}
        out.append(Block(plan.shapes[k], row * n_p + j, where))
    return out


def _intact(path: Path, plan: GridPlan) -> np.ndarray:
    """(row, p, seed) bool: cells finished and intact (sweep.integrity), not only flagged."""
    dims = open_checked(path)["finished"].dims
    ok = xr.DataArray(integrity.intact(path), dims=dims).transpose(*_lead(plan), P, "seed")
    return ok.values.reshape(-1, *ok.shape[-2:])


def _finished(path: Path, plan: GridPlan) -> np.ndarray:
    """(row, p) bool: points whose every seed is finished and intact."""
    return np.asarray(_intact(path, plan).all(-1))


def run_job(cfg: DictConfig) -> dict:
    """The body of one refinement job (block=refine-..., refine.cells=...): train those cells
    that are not finished yet. Like driver.run_block: it writes nothing into a store that is
    not the run it was launched for (a stale job), and two jobs of one tag take turns."""
    fine = fine_config(cfg)
    plan = GridPlan(fine)
    path = Path(str(fine.store.path))
    tag = str(fine.block)
    cells = parse_cells(str(fine.refine.cells), _rows(plan), len(plan.coords[P]))
    ident = {"fingerprint": fingerprint(fine), "run_id": fine.store.run_id}
    try:
        check_identity(path, ident)
        with driver.block_lock(path, tag):
            fin = _finished(path, plan)
            todo = [c for c in cells if not fin[c]]
            seconds = 0.0
            if todo:  # the checkpoint's name: the tag names its cells, a rerun trains the same
                key = tag if len(todo) == len(cells) else f"{tag}-{_digest(todo)}"
                res = driver.train_chunks(plan, path, fine, _points(plan, todo), key, ident)
                seconds = res.seconds
    except StaleWrite as e:
        log.warning(f"{tag}: stale job, nothing written: {e}")
        return {"block": tag, "models": 0, "stale": True}
    return {"block": tag, "models": len(todo) * len(plan.seeds), "seconds": seconds}


# launch(sweep, [(tag, cells spec), ...]) -> {tag: failure report}: how a level's jobs run
Launch = Callable[[driver.Sweep, list[tuple[str, str]]], dict[str, str]]


def in_process(cfg: DictConfig) -> Launch:
    """A launch that runs a level's jobs one after the other in this process (driver.run,
    tests). cfg: the sweep's config as given (coarse axis), as a launched job composes it."""

    def launch(sweep: driver.Sweep, jobs: list[tuple[str, str]]) -> dict[str, str]:
        return _run_here(cfg, sweep, jobs)

    return launch


def _run_here(cfg: DictConfig, sweep: driver.Sweep, jobs: list[tuple[str, str]]) -> dict[str, str]:
    failed = {}
    for tag, cells in jobs:
        job = driver.job_config(cfg, sweep.path, tag)
        with open_dict(job):
            job.refine.cells = cells
        try:
            run_job(job)
        except Exception as e:  # noqa: BLE001 - reported, the level goes on
            failed[tag] = f"{type(e).__name__}: {e}"
    return failed


def _jobs(sweep: driver.Sweep, cells: list[tuple[int, int]], level: int) -> list[tuple[str, str]]:
    """A level's cells cut into jobs: one per worker when the level holds enough training to
    pay for another process (jobs.SPLIT_WORK, as a grid's chunks), else one job; the memory
    budget and chunk.max_instances cap a job's models. Each job is named by a digest of its
    cells, so a rerun of the level gets the same names. (Measured: a 75-model 2→1 level cut
    in 2 jobs took 10 s, each job still running all 10,000 steps; the 600-model coarse pass
    gains from 2.) A job trains one tensor, so cells of several shapes are cut per shape."""
    n_r = len(sweep.plan.coords[R])
    by_shape: dict[int, list[tuple[int, int]]] = {}
    for c in cells:
        by_shape.setdefault(c[0] // n_r, []).append(c)
    return [job for part in by_shape.values() for job in _shape_jobs(sweep, part, level)]


def _shape_jobs(
    sweep: driver.Sweep, cells: list[tuple[int, int]], level: int
) -> list[tuple[str, str]]:
    """_jobs for the cells of one shape."""
    n_seed = len(sweep.plan.seeds)
    t, n = sweep.cfg.train, sweep.plan.max_features
    work = len(cells) * n_seed * int(t.batch_size) * n * int(t.steps)
    parts = int(sweep.plan.workers) if work >= SPLIT_WORK else 1
    per_job = -(-len(cells) // max(1, min(parts, len(cells))))
    per_job = max(1, min(per_job, sweep.plan.job_cap // n_seed))  # under the memory budget
    out = []
    for a in range(0, len(cells), per_job):
        part = cells[a : a + per_job]
        out.append((f"refine-L{level}-{_digest(part)}", cells_spec(part)))
    return out


def _ranking_words(cfg: DictConfig, plan: GridPlan) -> str:
    """Which loss ranked the seeds, over the store's shapes."""
    exact = {exact_ranking(cfg, s) for s in plan.shapes}
    if exact == {True}:
        return "exact expected loss"
    if exact == {False}:
        return "stored loss"
    return f"exact expected loss for n <= {quadrature.MAX_FEATURES}, stored loss beyond"


def _rows(plan: GridPlan) -> int:
    """Rows of the refinement: (shape, r) pairs."""
    return len(plan.shapes) * len(plan.coords[R])


def _name(cell: tuple[int, int]) -> str:
    return f"{cell[0]},{cell[1]}"


def _cell(name: str) -> tuple[int, int]:
    r, p = name.split(",")
    return int(r), int(p)


def _digest(cells: list[tuple[int, int]]) -> str:
    return hashlib.sha1(repr(cells).encode()).hexdigest()[:12]


def _level(sweep: driver.Sweep, todo: list[tuple[int, int]], level: int, launch: Launch) -> int:
    """Train a level's cells as jobs, relaunching unfinished ones up to `retries` times.
    Returns the number of cells still unfinished (their failures printed)."""

    def unfinished() -> list[str]:
        fin = _finished(sweep.path, sweep.plan)
        return [_name(c) for c in todo if not fin[c]]

    def relaunch_cells(names: list[str]) -> dict[str, str]:
        return launch(sweep, _jobs(sweep, [_cell(n) for n in names], level))

    why = relaunch(unfinished, relaunch_cells, int(sweep.cfg.retries), "cell(s)")
    fin = _finished(sweep.path, sweep.plan)
    left = [c for c in todo if not fin[c]]
    for tag, line in why.items():
        print(f"  unfinished: {tag}: {line}", file=sys.stderr)
    return len(left)


def run(cfg: DictConfig, launch: Launch | None = None) -> int:
    """Coarse pass, then refinement levels, in one store; returns an exit code.

    launch: how a level's jobs run; the Hydra sweeper passes its launcher (local workers,
    SLURM), driver.run and the tests run them in this process."""
    fine = fine_config(cfg)
    launch = launch or in_process(cfg)
    if str(fine.store.mode) == "overwrite":
        # The engine's overwrite proves a new store by training its smallest block first: on a
        # fine grid that block is untrained points by the thousand, not the coarse pass.
        driver.fail(
            "store.mode=overwrite is not allowed for a refined grid (refine.levels > 0): "
            "expected resume; remove the store or pass store.path=<new path>"
        )
    try:  # every refusal before the store is touched
        plan = GridPlan(fine)
    except ConfigError as e:
        driver.fail(f"{e} (in the sweep config)")
    levels, budget, seeds_too = _check(fine, plan)
    n_rows, n_p, n_seed = _rows(plan), len(plan.coords[P]), len(plan.seeds)
    step = 2**levels
    norm_t = float(fine.analysis.norm_threshold)
    sup_t = float(fine.analysis.superposition_threshold)
    wanted = np.zeros((n_rows, n_p), bool)
    wanted[:, ::step] = True  # level 0: the coarse grid
    if budget is not None and wanted.sum() * n_seed > budget:
        driver.fail(
            f"refine.budget={budget} is not allowed: expected at least the coarse "
            f"pass, {int(wanted.sum()) * n_seed} models"
        )
    sweep = driver.prepare(fine)
    with sweep.lock:  # the store's lock: released when this ends, not at garbage collection
        plan, path = sweep.plan, sweep.path
        trained_now, per_level = 0, [int(wanted.sum())]
        for level in range(levels + 1):
            done = _finished(path, plan)
            todo = [(int(i), int(j)) for i, j in zip(*np.nonzero(wanted & ~done), strict=True)]
            if todo:
                unfinished = _level(sweep, todo, level, launch)
                if unfinished:
                    print(
                        f"error: level {level}: {unfinished} of {len(todo)} points unfinished; "
                        "rerun the same command to train only those",
                        file=sys.stderr,
                    )
                    return 1
                trained_now += len(todo) * n_seed
            if level == levels:
                break
            trained, best, sets = _cells(path, plan, fine, norm_t, sup_t)
            cands = select(wanted & trained, best, sets, seeds_too)
            if budget is not None:
                # Boundary intervals first; the others only with what the later levels' boundary
                # intervals (about as many as now, per level) leave of the budget.
                left = budget // n_seed - int(wanted.sum())
                first = [c for c in cands if c[0] == 0][: max(left, 0)]
                spare = left - len(first) - len(first) * (levels - level - 1)
                cands = first + [c for c in cands if c[0] > 0][: max(spare, 0)]
            picked = [(i, j) for _, _, i, j in cands]
            if not picked:
                break
            per_level.append(len(picked))
            for i, j in picked:
                wanted[i, j] = True
        wall = time.perf_counter() - sweep.started
        total = int(wanted.sum()) * n_seed
        # refine_complete tells the analysis callback that the untrained points are by design.
        writes.update_attrs(
            path,
            {
                "refine_levels": levels,
                "refine_budget": budget or 0,
                "refine_models": total,
                "refine_points_per_level": per_level,
                "refine_complete": True,
                "refine_seed_ranking": _ranking_words(fine, plan),
                "last_run_wall_seconds": round(wall, 2),
            },
        )
        print(
            f"sweep {fine.name}: refined {levels} levels, {total} models in the store "
            f"(points per level {per_level}), trained {trained_now} now in {wall:.1f} s; "
            f"store {path}"
        )
        return 0
