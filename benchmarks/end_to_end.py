"""End-to-end speed of `python -m sweep`: 2→1 grids of growing size, cold and warm compile cache.

    python benchmarks/end_to_end.py                          # every size, ~30-60 min, 2 cores
    python benchmarks/end_to_end.py --sizes 100 845 --steps 2000
    python benchmarks/end_to_end.py --sizes 16000 --paper    # + paper size at 10,000 steps
    python benchmarks/end_to_end.py --sizes 245 1125 5000 16000 --runs warm --big-steps 10000
    python benchmarks/end_to_end.py --device cuda            # skipped without a GPU

Each size runs the real CLI twice, as a user would: first with an empty compile cache
(`train.compile_cache` in a fresh folder: every kernel compiled), then again with the cache
the first run filled (a rerun, a second job of the same shape, a SLURM task). Everything else
is the default: launcher=local, workers=auto, train.compile=auto, train.threads=0. Printed per
run: the process's wall time, the sweep's own training wall time and models/s from its summary
line, and models/s scaled to 10,000 steps (so sizes trained for fewer steps compare). Also
`--phase`: the default `python -m sweep +grid=phase`, figures included, warm.
The machine may be shared: the load average is printed with every row.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# models -> (relative importances, densities, seeds): near-square 2→1 phase grids
GRIDS = {
    100: (4, 5, 5),
    245: (7, 7, 5),
    500: (10, 10, 5),
    845: (13, 13, 5),
    1125: (15, 15, 5),
    5000: (25, 40, 5),
    16000: (40, 40, 10),
}
SUMMARY = re.compile(r"trained (\d+) models in ([\d.]+) s \(([\d.]+) models/s\)")


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f}/{five:.1f}"


CPU_S = 0.0  # CPU seconds (user + system) of the last sweep and the workers it started


DEVICE = "cpu"  # train.device of every sweep (--device)


def sweep(args: list[str], cwd: Path) -> tuple[float, str]:
    global CPU_S
    args = [*args, f"train.device={DEVICE}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "sweep", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU_S = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return wall, out.stdout


def grid_args(models: int, steps: int, store: Path, cache: Path) -> list[str]:
    r, d, seeds = GRIDS[models]
    return [
        "+grid=phase",
        f"grid.seeds={seeds}",
        f"grid.axes.relative_importance=[log,0.1,10,{r}]",
        f"grid.axes.density=[log,0.01,1,{d}]",
        f"train.steps={steps}",
        "analysis.run=false",
        "progress=false",
        f"store.path={store}",
        f"train.compile_cache={cache}",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=list(GRIDS), choices=list(GRIDS))
    ap.add_argument("--steps", type=int, default=10_000, help="steps for grids under 5,000")
    ap.add_argument("--big-steps", type=int, default=2_000, help="steps for the big sizes")
    ap.add_argument(
        "--big-from", type=int, default=5000, help="sizes from this many models are big"
    )
    ap.add_argument(
        "--paper",
        action="store_true",
        help="then the paper-resolution 2→1 "
        "grid (40 × 40 × 10 seeds) at 10,000 steps, with the cache of the 16,000 "
        "size's runs (same blocks, so warm) when that size ran",
    )
    ap.add_argument(
        "--phase",
        action="store_true",
        help="also the default `python -m sweep +grid=phase` with figures, warm",
    )
    ap.add_argument(
        "--cache", help="compile cache for --phase (default: a fresh one, filled first)"
    )
    ap.add_argument(
        "--runs",
        nargs="+",
        default=["cold", "warm"],
        choices=["cold", "warm"],
        help="warm alone: each size's cache filled first by an unreported run of the same grid "
        "(a compiled step's package is per chunk shape)",
    )
    ap.add_argument("--device", default="cpu", help="train.device (cuda: skipped without one)")
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    if DEVICE.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print(f"train.device={DEVICE}: no CUDA device on this machine; skipped")
            return
    print(
        f"{os.cpu_count()} cores; python -m sweep, 2→1 ReLU phase grids, launcher=local, "
        "workers=auto, train.compile=auto",
        flush=True,
    )
    print(
        f"{'models':>7s} {'steps':>6s} {'cache':>5s} {'blocks':>6s} {'wall s':>7s} "
        f"{'train s':>8s} {'models/s':>9s} {'@10k steps':>10s} {'CPU s':>7s} "
        f"{'@10k/CPU s':>10s} {'load 1/5 min':>12s}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="toysweep-e2e-") as tmp:
        work = Path(tmp)
        for models in args.sizes:
            steps = args.big_steps if models >= args.big_from else args.steps
            cache = work / f"cache-{models}"
            if args.runs == ["warm"]:  # fill the cache: the same grid, its jobs' chunk shapes
                sweep(grid_args(models, steps, work / f"fill-{models}", cache), work)
            for run in args.runs:
                store = work / f"{run}-{models}"
                wall, out = sweep(grid_args(models, steps, store, cache), work)
                m = SUMMARY.search(out)
                trained, secs, rate = int(m[1]), float(m[2]), float(m[3])
                blocks = len(list((store / ".jobs" / "hydra").glob("*"))) or 1
                print(
                    f"{trained:7,d} {steps:6,d} {run:>5s} {blocks:6d} {wall:7.1f} "
                    f"{secs:8.1f} {rate:9.1f} {rate * steps / 10_000:10.1f} {CPU_S:7.1f} "
                    f"{trained * steps / 10_000 / CPU_S:10.2f} {load():>12s}",
                    flush=True,
                )
        if args.paper:
            cache = work / "cache-16000"
            run = "warm" if cache.exists() else "cold"
            wall, out = sweep(grid_args(16000, 10_000, work / "paper", cache), work)
            m = SUMMARY.search(out)
            print(
                f"\npaper resolution, 40 × 40 cells × 10 seeds × 10,000 steps ({run} cache): "
                f"training {float(m[2]):.1f} s ({float(m[3]):.1f} models/s), {wall:.1f} s in "
                f"all; load {load()}",
                flush=True,
            )
        if args.phase:
            cache = Path(args.cache) if args.cache else work / "cache-phase"
            if not args.cache:
                sweep(
                    [
                        "+grid=phase",
                        "train.steps=10",
                        "train.compile=true",
                        "analysis.run=false",
                        f"store.path={work / 'fill-phase'}",
                        f"train.compile_cache={cache}",
                    ],
                    work,
                )
            wall, out = sweep(
                [
                    "+grid=phase",
                    f"store.path={work / 'phase'}",
                    f"train.compile_cache={cache}",
                    "progress=false",
                ],
                work,
            )
            m = SUMMARY.search(out)
            print(
                f"\npython -m sweep +grid=phase (1,125 models × 10,000 steps, figures, warm "
                f"cache): training {float(m[2]):.1f} s, {wall:.1f} s in all; load {load()}"
            )
    print(
        "@10k steps: models/s × steps / 10,000, to compare sizes trained for fewer steps; "
        "CPU s: user + system seconds of the sweep and its workers (the cores' work, which "
        "other jobs on a shared machine do not stretch the way they stretch wall time); "
        "@10k/CPU s: 10,000-step models per CPU second"
    )


if __name__ == "__main__":
    main()
