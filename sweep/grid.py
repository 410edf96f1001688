"""Grid expansion: validated config -> shapes, storage chunks and per-instance settings.

A sweep's config names axes in `grid.axes`. Axes that change tensor shapes (`SHAPE_AXES`) split
the sweep into separate tensors; the others (`VECTOR_AXES`) and the seeds are vectorised into
the leading instance axis of one tensor. The store is cut into *chunks* (`Block`): hyper-
rectangles of cells of one shape, the store's zarr chunks, a fixed function of the grid and the
memory budget (never of the worker count or the machine). A job trains any set of chunks of
one shape as one tensor (sweep.jobs decides which, per run) and writes each chunk's region, so
concurrent writers never share a chunk. Everything here is pure and deterministic, so the driver
and every job derive the same plan from the same config.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from omegaconf import OmegaConf

from sweep import kinds
from sweep.blocks import BlockJob, snapshot_steps
from sweep.cores import resolve_workers
from sweep.validate import CORRELATIONS, MAX_AXIS, MAX_CELLS, ConfigError, check_config

# Axes that give separate jobs: they change tensor shapes, or (correlation) the data sampler.
SHAPE_AXES = ("model", "n_features", "n_hidden", "correlation")
VECTOR_AXES = ("density", "relative_importance")
# A zipped axis of shape axes: `grid.axes.shape: [{n_features: 2, n_hidden: 1}, ...]` sweeps
# those pairs, not their product. Its store dim `shape` has one string label per entry
# (`"2-1"`) and the entries' values as coords along it (`n_features(shape)`, `n_hidden(shape)`),
# so a cell is addressed by its label or by (n, m).
ZIP_AXIS = "shape"
SHAPE_DIMS = (*SHAPE_AXES, ZIP_AXIS)  # store dims of which a chunk holds one value
# Bytes of working memory per (instance, batch row, feature) during one training step, by
# train.backend. autograd: the sampled input, pre-activation, output and their autograd buffers
# (about 12 float32 tensors of that shape alive at the peak; measured 32 B at 20,000 2→1
# instances). fused: works through cache-sized instance chunks, so a job's peak is ~30-90 MB
# whatever its size plus its weights and AdamW state (measured peak RSS ≤ 2.2 B per element
# for 2→1 at 2,000-100,000, 20→5 at 1,000, 200→20 at 200 instances); 4 B leaves a margin.
BYTES_PER_ELEMENT = {"autograd": 12 * 4, "fused": 4}
# Floor of one job's working memory whatever its chunking, per (seed, batch row, feature): a
# chunk holds at least one whole cell, whose sampled uniforms, their feature-major copy and
# the step's buffers stay alive together. Measured peak RSS of one 2→1 model at batch 1M and
# 4M (fused, uncompiled): 68 and 79 B per element; 96 leaves a margin.
FLOOR_BYTES_PER_ELEMENT = 96
# Storage chunks are small enough that any machine can spread a shape over its workers: a shape
# is cut into about SPREAD chunks, but none under MIN_CHUNK models, since each chunk costs a
# fixed overhead per write and per completeness check. Measured (benchmarks/chunk_overhead.py,
# 2→1 phase grid, the 2-core build machine at load 7-10): writing a chunk and checking it
# complete costs ~50 ms plus ~1.6 ms per model (15-model chunks: 77 ms each, 75-model: 174 ms).
# At 128 models or more the fixed part is under a fifth of a chunk's store time, and the default
# 1,125-model grid (15 chunks of 75) spends ~1 s more on its store than in 2 chunks, against
# ~30 s of training, while 15 workers can share it. Changing these changes the format.
SPREAD = 64
MIN_CHUNK = 128


@dataclass(frozen=True)
class Shape:
    """One combination of the shape axes: one tensor shape, one model kind."""

    model: str
    n_features: int
    n_hidden: int
    correlation: str = "none"  # none | correlated | anticorrelated feature sets

    def key(self) -> str:
        tail = "" if self.correlation == "none" else f"-{self.correlation}"
        return f"{self.model}-{self.n_features}-{self.n_hidden}{tail}"


@dataclass(frozen=True)
class Block:
    """One storage chunk: a hyper-rectangle of cells of one shape, written as one region."""

    shape: Shape
    index: int  # chunk number within its shape
    slices: dict[str, slice]  # store dim -> region (shape dims included, one index each)

    def key(self) -> str:
        return f"{self.shape.key()}-c{self.index}"

    @property
    def size(self) -> int:
        """Number of cells (models) in the block."""
        return math.prod(sl.stop - sl.start for sl in self.slices.values())


@dataclass
class Instances:
    """Per-instance settings of one block, flattened in C order of the block's dims."""

    seed: np.ndarray  # (inst,) int
    density: np.ndarray  # (inst, feat)
    importance: np.ndarray  # (inst, feat)
    block_shape: tuple[int, ...]  # shape of the block over the store's cell dims


def axis_values(spec: Any, key: str) -> list:
    """Expand an axis: a list of values, or [log|lin, start, stop, num] for spaced values.

    Always a list, so a command-line override (a list) replaces a grid file's axis whole.
    """
    if not isinstance(spec, (list, tuple)):
        raise ConfigError(
            key, spec, "a list of values, or [log, start, stop, num] / [lin, start, stop, num]"
        )
    if spec and spec[0] in ("log", "lin"):
        kind, args = spec[0], list(spec[1:])
        if (
            len(args) != 3
            or not all(_is_number(v) for v in args)
            or int(args[2]) != args[2]
            or args[2] < 1
        ):
            raise ConfigError(
                key, list(spec), f"[{kind}, start, stop, num] with numbers and an integer num >= 1"
            )
        start, stop, num = args
        if num > MAX_AXIS:
            raise ConfigError(key, list(spec), f"at most {MAX_AXIS} values on one axis")
        if kind == "log":
            if start <= 0 or stop <= 0:
                raise ConfigError(key, list(spec), "[log, start, stop, num] with start, stop > 0")
            return [float(v) for v in np.geomspace(start, stop, int(num))]
        return [float(v) for v in np.linspace(start, stop, int(num))]
    return list(spec)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def shape_label(entry: dict[str, Any]) -> str:
    """The `shape` coordinate of a zipped entry: its values in SHAPE_AXES order, `"4-2"`."""
    return "-".join(str(entry[k]) for k in SHAPE_AXES if k in entry)


def zipped_shapes(spec: Any, others: Collection[str]) -> list[dict[str, Any]]:
    """Check and return the entries of `grid.axes.shape`: a non-empty list of mappings over the
    same shape axes, none of which is also an axis of its own (`others`), each value allowed on
    that axis, no entry twice."""
    key = f"grid.axes.{ZIP_AXIS}"
    what = (
        "a non-empty list of mappings over shape axes, e.g. "
        "[{n_features: 2, n_hidden: 1}, {n_features: 3, n_hidden: 2}]"
    )
    if not isinstance(spec, (list, tuple)) or not spec:
        raise ConfigError(key, spec, what)
    entries = [dict(e) if isinstance(e, dict) else e for e in spec]
    first = entries[0]
    for e in entries:
        if not isinstance(e, dict) or not e:
            raise ConfigError(key, e, what)
        bad = [k for k in e if k not in SHAPE_AXES]
        if bad:
            raise ConfigError(key, e, f"keys among {', '.join(SHAPE_AXES)} (not {bad[0]!r})")
        if isinstance(first, dict) and set(e) != set(first):
            raise ConfigError(key, e, f"the keys of the first entry, {sorted(first)}, in each")
        twice = [k for k in e if k in others]
        if twice:
            raise ConfigError(
                key, e, f"entries without {twice[0]}, which grid.axes.{twice[0]} sweeps already"
            )
        for k, v in e.items():
            try:
                _check_axis_value(k, v, key)
            except ConfigError as err:  # name the whole entry and which of its keys is bad
                raise ConfigError(key, e, f"{k}: {err.allowed}") from None
    labels = [shape_label(e) for e in entries]
    for i, label in enumerate(labels):
        if label in labels[:i]:
            raise ConfigError(key, entries[i], "distinct entries (this one is listed twice)")
    return entries


def importance_schedule(spec: dict, n: int) -> np.ndarray:
    """Importance of each of n features from `data.importance`."""
    kind = spec.get("schedule", "constant")
    i = np.arange(n, dtype=np.float64)
    if kind == "constant":
        return np.full(n, float(spec.get("value", 1.0)))
    if kind == "geometric":  # I_i = ratio^i, as in the paper
        return float(spec["ratio"]) ** i
    if kind == "linear":  # from start to end, evenly spaced
        return np.linspace(float(spec["start"]), float(spec["end"]), n)
    if kind == "exponential":  # from start to end, evenly spaced in log
        return np.geomspace(float(spec["start"]), float(spec["end"]), n)
    raise ConfigError(
        "data.importance.schedule", kind, "one of constant, geometric, linear, exponential"
    )


class GridPlan:
    """The expanded grid of a (validated) config: dims, coords, shapes and blocks."""

    def __init__(self, cfg: Any):
        check_config(cfg)
        self.cfg = cfg
        axes = cast(
            dict, OmegaConf.to_container(cfg.grid.axes, resolve=True) if cfg.grid.axes else {}
        )
        # grid.axes.shape: pairs (or tuples) of shape axes swept together, not their product
        self.zipped: list[dict[str, Any]] = (
            zipped_shapes(axes[ZIP_AXIS], [str(k) for k in axes if k != ZIP_AXIS])
            if ZIP_AXIS in axes
            else []
        )
        self.zip_keys = [k for k in SHAPE_AXES if self.zipped and k in self.zipped[0]]
        self.axes: dict[str, list] = {
            str(k): [shape_label(e) for e in self.zipped]
            if k == ZIP_AXIS
            else axis_values(v, f"grid.axes.{k}")
            for k, v in axes.items()
        }
        check_axes(self.axes)
        seeds = cfg.grid.seeds
        self.seeds = list(range(int(seeds))) if isinstance(seeds, int) else [int(s) for s in seeds]
        self.cell_dims = [*self.axes, "seed"]  # dims of one cell (one trained model)
        self.coords: dict[str, list] = {**self.axes, "seed": self.seeds}

        def values(name: str) -> list:
            if name == "correlation":
                return self.axes.get(name, [cfg.data.correlation])
            return self.axes.get(name, [cfg.model.get("kind" if name == "model" else name)])

        free = [d for d in SHAPE_AXES if d not in self.zip_keys]
        self.shapes = []
        for vals in itertools.product(*(values(d) for d in free), self.zipped or [{}]):
            one = {**dict(zip(free, vals[:-1], strict=True)), **vals[-1]}
            self.shapes.append(
                Shape(
                    str(one["model"]),
                    int(one["n_features"]),
                    int(one["n_hidden"]),
                    str(one["correlation"]),
                )
            )
        for s in self.shapes:
            if s.correlation != "none" and s.n_features % int(cfg.data.set_size):
                raise ConfigError(
                    "data.set_size",
                    cfg.data.set_size,
                    f"a divisor of n_features={s.n_features} (features come in sets of this size)",
                )
            why = kinds.get(s.model).check(s)
            if why:
                key = "model.kind" if "model" not in self.axes else "grid.axes.model"
                raise ConfigError(key, s.model, f"{why}, not correlation={s.correlation}")
        if self.n_cells > MAX_CELLS:
            raise ConfigError(
                "grid",
                f"{self.n_cells} cells",
                f"at most {MAX_CELLS:,} models in one store (split the sweep into several stores)",
            )
        self.max_features = max(s.n_features for s in self.shapes)
        self.max_hidden = max(s.n_hidden for s in self.shapes)
        self.workers = resolve_workers(cfg.get("workers", 1))  # jobs trained at once
        self.job_cap = self._instances_cap()  # most models in one job (one tensor)
        self.chunks = self._chunk_sizes()
        self.blocks = [b for s in self.shapes for b in self._blocks(s)]
        self._by_key = {b.key(): b for b in self.blocks}
        self.block_keys = set(self._by_key)

    def shape_coord(self, shape: Shape, dim: str) -> Any:
        """A shape's coordinate along one of the store's shape dims (SHAPE_DIMS)."""
        if dim == ZIP_AXIS:
            return shape_label({k: getattr(shape, k) for k in self.zip_keys})
        return getattr(shape, dim)

    @property
    def n_cells(self) -> int:
        return math.prod(len(v) for v in self.coords.values())

    def _instances_cap(self) -> int:
        """Most models one job may hold under the memory budget (and chunk.max_instances)."""
        per_elem = BYTES_PER_ELEMENT[str(self.cfg.train.backend)]
        batch = int(self.cfg.train.batch_size)
        per_inst = batch * self.max_features * per_elem
        # train.snapshots: W, b (and W_out) per snapshot, held by the job until it writes, in
        # float64 at most plus the float32 padded copy written to the store
        snaps = len(snapshot_steps(self.cfg.train.get("snapshots"), int(self.cfg.train.steps)))
        per_inst += snaps * (2 * self.max_hidden + 1) * self.max_features * 12
        budget = float(self.cfg.chunk.memory_mb) * 2**20
        # weights, gradients and AdamW moments of one model: ~8 float64-sized (hidden, feat)
        weights = self.max_hidden * self.max_features * 8 * 8
        per_inst += weights
        floor = len(self.seeds) * (batch * self.max_features * FLOOR_BYTES_PER_ELEMENT + weights)
        if floor > budget:
            raise ConfigError(
                "train.batch_size",
                batch,
                f"a batch whose working memory fits chunk.memory_mb="
                f"{self.cfg.chunk.memory_mb} MiB (batch {batch} × "
                f"{self.max_features} features × {len(self.seeds)} seeds needs "
                f"about {floor / 2**20:,.0f} MiB)",
            )
        cap = int(budget // per_inst)
        if cap < 1:
            raise ConfigError(
                "chunk.memory_mb",
                self.cfg.chunk.memory_mb,
                f"at least {per_inst / 2**20:.1f} MiB, the working memory of one "
                f"model (batch {self.cfg.train.batch_size} × "
                f"{self.max_features} features)",
            )
        if self.cfg.chunk.get("max_instances"):
            cap = min(cap, int(self.cfg.chunk.max_instances))
        return cap

    def _chunk_sizes(self) -> dict[str, int]:
        """Chunk length per cell dim: 1 on shape dims, then fit vector dims + seed under the cap.

        Dims are cut from the left: the leading vectorised dim shrinks first, so a chunk is a
        slab of whole rows of the later dims whenever that fits; cuts are balanced (15 rows in
        chunks of at most 8: 8 + 7, not 8 + 7 + 0).
        """
        free = [d for d in self.cell_dims if d not in SHAPE_DIMS]
        per_shape = math.prod(len(self.coords[d]) for d in free)
        cap = min(self.job_cap, max(MIN_CHUNK, math.ceil(per_shape / SPREAD)))
        chunks = {d: 1 if d in SHAPE_DIMS else len(self.coords[d]) for d in self.cell_dims}
        for i, d in enumerate(free):
            rest = math.prod(chunks[e] for e in free[i + 1 :])
            if chunks[d] * rest <= cap:
                break
            n = len(self.coords[d])
            chunks[d] = math.ceil(n / math.ceil(n / max(1, cap // rest)))
        return chunks

    def _blocks(self, shape: Shape) -> list[Block]:
        ranges = []
        for d in self.cell_dims:
            if d in SHAPE_DIMS:
                i = self.coords[d].index(self.shape_coord(shape, d))
                ranges.append([slice(i, i + 1)])
            else:
                n, c = len(self.coords[d]), self.chunks[d]
                ranges.append([slice(a, min(a + c, n)) for a in range(0, n, c)])
        return [
            Block(shape, k, dict(zip(self.cell_dims, sl, strict=False)))
            for k, sl in enumerate(itertools.product(*ranges))
        ]

    def block(self, key: str) -> Block:
        """The chunk of a key (`<shape>-c<k>`)."""
        if key not in self._by_key:
            raise ConfigError("block", key, f"one of the {len(self.blocks)} chunks of this grid")
        return self._by_key[key]

    def importance(self, shape: Shape, relative_importance: float) -> np.ndarray:
        """Importance vector of one cell: the schedule, with chosen features scaled by r."""
        imp = importance_schedule(dict(self.cfg.data.importance), shape.n_features)
        for f in self.cfg.data.relative_importance_features:
            imp[f] *= relative_importance
        return imp

    def density(self, shape: Shape, density: float) -> np.ndarray:
        """Density vector of one cell: the axis value on chosen features, the base elsewhere."""
        n = shape.n_features
        feats = self.cfg.data.density_features
        if feats is None:
            return np.full(n, density)
        dens = np.full(n, float(self.cfg.data.density))
        dens[list(feats)] = density
        return dens

    def cell_settings(self, cell: dict[str, Any]) -> tuple[Shape, np.ndarray, np.ndarray]:
        """(shape, density, importance) of one cell given its coords (seed not needed): the one
        place where a cell's per-feature settings are derived (plan and store template)."""
        shape = next(
            s
            for s in self.shapes
            if all(str(self.shape_coord(s, d)) == str(cell[d]) for d in SHAPE_DIMS if d in cell)
        )
        dens = self.density(shape, cell.get("density", float(self.cfg.data.density)))
        return shape, dens, self.importance(shape, cell.get("relative_importance", 1.0))

    def instances(self, block: Block) -> Instances:
        """Per-instance seed, density and importance of a block (C order over its dims)."""
        sub = {d: self.coords[d][block.slices[d]] for d in self.cell_dims}
        seeds, dens, imps = [], [], []
        for cell in itertools.product(*sub.values()):
            c = dict(zip(self.cell_dims, cell, strict=False))
            seeds.append(c["seed"])
            _, d, i = self.cell_settings(c)
            dens.append(d)
            imps.append(i)
        return Instances(
            np.array(seeds), np.array(dens), np.array(imps), tuple(len(v) for v in sub.values())
        )

    def job(self, blocks: list[Block], key: str | None = None) -> BlockJob:
        """The typed job of a set of chunks of one shape, trained as one tensor: their
        instances concatenated in the order given (what `sweep.train.train_block` trains).
        key: the job's name (default: `job_name` of the chunks)."""
        key = key or job_name(blocks)
        shape = blocks[0].shape
        if any(b.shape != shape for b in blocks):
            raise ConfigError("block", key, "chunks of one shape")
        inst = [self.instances(b) for b in blocks]
        train = self.cfg.train
        if OmegaConf.is_config(train) and OmegaConf.get_type(train) is not dict:
            train = OmegaConf.to_object(train)  # the schema's TrainConfig
        return BlockJob(
            key,
            shape.model,
            shape.n_hidden,
            np.concatenate([x.seed for x in inst]),  # (inst,)
            np.concatenate([x.density for x in inst]),  # (inst, feat)
            np.concatenate([x.importance for x in inst]),  # (inst, feat)
            train,
            shape.correlation,
            int(self.cfg.data.set_size),
            sum(b.size for b in self.blocks if b.shape == shape),
        )


def job_name(blocks: list[Block]) -> str:
    """A job's name: its shape and its (contiguous) chunk range, `<shape>-c3..c7` or `-c3`."""
    a, b = blocks[0].index, blocks[-1].index
    return f"{blocks[0].shape.key()}-c{a}" + (f"..c{b}" if b != a else "")


def check_axes(axes: dict[str, list]) -> None:
    """Axis names and values: known names, non-empty, distinct, in range."""
    for name, vals in axes.items():
        key = f"grid.axes.{name}"
        if name not in SHAPE_DIMS + VECTOR_AXES:
            raise ConfigError(
                "grid.axes", name, f"an axis among {', '.join(SHAPE_DIMS + VECTOR_AXES)}"
            )
        if len(vals) == 0:
            raise ConfigError(key, "[]", "a non-empty list of values")
        if len(vals) > MAX_AXIS:
            raise ConfigError(key, f"{len(vals)} values", f"at most {MAX_AXIS} values")
        # 1 and 1.0 are the same coordinate: compare numbers as numbers, anything else as text
        seen = {float(v) if _is_number(v) else str(v) for v in vals}
        if len(seen) != len(vals):
            raise ConfigError(key, list(vals), "distinct values (no duplicates)")
        if name == ZIP_AXIS:  # labels of entries checked by zipped_shapes
            continue
        for v in vals:
            _check_axis_value(name, v, key)


def _check_axis_value(name: str, v: Any, key: str) -> None:
    """One value of axis `name` (given under `key`: the axis, or an entry of the shape axis)."""
    if name == "model":
        if v not in kinds.KINDS:
            raise ConfigError(key, v, f"one of {', '.join(kinds.KINDS)}")
    elif name == "correlation":
        if v not in CORRELATIONS:
            raise ConfigError(key, v, f"one of {', '.join(CORRELATIONS)}")
    elif name in ("n_features", "n_hidden"):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(key, v, "integers >= 1")
    elif not _is_number(v):
        raise ConfigError(key, v, "finite numbers")
    elif name == "density" and not 0 < v <= 1:
        raise ConfigError(key, v, "densities in (0, 1]")
    elif name == "relative_importance" and v < 0:
        raise ConfigError(key, v, "relative importances >= 0")
