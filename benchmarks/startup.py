"""Where the wall time of one sweep goes, phase by phase, as a user runs it.

    python benchmarks/startup.py                      # 245-model grid, default grid, analysis
    python benchmarks/startup.py --cases small --runs cold warm
    python benchmarks/startup.py --device cuda        # skipped with a message without a GPU

Each case runs the real command in a child process (`python -m sweep +grid=phase ...`,
`python -m analysis <store>`) with `TOYSWEEP_TIMING=<file>`: every process of the sweep (the
driver and its workers) appends one JSON line per phase end (sweep/timing.py), and the phases
are read back from those marks. Cold: `train.compile_cache` in a fresh folder (every kernel
compiled); warm: the cache the cold run filled. The interpreter's own start is `python -c pass`,
timed alone. The machine may be shared: the load average is printed with every run.

Phases (the driver's, then the critical job's: the one whose writes end last):
interpreter, imports, compose (the CLI's checks), hydra (Hydra's own start: its second
composition, callbacks, sweeper), plan (checks and the grid plan), store (lock, template),
worker start (from the store's template to the job's first line: a worker process, its
imports, Hydra's job setup), job setup (plan, trainer), kernels (the first step: compiling or
loading the kernels), training (the other steps), eval, writes, wait (the driver noticing the
jobs ended), finish (summary), analysis (the callback: metrics and figures), exit.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMALL = [  # the 245-model 2→1 grid of issue 25: 7 × 7 cells × 5 seeds, 10,000 steps
    "+grid=phase",
    "grid.axes.relative_importance=[log,0.1,10,7]",
    "grid.axes.density=[log,0.01,1,7]",
]
CASES = {"small": SMALL, "default": ["+grid=phase"]}
SWEEP_PHASES = ["imports", "compose", "hydra", "plan", "store"]
JOB_PHASES = ["job start", "setup", "kernels", "training", "eval", "writes"]
JOB_NAMES = ["worker start", "job setup", "kernels", "training", "eval", "writes"]


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.1f}/{five:.1f}"


def interpreter(repeats: int = 5) -> float:
    """Median wall time of `python -c pass`: the interpreter's own start and exit."""
    times = []
    for _ in range(repeats):
        t0 = time.time()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.time() - t0)
    return statistics.median(times)


CPU_S = 0.0  # CPU seconds (user + system) of the last command and the processes it waited for


def run(cmd: list[str], marks: Path, cwd: Path) -> tuple[float, float, list[dict]]:
    """(start, end) unix times of one command and the marks its processes wrote."""
    global CPU_S
    marks.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOYSWEEP_TIMING": str(marks)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    t1 = time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU_S = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    lines = marks.read_text().splitlines() if marks.exists() else []
    return t0, t1, [json.loads(line) for line in lines]


def phases(t0: float, t1: float, marks: list[dict], interp: float) -> dict[str, float]:
    """Seconds per phase from the marks of one sweep (see the module doc)."""
    driver = next(m["pid"] for m in marks if m["phase"] == "imports")  # its first mark
    mine = [m for m in marks if m["pid"] == driver]  # (a warm worker marks its imports too)
    at = {m["phase"]: m["t"] for m in mine if m["phase"] in (*SWEEP_PHASES, "jobs", "finish")}
    at.update({m["phase"]: m["t"] for m in mine if m["phase"] == "analysis"})
    out = {"interpreter": interp}
    prev = t0 + interp
    for name in SWEEP_PHASES:
        out[name] = at[name] - prev
        prev = at[name]
    by_pid: dict[int, dict[str, float]] = {}
    for m in marks:  # a job process's marks (a worker runs jobs one after another: last ones)
        if m["phase"] in JOB_PHASES:
            by_pid.setdefault(m["pid"], {})[m["phase"]] = m["t"]
    last = max(by_pid.values(), key=lambda d: d.get("writes", 0))
    for name, phase in zip(JOB_NAMES, JOB_PHASES, strict=True):
        out[name] = last[phase] - prev
        prev = last[phase]
    for name, phase in (("wait", "jobs"), ("finish", "finish"), ("analysis", "analysis")):
        if phase in at:
            out[name] = at[phase] - prev
            prev = at[phase]
    out["exit"] = t1 - prev
    out["jobs"] = len(by_pid)
    out["compiled"] = any(m.get("compiled") for m in marks if m["phase"] == "kernels")
    return out


def show(label: str, wall: float, ph: dict[str, float], extra: str = "") -> None:
    parts = "  ".join(
        f"{k} {v:.2f}" for k, v in ph.items() if k not in ("jobs", "compiled") and v is not None
    )
    print(
        f"{label}: wall {wall:.2f} s, CPU {CPU_S:.1f} s (load {load()}){extra}\n    {parts}",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", nargs="+", default=[*CASES, "analysis"])
    ap.add_argument("--runs", nargs="+", default=["cold", "warm"], choices=["cold", "warm"])
    ap.add_argument("--device", default="cpu", help="train.device (cuda: skipped without one)")
    ap.add_argument("--json", help="also write every run's phases to this file")
    ap.add_argument("--cache", help="compile cache of the warm runs (default: the cold run's)")
    ap.add_argument(
        "--set",
        nargs="*",
        default=[],
        dest="overrides",
        help="extra sweep overrides, e.g. workers=1",
    )
    args = ap.parse_args()
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print(f"train.device={args.device}: no CUDA device on this machine; skipped")
            return
    interp = interpreter()
    print(
        f"{os.cpu_count()} cores, load {load()}; python -c pass: {interp:.2f} s; "
        f"phases in seconds (see the module doc)",
        flush=True,
    )
    records = []
    with tempfile.TemporaryDirectory(prefix="toysweep-startup-") as tmp:
        work = Path(tmp)
        marks = work / "marks.jsonl"
        for case in args.cases:
            if case == "analysis":
                continue
            cache = Path(args.cache) if args.cache else work / f"cache-{case}"
            for i, kind in enumerate(args.runs):
                if kind == "cold":
                    shutil.rmtree(cache, ignore_errors=True)
                store = work / f"{case}-{kind}-{i}"  # a fresh store per run: none resumes
                cmd = [
                    sys.executable,
                    "-m",
                    "sweep",
                    *CASES[case],
                    f"store.path={store}",
                    f"train.compile_cache={cache}",
                    f"train.device={args.device}",
                    "progress=false",
                    *args.overrides,
                ]
                t0, t1, got = run(cmd, marks, work)
                ph = phases(t0, t1, got, interp)
                show(
                    f"{case} {kind}",
                    t1 - t0,
                    ph,
                    f", {ph['jobs']} job process(es), compiled {ph['compiled']}",
                )
                records.append({"case": case, "run": kind, "wall": t1 - t0, "cpu": CPU_S, **ph})
        if "analysis" in args.cases:  # the analysis alone, of the default grid's store
            stores = sorted(p for p in work.glob("default-*") if p.suffix != ".zarr")
            if not stores:
                raise SystemExit("the analysis case needs the default case in the same run")
            store = stores[-1]
            for kind in ("first", "again"):
                t0, t1, got = run([sys.executable, "-m", "analysis", str(store)], marks, work)
                at = {m["phase"]: m["t"] for m in got}
                ph = {
                    "interpreter": interp,
                    "imports": at["imports"] - t0 - interp,
                    "analysis": at["analysis"] - at["imports"],
                    "exit": t1 - at["analysis"],
                }
                show(f"python -m analysis ({kind})", t1 - t0, ph)
                records.append(
                    {"case": "analysis", "run": kind, "wall": t1 - t0, "cpu": CPU_S, **ph}
                )
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
