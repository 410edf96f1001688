"""Training loop for one block of instances: AdamW, an lr schedule, a subsampled loss curve,
periodic checkpoints so a preempted or killed job resumes where it stopped."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from sweep.data import FeatureSampler
from sweep.models import ToyModels, init_weights, instance_losses

EVAL_BATCHES = 8  # the final loss is measured on 8 fresh batches (8192 samples by default)


@dataclass
class TrainResult:
    W: np.ndarray  # (inst, hidden, feat)
    b: np.ndarray  # (inst, feat)
    loss: np.ndarray  # (inst,) expected loss on fresh samples after training
    curve: np.ndarray  # (inst, curve_points) training loss at curve_steps
    diverged: np.ndarray  # (inst,) bool: non-finite weights or loss
    seconds: float
    resumed_from: int  # step the run resumed from (0 for a fresh start)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def curve_steps(steps: int, points: int) -> np.ndarray:
    """Steps (0-based) at which the loss curve is recorded: evenly spaced, last step included."""
    return np.unique(np.linspace(0, steps - 1, min(points, steps)).round().astype(int))


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


def train_block(kind: str, seeds: np.ndarray, density: np.ndarray, importance: np.ndarray,
                n_hidden: int, tcfg: Any, checkpoint: Path | None = None,
                progress: bool = True, desc: str = "train",
                stop_at: int | None = None) -> TrainResult | None:
    """Train one model per row of (seeds, density, importance), all in one tensor.

    With a checkpoint path, the training state is saved every `checkpoint_seconds` and a run
    resumes from it. `stop_at` ends the run after that step with the state saved (as a
    preempted job would) and returns None.
    """
    device = resolve_device(tcfg.device)
    dtype = getattr(torch, tcfg.dtype)
    inst, n = density.shape
    steps, batch = int(tcfg.steps), int(tcfg.batch_size)
    W0 = init_weights(seeds, n, n_hidden).to(device=device, dtype=dtype)
    model = ToyModels(kind, W0, torch.zeros((inst, n), device=device, dtype=dtype))
    imp = torch.as_tensor(importance, device=device, dtype=dtype).unsqueeze(1)  # (inst, 1, feat)
    sampler = FeatureSampler(seeds, density, batch, "data", device, dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=float(tcfg.lr),
                            weight_decay=float(tcfg.weight_decay))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(tcfg))
    record = curve_steps(steps, int(tcfg.curve_points))
    curve = torch.full((inst, len(record)), float("nan"), device=device, dtype=dtype)
    start = 0
    if checkpoint is not None and checkpoint.exists():
        start = _load(checkpoint, model, opt, sched, sampler, curve)
    slot = {int(s): k for k, s in enumerate(record)}

    t0 = last_save = time.perf_counter()
    bar = tqdm(total=steps * inst, initial=start * inst, unit="model-step", unit_scale=True,
               desc=desc, disable=not progress, mininterval=1.0, smoothing=0.1)
    tick = max(1, steps // 200)
    for step in range(start, steps):
        x = sampler.sample()  # (inst, batch, feat)
        losses = instance_losses(model(x), x, imp)  # (inst,)
        opt.zero_grad(set_to_none=True)
        # Summing keeps instances independent: d(sum)/d(loss_k) = 1 for every k.
        losses.sum().backward()
        opt.step()
        sched.step()
        if step in slot:
            curve[:, slot[step]] = losses.detach()
        if (step + 1) % tick == 0:
            bar.update(tick * inst)
            # models/s: whole trainings finished per second at the current pace
            done = (step + 1 - start) * inst / steps
            bar.set_postfix(models_per_s=f"{done / max(time.perf_counter() - t0, 1e-9):.3g}",
                            refresh=False)
        if checkpoint is not None and time.perf_counter() - last_save > tcfg.checkpoint_seconds:
            _save(checkpoint, step + 1, model, opt, sched, sampler, curve)
            last_save = time.perf_counter()
        if stop_at is not None and step + 1 == stop_at and checkpoint is not None:
            _save(checkpoint, step + 1, model, opt, sched, sampler, curve)
            bar.close()
            return None
    bar.close()

    with torch.no_grad():
        evaluator = FeatureSampler(seeds, density, batch, "eval", device, dtype)
        final = torch.zeros(inst, device=device, dtype=dtype)
        for _ in range(EVAL_BATCHES):
            x = evaluator.sample()
            final += instance_losses(model(x), x, imp) / EVAL_BATCHES
    W = model.W.detach().cpu().numpy()
    b = model.b.detach().cpu().numpy()
    loss = final.cpu().numpy()
    diverged = ~(np.isfinite(W).all((1, 2)) & np.isfinite(b).all(1) & np.isfinite(loss))
    return TrainResult(W, b, loss, curve.cpu().numpy(), diverged,
                       time.perf_counter() - t0, start)


def _save(path: Path, step: int, model, opt, sched, sampler, curve) -> None:
    # Written to a temporary file then renamed, so a kill mid-write leaves the old checkpoint.
    tmp = path.with_suffix(".tmp")
    torch.save({"step": step, "model": model.state_dict(), "opt": opt.state_dict(),
                "sched": sched.state_dict(), "rng": sampler.state(), "curve": curve}, tmp)
    os.replace(tmp, path)


def _load(path: Path, model, opt, sched, sampler, curve) -> int:
    # weights_only: a checkpoint holds tensors and plain containers, nothing is unpickled.
    state = torch.load(path, map_location=curve.device, weights_only=True)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    sampler.set_state([s.cpu() for s in state["rng"]])
    curve.copy_(state["curve"])
    return int(state["step"])
