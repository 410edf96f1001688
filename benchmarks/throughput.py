"""Training throughput of the project's training path against the common einsum baseline.

    python benchmarks/throughput.py                  # cases a, b, c; ~5 min on a 2-core CPU
    python benchmarks/throughput.py --cases b --steps 300 --repeats 3
    python benchmarks/throughput.py --scale 1000 10000 100000   # 2→1 throughput vs grid size
    python benchmarks/throughput.py --cases a b corr absval --repeats 1   # README's table

Prints model-steps per second (instances × steps ÷ wall seconds, after warm-up) and the peak
memory of each measurement: the peak resident set size (ru_maxrss) of the worker process that
ran it, minus its resident size after imports. Every measurement runs in a fresh worker so
the peaks do not mix; baseline and project workers alternate, `--repeats` times, and the
table shows the median of each (the machine may be shared: compare ratios, not absolutes).

Project: `sweep.train.make_trainer(...).step`, the step `train_block` runs, on the grid's own
instance layout (GridPlan, conf/config.yaml), as a sweep runs it on this machine by default:
the grid planned for `workers` (auto: one per core; planned as a 10,000-step sweep would be),
its blocks spread over that many processes timed together, each at the threads the local
launcher would give it. Baseline: what public toy-model code commonly does: all instances in
one tensor, einsum over the instance axis, autograd, torch.optim.AdamW, two torch.rand draws
per element per step (mask and values), at torch's default threads (every core). Cases corr
and absval compare the project with its own autograd path (train.backend=autograd, torch's
default threads: how those grids trained before they joined the fused path).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# case -> (n_features, n_hidden, grid axes); seeds: 5 (the phase grid's default). corr and
# absval are their grid files (conf/grid/), trained on the fused path against autograd.
CASES = {
    "a": (20, 5, {"density": ["log", 0.01, 1.0, 200]}),  # 1,000 instances
    "b": (
        2,
        1,
        {"density": ["log", 0.01, 1.0, 100], "relative_importance": ["log", 0.1, 10.0, 32]},
    ),  # 16,000 instances
    "c": (200, 20, {"density": ["log", 0.01, 1.0, 40]}),  # 200 instances
    "corr": (4, 2, "correlated"),  # 18 instances, 2 shapes (correlated, anticorrelated)
    "absval": (100, 40, "absval"),  # 7 instances of 100 → 40
}
SEEDS = 5


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def config(
    n: int,
    m: int,
    axes: dict | str,
    args: argparse.Namespace,
    memory_mb: float = 1e9,
    backend: str | None = None,
    workers: int = 1,
):
    """The sweep config of a case; planned as a 10,000-step sweep (train.steps for planning),
    timed for args.steps steps."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    over = [
        f"train.device={args.device}",
        f"train.compile={args.compile}",
        f"chunk.memory_mb={memory_mb}",
        f"train.backend={backend or args.backend}",
        f"workers={workers}",
        f"train.steps={args.plan_steps}",
    ]
    if isinstance(axes, str):  # a grid file
        over.append(f"+grid={axes}")
    else:
        over += [f"model.n_features={n}", f"model.n_hidden={m}", f"grid.seeds={SEEDS}"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=over)
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        if not isinstance(axes, str):
            cfg.grid.axes = axes
    return cfg


def timed(step, steps: int, max_seconds: float, sync) -> tuple[int, float]:
    """Run `step(i)` up to `steps` times or `max_seconds`; return (steps done, seconds)."""
    sync()
    t0 = time.perf_counter()
    done = 0
    while done < steps:
        step(done)
        done += 1
        if done % 10 == 0:
            sync()
            if time.perf_counter() - t0 > max_seconds:
                break
    sync()
    return done, time.perf_counter() - t0


def baseline_stepper(n: int, m: int, inst: int, batch: int, device):
    """The common approach (e.g. ARENA's toy-model notebook), written out here."""
    import torch

    W = torch.nn.Parameter(torch.nn.init.xavier_normal_(torch.empty(inst, m, n, device=device)))
    b = torch.nn.Parameter(torch.zeros(inst, n, device=device))
    p = torch.logspace(-2, 0, inst, device=device).unsqueeze(-1).unsqueeze(-1)  # (inst, 1, 1)
    imp = torch.ones(inst, 1, n, device=device)
    opt = torch.optim.AdamW([W, b], lr=1e-3)

    def step(_: int) -> None:
        values = torch.rand(inst, batch, n, device=device)
        mask = torch.rand(inst, batch, n, device=device) < p
        x = torch.where(mask, values, 0.0)  # (inst, batch, feat)
        h = torch.einsum("ibn,imn->ibm", x, W)
        out = torch.relu(torch.einsum("ibm,imn->ibn", h, W) + b.unsqueeze(1))
        loss = (imp * (x - out) ** 2).mean((1, 2)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def machine_limits(threads: int, seconds: float = 1.0) -> dict[str, float]:
    """This CPU's ceilings at `threads` torch threads, for reading the model-steps/s: peak
    float32 FLOP/s of a large square matmul (2n³ per product) and memory bandwidth of a large
    copy (bytes read + written per second), each the best of repeated runs for `seconds`."""
    import torch

    torch.set_num_threads(threads)

    def best(fn, work: float) -> float:
        fn()
        rate, t_end = 0.0, time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            fn()
            rate = max(rate, work / (time.perf_counter() - t0))
        return rate

    n = 1024
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    src, dst = torch.randn(2**25), torch.empty(2**25)  # 128 MiB each: far beyond the caches
    return {
        "flops": best(lambda: torch.mm(a, b, out=c), 2 * n**3),
        "bandwidth": best(lambda: dst.copy_(src), 2 * src.numel() * 4),
    }


def step_flops(n: int, m: int, batch: int) -> float:
    """Matmul FLOP of one model's training step on the fused bmm path (n features, m hidden):
    h = Wx, z = Wᵀh, dh = Wg, dW = h gᵀ + dh xᵀ: five (m × n) by (n × batch) products."""
    return 5 * 2 * m * n * batch


def worker(spec: dict) -> dict:
    """One measurement (or one process of a project measurement), in its own process: build,
    warm up, wait for the other processes of the measurement, time."""
    import torch

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    from sweep.grid import GridPlan
    from sweep.train import make_trainer, resolve_device

    args = argparse.Namespace(**spec)
    n, m, axes = spec["n"], spec["m"], spec["axes"]
    base_rss = rss_mb()
    device = resolve_device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    backend = "autograd" if spec["who"] == "autograd" else args.backend
    cfg = config(n, m, axes, args, spec.get("memory_mb", 1e9), backend, spec["workers"])
    plan = GridPlan(cfg)
    t0 = time.perf_counter()
    if spec["who"] == "baseline":
        inst = plan.n_cells
        jobs = [(inst, baseline_stepper(n, m, inst, int(cfg.train.batch_size), device))]
    else:
        from sweep.jobs import chunks_of, group

        # one trainer per job, as a sweep groups the grid's storage chunks into jobs (about one
        # per worker): this process's share of them
        jobs = []
        for name in group(plan, plan.block_keys)[spec["part"] :: spec["parts"]]:
            job = plan.job(chunks_of(plan, name))
            tr = make_trainer(
                job.kind,
                job.seeds,
                job.density,
                job.importance,
                job.n_hidden,
                cfg.train,
                job.correlation,
                job.set_size,
                job.shape_instances,
            )
            jobs.append((len(job.seeds), tr.step))
        inst = sum(k for k, _ in jobs)
    for _, step in jobs:  # warm-up (includes building or loading the compiled package when on)
        for i in range(args.warmup):
            step(i)
    sync()
    warm = time.perf_counter() - t0
    if spec.get("barrier"):  # start timing together with the other processes
        Path(spec["barrier"], f"{spec['part']}").touch()
        while len(list(Path(spec["barrier"]).iterdir())) < spec["parts"]:
            time.sleep(0.05)
    model_steps, secs, steps = 0, 0.0, 0
    for k, step in jobs:  # blocks run one after another, as jobs of one worker would
        steps, t = timed(
            lambda i, step=step: step(i + args.warmup), args.steps, args.max_seconds, sync
        )
        model_steps, secs = model_steps + k * steps, secs + t
    return {
        "inst": inst,
        "blocks": len(jobs),  # jobs
        "model_steps": model_steps,
        "model_steps_per_s": model_steps / secs,
        "steps": steps,
        "seconds": secs,
        "warmup_s": warm,
        "peak_mb": peak_mb() - base_rss,
        "threads": torch.get_num_threads(),
        "device": str(device),
    }


def measure(spec: dict) -> dict:
    """Run a measurement: the project's in `workers` processes at once (its own launcher's
    choice), anything else in one process at torch's default threads."""
    import tempfile

    from sweep.cores import resolve_workers, threads_per_job

    parts = resolve_workers(spec["workers"]) if spec["who"] == "project" else 1
    spec = {**spec, "workers": parts}
    if spec["who"] == "project" and not spec["threads"]:
        spec["threads"] = threads_per_job(parts)  # as the local launcher gives each job
    with tempfile.TemporaryDirectory() as barrier:
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    json.dumps(
                        {
                            **spec,
                            "part": k,
                            "parts": parts,
                            "barrier": barrier if parts > 1 else None,
                        }
                    ),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for k in range(parts)
        ]
        outs = [p.communicate() for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        if p.returncode != 0:
            raise RuntimeError(err[-3000:])
    res = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    res = [r for r in res if r["model_steps"]]  # a process may get no block
    secs = max(r["seconds"] for r in res)  # all timed together: the slowest sets the pace
    steps = sum(r["model_steps"] for r in res)
    return {
        "inst": sum(r["inst"] for r in res),
        "blocks": sum(r["blocks"] for r in res),
        "model_steps_per_s": steps / secs,
        "steps": res[0]["steps"],
        "seconds": secs,
        "warmup_s": max(r["warmup_s"] for r in res),
        "peak_mb": max(r["peak_mb"] for r in res),
        "threads": res[0]["threads"],
        "processes": len(res),
        "device": res[0]["device"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--steps", type=int, default=300, help="timed steps per measurement")
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=20.0,
        help="stop a measurement after this long (the slow baseline)",
    )
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    ap.add_argument("--repeats", type=int, default=2, help="alternating rounds per case")
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads per process (0: the project's own choice, torch's "
        "default for the baseline)",
    )
    ap.add_argument(
        "--workers",
        default="auto",
        help="the project's worker processes (the sweep's `workers` setting)",
    )
    ap.add_argument(
        "--plan-steps",
        type=int,
        default=10_000,
        help="train.steps the grid is planned (and compile decided) for",
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backend", default="fused", choices=["fused", "autograd"])
    ap.add_argument("--compile", default="true", choices=["auto", "true", "false"])
    ap.add_argument(
        "--scale",
        type=int,
        nargs="*",
        default=None,
        help="instead of the cases: 2→1 throughput at these grid sizes (instances), "
        "the grid split into jobs by chunk.memory_mb as a sweep would",
    )
    ap.add_argument("--memory-mb", type=float, default=2048, help="chunk.memory_mb for --scale")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    common = {
        k: getattr(args, k)
        for k in (
            "steps",
            "max_seconds",
            "warmup",
            "threads",
            "device",
            "backend",
            "compile",
            "plan_steps",
        )
    }
    common["workers"] = args.workers if args.workers == "auto" else int(args.workers)
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print(f"--device {args.device}: no CUDA device on this machine; skipped")
            return
    print(
        f"load average {os.getloadavg()[0]:.1f} / {os.getloadavg()[1]:.1f} / "
        f"{os.getloadavg()[2]:.1f} (1 / 5 / 15 min) on {os.cpu_count()} cores",
        flush=True,
    )
    limits = machine_limits(1) if args.device == "cpu" else None
    if limits:
        print(
            f"this CPU at 1 thread: matmul {limits['flops'] / 1e9:.1f} GFLOP/s (1024² float32), "
            f"copy {limits['bandwidth'] / 1e9:.1f} GB/s (128 MiB, read + write)",
            flush=True,
        )
    if args.scale is not None:
        scale(args, common)
        return
    rows = []
    for name in args.cases:
        n, m, axes = CASES[name]
        other = "autograd" if isinstance(axes, str) else "baseline"
        res: dict[str, list[dict]] = {other: [], "project": []}
        for _ in range(args.repeats):
            for who in (other, "project"):
                r = measure({**common, "who": who, "n": n, "m": m, "axes": axes})
                res[who].append(r)
                print(
                    f"  {name} {who:8s} {r['model_steps_per_s']:12,.0f} model-steps/s  "
                    f"steps {r['steps']:4d}  peak {r['peak_mb']:7.0f} MB  "
                    f"warm-up {r['warmup_s']:.1f} s  {r['processes']} process(es) × "
                    f"{r['threads']} thread(s), {r['blocks']} block(s)",
                    flush=True,
                )
        proj = statistics.median(r["model_steps_per_s"] for r in res["project"])
        base = statistics.median(r["model_steps_per_s"] for r in res[other])
        ratios = [
            p["model_steps_per_s"] / b["model_steps_per_s"]
            for p, b in zip(res["project"], res[other], strict=True)
        ]
        label = f"({name}) {axes} {n}→{m}" if isinstance(axes, str) else f"({name}) {n}→{m} ReLU"
        rows.append(
            (
                label + f", {res['project'][0]['inst']:,} inst",
                proj,
                base,
                ratios,
                max(r["peak_mb"] for r in res["project"]),
                max(r["peak_mb"] for r in res[other]),
                res["project"][0],
            )
        )
    r0 = rows[0][-1]
    print(
        f"\ndevice {r0['device']}, project: {r0['processes']} process(es) × "
        f"{r0['threads']} thread(s), backend {args.backend}, compile {args.compile}; "
        f"baseline/autograd: torch's default threads; model-steps/s = instances × steps / s "
        f"(median of {args.repeats}); peak = worker peak RSS − RSS after imports; "
        f"load average now {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'case':40s} {'project':>12s} {'baseline':>10s} {'ratio':>7s} {'(per round)':>16s} "
        f"{'peak MB proj/base':>18s}"
    )
    for label, proj, base, ratios, pk, bk, _ in rows:
        per = "/".join(f"{r:.1f}" for r in ratios)
        print(
            f"{label:40s} {proj:12,.0f} {base:10,.0f} {proj / base:6.1f}× {per:>16s} "
            f"{pk:8.0f}/{bk:<8.0f}"
        )
    if limits:  # how far the project's matmuls are from the CPU's matmul peak, per process
        for name in args.cases:
            n, m, axes = CASES[name]
            row = next(r for r in rows if r[0].startswith(f"({name})"))
            if isinstance(axes, str) or 2 * n < 5 * m:  # a grid file, or the gram form
                continue
            procs = row[-1]["processes"]
            flops = row[1] * step_flops(n, m, 1024) / procs
            print(
                f"({name}) {n}→{m}: the project's matmuls {flops / 1e9:.1f} GFLOP/s per process "
                f"= {flops / limits['flops']:.0%} of this CPU's 1-thread matmul peak"
            )


def scale(args: argparse.Namespace, common: dict) -> None:
    """2→1 throughput at growing grid sizes, each grid planned into jobs by chunk.memory_mb."""
    from sweep.grid import BYTES_PER_ELEMENT

    print(
        f"2→1 ReLU, batch 1024, chunk.memory_mb={args.memory_mb:g}, backend {args.backend} "
        f"(planner: {BYTES_PER_ELEMENT[args.backend]} B per instance·batch·feature)"
    )
    for inst in args.scale:
        cells = max(1, inst // SEEDS)
        axes = {"density": ["log", 0.01, 1.0, cells]}
        r = measure(
            {
                **common,
                "who": "project",
                "n": 2,
                "m": 1,
                "axes": axes,
                "memory_mb": args.memory_mb,
                "workers": 1,
            }
        )
        print(
            f"  {r['inst']:8,d} instances in {r['blocks']:3d} job(s): "
            f"{r['model_steps_per_s']:12,.0f} model-steps/s  peak {r['peak_mb']:7.0f} MB  "
            f"(budget {args.memory_mb:g} MB per job; jobs run one after another here)",
            flush=True,
        )


if __name__ == "__main__":
    main()
