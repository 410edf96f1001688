"""Compiled steps as AOTInductor packages (sweep/packages.py): named by all they depend on,
equal to the step's maths, loaded bit for bit in a fresh process without Dynamo, and built
again when damaged."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from sweep import fused, kinds, packages
from sweep.compiling import compiler_available
from sweep.train import make_trainer
from tests.conftest import make_config

ROOT = Path(__file__).resolve().parent.parent


def _name(tensors, statics=("relu", True, ("none", False, 1)), digest="d", function="train_chunk",
          instances=None, unit=1):
    dims = instances and [
        packages.dynamic(t, f, unit) for t, f in zip(tensors, instances, strict=True)
    ]
    return packages.package_name(function, statics, digest, tensors, dims, unit)


@pytest.mark.unit
def test_a_package_is_named_by_all_it_depends_on():
    a = [torch.zeros(4, 1, 2), torch.zeros(4, 2)]
    same = _name([torch.ones(4, 1, 2), torch.ones(4, 2)])  # values do not matter, shapes do
    assert _name(a) == same
    others = [
        _name([torch.zeros(5, 1, 2), a[1]]),  # a shape
        _name([a[0].double(), a[1]]),  # a dtype
        _name([torch.zeros(4, 2, 1).transpose(1, 2), a[1]]),  # a stride
        _name(a, digest="e"),  # the code
        _name(a, statics=("silu", True, ("none", False, 1))),  # the kind
        _name(a, statics=("relu", False, ("none", False, 1))),  # the form
        _name(a, statics=("relu", True, ("correlated", False, 2))),  # the data
        _name(a, function="eval_chunk"),
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)  # Inductor writes the thread count into its loops
    try:
        others.append(_name(a))
    finally:
        torch.set_num_threads(threads)
    assert len({_name(a), *others}) == len(others) + 1
    # the instances dim of the tensors that hold it is left out: one package for any number
    # (but 1, which export specializes); the others' sizes still count
    per = [True, False]
    assert _name(a, instances=per) == _name([torch.zeros(40, 1, 2), a[1]], instances=per)
    assert _name(a, instances=per) != _name(a)
    assert _name(a, instances=per) != _name([torch.zeros(4, 1, 3), a[1]], instances=per)
    assert _name(a, instances=per) != _name([a[0], torch.zeros(5, 2)], instances=per)
    assert _name(a, instances=per) != _name([torch.zeros(1, 1, 2), a[1]], instances=per)
    # in cells of `unit` instances: the unit counts, and one cell is a package of its own
    assert _name(a, instances=per, unit=2) != _name(a, instances=per)
    two, five = ([torch.zeros(k * 4, 1, 2), a[1]] for k in (2, 5))
    assert _name(two, instances=per, unit=4) == _name(five, instances=per, unit=4)
    assert _name(a, instances=per, unit=4) != _name(two, instances=per, unit=4)


@pytest.mark.unit
def test_the_code_digest_follows_the_content_not_the_place(tmp_path):
    copy = tmp_path / "elsewhere" / "sweep"
    shutil.copytree(ROOT / "sweep", copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert packages.tree_digest(copy) == packages.source_digest()
    step = copy / "fused.py"
    step.write_text(step.read_text().replace("EPS = 1e-8", "EPS = 1e-7"))
    assert packages.tree_digest(copy) != packages.source_digest()


@pytest.mark.unit
def test_a_build_cleans_what_a_killed_build_left(tmp_path, monkeypatch):
    """A build killed half-way leaves its temporary file; the next build of that package
    (holding its lock, so no other build of it runs) removes it, and only that package's."""
    monkeypatch.setattr(packages, "_build", lambda path, *a: path.write_bytes(b"package"))
    monkeypatch.setattr(packages, "_load", lambda path, device: path.read_bytes())
    step = packages.Packaged(fused.train_chunk, "relu", kinds.get("relu").fused, str(tmp_path))
    folder = step.folder()
    mine, other = folder / ".train_chunk-abc-k1ll3d.pt2", folder / ".train_chunk-def-r4nn1ng.pt2"
    mine.write_bytes(b"half"), other.write_bytes(b"half")
    assert step._runner("train_chunk-abc.pt2", (), (), [torch.zeros(1)]) == b"package"
    assert not mine.exists() and other.exists()


@pytest.mark.unit
def test_pruning_keeps_the_cache_in_budget_least_recently_loaded_first(tmp_path):
    """Over budget, the packages loaded longest ago go first, never the one just built; a
    killed build's temporary file goes once a day old, a running build's stays."""
    now = time.time()
    ages = {"a": 5, "b": 1, "c": 3, "new": 10}  # days since last loaded ("new": just built)
    for name, days in ages.items():
        path = tmp_path / f"train_chunk-{name}.pt2"
        path.write_bytes(b"x" * 100)
        os.utime(path, (now - days * 86400, now - days * 86400))
    killed, running = tmp_path / ".train_chunk-a-k1ll3d.pt2", tmp_path / ".train_chunk-b-now.pt2"
    killed.write_bytes(b"half"), running.write_bytes(b"half")
    os.utime(killed, (now - 2 * 86400, now - 2 * 86400))
    gone = packages.prune(tmp_path, keep=tmp_path / "train_chunk-new.pt2", budget=250)
    assert sorted(p.name for p in gone) == sorted([killed.name, "train_chunk-a.pt2",
                                                   "train_chunk-c.pt2"])
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [running.name, "train_chunk-b.pt2", "train_chunk-new.pt2"]
    assert packages.prune(tmp_path, keep=tmp_path / "train_chunk-new.pt2", budget=250) == []


@pytest.mark.unit
def test_a_load_marks_its_package_used_and_a_build_prunes(tmp_path, monkeypatch):
    """Loading a package touches it, so pruning keeps what is in use; a build prunes the
    folder to the budget (here one package: the older, unused one goes)."""
    monkeypatch.setattr(packages, "_build", lambda path, *a: path.write_bytes(b"package"))
    monkeypatch.setattr(packages, "_load", lambda path, device: path.read_bytes())
    monkeypatch.setattr(packages, "BUDGET_BYTES", 2 * len(b"package"))
    step = packages.Packaged(fused.train_chunk, "relu", kinds.get("relu").fused, str(tmp_path))
    folder, old = step.folder(), time.time() - 86400
    used, unused = folder / "train_chunk-used.pt2", folder / "train_chunk-unused.pt2"
    for path, at in ((used, old - 60), (unused, old)):
        path.write_bytes(b"package")
        os.utime(path, (at, at))
    assert step._runner(used.name, (), (), [torch.zeros(1)]) == b"package"  # loaded: touched
    assert used.stat().st_mtime > old
    assert step._runner("train_chunk-new.pt2", (), (), [torch.zeros(1)]) == b"package"  # built
    assert sorted(p.name for p in folder.iterdir()) == [
        "train_chunk-new.pt2", "train_chunk-used.pt2"
    ]  # no lock file left either: released, it goes


def _config(cache: Path, compile: bool):
    return make_config(
        [
            "train.steps=1000",
            "train.batch_size=64",
            f"train.compile={str(compile).lower()}",
            f"train.compile_cache={cache}",
        ]
    ).train


def _block():
    """60 2→1 models: 6 densities × 2 importances × 5 seeds (cells of seeds in order)."""
    cells = [(d, r) for d in np.geomspace(0.02, 1, 6) for r in (0.3, 3.0)]
    density = np.repeat([[d, d] for d, _ in cells], 5, axis=0)
    importance = np.repeat([[1.0, r] for _, r in cells], 5, axis=0)
    return np.tile(np.arange(5), len(cells)), density, importance


def _trained(cache: Path, compile: bool, steps: int = 4):
    torch.set_num_threads(1)
    t = make_trainer("relu", *_block(), 1, _config(cache, compile))
    for step in range(steps):
        t.step(step)
    return t


def _digest(t) -> str:
    state = [*t.params, *t.moments]
    return hashlib.sha256(b"".join(q.numpy().tobytes() for q in state)).hexdigest()


needs_compiler = pytest.mark.skipif(
    not compiler_available("cpu"), reason="no C++ compiler on this machine"
)

# A fresh process: the trainer of _trained over the same cache; prints whether it built a
# package and whether Dynamo was imported, then the digest of the trained state.
FRESH = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from sweep import fused, packages
    from tests.test_packages import _digest, _trained
    built = []
    build = packages._build
    packages._build = lambda *a: (built.append(1), build(*a))
    fused.CHUNK_ELEMENTS_GRAM = int(sys.argv[2])
    t = _trained(Path(sys.argv[1]), True)
    print(bool(built), "torch._dynamo" in sys.modules, _digest(t))
    """
)


@pytest.mark.slow
@needs_compiler
def test_a_package_trains_as_the_step_and_loads_elsewhere_bit_for_bit(tmp_path, monkeypatch):
    # three chunks of 20 models: the package runs on slices at offsets, updating them in place
    small = 20 * 64 * 2
    monkeypatch.setattr(fused, "CHUNK_ELEMENTS_GRAM", small)
    cache = tmp_path / "cache"
    compiled = _trained(cache, True)
    assert compiled.compiled and len(compiled.chunks) == 3
    (package,) = (cache / packages.FOLDER).glob("train_chunk-*.pt2")
    assert package.stat().st_mode & 0o777 == 0o644  # readable by the others sharing the cache
    eager = _trained(cache, False)
    assert not eager.compiled
    for got, want in zip([*compiled.params, *compiled.moments],
                         [*eager.params, *eager.moments], strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-7)
    assert not torch.equal(compiled.W, _trained(cache, False, steps=0).W)  # it did train

    out = subprocess.run(
        [sys.executable, "-c", FRESH, str(cache), str(small)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    built, dynamo, digest = out.stdout.split()
    assert built == "False", "the fresh process built the package again"
    assert dynamo == "False", "loading a package imported Dynamo"
    assert digest == _digest(compiled)


@pytest.mark.slow
@needs_compiler
def test_a_damaged_package_is_built_again_even_without_its_lock(tmp_path):
    cache = tmp_path / "cache"
    first = _trained(cache, True)
    (package,) = (cache / packages.FOLDER).glob("train_chunk-*.pt2")
    package.write_bytes(package.read_bytes()[:1000])  # cut short, as by a full disk
    lock = package.with_suffix(".lock")
    assert not lock.exists()  # released after the build, it went
    lock.mkdir()  # a lock that cannot be had (as another user's): built all the same
    again = _trained(cache, True)
    assert _digest(again) == _digest(first)
    assert package.stat().st_size > 1000


@pytest.mark.slow
@needs_compiler
def test_grids_of_other_sizes_share_a_package_and_its_models_bits(tmp_path, monkeypatch):
    """A 60-model block and a 35-model one (its first 35 models; 12 and 7 cells of 5 seeds,
    chunks of 20 and 35 instances): the second loads the first's packages (the instances dim
    is dynamic), builds none, and trains each of its models to the same bits as the first."""
    cache = tmp_path / "cache"
    monkeypatch.setattr(fused, "CHUNK_ELEMENTS_GRAM", 20 * 64 * 2)  # 60 models: 3 chunks of 20
    first = _trained(cache, True)
    made = sorted(p.name for p in (cache / packages.FOLDER).glob("*.pt2"))
    assert len(first.chunks) == 3 and made
    built = []
    build = packages._build
    monkeypatch.setattr(packages, "_build", lambda *a: (built.append(1), build(*a)))
    monkeypatch.setattr(fused, "CHUNK_ELEMENTS_GRAM", 2**22)  # 35 models: 1 chunk of 35
    seeds, density, importance = _block()
    torch.set_num_threads(1)
    fewer = make_trainer("relu", seeds[:35], density[:35], importance[:35], 1,
                         _config(cache, True))
    for step in range(4):
        fewer.step(step)
    assert fewer.compiled and fewer.chunks == [(0, 35)]
    assert sorted(p.name for p in (cache / packages.FOLDER).glob("*.pt2")) == made
    assert not built
    for got, want in zip([*fewer.params, *fewer.moments], [*first.params, *first.moments],
                         strict=True):
        assert torch.equal(got, want[:35])
