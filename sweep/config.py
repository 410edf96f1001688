"""The typed schema of a sweep's config, registered in Hydra's ConfigStore as `toysweep_schema`,
and the one place every default lives.

conf/config.yaml names it first in its defaults list, so every value given in a YAML file or on
the command line is type- and choice-checked by OmegaConf as it is merged (an unknown model
kind, a string where a number goes, a misspelt key). Ranges are declared here too, beside the
field (`_f(..., lo=1)`), and checked by `sweep.validate`, which otherwise keeps only the rules
that tie several settings together. Importing this module imports no torch.

Why the defaults live here and not in conf/config.yaml: a default needs a type, a range and a
line of documentation, and some are numbers Python code needs without composing a config (the
phase thresholds, sweep.constants, which the analysis reads too). Held here, each is written
once, beside its type and range; conf/config.yaml keeps only what composes the config (the
defaults list, the launcher, Hydra's own settings). Print every resolved default with
`python -m sweep --cfg=job` (`tests/test_one_source.py` fails if a default is set twice).
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore

from sweep.constants import (
    AGGREGATE_RULES,
    DEFAULT_AGGREGATE,
    NORM_THRESHOLD,
    SUPERPOSITION_THRESHOLD,
    THRESHOLD_RANGE,
)
from sweep.kinds import KINDS


class Choice(str, Enum):
    """A string enum whose str() is its value (for messages, paths and YAML)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


# Model kinds come from the registry (sweep/kinds/): a new kind is a choice here at once.
ModelKind = Choice("ModelKind", {k: k for k in KINDS})  # type: ignore[call-overload]


class Schedule(Choice):
    constant = "constant"
    geometric = "geometric"
    linear = "linear"
    exponential = "exponential"


class Correlation(Choice):
    none = "none"
    correlated = "correlated"
    anticorrelated = "anticorrelated"


class LrSchedule(Choice):
    constant = "constant"
    linear = "linear"
    cosine = "cosine"


class DType(Choice):
    float32 = "float32"
    float64 = "float64"


class Backend(Choice):
    fused = "fused"
    autograd = "autograd"


class StoreMode(Choice):
    resume = "resume"
    overwrite = "overwrite"


# The seed rules the analysis knows (sweep.constants), a choice here at once.
Aggregate = Choice("Aggregate", {r: r for r in AGGREGATE_RULES})  # type: ignore[call-overload]


def _f(
    default: Any,
    help: str,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> Any:
    """A field with its one-line help and its allowed range ([lo, hi], ends open if asked)."""
    meta = {"help": help, "lo": lo, "hi": hi, "lo_open": lo_open, "hi_open": hi_open}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    # relu: ReLU(WᵀWx+b), the paper's model; every kind is a module of sweep/kinds/ (their list:
    # REGISTRY in sweep/kinds/__init__.py); a package can add its own (README)
    kind: ModelKind = _f(  # type: ignore[valid-type]
        ModelKind("relu"), "model kind, one of sweep.kinds.KINDS"
    )
    n_features: int = _f(2, "n: features (grid.axes.n_features sweeps it)", lo=1, hi=1_000_000)
    n_hidden: int = _f(1, "m: hidden dimensions (grid.axes.n_hidden sweeps it)", lo=1, hi=1_000_000)


@dataclass
class ImportanceConfig:
    # importance of feature i: constant (value) | geometric (ratio^i) | linear / exponential
    # (start → end over the features)
    schedule: Schedule = _f(Schedule.constant, "importance of feature i across features")
    value: float = _f(1.0, "constant: every feature's importance", lo=0)
    ratio: float = _f(0.7, "geometric: importance ratio^i", lo=0)
    start: float = _f(1.0, "linear/exponential: first feature's importance", lo=0)
    end: float = _f(0.1, "linear/exponential: last feature's importance", lo=0)


@dataclass
class DataConfig:
    # p = 1 - S (S: the paper's sparsity): the base density of every feature (the density axis
    # sets it per cell)
    density: float = _f(
        1.0, "p = 1 - S, probability a feature is nonzero", lo=0, hi=1, lo_open=True
    )
    density_features: list[int] | None = _f(None, "features the density axis sets (null=all)")
    importance: ImportanceConfig = field(default_factory=ImportanceConfig)
    relative_importance_features: list[int] = _f(
        [1], "features whose importance the relative_importance axis scales"
    )
    # features in consecutive sets of set_size: none | correlated (all of a set on together) |
    # anticorrelated (at most one of a set on); the correlation axis sweeps it
    correlation: Correlation = _f(Correlation.none, "feature sets: none/correlated/anticorr.")
    set_size: int = _f(2, "features per correlated/anticorrelated set", lo=1, hi=1_000_000)


@dataclass
class TrainConfig:
    steps: int = _f(10000, "training steps (the paper's notebook: 10,000)", lo=1, hi=10**9)
    batch_size: int = _f(1024, "samples per step", lo=1)
    lr: float = _f(1.0e-3, "AdamW learning rate", lo=0, lo_open=True)
    weight_decay: float = _f(0.01, "AdamW weight decay (its library default, as the paper's)", lo=0)
    # cosine: lr × (1 + cos(π k/steps))/2 at step k = 0..steps-1 (after any warm-up), so it
    # would reach 0 one step after the last
    lr_schedule: LrSchedule = _f(LrSchedule.constant, "lr after warm-up")
    warmup_steps: int = _f(0, "linear warm-up steps before the schedule (< steps)", lo=0)
    curve_points: int = _f(100, "loss-curve samples kept per model", lo=1, hi=100_000)
    # stored as W_snapshot/b_snapshot: null | [100, 1000] | [log, 10, 10000, 30]
    snapshots: Any = _f(
        None,
        "steps (from 1) at which W and b are stored: null, a list, or [log|lin, start, stop, num]",
    )
    device: str = _f("auto", "auto (CUDA when present) | cpu | cuda | cuda:N")
    dtype: DType = _f(DType.float32, "float32 | float64")
    # a job saves its training state this often, to resume after preemption
    checkpoint_seconds: float = _f(60.0, "seconds between training checkpoints", lo=0, lo_open=True)
    # fused: hand-written gradients + AdamW; autograd: the reference path
    backend: Backend = _f(Backend.fused, "fused (fast) | autograd (reference)")
    # auto: compile when it saves time, from measured costs (sweep/compiling.py)
    compile: Any = _f("auto", "compile the fused step (AOTInductor): auto | true | false")
    # Compiled steps (sweep/packages.py) are kept here and loaded by every later job of the same
    # shape (a rerun, a SLURM task on a shared file system) in milliseconds instead of ~10 s.
    compile_cache: str | None = _f(
        "${oc.env:XDG_CACHE_HOME,${oc.env:HOME,/tmp}/.cache}/toysweep/inductor",
        "directory of the compiled steps and Inductor's caches (null: torch's default)",
    )
    threads: int = _f(
        0, "torch threads per job (0: this job's share of the idle cores)", lo=0, hi=4096
    )


@dataclass
class GridConfig:
    # seeds are vectorised like the axes
    seeds: Any = _f(5, "N (seeds 0..N-1) or a list of seeds")
    # vectorised axes: density, relative_importance; one job per shape: model, n_features,
    # n_hidden, correlation
    axes: dict[str, Any] = _f({}, "axis name -> values, or [log|lin, start, stop, num]")


@dataclass
class ChunkConfig:
    # jobs and storage chunks fit under it; the store's chunks depend only on it and the grid
    memory_mb: float = _f(2048, "working-memory budget of one job, MiB", lo=0, lo_open=True)
    max_instances: int | None = _f(
        None, "optional cap on models per job and per chunk (smaller jobs for a cluster)", lo=1
    )


@dataclass
class StoreConfig:
    path: str = _f("results/${name}", "the zarr store of this sweep")
    # resume: train only unfinished cells; overwrite: replace the store (the old store stays
    # until the new one's first block is written)
    mode: StoreMode = _f(StoreMode.resume, "resume | overwrite")
    # Set by the driver for its jobs (never by hand): the creation id of the store the jobs
    # belong to; a job whose id differs from the store's writes nothing.
    run_id: str | None = _f(None, "creation id of the store (set by the driver)")


@dataclass
class AnalysisConfig:
    run: bool = _f(True, "draw the figures at the end (python -m analysis <store> redraws them)")
    # The phase thresholds and the seed rule: values and why in sweep/constants.py, shared with
    # the analysis and the refinement.
    norm_threshold: float = _f(
        NORM_THRESHOLD,
        "feature ignored when ||W_i|| < this",
        lo=THRESHOLD_RANGE[0],
        hi=THRESHOLD_RANGE[1],
        lo_open=True,
        hi_open=True,
    )
    superposition_threshold: float = _f(
        SUPERPOSITION_THRESHOLD,
        "superposed when interference >= this",
        lo=THRESHOLD_RANGE[0],
        hi=THRESHOLD_RANGE[1],
        lo_open=True,
        hi_open=True,
    )
    aggregate: Aggregate = _f(  # type: ignore[valid-type]
        Aggregate(DEFAULT_AGGREGATE), "seeds of a cell -> one value"
    )
    # figure families (analysis/registry.py); each grid file names its own
    figures: list[str] | None = _f(None, "figures to draw (null: the analysis picks)")


@dataclass
class RefineConfig:
    """Adaptive refinement of a phase grid along density (sweep/refine.py; issue 16)."""

    levels: int = _f(0, "bisections of each density interval near boundaries (0: none)", lo=0, hi=8)
    budget: int | None = _f(None, "most models in all, coarse pass included (null: no limit)", lo=1)
    seed_disagreement: bool = _f(True, "with budget left, also bisect where seeds' phases differ")
    cells: str | None = _f(None, "set per job by the refinement: its cells 'i:j,...' (not by hand)")


@dataclass
class SweepConfig:
    name: str = _f("default", "store name: results/<name>; each grid file sets its own")
    block: str | None = _f(None, "set per job by the sweeper: the block this job trains")
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    chunk: ChunkConfig = field(default_factory=ChunkConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    # each run groups the store's chunks into jobs to feed them
    workers: Any = _f("auto", "jobs trained at once on this machine: auto (one per core) or N")
    retries: int = _f(2, "relaunch unfinished jobs this many times after failures", lo=0, hi=1000)
    progress: bool = _f(True, "progress bar over training")
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)


ConfigStore.instance().store(name="toysweep_schema", node=SweepConfig)


def schema_field(key: str) -> Any:
    """The dataclass field of a dotted key (e.g. 'train.steps'), or None if not in the schema."""
    node: Any = SweepConfig
    found = None
    for part in key.split("."):
        if not (isinstance(node, type) and is_dataclass(node)):
            return None
        found = next((f for f in fields(node) if f.name == part), None)
        if found is None:
            return None
        node = _resolve(found)
    return found


def _resolve(f: Any) -> Any:
    """The class a field holds (dataclass fields are built by default_factory)."""
    if f.default_factory is not MISSING:  # type: ignore[misc]
        value = f.default_factory()
        return type(value) if is_dataclass(value) else None
    return None


def expected(key: str) -> str:
    """What a key allows, in words, from its schema type (annotations are strings here)."""
    f = schema_field(key)
    if f is None:
        return "a value of the right type"
    t = str(f.type)
    for enum in Choice.__subclasses__():  # ModelKind included
        if t == enum.__name__:
            return "one of " + ", ".join(e.value for e in enum)
    return _TYPES_WORDS.get(t, f"a value of type {t}")


_TYPES_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "int | None": "null or an integer",
    "str | None": "null or a string",
    "list[int]": "a list of integers",
    "list[int] | None": "null or a list of integers",
    "list[str] | None": "null or a list of names",
}


def range_words(key: str) -> tuple[float | None, float | None, bool, bool] | None:
    """(lo, hi, lo_open, hi_open) declared for a key, or None."""
    f = schema_field(key)
    if f is None or (f.metadata.get("lo") is None and f.metadata.get("hi") is None):
        return None
    m = f.metadata
    return m["lo"], m["hi"], m["lo_open"], m["hi_open"]


def ranged_keys() -> list[str]:
    """Every dotted key with a declared range, in schema order."""
    out: list[str] = []

    def walk(cls: Any, prefix: str) -> None:
        for f in fields(cls):
            sub = _resolve(f)
            if sub is not None:
                walk(sub, f"{prefix}{f.name}.")
            elif f.metadata.get("lo") is not None or f.metadata.get("hi") is not None:
                out.append(prefix + f.name)

    walk(SweepConfig, "")
    return out
