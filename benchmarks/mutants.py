"""Planted faults: does the fast test suite catch small bugs in the numbers?

    python benchmarks/mutants.py                    # every fault, each on its listed tests
    python benchmarks/mutants.py --full             # each fault on the whole fast suite
    python benchmarks/mutants.py --only fused-bias-grad store-loss-scaled
    python benchmarks/mutants.py --list
    python benchmarks/mutants.py --tier unit        # each fault on the unit tier alone

For each fault (file, exact old text, new text): copy the repository (tracked and untracked,
not ignored, files) to a temporary folder, replace the text there, and run the fast suite
(`-m 'not slow and not slurm'`, `-x`) on the fault's listed test files, or on everything with
--full, or on the whole unit tier (`-m unit`, every test file) with --tier unit, under a
per-fault time limit. A fault is *caught* when the tests fail, *missed* when
they pass. When its old text is no longer in the file (the code moved on), the fault is
reported as "pattern not found" rather than silently skipped: update the fault.
First the listed tests run once on the unchanged copy; they must pass, else every "caught"
would be meaningless. Exit status 0 when every fault is caught, 1 otherwise.

Hand-planted faults rather than a mutation tool (mutmut, cosmic-ray): those generate thousands
of operator swaps, far beyond what this machine can run against a training test suite; a short
list of faults that a reviewer would plant, one per way the numbers can go wrong, runs in
minutes and says which kind of bug the suite would let through. Not run in CI (too slow).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TRAINING = [
    "tests/test_train_schedules.py",
    "tests/test_science_truth.py",
    "tests/test_fused.py",
    "tests/test_train.py",
]
DATA = ["tests/test_science_truth.py", "tests/test_train.py", "tests/test_train_schedules.py"]
STORAGE = ["tests/test_science_truth.py", "tests/test_train.py"]
METRICS = ["tests/test_pins.py", "tests/test_metrics.py", "tests/test_report.py"]
THEORY = ["tests/test_theory.py", "tests/test_pins.py"]
AGGREGATION = ["tests/test_pins.py", "tests/test_report.py"]


@dataclass(frozen=True)
class Fault:
    name: str
    area: str
    file: str
    old: str
    new: str
    what: str
    tests: list[str] = field(default_factory=list)


FAULTS = [
    # ---- training
    Fault(
        "fused-bias-grad",
        "training",
        "sweep/fused.py",
        "return loss.mean(-1), gW, torch.stack([g.sum(-1) for g in gs], -1)",
        "return loss.mean(-1), gW, 0 * torch.stack([g.sum(-1) for g in gs], -1)",
        "bias gradient dropped in the fused 2→1 (gram) path",
        TRAINING,
    ),
    Fault(
        "fused-relu-mask",
        "training",
        "sweep/kinds/relu.py",
        "return r, torch.where(z > 0, r, 0)",
        "return r, r",
        "gradient passes through the output ReLU where it is off (fused path)",
        TRAINING,
    ),
    Fault(
        "adamw-bias-correction",
        "training",
        "sweep/fused.py",
        "lr / (1 - b1**t), math.sqrt(1 - b2**t)",
        "lr / (1 - b1**(t + 1)), math.sqrt(1 - b2**t)",
        "AdamW first-moment bias correction one step ahead (fused)",
        TRAINING,
    ),
    Fault(
        "adamw-second-moment",
        "training",
        "sweep/fused.py",
        "v.mul_(b2).addcmul_(g, g, value=1 - b2)",
        "v.mul_(b2).addcmul_(g, g, value=1 - b1)",
        "AdamW second moment updated with beta1 (fused)",
        TRAINING,
    ),
    Fault(
        "fused-weight-decay",
        "training",
        "sweep/fused.py",
        "p.mul_(1 - coef[1])",
        "p.mul_(1 - 0.1 * coef[1])",
        "fused AdamW applies a tenth of the weight decay",
        TRAINING,
    ),
    Fault(
        "privileged-hidden-mask",
        "training",
        "sweep/kinds/privileged.py",
        "lambda dh: torch.where(h > 0, dh, 0)",
        "lambda dh: dh",
        "fused privileged model: gradient ignores the hidden ReLU",
        TRAINING,
    ),
    Fault(
        "autograd-relu-bias",
        "training",
        "sweep/kinds/relu.py",
        "return torch.relu(torch.baddbmm(b.unsqueeze(1), h, W))",
        "return torch.relu(torch.bmm(h, W))",
        "autograd ReLU model forgets its bias",
        TRAINING,
    ),
    Fault(
        "lr-warmup-off-by-one",
        "training",
        "sweep/train.py",
        "return (step + 1) / warm",
        "return step / warm",
        "warm-up multiplier one step late",
        TRAINING,
    ),
    Fault(
        "lr-schedule-off-by-one",
        "training",
        "sweep/train.py",
        "frac = (step - warm) / max(1, steps - warm)",
        "frac = (step + 1 - warm) / max(1, steps - warm)",
        "decay schedule one step ahead",
        TRAINING,
    ),
    Fault(
        "fused-lr-step",
        "training",
        "sweep/fused.py",
        "lr = self.lr * self.lr_factor(step)",
        "lr = self.lr * self.lr_factor(step + 1)",
        "fused backend reads the lr of the next step",
        TRAINING,
    ),
    # ---- data
    Fault(
        "density-not-rescaled",
        "data",
        "sweep/fused.py",
        "return torch.where(u < p, 2 * u / p - 1 if signed else u / p, 0)",
        "return torch.where(u < p, 2 * u / p - 1 if signed else u, 0)",
        "active values U[0, p] instead of U[0, 1] (fused inputs)",
        DATA,
    ),
    Fault(
        "fused-absval-unsigned",
        "data",
        "sweep/fused.py",
        "2 * u / p - 1 if signed else u / p",
        "u / p",
        "fused absval inputs never negative (U[0,1] instead of U[-1,1])",
        DATA,
    ),
    Fault(
        "density-complement",
        "data",
        "sweep/data.py",
        "return torch.where(u < p, 2 * u / p - 1 if self.signed else u / p, 0)",
        "return torch.where(u < 1 - p, 2 * u / p - 1 if self.signed else u / p, 0)",
        "autograd sampler: feature active with probability 1 − p",
        DATA,
    ),
    Fault(
        "absval-unsigned",
        "data",
        "sweep/data.py",
        "2 * u / p - 1 if self.signed else u / p",
        "u / p",
        "autograd sampler: absval inputs never negative",
        DATA,
    ),
    Fault(
        "importance-squared",
        "data",
        "sweep/grid.py",
        "imp[f] *= relative_importance",
        "imp[f] *= relative_importance**2",
        "relative importance applied squared",
        DATA,
    ),
    Fault(
        "geometric-importance",
        "data",
        "sweep/grid.py",
        'return float(spec["ratio"]) ** i',
        'return float(spec["ratio"]) ** (i + 1)',
        "geometric importance starts at ratio instead of 1",
        DATA,
    ),
    # ---- storage
    Fault(
        "store-loss-scaled",
        "storage",
        "sweep/writes.py",
        '"loss": res.loss.astype(np.float32).reshape(shape),',
        '"loss": (res.loss / n).astype(np.float32).reshape(shape),',
        "stored loss averaged over features instead of summed",
        STORAGE,
    ),
    Fault(
        "eval-loss-scaled",
        "storage",
        "sweep/train.py",
        "final += trainer.losses(evaluator) / EVAL_BATCHES",
        "final += trainer.losses(evaluator) / (EVAL_BATCHES + 1)",
        "final loss divided by one batch too many (×8/9)",
        STORAGE,
    ),
    Fault(
        "store-loss-other-cells",
        "storage",
        "sweep/writes.py",
        '"loss": res.loss.astype(np.float32).reshape(shape),',
        '"loss": res.loss[::-1].astype(np.float32).reshape(shape),',
        "each cell's loss written to another cell",
        STORAGE,
    ),
    Fault(
        "cells-mislabelled",
        "storage",
        "sweep/grid.py",
        "sub = {d: self.coords[d][block.slices[d]] for d in self.cell_dims}",
        "sub = {d: self.coords[d][block.slices[d]][::-1] if d == 'density' else "
        "self.coords[d][block.slices[d]] for d in self.cell_dims}",
        "each cell trained at another cell's density (the store's labels wrong)",
        STORAGE,
    ),
    # ---- metrics
    # The thresholds are defined once, in sweep/constants.py; the schema, the analysis
    # settings, the metrics and the refinement all read them there.
    Fault(
        "norm-threshold-source",
        "metrics",
        "sweep/constants.py",
        "NORM_THRESHOLD = 0.5",
        "NORM_THRESHOLD = 0.2",
        "the one norm threshold 0.5 → 0.2 (sweep/constants.py)",
        METRICS,
    ),
    Fault(
        "superposition-threshold-source",
        "metrics",
        "sweep/constants.py",
        "SUPERPOSITION_THRESHOLD = 0.5",
        "SUPERPOSITION_THRESHOLD = 0.8",
        "the one superposition threshold 0.5 → 0.8 (sweep/constants.py)",
        METRICS,
    ),
    Fault(
        "norm-threshold-metrics",
        "metrics",
        "analysis/metrics.py",
        "    norm_threshold: float = NORM_THRESHOLD,",
        "    norm_threshold: float = 0.2,",
        "metrics' default norm threshold replaced by a literal 0.2",
        METRICS,
    ),
    # ---- theory
    Fault(
        "antipodal-coefficient",
        "theory",
        "analysis/theory.py",
        "return (np.asarray(importance_1) + np.asarray(importance_2)) * p**2 / 6",
        "return (np.asarray(importance_1) + np.asarray(importance_2)) * p**2 / 5",
        "closed form of the antipodal pair: p²/5 instead of p²/6",
        THEORY,
    ),
    Fault(
        "drop-coefficient",
        "theory",
        "analysis/theory.py",
        "return np.asarray(importance) * (p / 3 - p**2 / 4)",
        "return np.asarray(importance) * (p / 3 - p**2 / 5)",
        "closed form of a dropped feature: p²/5 instead of p²/4",
        THEORY,
    ),
    Fault(
        "boundary-2to1",
        "theory",
        "analysis/theory.py",
        "np.where(r <= 1, 4 * r / (2 + 5 * r), np.nan)",
        "np.where(r <= 1, 4 * r / (2 + 4 * r), np.nan)",
        "2→1 boundary 4r/(2+4r) instead of 4r/(2+5r)",
        THEORY,
    ),
    Fault(
        "quadrature-density",
        "theory",
        "sweep/quadrature.py",
        "prob = np.prod(np.where(pl.masks, p[..., None, :], 1 - p[..., None, :]), axis=-1)",
        "prob = np.prod(np.where(pl.masks, p[..., None, :] ** 2, 1 - p[..., None, :]), axis=-1)",
        "exact expected loss: active probability p² instead of p",
        THEORY,
    ),
    # ---- aggregation
    Fault(
        "drop-best",
        "aggregation",
        "analysis/aggregate.py",
        "pooled = usable & ((rank < n_usable[:, None] - 1) | (n_usable[:, None] == 1))",
        "pooled = usable & ((rank > 0) | (n_usable[:, None] == 1))",
        "drop_worst drops the best seed instead of the worst",
        AGGREGATION,
    ),
    Fault(
        "lowest-loss-highest",
        "aggregation",
        "analysis/aggregate.py",
        'chosen = pooled & (rank == 0) if rule == "lowest_loss" else pooled',
        'chosen = pooled & (rank == n_usable[:, None] - 1) if rule == "lowest_loss" else pooled',
        "lowest_loss takes the highest-loss seed",
        AGGREGATION,
    ),
    Fault(
        "agreement-wrong-feature",
        "aggregation",
        "analysis/aggregate.py",
        'extra = agg["phase"].isel(feature=-1)',
        'extra = agg["phase"].isel(feature=0)',
        "agreement with theory judged on feature 0, not the extra feature",
        AGGREGATION,
    ),
    # ---- refinement and store identity (issue 16; issue 10)
    Fault(
        "refine-stored-loss",
        "refinement",
        "sweep/refine.py",
        "    loss = ranking_loss(ds, usable, exact)",
        "    loss = ranking_loss(ds, usable, False)",
        "refinement ranks seeds by the sampled stored loss, not the exact one",
        ["tests/test_boundaries.py"],
    ),
    Fault(
        "identity-run-id-only",
        "storage",
        "sweep/identity.py",
        'keys = [k for k in ("run_id", "fingerprint") if expected.get(k) is not None]',
        'keys = ["run_id" if expected.get("run_id") is not None else "fingerprint"]',
        "a job with the store's run id but other settings may write",
        ["tests/test_identity.py"],
    ),
    Fault(
        "integrity-flag-unhashed",
        "storage",
        "sweep/integrity.py",
        'return rec is not None and rec.get("flag") == _hash(_flag_file(c, lead))',
        "return rec is not None",
        "a chunk's flag file is trusted without its record's hash (garbage flags pass)",
        ["tests/test_integrity.py"],
    ),
    # ---- boundaries (issue 16; issue 22)
    Fault(
        "bootstrap-per-cell",
        "boundaries",
        "analysis/boundaries.py",
        "draws = rng.integers(0, n_seed, size=(n_boot, 1, n_seed))",
        "draws = rng.integers(0, n_seed, size=(n_boot, n_pt, n_seed))",
        "the boundary bootstrap resamples each cell's seeds instead of a row's together",
        ["tests/test_boundaries.py"],
    ),
]


def copy_repo(dst: Path) -> None:
    """Tracked and untracked-but-not-ignored files of the checkout, as `git ls-files` lists."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    for rel in filter(None, out.decode().split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


def run_tests(
    tree: Path, tests: list[str], timeout: float, marks: str = "not slow and not slurm"
) -> tuple[str, float, str]:
    """Run the suite's `marks` on `tests` in `tree`: ('pass' | 'fail' | 'timeout', seconds,
    tail)."""
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        "-m",
        marks,
        *tests,
    ]
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - t0, ""
    seconds = time.perf_counter() - t0
    # the FAILED/ERROR lines of pytest's summary (under xdist, warnings may come after them),
    # else the last lines
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    failed = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    tail = "\n".join(failed[:3] or lines[-3:])
    return ("pass" if proc.returncode == 0 else "fail"), seconds, tail


def first_failure(tail: str) -> str:
    for line in tail.splitlines():
        if line.startswith(("FAILED", "ERROR")):
            nodeid = line.split(" - ")[0].replace("FAILED ", "").replace("ERROR ", "")
            return re.sub(r"@[^@\]]*$", "", nodeid)  # xdist's group suffix (`@<module>`)
    return tail.splitlines()[-1] if tail else ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", help="fault names to run (default: all)")
    ap.add_argument("--full", action="store_true", help="run the whole fast suite per fault")
    ap.add_argument("--tier", choices=["unit"], help="run this tier (every file) per fault")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per fault")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unchanged-copy run")
    ap.add_argument("--list", action="store_true", help="list the faults and exit")
    ap.add_argument(
        "--check",
        action="store_true",
        help="only say whether each fault's old text is still in its file",
    )
    args = ap.parse_args(argv)
    faults = [f for f in FAULTS if not args.only or f.name in args.only]
    if args.list or not faults:
        for f in faults or FAULTS:
            print(f"{f.name:34} {f.area:12} {f.file:22} {f.what}")
        return 0 if faults else 2
    if args.check:
        stale = 0
        for f in faults:
            path = ROOT / f.file
            n = path.read_text().count(f.old) if path.exists() else 0
            stale += n != 1
            print(f"{f.name:34} {'ok' if n == 1 else f'pattern found {n}x'}")
        return 1 if stale else 0
    whole = args.full or args.tier is not None
    marks = args.tier or "not slow and not slurm"
    with tempfile.TemporaryDirectory(prefix="toysweep-mutants-") as tmp:
        tree = Path(tmp) / "repo"
        copy_repo(tree)
        if not args.no_baseline:
            tests = [] if whole else sorted({t for f in faults for t in f.tests})
            state, secs, tail = run_tests(tree, tests, 4 * args.timeout, marks)
            print(f"baseline (no fault): {state} in {secs:.0f} s", flush=True)
            if state != "pass":
                print(tail)
                return 2
        rows = []
        for f in faults:
            path = tree / f.file
            original = path.read_text()
            count = original.count(f.old)
            if count != 1:
                result, secs, where = (
                    ("pattern not found" if count == 0 else f"pattern found {count}×"),
                    0.0,
                    "",
                )
            else:
                path.write_text(original.replace(f.old, f.new))
                try:
                    state, secs, tail = run_tests(
                        tree, [] if whole else f.tests, args.timeout, marks
                    )
                finally:
                    path.write_text(original)
                result = {"fail": "caught", "pass": "MISSED", "timeout": "timeout"}[state]
                where = first_failure(tail) if state == "fail" else ""
            rows.append((f, result, secs, where))
            print(f"{f.name:34} {result:18} {secs:6.0f} s  {where}", flush=True)
    caught = sum(r[1] == "caught" for r in rows)
    scope = f"the {args.tier} tier" if args.tier else "whole suite" if args.full else "listed tests"
    print(f"\n{caught}/{len(rows)} planted faults caught ({scope} per fault)\n")
    print("| fault | area | what | result | caught by |")
    print("|---|---|---|---|---|")
    for f, result, _, where in rows:
        print(f"| `{f.name}` | {f.area} | {f.what} | {result} | {where.split('::')[-1]} |")
    return 0 if caught == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
