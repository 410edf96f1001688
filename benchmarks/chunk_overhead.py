"""Per-chunk cost of the store: write a chunk's region (`writes.write_chunk`) and check it
complete (`writes.finished_chunks`: sweep.integrity's records), for the 2→1 phase grid cut
into chunks of several sizes. No training: each chunk's values are random numbers of the right
shapes. Justifies grid.py's MIN_CHUNK. Run: `python benchmarks/chunk_overhead.py` (prints ms
per chunk and per model)."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from omegaconf import open_dict

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sweep import grid, layout, writes  # noqa: E402
from sweep.blocks import TrainResult  # noqa: E402
from sweep.grid import GridPlan  # noqa: E402
from tests.conftest import make_config  # noqa: E402


def measure(size: int) -> tuple[int, float, float]:
    """(chunks, ms per chunk write, ms per chunk check) with chunks of at most `size` models."""
    grid.SPREAD, grid.MIN_CHUNK = 10**9, size  # chunks of at most `size` models
    cfg = make_config(["+grid=phase", "workers=1"])
    with tempfile.TemporaryDirectory() as tmp:
        with open_dict(cfg):
            cfg.store.path = str(Path(tmp) / "s")
        plan = GridPlan(cfg)
        path = layout.create(Path(cfg.store.path), plan, cfg)
        rng = np.random.default_rng(0)
        points = len(np.asarray(layout.template(plan, cfg)["curve_step"]))
        t0 = time.perf_counter()
        for b in plan.blocks:
            n = b.size
            W, b_ = rng.normal(size=(n, 1, 2)), rng.normal(size=(n, 2))
            loss, curve = rng.random(n), rng.random((n, points))
            res = TrainResult(W, b_, loss, curve, np.zeros(n, bool), 0, 0)
            writes.write_chunk(path, plan, b, res)
        write = time.perf_counter() - t0
        t0 = time.perf_counter()
        assert len(writes.finished_chunks(path, plan)) == len(plan.blocks)
        check = time.perf_counter() - t0
    k = len(plan.blocks)
    return k, 1e3 * write / k, 1e3 * check / k


if __name__ == "__main__":
    for size in (15, 75, 375, 1125):
        k, w, c = measure(size)
        print(
            f"chunks of <= {size:5d} models: {k:4d} chunks, write {w:6.1f} ms/chunk, "
            f"check {c:6.1f} ms/chunk, {(w + c) * k / 1125:6.2f} ms per model"
        )
