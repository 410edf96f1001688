"""The fast training step: hand-written gradients and AdamW over cache-sized instance chunks.

Same maths as the autograd path (`ToyModels` + `torch.optim.AdamW`), written out so that one
step is a handful of fused loops instead of ~40 tensor-sized kernels. What is kind-specific
comes from the kind's `Fused` record (`sweep.kinds.base`); nothing here names a kind:

- tied kinds, x' = act(Wᵀ hidden(Wx) + b): the kind gives the elementwise pieces (act's
  residual and gradient factor, the hidden activation and its backward) and the two forms
  below write the matrix products around them. With g = dL/dz (batch, feat), z the output's
  pre-activation: dL/db = Σ_batch g and, without a hidden activation, dL/dW = W (M + Mᵀ),
  M = xᵀg (feat, feat). For few features ("gram" form, n < 2.5 m and n ≤ 8) this is cheaper
  than going through h = Wx and is written per feature on (inst, batch) rows, so the long batch
  axis is the vectorised one and every batch reduction shares one loop.
  Otherwise ("bmm" form, and always with a hidden activation): h = Wx, z = Wᵀh' + b; the
  backward is three bmms: dh' = W g (mapped back through the hidden activation to dh),
  dL/dW = h' gᵀ + dh xᵀ.
- any other kind (absval) gives its whole loss-and-gradient function.

Inputs come from the block's sampler's own uniforms, turned into features inside the chunk
(`chunk_inputs`): independent features (values in [0, 1), or [-1, 1) for absval) or
correlated / anticorrelated sets, with the same floating-point operations as
`FeatureSampler.sample` / `GroupedSampler.sample`, so both paths see identical data.

Instances are processed in equal chunks of whole cells (every seed of a cell), so the sampled
uniforms (seeds, batch, feat) broadcast over the chunk's cells instead of being gathered per
instance, and a chunk's working set stays in cache. Each chunk's AdamW update follows its
gradients at once (instances never interact, so chunk order does not matter).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch

from sweep.compiling import should_compile
from sweep.data import FeatureSampler
from sweep.groups import GroupedSampler
from sweep.kinds.base import Fused, KindSpec
from sweep.packages import Packaged

BETAS = (0.9, 0.999)  # torch.optim.AdamW defaults, as in the autograd path
EPS = 1e-8
CHUNK_ELEMENTS = 2**19  # (inst, batch, feat) elements per chunk: ~2 MiB per float32 buffer
# The compiled gram form makes no (inst, feat, batch) array, so its chunks need not fit a cache:
# fewer, longer calls. 565 2→1 models in 1 chunk instead of 3: 644 against 785 µs a step
# (median of 8 alternating rounds in one process, 1 thread), the calls' own cost.
CHUNK_ELEMENTS_GRAM = 2**22
# A compiled bmm-form step (a package call costs microseconds, sweep.packages) runs fastest on
# half the eager chunk: per step, 20→5 23.5 against 38.3 ms, 10→5 14.6 against 16.5, 40→10
# 68.4 against 116.0, 100→20 253.5 against 267.1 (500 models, 1 thread, alternating rounds in
# one process); 2**17 was no faster.
CHUNK_ELEMENTS_COMPILED = 2**18
# The tensor arguments of train_chunk and eval_chunk (u, index, p, imp, params, moments, coef)
# whose first dim is the chunk's instances: their packages take any number (sweep.packages).
PER_INSTANCE = (1, 2, 3, 4, 5)


# The gram form is written out per feature (grads_gram), and Inductor's compile time grows with
# the n² products it unrolls: cold, 20 s at 8→4, 31 s at 10→5, 106 s at 20→10, where it is no
# faster than bmm (2-core build machine, 1 thread). Up to 8 features it is 1.6-3× faster.
GRAM_MAX_FEATURES = 8


def use_gram(fused: Fused, n: int, m: int, compiled: bool = True) -> bool:
    """Gram form (z from WᵀW) when it needs fewer flops, 2n² < 5nm per batch row, and has at
    most GRAM_MAX_FEATURES features (4 uncompiled: eager, each feature pair is a kernel call).
    """
    return fused.gram and 2 * n < 5 * m and n <= (GRAM_MAX_FEATURES if compiled else 4)


# How a chunk's inputs are made from uniforms: (correlation, signed, set size), e.g.
# ("none", False, 1) for independent features in [0, 1).
Data = tuple[str, bool, int]


def chunk_inputs(
    u: torch.Tensor, p: torch.Tensor, index: torch.Tensor | None, data: Data = ("none", False, 1)
) -> torch.Tensor:
    """The chunk's inputs x, feature-major: (inst, feat, batch).

    u: (seeds, U, batch), the sampler's uniforms transposed (U = feat, or feat + 2 sets for
    grouped features). p: (inst, P, 1), the density of each feature (P = feat) or of each set
    (P = sets). With index None the chunk is laid out as (cells, seeds) with every seed in
    order, so u broadcasts over cells; else u[index].
    """
    if index is None:
        s = u.shape[0]
        uu = u.unsqueeze(0)  # (1, seeds, U, batch)
        pp = p.view(-1, s, *p.shape[1:])  # (cells, seeds, P, 1)
        return _inputs(uu, pp, data).flatten(0, 1)
    return _inputs(u[index], p, data)


def _inputs(u: torch.Tensor, p: torch.Tensor, data: Data) -> torch.Tensor:
    """As FeatureSampler._values / GroupedSampler.sample, on (..., U, batch) uniforms."""
    correlation, signed, size = data
    if correlation == "none":  # active when u < p; then u / p is U[0, 1), 2u / p − 1 U[−1, 1)
        return torch.where(u < p, 2 * u / p - 1 if signed else u / p, 0)
    sets = p.shape[-2]
    n = u.shape[-2] - 2 * sets
    values = u[..., :n, :]  # (..., feat, batch)
    active = (u[..., n : n + sets, :] < p).repeat_interleave(size, dim=-2)  # (..., feat, batch)
    if correlation == "anticorrelated":  # one member of an active set, picked uniformly
        pick = (u[..., n + sets :, :] * size).long().clamp_max(size - 1)
        member = (torch.arange(n, device=u.device) % size).unsqueeze(-1)  # (feat, 1)
        active = active & (pick.repeat_interleave(size, dim=-2) == member)
    return torch.where(active, values, 0)


# output(z, x) -> (r, g): the kind's residual act(z) − x and its gradient factor r · act'(z)
Output = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
# hidden(h) -> (h', back): the kind's hidden activation and back(dL/dh') = dL/dh
Hidden = Callable[[torch.Tensor], tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]]


def grads_gram(
    output: Output, x: torch.Tensor, imp: torch.Tensor, W: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss (inst,), dL/dW (inst, m, n), dL/db (inst, n) of a tied kind without hidden
    activation, through WᵀW; x: (inst, n, batch), imp: (inst, n, 1).

    Written per feature, on (inst, batch) rows: every reduction over the batch (the loss,
    dL/db, M = xᵀg) then has the same loop, and Inductor computes them all in one pass that
    makes each input once. Written over a feature axis instead, each reduction had a loop of
    its own and made x again in each: 16 divisions per batch row at 2→1 instead of 2, and a
    step 2.1× slower (3× at 4→2; eager, 1.5× slower too).
    """
    n, batch = x.shape[1], x.shape[-1]
    A = (W.unsqueeze(-1) * W.unsqueeze(-2)).sum(1)  # WᵀW: (inst, n, n)
    xs = x.unbind(1)  # n × (inst, batch)
    gs = []  # dL/dz per feature: n × (inst, batch)
    loss = torch.zeros_like(xs[0])  # (inst, batch)
    for i in range(n):
        z = b[:, i, None] + A[:, i, 0, None] * xs[0]  # (inst, batch)
        for j in range(1, n):
            z = z + A[:, i, j, None] * xs[j]
        r, g = output(z, xs[i])  # act(z) − x, and dL/dz up to 2·imp/batch
        loss = loss + imp[:, i] * r.square()
        gs.append(g * (imp[:, i] * (2.0 / batch)))
    M = torch.stack([torch.stack([(xi * g).sum(-1) for g in gs], -1) for xi in xs], -2)
    gW = torch.bmm(W, M + M.transpose(1, 2))  # M = xᵀg: (inst, n, n); dL/dW: (inst, m, n)
    return loss.mean(-1), gW, torch.stack([g.sum(-1) for g in gs], -1)


def grads_bmm(
    output: Output,
    hidden: Hidden | None,
    x: torch.Tensor,
    imp: torch.Tensor,
    W: torch.Tensor,
    b: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """As grads_gram for any tied kind, through h = Wx; x: (inst, n, batch)."""
    batch = x.shape[-1]
    h = torch.bmm(W, x)  # (inst, m, batch)
    hp, back = hidden(h) if hidden is not None else (h, None)  # h' = hidden(h)
    # + b after the product, not baddbmm's input: Inductor adds it inside the output's fused
    # loop, where baddbmm first copied b broadcast to (inst, n, batch) (7% of a 20→5 step)
    z = torch.bmm(W.transpose(1, 2), hp) + b.unsqueeze(-1)  # (inst, n, batch)
    r, g = output(z, x)
    loss = (imp * r.square()).sum(1).mean(-1)
    g = g * (imp * (2.0 / batch))
    dh = torch.bmm(W, g)  # dL/dh': (inst, m, batch)
    if back is not None:
        dh = back(dh)  # dL/dh
    # dL/dW = h' gᵀ + dh xᵀ, computed transposed: (dL/dW)ᵀ = g h'ᵀ + x dhᵀ reads the big
    # (inst, n, batch) arrays g and x in the layout they were written in, and only the small
    # (inst, m, batch) ones transposed. The other order made Inductor copy g and x into a
    # transposed layout first: 11% of a compiled 20→5 step (torch.profiler, 1 thread).
    gWt = torch.baddbmm(torch.bmm(g, hp.transpose(1, 2)), x, dh.transpose(1, 2))  # (inst, n, m)
    return loss, gWt.transpose(1, 2), g.sum(-1)


def chunk_grads(
    fused: Fused, gram: bool, x: torch.Tensor, imp: torch.Tensor, params: list[torch.Tensor]
) -> tuple[torch.Tensor, ...]:
    """(loss, dL/dW, dL/db[, dL/dW_out]) of one chunk, by the form the kind's record gives."""
    if fused.grads is not None:
        return fused.grads(x, imp, *params)
    assert fused.output is not None
    if gram:
        return grads_gram(fused.output, x, imp, *params)
    return grads_bmm(fused.output, fused.hidden, x, imp, *params)


def adamw_(
    p: torch.Tensor, g: torch.Tensor, m: torch.Tensor, v: torch.Tensor, coef: torch.Tensor
) -> None:
    """torch.optim.AdamW's update, in place. coef: [lr, lr·wd, lr/bc1, sqrt(bc2)] (tensor)."""
    b1, b2 = BETAS
    p.mul_(1 - coef[1])
    m.lerp_(g, 1 - b1)
    v.mul_(b2).addcmul_(g, g, value=1 - b2)
    # as addcdiv_(m, denom, value=-step_size), which cannot take a tensor step size
    p.sub_(coef[2] * m / (v.sqrt() / coef[3]).add_(EPS))


def train_chunk(
    fused: Fused,
    gram: bool,
    data: Data,
    u: torch.Tensor,
    index: torch.Tensor | None,
    p: torch.Tensor,
    imp: torch.Tensor,
    params: list[torch.Tensor],
    moments: list[torch.Tensor],
    coef: torch.Tensor,
) -> torch.Tensor:
    """One step for one chunk: inputs, loss and gradients, AdamW in place; returns the losses.

    params: [W, b] or [W, b, W_out]; moments: [m, v] of each, in the same order.
    """
    x = chunk_inputs(u, p, index, data)  # (inst, feat, batch)
    loss, *grads = chunk_grads(fused, gram, x, imp, params)
    for k, (param, grad) in enumerate(zip(params, grads, strict=True)):
        adamw_(param, grad, moments[2 * k], moments[2 * k + 1], coef)
    return loss


def eval_chunk(
    fused: Fused,
    gram: bool,
    data: Data,
    u: torch.Tensor,
    index: torch.Tensor | None,
    p: torch.Tensor,
    imp: torch.Tensor,
    params: list[torch.Tensor],
) -> torch.Tensor:
    x = chunk_inputs(u, p, index, data)
    return chunk_grads(fused, gram, x, imp, params)[0]


def chunk_layout(
    inst: int, per_inst: int, unit: int, elements: int = CHUNK_ELEMENTS
) -> tuple[int, int]:
    """(chunks, chunk size): equal chunks of whole units (cells) of about `elements`.

    Equal sizes give one compiled kernel per block (a shorter last chunk would compile again);
    the block is padded up to chunks × size with inert instances.
    """
    size = max(1, elements // (per_inst * unit)) * unit
    k = math.ceil(inst / size)
    return k, math.ceil(inst / k / unit) * unit


class FusedTrainer:
    """Training state of one block on the fused path: W, b (and W_out of an untied kind), their
    AdamW moments, the data sampler. The block is padded to equal chunks with inert instances
    (density 1, importance 0: zero gradients); W, b, W_out are views of the real ones."""

    backend = "fused"

    def __init__(
        self,
        spec: KindSpec,
        W0: torch.Tensor,
        b0: torch.Tensor,
        imp: torch.Tensor,
        sampler: FeatureSampler,
        lr: float,
        weight_decay: float,
        lr_factor: Any,
        compile: bool | str,
        W_out0: torch.Tensor | None = None,
        work: float = 0.0,
        evals: float = 0.0,
        compile_cache: str | None = None,
    ):
        inst, m, n = W0.shape
        assert spec.fused is not None, f"{spec.name} has no fused form"
        self.fused, self.sampler = spec.fused, sampler
        self.lr, self.wd, self.lr_factor = lr, weight_decay, lr_factor
        if isinstance(sampler, GroupedSampler):  # correlated / anticorrelated sets
            self.data: Data = (sampler.kind, False, sampler.size)
            p = sampler.p_set  # (inst, 1, sets)
            width = n + 2 * sampler.sets  # uniforms per sample row
        else:
            self.data, p, width = ("none", sampler.signed, 1), sampler.p, n  # p: (inst, 1, feat)
        unit = len(sampler.unique) if sampler.tiled else 1
        self.compiled = should_compile(compile, W0.device.type, work)
        self.gram = use_gram(spec.fused, n, m, self.compiled)
        elements = CHUNK_ELEMENTS
        if self.compiled:
            elements = CHUNK_ELEMENTS_GRAM if self.gram else CHUNK_ELEMENTS_COMPILED
        k, size = chunk_layout(inst, sampler.batch * width, unit, elements)
        pad = k * size - inst
        self.chunks = [(a, a + size) for a in range(0, k * size, size)]

        def padded(t: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
            # contiguous either way: a package is named by its inputs' strides, and a padded
            # and an unpadded block of one chunk size must name the same one
            if pad:
                return torch.cat([t, t.new_full((pad, *t.shape[1:]), fill)])
            return t.clone(memory_format=torch.contiguous_format)

        self.params = [padded(W0), padded(b0)]  # (inst', m, n), (inst', n)
        if spec.untied:
            assert W_out0 is not None
            self.params.append(padded(W_out0))  # (inst', n, m)
        self.moments = [torch.zeros_like(t) for t in self.params for _ in (0, 1)]
        self.W, self.b = self.params[0][:inst], self.params[1][:inst]
        self.W_out = self.params[2][:inst] if spec.untied else None
        self.imp = padded(imp.reshape(inst, n, 1))  # (inst', feat, 1); 0: inert padding
        self.p = padded(p.transpose(1, 2), 1.0)  # (inst', P, 1)
        self.index = None if sampler.tiled else padded(sampler.seed_index)  # (inst',)
        self.steps_done = 0
        # Evaluation: 8 forward passes (~1/3 of a step each), compiled only when that pays.
        self.eval_compiled = should_compile(compile, W0.device.type, evals)
        # Compiled: an AOTInductor package per chunk shape, built once into train.compile_cache
        # and loaded without Dynamo afterwards (sweep.packages).
        self._train: Callable[..., torch.Tensor] = train_chunk
        self._eval: Callable[..., torch.Tensor] = eval_chunk
        if self.compiled:
            self._train = Packaged(
                train_chunk, spec.name, spec.fused, compile_cache, PER_INSTANCE, unit
            )
        if self.eval_compiled:
            self._eval = Packaged(
                eval_chunk, spec.name, spec.fused, compile_cache, PER_INSTANCE, unit
            )

    def _index(self, a: int, z: int) -> torch.Tensor | None:
        return None if self.index is None else self.index[a:z]

    def _uniforms(self, sampler: FeatureSampler) -> torch.Tensor:
        return sampler.uniforms().transpose(1, 2).contiguous()  # (seeds, U, batch)

    def step(self, step: int) -> torch.Tensor:
        """Train every instance one step; returns the training losses (inst,) before it."""
        t = step + 1
        lr = self.lr * self.lr_factor(step)
        b1, b2 = BETAS
        coef = torch.tensor(
            [lr, lr * self.wd, lr / (1 - b1**t), math.sqrt(1 - b2**t)],
            dtype=self.W.dtype,
            device=self.W.device,
        )
        u = self._uniforms(self.sampler)
        losses = torch.empty(self.chunks[-1][1], dtype=self.W.dtype, device=self.W.device)
        for a, z in self.chunks:
            args = (
                self.fused,
                self.gram,
                self.data,
                u,
                self._index(a, z),
                self.p[a:z],
                self.imp[a:z],
                [q[a:z] for q in self.params],
                [q[a:z] for q in self.moments],
                coef,
            )
            try:
                losses[a:z] = self._train(*args)
            except Exception as e:  # compiling failed (before any state changed): go eager
                if not self.compiled:
                    raise
                warn_compile_failed(e)
                self.compiled, self._train = False, train_chunk
                self.eval_compiled, self._eval = False, eval_chunk
                losses[a:z] = self._train(*args)
        self.steps_done = t
        return losses[: self.W.shape[0]]

    @torch.no_grad()
    def losses(self, sampler: FeatureSampler) -> torch.Tensor:
        """Loss of every instance on one fresh batch from `sampler`: (inst,)."""
        u = self._uniforms(sampler)
        out = torch.empty(self.chunks[-1][1], dtype=self.W.dtype, device=self.W.device)
        for a, z in self.chunks:
            out[a:z] = self._eval(
                self.fused,
                self.gram,
                self.data,
                u,
                self._index(a, z),
                self.p[a:z],
                self.imp[a:z],
                [q[a:z] for q in self.params],
            )
        return out[: self.W.shape[0]]

    def state_dict(self) -> dict:
        inst = self.W.shape[0]
        return {
            "params": [q[:inst] for q in self.params],
            "moments": [q[:inst] for q in self.moments],
            "steps_done": self.steps_done,
        }

    def load_state_dict(self, state: dict) -> None:
        inst = self.W.shape[0]
        for q, saved in zip(
            [*self.params, *self.moments], [*state["params"], *state["moments"]], strict=True
        ):
            q[:inst].copy_(saved)
        self.steps_done = int(state["steps_done"])


def warn_compile_failed(e: Exception) -> None:
    warnings.warn(
        f"compiling the step failed ({type(e).__name__}: {e}); training uncompiled", stacklevel=2
    )
