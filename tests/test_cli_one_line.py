"""Every command ends in one line: for python -m sweep, analysis, analysis.explore and
sweep.migrate, a damaged store, a missing store, an output that cannot be written and a failing
end-of-sweep analysis give one line `error: …` on stderr and a nonzero exit, no traceback (the
real commands, in subprocesses); `--debug` adds the traceback."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.hostile

SWEEP = [
    "+grid=phase",
    "train.steps=20",
    "grid.seeds=2",
    # both axes span 10x or more: the explorer draws them on log scales (a narrower axis is
    # drawn by slot, and its phase boundaries then print a numpy warning on stderr)
    "grid.axes.density=[log,0.01,1.0,3]",
    "grid.axes.relative_importance=[log,0.1,10.0,3]",
    "workers=1",
    "progress=false",
]
METADATA = {".zmetadata", ".zattrs", ".zgroup", ".zarray", "zarr.json"}  # zarr v2 and v3


def run(args: list[str], cwd: Path, no_writes: bool = False) -> subprocess.CompletedProcess:
    """A command as a user runs it. no_writes: every file write fails (EFBIG: Python ignores
    SIGXFSZ), as on a full disk; chmod cannot make a folder unwritable to root."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}
    env.pop("TOYSWEEP_DEBUG", None)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))

    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=env, preexec_fn=limit if no_writes else None)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished tiny store, not analysed (each case copies it)."""
    path = tmp_path_factory.mktemp("one_line") / "store"
    r = run(["-m", "sweep", *SWEEP, "analysis.run=false", f"store.path={path}"], path.parent)
    assert r.returncode == 0, r.stderr[-3000:]
    return path


def damage(store: Path, where: str) -> None:
    """Garbage over the store's root metadata ("root") or every chunk of W ("chunks")."""
    folder = store if where == "root" else store / "W"
    for f in folder.rglob("*") if where == "chunks" else folder.iterdir():
        if f.is_file() and (f.name in METADATA) == (where == "root"):
            f.write_bytes(b"\x00garbage\xff" * 8)


def prepare(finished: Path, tmp_path: Path, case: str) -> Path:
    """A copy of the finished store in the state `case` names; returns its path."""
    store = tmp_path / "store"
    if case == "missing":
        return store
    shutil.copytree(finished, store)
    if case in ("damaged", "damaged-chunks"):
        damage(store, "chunks" if case == "damaged-chunks" else "root")
    if case == "figures-is-a-file":  # the figures folder cannot be made
        shutil.rmtree(store / "figures", ignore_errors=True)
        (store / "figures").write_text("a file where the figures folder should be")
    return store


def assert_one_line(r: subprocess.CompletedProcess, *names: str) -> str:
    lines = r.stderr.splitlines()
    assert r.returncode not in (0, None), (r.returncode, r.stderr[-3000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    for name in names:  # the line says where
        assert name in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "case",
    [
        "damaged",  # unreadable root metadata: refused before anything is changed
        "figures-is-a-file",  # the end-of-sweep analysis fails: no longer exit 0
        "no-writes",  # the disk is full: nothing can be written, not even the lock
    ],
)
def test_sweep_ends_in_one_line(finished, tmp_path, case):
    store = prepare(finished, tmp_path, "damaged" if case == "damaged" else case)
    before = sorted(p.name for p in store.iterdir())
    r = run(["-m", "sweep", *SWEEP, f"store.path={store}"], tmp_path, case == "no-writes")
    assert_one_line(r, "store" if case != "no-writes" else "sweep/")
    if case == "figures-is-a-file":  # trained nothing; the analysis failed where it writes
        assert "trained 0 models" in r.stdout and str(store / "figures") in r.stderr
    if case == "damaged":
        assert sorted(p.name for p in store.iterdir()) == before


@pytest.mark.parametrize("case", ["damaged-chunks", "missing", "figures-is-a-file", "no-writes"])
def test_analysis_ends_in_one_line(finished, tmp_path, case):
    store = prepare(finished, tmp_path, case)
    r = run(["-m", "analysis", str(store)], tmp_path, case == "no-writes")
    assert_one_line(r, str(store) if case != "damaged-chunks" else "analysing")
    if case == "figures-is-a-file":
        # --debug (and TOYSWEEP_DEBUG=1) adds the traceback before the same last line
        debug = run(["-m", "analysis", str(store), "--debug"], tmp_path)
        assert debug.returncode == r.returncode and "Traceback" in debug.stderr
        assert debug.stderr.splitlines()[-1].split(" (")[0] == r.stderr.split(" (")[0]


@pytest.mark.parametrize("case", ["damaged-chunks", "missing", "no-writes"])
def test_explore_ends_in_one_line(finished, tmp_path, case):
    store = prepare(finished, tmp_path, case)
    out = tmp_path / "out.html"
    r = run(["-m", "analysis.explore", str(store), "--export", str(out)], tmp_path,
            case == "no-writes")
    assert_one_line(r, str(store) if case != "damaged-chunks" else "exploring")
    assert not out.exists() or case == "no-writes"


@pytest.mark.parametrize("case", ["damaged", "missing", "no-writes"])
def test_migrate_ends_in_one_line(tmp_path, case):
    store = tmp_path / "store"
    if case != "missing":
        shutil.copytree(ROOT / "tests" / "data" / "store_v1", store)
    if case == "damaged":
        damage(store, "root")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    r = run(["-m", "sweep.migrate", str(store)], tmp_path, case == "no-writes")
    assert_one_line(r, str(store))
    if case == "no-writes":  # the version-1 store is where it was, whole
        after = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
        assert [p for p in before if p not in after] == [], after
