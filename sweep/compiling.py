"""Whether a shape's training step is compiled (train.compile), and Inductor's settings for
compiling it (`sweep.packages` builds the compiled step). Imports no torch: the rule is cheap
to ask anywhere.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from typing import Any

# Costs behind train.compile=auto, measured on the 2-core build machine (AMD EPYC, AVX2), one
# thread, load 2-6 (other jobs running), float32, batch 1024, per element-step (one instance ×
# batch row × feature, one training step):
# - fused eager: 2.2e7/s (2→1), 1.4e7/s (20→5);
# - fused compiled: 4.5e8/s (2→1; 1.5-2e9/s since the gram form's one-loop rewrite, idle),
#   1.2e8/s (20→5): 4-20× faster;
# - compiling one block's step: 30-48 s with an empty cache (torch.compile then; an AOTInductor
#   package now, sweep.packages: 8-10 s for a 2→1 step); loading it later: milliseconds.
# Compiling pays when the eager run would take longer than compiling plus the compiled run.
EAGER_RATE = 1.4e7
COMPILED_RATE = 1.2e8
COMPILE_COLD_S = 50.0
EVALS_PER_STEP = 8 / 3  # a job's evaluation: 8 forward passes of ~1/3 of a step each


def compiler_available(device_type: str) -> bool:
    """Whether torch.compile can build kernels here (C++ on the CPU, Triton on a GPU)."""
    if device_type == "cuda":
        return importlib.util.find_spec("triton") is not None
    return any(shutil.which(c) for c in ("g++", "c++", "clang++"))


def should_compile(setting: Any, device_type: str, work: float) -> bool:
    """train.compile: true / false, or auto = when a compiler exists and compiling saves time.

    work: the element-steps (inst × batch × feat × steps) of the job's shape over the whole
    grid, never of the job alone, nor the cache's state: compiled and eager kernels round
    differently (~1e-7), so every job of a shape, however the chunks are grouped and whatever
    the cache holds, must decide alike for a retrained chunk to equal its first training bit
    for bit. (A warm cache only makes the compile itself shorter.)
    """
    if isinstance(setting, bool):
        return setting
    if device_type == "cuda":  # no measurements on a GPU here: compile large work only
        return compiler_available(device_type) and work >= 1e10
    saved = work / EAGER_RATE - work / COMPILED_RATE
    return saved > COMPILE_COLD_S and compiler_available(device_type)


def shape_work(instances: int, features: int, batch: int, steps: int) -> tuple[float, float]:
    """(training, evaluation) element-steps of a shape's `instances` models over the grid."""
    rows = float(instances) * features * batch  # one step's elements
    return rows * steps, rows * EVALS_PER_STEP


def use_compile_cache(path: str | None) -> None:
    """Inductor's settings for compiling a step, its caches in `path` (train.compile_cache).

    Inductor's FX graph cache and AOTAutograd's cache (on by default in torch 2.13) live under
    TORCHINDUCTOR_CACHE_DIR: a package of a step whose graph was compiled before (other code
    around it changed) skips code generation.
    """
    if not path:
        return
    import torch._functorch.config as aot
    import torch._inductor.config as inductor

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.expanduser(path)
    inductor.fx_graph_cache = True
    aot.enable_autograd_cache = True
    # Inductor checks in every process that the CPU's vector ISA builds and loads by compiling
    # and dlopen-ing probes in child interpreters: 1.5-10 s per process on the 2-core machine
    # (load 2-10), warm cache or not. The ISA it picks is the one CPUID reports (torch.cpu), so
    # trusting that picks the same kernels; a compiler that cannot build them still fails the
    # compile, which FusedTrainer meets by training eager.
    inductor.cpp.vec_isa_ok = True
    # One process compiles its own kernels: a pool of compile subprocesses (one per core by
    # default) only adds start-up on a machine whose cores already run one job each.
    inductor.compile_threads = 1
