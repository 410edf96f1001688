"""Training loop for one block of instances: AdamW, an lr schedule, a subsampled loss curve,
periodic checkpoints so a preempted or killed job resumes where it stopped."""

from __future__ import annotations

import copy
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sweep import kinds, timing
from sweep.blocks import BlockJob, TrainResult
from sweep.compiling import shape_work
from sweep.cores import threads_per_job
from sweep.data import FeatureSampler
from sweep.fused import FusedTrainer
from sweep.groups import make_sampler
from sweep.models import ToyModels, init_weights, instance_losses

EVAL_BATCHES = 8  # the final loss is measured on 8 fresh batches (8192 samples by default)
# tqdm's default lock is a multiprocessing RLock: a named semaphore per process, which a worker
# stopped at the end of a sweep (sweep.cli.leave) leaves behind with a warning. loky's workers
# are started independently, so such a lock never coordinated their bars anyway.
tqdm.set_lock(threading.RLock())


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def lr_lambda(tcfg: Any):
    """Multiplier of the base lr at each step: linear warm-up, then constant/linear/cosine."""
    steps, warm, kind = int(tcfg.steps), int(tcfg.warmup_steps), tcfg.lr_schedule

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        frac = (step - warm) / max(1, steps - warm)
        if kind == "linear":
            return 1.0 - frac
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * frac))
        return 1.0

    return f


class AutogradTrainer:
    """The reference path: ToyModels, autograd, torch.optim.AdamW and a LambdaLR schedule."""

    backend = "autograd"

    def __init__(
        self,
        kind: str,
        W0: torch.Tensor,
        b0: torch.Tensor,
        imp: torch.Tensor,
        sampler: FeatureSampler,
        tcfg: Any,
        W_out0: torch.Tensor | None = None,
    ):
        self.model = ToyModels(kind, W0, b0, W_out0)
        self.imp, self.sampler = imp, sampler  # imp: (inst, 1, feat)
        self.opt = torch.optim.AdamW(
            self.model.parameters(), lr=float(tcfg.lr), weight_decay=float(tcfg.weight_decay)
        )
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(tcfg))
        self.W, self.b = self.model.W, self.model.b
        self.W_out = self.model.W_out if W_out0 is not None else None

    def step(self, step: int) -> torch.Tensor:
        """Train every instance one step; returns the training losses (inst,) before it."""
        x = self.sampler.sample()  # (inst, batch, feat)
        losses = instance_losses(self.model(x), self.model.target(x), self.imp)  # (inst,)
        self.opt.zero_grad(set_to_none=True)
        # Summing keeps instances independent: d(sum)/d(loss_k) = 1 for every k.
        losses.sum().backward()
        self.opt.step()
        self.sched.step()
        return losses.detach()

    @torch.no_grad()
    def losses(self, sampler: FeatureSampler) -> torch.Tensor:
        """Loss of every instance on one fresh batch from `sampler`: (inst,)."""
        x = sampler.sample()
        return instance_losses(self.model(x), self.model.target(x), self.imp)

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])


def make_trainer(
    kind: str,
    seeds: np.ndarray,
    density: np.ndarray,
    importance: np.ndarray,
    n_hidden: int,
    tcfg: Any,
    correlation: str = "none",
    set_size: int = 1,
    shape_instances: int | None = None,
) -> AutogradTrainer | FusedTrainer:
    """The training state of one block, on the backend `train.backend` names.
    shape_instances: the models of this shape in the whole grid (default: this block's).

    Every model kind and feature correlation trains on the fused path (`sweep.fused`), compiled
    when `train.compile` says so (auto: when it saves time, see `should_compile`).
    """
    spec = kinds.get(kind)
    device = resolve_device(str(tcfg.device))
    dtype = getattr(torch, str(tcfg.dtype))
    inst, n = density.shape
    W0 = init_weights(seeds, n, n_hidden).to(device=device, dtype=dtype)  # (inst, hidden, feat)
    b0 = torch.zeros((inst, n), device=device, dtype=dtype)
    imp = torch.as_tensor(importance, device=device, dtype=dtype).unsqueeze(1)  # (inst, 1, feat)
    sampler = make_sampler(
        seeds,
        density,
        int(tcfg.batch_size),
        "data",
        device,
        dtype,
        correlation,
        set_size,
        signed=spec.signed,
    )
    W_out0 = None
    if spec.untied:
        W_out0 = init_weights(seeds, n_hidden, n, "init-out").to(device=device, dtype=dtype)
    if str(getattr(tcfg, "backend", "fused")) == "autograd" or spec.fused is None:
        return AutogradTrainer(kind, W0, b0, imp, sampler, tcfg, W_out0)  # W_out: (inst, n, m)
    setting = getattr(tcfg, "compile", "auto")
    # compile or not by the shape's work over the whole grid (sweep.compiling.should_compile):
    # the same for every grouping of its chunks into jobs, so a retrained chunk equals its first
    # run
    work, evals = shape_work(shape_instances or inst, n, int(tcfg.batch_size), int(tcfg.steps))
    return FusedTrainer(
        spec,
        W0,
        b0,
        imp,
        sampler,
        float(tcfg.lr),
        float(tcfg.weight_decay),
        lr_lambda(tcfg),
        setting,
        W_out0,
        work,
        evals,
        getattr(tcfg, "compile_cache", None),
    )


def train_block(
    job: BlockJob,
    checkpoint: Path | None = None,
    progress: bool = True,
    desc: str | None = None,
    stop_at: int | None = None,
    identity: dict | None = None,
) -> TrainResult | None:
    """Train one model per row of the job's (seeds, density, importance), all in one tensor.

    With a checkpoint path, the training state is saved every `checkpoint_seconds` and a run
    resumes from it; `identity` (the store's run identity) is saved with it, and a checkpoint
    of another identity or block shape is not loaded. `stop_at` ends the run after that step
    with the state saved (as a preempted job would) and returns None.
    """
    kind, seeds, density, importance = job.kind, job.seeds, job.density, job.importance
    n_hidden, tcfg, correlation, set_size = job.n_hidden, job.train, job.correlation, job.set_size
    desc = desc or job.key
    inst = len(seeds)
    steps = job.steps
    # train.threads=0: the cores this job may use. The local launcher passes each job its share
    # (cores ÷ jobs at once); alone, a job takes the idle cores only: the compiled kernels'
    # threads wait for each other whenever one is descheduled (measured 10× slower at 2 threads
    # than at 1 on the busy 2-core build machine).
    threads = int(getattr(tcfg, "threads", 0))
    torch.set_num_threads(threads if threads > 0 else threads_per_job(1))
    trainer = make_trainer(
        kind,
        seeds,
        density,
        importance,
        n_hidden,
        tcfg,
        correlation,
        set_size,
        job.shape_instances,
    )
    timing.mark("setup", block=job.key)
    device, dtype = trainer.W.device, trainer.W.dtype
    record = job.curve_steps
    curve = torch.full((inst, len(record)), float("nan"), device=device, dtype=dtype)
    snaps = Snapshots(trainer, job.snapshot_steps)
    start = 0
    stamp = _stamp(job, identity)
    if checkpoint is not None and checkpoint.exists():
        start = _load(checkpoint, trainer, curve, stamp, snaps)
    if start:
        logging.getLogger(__name__).info(f"{desc}: resumed from step {start} ({checkpoint})")
    slot = {int(s): k for k, s in enumerate(record)}

    t0 = last_save = time.perf_counter()
    bar = tqdm(
        total=steps * inst,
        initial=start * inst,
        unit="model-step",
        unit_scale=True,
        desc=desc,
        disable=not progress,
        mininterval=1.0,
        smoothing=0.1,
    )
    tick = max(1, steps // 200)
    for step in range(start, steps):
        losses = trainer.step(step)  # (inst,)
        if step == start:  # the first step compiles or loads the kernels
            timing.mark("kernels", block=job.key, compiled=getattr(trainer, "compiled", False))
        if step in slot:
            curve[:, slot[step]] = losses
        if step + 1 in snaps.slot:  # W after step + 1 steps; a dict lookup on other steps
            snaps.take(step + 1)
        if (step + 1) % tick == 0:
            bar.update(tick * inst)
            # models/s: whole trainings finished per second at the current pace
            done = (step + 1 - start) * inst / steps
            bar.set_postfix(
                models_per_s=f"{done / max(time.perf_counter() - t0, 1e-9):.3g}", refresh=False
            )
        if checkpoint is not None and time.perf_counter() - last_save > tcfg.checkpoint_seconds:
            _save(checkpoint, step + 1, trainer, curve, stamp, snaps)
            last_save = time.perf_counter()
        if stop_at is not None and step + 1 == stop_at and checkpoint is not None:
            _save(checkpoint, step + 1, trainer, curve, stamp, snaps)
            bar.close()
            return None
    bar.close()
    timing.mark("training", block=job.key, models=inst, steps=steps - start)

    evaluator = make_sampler(
        seeds,
        density,
        int(tcfg.batch_size),
        "eval",
        device,
        dtype,
        correlation,
        set_size,
        signed=kinds.get(kind).signed,
    )
    final = torch.zeros(inst, device=device, dtype=dtype)
    for _ in range(EVAL_BATCHES):
        final += trainer.losses(evaluator) / EVAL_BATCHES
    timing.mark("eval", block=job.key)
    W = trainer.W.detach().cpu().numpy()
    b = trainer.b.detach().cpu().numpy()
    loss = final.cpu().numpy()
    diverged = ~(np.isfinite(W).all((1, 2)) & np.isfinite(b).all(1) & np.isfinite(loss))
    W_out = None
    if kinds.get(kind).untied:
        assert trainer.W_out is not None  # both trainers keep an untied kind's W_out
        W_out = trainer.W_out.detach().cpu().numpy()  # (inst, feat, hidden)
        diverged |= ~np.isfinite(W_out).all((1, 2))
    return TrainResult(
        W,
        b,
        loss,
        curve.cpu().numpy(),
        diverged,
        time.perf_counter() - t0,
        start,
        W_out,
        *snaps.arrays(),
    )


class Snapshots:
    """Copies of W, b (and W_out) at the steps of `train.snapshots`, NaN until taken.

    Buffers: W (inst, snap, hidden, feat), b (inst, snap, feat), W_out (inst, snap, feat,
    hidden). They are part of the checkpoint, so a resumed run keeps the snapshots it took.
    """

    def __init__(self, trainer: Any, steps: np.ndarray):
        self.trainer = trainer
        self.slot = {int(s): k for k, s in enumerate(steps)}  # step (1-based) -> index
        self.names = ["W", "b"] + (["W_out"] if getattr(trainer, "W_out", None) is not None else [])
        k = len(steps)
        self.buf = (
            {
                n: torch.full(
                    (getattr(trainer, n).shape[0], k, *getattr(trainer, n).shape[1:]),
                    float("nan"),
                    device=trainer.W.device,
                    dtype=trainer.W.dtype,
                )
                for n in self.names
            }
            if k
            else {}
        )

    def take(self, step: int) -> None:
        with torch.no_grad():
            for n in self.names:
                self.buf[n][:, self.slot[step]] = getattr(self.trainer, n)

    def arrays(self) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
        """(W, b, W_out) snapshot arrays, None for those not recorded."""
        out = [self.buf[n].cpu().numpy() if n in self.buf else None for n in ("W", "b", "W_out")]
        return out[0], out[1], out[2]


def _stamp(job: BlockJob, identity: dict | None) -> dict:
    """What a checkpoint must match to be resumed: the store's run identity and the block."""
    return {
        **(identity or {}),
        "block": job.key,
        "kind": job.kind,
        "inst": len(job.seeds),
        "n_features": job.n_features,
        "n_hidden": job.n_hidden,
        "seeds": [int(s) for s in job.seeds],
        "snapshots": [int(s) for s in job.snapshot_steps],
    }


def _save(
    path: Path, step: int, trainer, curve, stamp: dict, snaps: Snapshots | None = None
) -> None:
    # Written to a temporary file then renamed, so a kill mid-write leaves the old checkpoint.
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "step": step,
            "backend": trainer.backend,
            **trainer.state_dict(),
            "rng": trainer.sampler.state(),
            "curve": curve,
            "stamp": stamp,
            "snapshots": snaps.buf if snaps is not None else {},
        },
        tmp,
    )
    os.replace(tmp, path)


def _load(path: Path, trainer, curve, stamp: dict, snaps: Snapshots | None = None) -> int:
    """Resume from a checkpoint of this very block and run; returns its step (0: not used).

    A checkpoint that cannot be read or restored (truncated, garbage, a field missing) is set
    aside as `<name>.corrupt-<time>`, with a warning naming it, and training starts from step
    0: left in place, it would fail every rerun the same way.
    """
    try:
        # weights_only: a checkpoint holds tensors and plain containers, nothing is unpickled.
        state = torch.load(path, map_location=curve.device, weights_only=True)
        backend, step = state["backend"], int(state["step"])
    except Exception as e:  # noqa: BLE001 - whatever is wrong with the file, it is not used
        return _set_aside(path, e)
    if backend != trainer.backend:
        raise ValueError(
            f"checkpoint {path} was written by train.backend={backend}, not "
            f"{trainer.backend}; delete it or resume with the same train.backend"
        )
    if state.get("stamp") != stamp:
        # Another run's, another block's or another shape's state: never broadcast it into
        # this block (copy_ would); train from scratch instead.
        logging.getLogger(__name__).warning(
            f"checkpoint {path} belongs to another run or block shape; not resumed from it"
        )
        return 0
    # the state before, to undo a restore that fails halfway (curve, snapshots: all NaN)
    before = copy.deepcopy((trainer.state_dict(), trainer.sampler.state()))
    try:
        trainer.load_state_dict(state)
        trainer.sampler.set_state([s.cpu() for s in state["rng"]])
        curve.copy_(state["curve"])
        if snaps is not None:  # the stamp matched, so the saved buffers have these steps
            for n, buf in snaps.buf.items():
                buf.copy_(state["snapshots"][n])
    except Exception as e:  # noqa: BLE001 - a field missing or of another shape
        trainer.load_state_dict(before[0])
        trainer.sampler.set_state(before[1])
        curve.fill_(float("nan"))
        for buf in snaps.buf.values() if snaps is not None else ():
            buf.fill_(float("nan"))
        return _set_aside(path, e)
    return step


def _set_aside(path: Path, error: BaseException) -> int:
    """Rename an unusable checkpoint out of the job's way (kept for a post-mortem); 0 steps."""
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    why = " ".join(str(error).split())[:200] or type(error).__name__
    try:
        path.rename(aside)
    except OSError as e:  # the next save replaces it (os.replace) in any case
        aside = path
        why += f"; not renamed: {e.strerror}"
    logging.getLogger(__name__).warning(
        f"checkpoint {path} is unreadable ({type(error).__name__}: {why}); set aside as "
        f"{aside.name}, training from step 0"
    )
    return 0
