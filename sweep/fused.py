"""The fast training step: hand-written gradients and AdamW over cache-sized instance chunks.

Same maths as the autograd path (`ToyModels` + `torch.optim.AdamW`), written out so that one
step is a handful of fused loops instead of ~40 tensor-sized kernels:

- relu / linear, x' = act(z), z = WᵀWx + b. With g = dL/dz (batch, feat) the gradients are
  dL/db = Σ_batch g and dL/dW = W (M + Mᵀ), M = xᵀg (feat, feat). For few features ("gram"
  form, n < 2.5 m) this is cheaper than going through h = Wx and is written elementwise in a
  feature-major layout (inst, feat, batch), so the long batch axis is the vectorised one.
- otherwise ("bmm" form, and always for privileged): h = Wx, z = Wᵀh' + b; the backward is
  three bmms: dh = g Wᵀ (masked by h > 0 for privileged), dL/dW = h'ᵀg + dhᵀx.

Instances are processed in chunks of whole cells (every seed of a cell), so the sampled
uniforms (seeds, batch, feat) broadcast over the chunk's cells instead of being gathered per
instance, and a chunk's working set stays in cache. Each chunk's AdamW update follows its
gradients at once (instances never interact, so chunk order does not matter).
"""

from __future__ import annotations

import math
import shutil
import warnings
from typing import Any

import torch

from sweep.data import FeatureSampler

BETAS = (0.9, 0.999)  # torch.optim.AdamW defaults, as in the autograd path
EPS = 1e-8
CHUNK_ELEMENTS = 2**19  # (inst, batch, feat) elements per chunk: ~2 MiB per float32 buffer
# train.compile=auto compiles when a block's training does at least this many element-steps
# (inst * batch * feat * steps): compiling costs ~20-60 s, worth it from a few minutes of work.
COMPILE_WORK = 2e10


def use_gram(kind: str, n: int, m: int, compiled: bool = True) -> bool:
    """Gram form (z from WᵀW) when it needs fewer flops: 2n² < 5nm per batch row.

    Uncompiled, the gram form materialises (inst, n, n, batch) broadcasts, about 10× slower
    than bmm beyond a few features (measured at 60→30), so it is kept for n ≤ 4 there.
    """
    return kind in ("relu", "linear") and 2 * n < 5 * m and (compiled or n <= 4)


def chunk_inputs(u: torch.Tensor, p: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """x = where(u < p, u / p, 0), feature-major: (inst, feat, batch).

    u: (seeds, feat, batch). p: (inst, feat, 1). With index None the chunk is laid out as
    (cells, seeds) with every seed in order, so u broadcasts over cells; else u[index].
    """
    if index is None:
        s = u.shape[0]
        uu = u.unsqueeze(0)  # (1, seeds, feat, batch)
        pp = p.view(-1, s, *p.shape[1:])  # (cells, seeds, feat, 1)
        return torch.where(uu < pp, uu / pp, 0).flatten(0, 1)
    uu = u[index]
    return torch.where(uu < p, uu / p, 0)


def grads_gram(kind: str, W: torch.Tensor, b: torch.Tensor, x: torch.Tensor,
               imp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss (inst,), dL/dW (inst, m, n), dL/db (inst, n) for relu/linear; x: (inst, n, batch)."""
    batch = x.shape[-1]
    A = (W.unsqueeze(-1) * W.unsqueeze(-2)).sum(1)  # WᵀW: (inst, n, n)
    z = (A.unsqueeze(-1) * x.unsqueeze(1)).sum(2) + b.unsqueeze(-1)  # (inst, n, batch)
    if kind == "linear":
        r = z - x
        g = r
    else:
        r = torch.where(z > 0, z - x, -x)  # ReLU(z) - x
        g = torch.where(z > 0, r, 0)
    loss = (imp * r.square()).sum(1).mean(-1)  # (inst,)
    g = g * (imp * (2.0 / batch))  # dL/dz: (inst, n, batch)
    M = (x.unsqueeze(2) * g.unsqueeze(1)).sum(-1)  # xᵀg: (inst, n, n)
    gW = torch.bmm(W, M + M.transpose(1, 2))  # (inst, m, n)
    return loss, gW, g.sum(-1)


def grads_bmm(kind: str, W: torch.Tensor, b: torch.Tensor, x: torch.Tensor,
              imp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """As grads_gram for any kind, through h = Wx; x: (inst, n, batch)."""
    batch = x.shape[-1]
    h = torch.bmm(W, x)  # (inst, m, batch)
    hp = torch.relu(h) if kind == "privileged" else h
    z = torch.baddbmm(b.unsqueeze(-1), W.transpose(1, 2), hp)  # (inst, n, batch)
    if kind == "linear":
        r = z - x
        g = r
    else:
        r = torch.where(z > 0, z - x, -x)
        g = torch.where(z > 0, r, 0)
    loss = (imp * r.square()).sum(1).mean(-1)
    g = g * (imp * (2.0 / batch))
    dh = torch.bmm(W, g)  # (inst, m, batch)
    if kind == "privileged":
        dh = torch.where(h > 0, dh, 0)
    gW = torch.bmm(hp, g.transpose(1, 2)).baddbmm_(dh, x.transpose(1, 2))  # (inst, m, n)
    return loss, gW, g.sum(-1)


def adamw_(p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, v: torch.Tensor,
           coef: torch.Tensor) -> None:
    """torch.optim.AdamW's update, in place. coef: [lr, lr·wd, lr/bc1, sqrt(bc2)] (tensor)."""
    b1, b2 = BETAS
    p.mul_(1 - coef[1])
    m.lerp_(g, 1 - b1)
    v.mul_(b2).addcmul_(g, g, value=1 - b2)
    # as addcdiv_(m, denom, value=-step_size), which cannot take a tensor step size
    p.sub_(coef[2] * m / (v.sqrt() / coef[3]).add_(EPS))


def train_chunk(kind: str, gram: bool, u: torch.Tensor, index: torch.Tensor | None,
                p: torch.Tensor, imp: torch.Tensor, W: torch.Tensor, b: torch.Tensor,
                mW: torch.Tensor, vW: torch.Tensor, mb: torch.Tensor, vb: torch.Tensor,
                coef: torch.Tensor) -> torch.Tensor:
    """One step for one chunk: sample, loss and gradients, AdamW in place; returns the losses."""
    x = chunk_inputs(u, p, index)  # (inst, feat, batch)
    loss, gW, gb = (grads_gram if gram else grads_bmm)(kind, W, b, x, imp)
    adamw_(W, gW, mW, vW, coef)
    adamw_(b, gb, mb, vb, coef)
    return loss


def eval_chunk(kind: str, gram: bool, u: torch.Tensor, index: torch.Tensor | None,
               p: torch.Tensor, imp: torch.Tensor, W: torch.Tensor,
               b: torch.Tensor) -> torch.Tensor:
    x = chunk_inputs(u, p, index)
    return (grads_gram if gram else grads_bmm)(kind, W, b, x, imp)[0]


def compiler_available(device: torch.device) -> bool:
    """Whether torch.compile can build kernels here (C++ on the CPU, Triton on a GPU)."""
    if device.type == "cuda":
        import importlib.util

        return importlib.util.find_spec("triton") is not None
    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


def should_compile(setting: Any, device: torch.device, work: float) -> bool:
    """train.compile: true / false, or auto = when a compiler exists and the work is large."""
    if isinstance(setting, bool):
        return setting
    return compiler_available(device) and work >= COMPILE_WORK


class FusedTrainer:
    """Training state of one block on the fused path: W, b, AdamW moments, the data sampler."""

    backend = "fused"

    def __init__(self, kind: str, W0: torch.Tensor, b0: torch.Tensor, imp: torch.Tensor,
                 sampler: FeatureSampler, lr: float, weight_decay: float,
                 lr_factor: Any, compile: bool):
        inst, m, n = W0.shape
        self.kind, self.gram = kind, use_gram(kind, n, m, compile)
        self.W, self.b = W0.clone(), b0.clone()  # (inst, m, n), (inst, n)
        self.mW, self.vW = torch.zeros_like(self.W), torch.zeros_like(self.W)
        self.mb, self.vb = torch.zeros_like(self.b), torch.zeros_like(self.b)
        self.imp = imp.reshape(inst, n, 1)  # (inst, feat, 1)
        self.sampler, self.lr, self.wd, self.lr_factor = sampler, lr, weight_decay, lr_factor
        self.p = sampler.p.reshape(inst, n, 1)
        self.steps_done = 0
        seeds = len(sampler.unique)
        # Chunks of whole cells when the block is laid out as (cells, seeds); any size else.
        per_inst = sampler.batch * n
        unit = seeds if sampler.tiled else 1
        cells = max(1, CHUNK_ELEMENTS // (per_inst * unit))
        size = cells * unit
        self.chunks = [(a, min(a + size, inst)) for a in range(0, inst, size)]
        self.compiled = compile
        self._train = torch.compile(train_chunk, dynamic=False) if compile else train_chunk
        self._eval = torch.compile(eval_chunk, dynamic=False) if compile else eval_chunk

    def _index(self, a: int, z: int) -> torch.Tensor | None:
        return None if self.sampler.tiled else self.sampler.seed_index[a:z]

    def step(self, step: int) -> torch.Tensor:
        """Train every instance one step; returns the training losses (inst,) before it."""
        t = step + 1
        lr = self.lr * self.lr_factor(step)
        b1, b2 = BETAS
        coef = torch.tensor([lr, lr * self.wd, lr / (1 - b1**t), math.sqrt(1 - b2**t)],
                            dtype=self.W.dtype, device=self.W.device)
        u = self.sampler.uniforms().transpose(1, 2).contiguous()  # (seeds, feat, batch)
        losses = torch.empty(self.W.shape[0], dtype=self.W.dtype, device=self.W.device)
        for a, z in self.chunks:
            args = (self.kind, self.gram, u, self._index(a, z), self.p[a:z], self.imp[a:z],
                    self.W[a:z], self.b[a:z], self.mW[a:z], self.vW[a:z], self.mb[a:z],
                    self.vb[a:z], coef)
            try:
                losses[a:z] = self._train(*args)
            except Exception as e:  # compiling failed (before any state changed): go eager
                if not self.compiled:
                    raise
                warn_compile_failed(e)
                self.compiled, self._train, self._eval = False, train_chunk, eval_chunk
                losses[a:z] = self._train(*args)
        self.steps_done = t
        return losses

    @torch.no_grad()
    def losses(self, sampler: FeatureSampler) -> torch.Tensor:
        """Loss of every instance on one fresh batch from `sampler`: (inst,)."""
        u = sampler.uniforms().transpose(1, 2).contiguous()
        out = torch.empty(self.W.shape[0], dtype=self.W.dtype, device=self.W.device)
        for a, z in self.chunks:
            out[a:z] = self._eval(self.kind, self.gram, u, self._index(a, z), self.p[a:z],
                                  self.imp[a:z], self.W[a:z], self.b[a:z])
        return out

    def state_dict(self) -> dict:
        return {"W": self.W, "b": self.b, "mW": self.mW, "vW": self.vW, "mb": self.mb,
                "vb": self.vb, "steps_done": self.steps_done}

    def load_state_dict(self, state: dict) -> None:
        for k in ("W", "b", "mW", "vW", "mb", "vb"):
            getattr(self, k).copy_(state[k])
        self.steps_done = int(state["steps_done"])


def warn_compile_failed(e: Exception) -> None:
    warnings.warn(f"torch.compile failed ({type(e).__name__}: {e}); training uncompiled",
                  stacklevel=2)
