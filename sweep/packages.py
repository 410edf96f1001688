"""Compiled chunk steps as AOTInductor packages: built once per shape, loaded without Dynamo.

`torch.compile` traces the step with Dynamo in every process, warm cache or not: a worker
imported Dynamo and Inductor (~2.5 s of CPU) and traced and looked up its kernels (~1 s) before
its first step, most of a small sweep's fixed cost (issue 25). Here the step is exported and
compiled ahead of time by AOTInductor (`torch._inductor.aoti_compile_and_package`) into a
`.pt2` package in `train.compile_cache`, and later processes load it with torch's C++ loader
(`torch._C._aoti.AOTIModelPackageLoader`, milliseconds; Dynamo and Inductor are not imported)
and call it with the chunk's tensors. The package updates parameters and moments in place, as
the traced step does, and equals it bit for bit (`tests/test_packages.py`).

Nothing traces the code on a warm load, so the package's name must name everything its
binary depends on: the source of the `sweep` package (the step and every kind's record), torch's
version, the CPU's vector ISA (a package built for AVX-512 would crash an AVX2 node sharing the
file system), the thread count (Inductor writes it into its OpenMP loops) and every input's
shape, stride, dtype and device, but for the number of instances in a chunk: that dimension is
exported dynamic, as `unit` × a dynamic count (the chunk's cells of `unit` seeds each), so one
package serves every grid size of a model shape. A researcher who adds a density to a grid
waits for no new build (8-12 s a shape). Declared so, the dynamic package runs as fast as one
built for the size (measured: 419 against 429 µs a call at 2→1 × 600, 98 against 99 at
2→1 × 125, 444 against 440 at 20→5 × 10); left for export to infer (`Dim.AUTO`), it lost the
multiple and ran 6× slower at 600. A package of other code or another shape is
never loaded: it has another name. One that does not load (cut short, damaged) is built again.

Every process of a shape runs the same binary, so a chunk retrained in a job of its own, on
another worker or a SLURM node, equals its first training bit for bit.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import hashlib
import inspect
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sweep.compiling import use_compile_cache
from sweep.locks import flocked

# Where packages live inside train.compile_cache (Inductor's own caches are beside it).
FOLDER = "aoti"
# The packages of a cache are kept under this many bytes: after each build, those loaded least
# recently go first. An edit anywhere under sweep/ names every shape's package anew (~1.6 MB
# each), so a developer's cache would otherwise grow with every edit, and an upgrade would leave
# the old version's packages behind; a user who changes nothing builds each shape once and stays
# far below it. A package removed while in use stays loaded where it is; a later process builds
# it again, to the same bits.
BUDGET_BYTES = 2**30
# A build's temporary file this old was left by a killed build (a build takes seconds).
STALE_SECONDS = 24 * 3600


def tree_digest(root: Path, extra: tuple[str, ...] = ()) -> str:
    """sha256 of the modules under `root` and the files `extra`, by name and content (not by
    where they are: a clone elsewhere, or a SLURM node's mount, names packages alike)."""
    h = hashlib.sha256()
    for path in [*sorted(root.rglob("*.py")), *map(Path, sorted(extra))]:
        name = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.name
        h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


@functools.cache
def source_digest(extra: tuple[str, ...] = ()) -> str:
    """`tree_digest` of the `sweep` package and of the files `extra` (a kind defined
    elsewhere): a package of other code has another name.

    All of sweep/, not only sweep/fused.py: the step reaches the kinds' records and the
    samplers' conventions, and a few ms of hashing costs less than naming those by hand."""
    return tree_digest(Path(__file__).resolve().parent, extra)


def kind_files(fused: Any) -> tuple[str, ...]:
    """The source files of a kind's fused record's functions (outside `sweep` or not)."""
    funcs = [getattr(fused, f) for f in ("output", "hidden", "grads")]
    return tuple(sorted({inspect.getfile(f) for f in funcs if f is not None}))


def dynamic(t: torch.Tensor, per_instance: bool, unit: int = 1) -> bool:
    """Whether the package takes any size of t's first dim: a tensor of the chunk's instances
    (`unit` × cells), unless it holds one cell (export specializes a dim of size 1, so that
    package is for one cell only)."""
    return per_instance and t.shape[0] > unit


def package_name(
    function: str,
    statics: tuple,
    digest: str,
    tensors: list[torch.Tensor],
    dims: list[bool] | None = None,
    unit: int = 1,
) -> str:
    """The file name of a step's package: `<function>-<sha256 of all it depends on>.pt2`.
    statics: the Python arguments (by value, e.g. the kind's name); digest: `source_digest`;
    dims: which tensors' first dim, `unit` × cells, is dynamic (`dynamic`): its size is left
    out of the name, the unit is in."""
    star = dims or [False] * len(tensors)
    shapes = [
        ("*", *t.shape[1:]) if d else tuple(t.shape) for t, d in zip(tensors, star, strict=True)
    ]
    parts = [
        function,
        repr(statics),
        str(unit),
        torch.__version__,
        digest,
        torch.backends.cpu.get_cpu_capability(),
        str(torch.get_num_threads()),
        *(f"{s}/{t.stride()}/{t.dtype}/{t.device}" for s, t in zip(shapes, tensors, strict=True)),
    ]
    return f"{function}-{hashlib.sha256(chr(0).join(parts).encode()).hexdigest()[:40]}.pt2"


class _Step(torch.nn.Module):
    """The chunk function with its Python arguments fixed, over a flat list of tensors (what
    torch.export and the package take): rebuilt into the function's own arguments."""

    def __init__(self, fn: Callable[..., torch.Tensor], statics: tuple, layout: tuple):
        super().__init__()
        self.fn, self.statics, self.layout = fn, statics, layout

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.fn(*self.statics, *unflatten(list(tensors), self.layout))


def flatten(args: tuple) -> tuple[list[torch.Tensor], tuple]:
    """(tensors, layout) of a chunk function's tensor arguments: a tensor, None or a list of
    tensors each; layout records which, so that `unflatten` gives the arguments back."""
    tensors: list[torch.Tensor] = []
    layout: list[int | None] = []
    for a in args:
        if a is None:
            layout.append(None)
        elif isinstance(a, list):
            layout.append(len(a))
            tensors += a
        else:
            layout.append(-1)
            tensors.append(a)
    return tensors, tuple(layout)


def per_tensor(args: tuple, positions: tuple[int, ...]) -> list[bool]:
    """For each tensor `flatten` gives of args, whether it comes from an argument at one of
    `positions` (a list counts as one argument)."""
    out: list[bool] = []
    for i, a in enumerate(args):
        if a is not None:
            out += [i in positions] * (len(a) if isinstance(a, list) else 1)
    return out


def unflatten(tensors: list[torch.Tensor], layout: tuple) -> list[Any]:
    args: list[Any] = []
    for n in layout:
        if n is None:
            args.append(None)
        elif n == -1:
            args.append(tensors.pop(0))
        else:
            args.append([tensors.pop(0) for _ in range(n)])
    return args


def _partial_builds(path: Path) -> list[Path]:
    """The half-written files of builds of `path` (`_build`'s temporary names)."""
    return list(path.parent.glob(f".{path.stem}-*.pt2"))


def _build(
    path: Path,
    module: _Step,
    tensors: list[torch.Tensor],
    cache: str | None,
    dims: list[bool] | None = None,
    unit: int = 1,
) -> None:
    """Export and compile the step into `path` (whole or not at all: written beside, renamed),
    the first dim of the tensors `dims` flags dynamic: `unit` × cells."""
    use_compile_cache(cache)  # Inductor's settings and caches for the compile itself
    import torch._inductor

    dims = dims or [False] * len(tensors)
    cells = torch.export.Dim("cells", min=2)
    shared = cells * unit if unit > 1 else cells  # one dim for all: export knows they agree
    shapes = (tuple({0: shared} if d else None for d in dims),)  # the step takes *tensors
    # export traces with fake tensors; the clones keep the caller's tensors out of it anyway
    program = torch.export.export(
        module, tuple(t.clone() for t in tensors), dynamic_shapes=shapes, strict=False
    )
    user = set(program.graph_signature.user_inputs)  # not the constants export lifts to inputs
    inputs = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in user]
    for node, want in zip(inputs, dims, strict=True):
        if want and isinstance(node.meta["val"].shape[0], int):  # specialized by the trace
            raise RuntimeError(f"{module.fn.__name__}: its instances dim would not export dynamic")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".pt2")
    os.close(fd)
    try:
        with warnings.catch_warnings():  # torch's own deprecation notices of its internals
            warnings.simplefilter("ignore", FutureWarning)
            torch._inductor.aoti_compile_and_package(program, package_path=tmp)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from the others sharing the cache
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _load(path: Path, device: torch.device) -> Any:
    index = -1 if device.type == "cpu" else (device.index or 0)
    return torch._C._aoti.AOTIModelPackageLoader(str(path), "model", True, 1, index)


def _loaded(path: Path, device: torch.device) -> Any:
    """The package at `path`, loaded; None when there is none or it does not load (damaged:
    the caller builds it again)."""
    if not path.exists():
        return None
    try:
        runner = _load(path, device)
    except RuntimeError:
        return None
    with contextlib.suppress(OSError):  # another user's package: theirs to keep fresh
        os.utime(path)  # loaded now: the last a pruning removes (`prune`)
    return runner


def prune(folder: Path, keep: Path, budget: int | None = None) -> list[Path]:
    """Remove the packages of `folder` loaded least recently (by mtime: a load touches it)
    until the rest fit in `budget` bytes (default BUDGET_BYTES), never `keep` (the one just
    built), and the temporary files of builds killed more than STALE_SECONDS ago. Returns what
    went.

    A file that vanishes meanwhile (another process pruning) or cannot be removed (another
    user's, in a shared cache) is passed over: pruning never fails a build."""
    budget = BUDGET_BYTES if budget is None else budget
    gone, packages, total = [], [], 0
    for path in folder.glob("*.pt2"):
        with contextlib.suppress(OSError):
            stat = path.stat()
            if not path.name.startswith("."):
                total += stat.st_size
                if path != keep:
                    packages.append((stat.st_mtime, stat.st_size, path))
            elif time.time() - stat.st_mtime > STALE_SECONDS:  # a killed build's temporary file
                path.unlink()
                gone.append(path)
    for _, size, path in sorted(packages, key=lambda p: p[0]):
        if total <= budget:
            break
        with contextlib.suppress(OSError):
            path.unlink()
            gone.append(path)
            total -= size
    return gone


class Packaged:
    """A chunk function (`train_chunk`, `eval_chunk`) compiled into packages in `cache`, one per
    argument shape, called like the function itself: `step(fused, gram, data, *tensor_args)`.

    kind: the name of the kind whose `fused` record is passed (the package's name takes the
    name and the record's source, not the record itself); cache: train.compile_cache (None:
    torch's default place, `<tmp>/torchinductor_<user>`); per_instance: the positions, among
    the tensor arguments, of those whose first dim is the chunk's instances (a list counts as
    one argument): that dim is dynamic, one package for every number of instances; unit: the
    chunks' instances come in multiples of it (the seeds of a cell).
    """

    STATICS = 3  # (fused, gram, data): the Python arguments before the tensors

    def __init__(
        self,
        fn: Callable[..., torch.Tensor],
        kind: str,
        fused: Any,
        cache: str | None,
        per_instance: tuple[int, ...] = (),
        unit: int = 1,
    ):
        self.fn, self.kind, self.cache = fn, kind, cache
        self.per_instance, self.unit = per_instance, unit
        self.digest = source_digest(kind_files(fused))
        self._loaded: dict[tuple, Any] = {}

    def folder(self) -> Path:
        """`<cache>/aoti`; without a cache, beside torch's own default Inductor cache."""
        if self.cache:
            path = Path(os.path.expanduser(self.cache)) / FOLDER
        else:
            path = Path(tempfile.gettempdir()) / f"torchinductor_{getpass.getuser()}" / FOLDER
        path.mkdir(parents=True, exist_ok=True)
        return path

    def __call__(self, *args: Any) -> torch.Tensor:
        tensors, layout = flatten(args[self.STATICS :])
        # what the package's name depends on that may change between calls, cheaply (a step
        # calls this once per chunk): the name itself is hashed only the first time
        seen = (
            args[1:3],
            layout,
            torch.get_num_threads(),
            *((t.shape, t.stride(), t.dtype, t.device) for t in tensors),
        )
        runner = self._loaded.get(seen)
        if runner is None:
            statics = (self.kind, *args[1:3], layout)  # the kind by its name, not its record
            flags = per_tensor(args[self.STATICS :], self.per_instance)
            dims = [dynamic(t, f, self.unit) for t, f in zip(tensors, flags, strict=True)]
            name = package_name(self.fn.__name__, statics, self.digest, tensors, dims, self.unit)
            runner = self._runner(name, args[: self.STATICS], layout, tensors, dims)
            self._loaded[seen] = runner
        return runner.run(tensors)[0]

    def _runner(
        self,
        name: str,
        statics: tuple,
        layout: tuple,
        tensors: list,
        dims: list[bool] | None = None,
    ) -> Any:
        path, device = self.folder() / name, tensors[0].device
        runner = _loaded(path, device)
        if runner is None:
            # One builder of a package at a time: the others wait, then load what it built
            # (two workers of a shape would otherwise both compile it). Without the lock
            # (another user's lock file, no flock) each builds its own; the rename keeps the
            # file whole either way. Removed on release, so no lock file stays in the cache.
            with flocked(path.with_suffix(".lock"), transient=True) as alone:
                runner = _loaded(path, device)  # another process built it while this one waited
                if runner is None:
                    if alone:  # no build of this package runs: what one left (killed) goes
                        for partial in _partial_builds(path):
                            partial.unlink(missing_ok=True)
                    step = _Step(self.fn, statics, layout)
                    _build(path, step, tensors, self.cache, dims, self.unit)
                    runner = _load(path, device)
                    with contextlib.suppress(OSError):  # the folder unreadable: nothing pruned
                        prune(path.parent, keep=path)
        return runner
