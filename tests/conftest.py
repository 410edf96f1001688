"""Shared helpers: compose the real Hydra config, shrink it, run the real CLI; the finished
store the hostile cases (issue 10) try themselves against, and the checks they share."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"


def make_config(overrides: list[str], store: Path | None = None) -> DictConfig:
    """Compose conf/config.yaml with overrides (as the CLI would), quiet and on the CPU."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
    finally:
        GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.progress = False
        cfg.analysis.run = False
        cfg.train.device = "cpu"
        if store is not None:
            cfg.store.path = str(store)
    return cfg


def run_cli(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m sweep` (or another module) as a user would, from cwd."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


# The finished store's settings: 8 models in 2 blocks of 4, trained in seconds.
BASE = [
    "+grid=phase",
    "train.steps=20",
    "grid.seeds=2",
    "grid.axes.density=[0.1,1.0]",
    "grid.axes.relative_importance=[0.5,2.0]",
    "analysis.run=false",
    "progress=false",
    "chunk.max_instances=4",
    "train.device=cpu",
    "workers=1",  # blocks one after another in this process: no worker processes to start
]


def tree_hash(path: Path) -> str:
    """Hash of every file's relative path and bytes (and every symlink's target) under path,
    but for the driver's lock files beside a store (`.<store>.lock`/`.swap`, never inside)."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.parent == path and p.name.startswith(".") and p.suffix in (".lock", ".swap"):
            continue
        h.update(str(p.relative_to(path)).encode())
        if p.is_symlink():
            h.update(os.readlink(p).encode())
        elif p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


# Session-scoped: no test changes it (each one that damages, overwrites or remounts a store
# copies it first with shutil.copytree, and the refusals compare its tree_hash), so the files
# of tests/ that try hostile cases share one training (per xdist worker).
@pytest.fixture(scope="session")
def finished(tmp_path_factory) -> Path:
    """A finished 8-model store (2 blocks of 4), trained once for the session."""
    from sweep import driver  # imported here: the unit tier's pure tests need no engine

    path = tmp_path_factory.mktemp("ref") / "store"
    assert driver.run(make_config(BASE, store=path)) == 0
    return path


def refused(args: list[str], capsys) -> str:
    """Run the CLI's checks and the store checks in-process; return the one error line."""
    from sweep import driver
    from sweep.__main__ import preflight

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        sweep = driver.prepare(preflight(args))
        sweep.lock.close()  # it was accepted: release the store before failing the test
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.fixture
def tmpfs(tmp_path):
    """A 256 KiB tmpfs (needs root): a disk that fills up."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True
        ).returncode
    ):
        pytest.skip("mounting a tmpfs needs root")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def check_slurm() -> None:
    """Return if SLURM is there; else skip, or fail when CI says one must be there."""
    if shutil.which("sinfo") is not None:
        return
    reason = "SLURM is not installed (no sinfo on PATH); see slurm/README.md"
    if os.environ.get("TOYSWEEP_REQUIRE_SLURM") == "1":
        pytest.fail(f"TOYSWEEP_REQUIRE_SLURM=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def require_slurm() -> None:
    """Skip without a SLURM cluster; fail instead when CI says one must be there."""
    check_slurm()


SLURM_COMMANDS = frozenset({"srun", "sbatch", "sinfo", "squeue", "scancel", "scontrol", "sacct"})


@pytest.fixture(autouse=True)
def _hide_slurm_unless_marked(request: pytest.FixtureRequest,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests not marked `slurm` find no SLURM command through shutil.which (as submitit and
    require_slurm look), as on a machine without a cluster: an unmarked test that needs one
    fails on the CI machine too, not only on a laptop."""
    if request.node.get_closest_marker("slurm") is not None:
        return
    which = shutil.which

    def no_slurm(cmd, *args, **kwargs):
        return None if os.path.basename(str(cmd)) in SLURM_COMMANDS else which(cmd, *args,
                                                                               **kwargs)

    monkeypatch.setattr(shutil, "which", no_slurm)


OUTSIDE_UNIT = ("slow", "slurm", "browser")


def pytest_configure(config: pytest.Config) -> None:
    # Ctrl-C as a terminal sends it. A non-interactive shell starts its background jobs with
    # SIGINT ignored, and an ignored signal stays ignored in every child: pytest run that way
    # (e.g. `nohup ... &`) gave the sweeps its tests interrupt an ignored SIGINT, so they
    # trained on (one for 2,000,000 steps, the test waiting on it). Here (each xdist worker
    # runs it too) SIGINT gets Python's own handler back, which a child's exec resets to the
    # default, and Python there installs its handler again.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    # Registered here, beside the fixtures the hostile cases share: benchmarks/hostile_table.py
    # counts the tests carrying it, wherever they sit (each beside the module it attacks).
    config.addinivalue_line(
        "markers", "hostile: a hostile case of issue 10 (one line and exit 2, or a clean retrain)"
    )


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups (its own hook)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The unit tier (`-m unit`) is the fast one: a test marked unit and also slow, slurm or
    browser (e.g. a module marked unit holding one slow test) is an error, not a quiet slow
    unit run."""
    both = [
        item.nodeid
        for item in items
        if item.get_closest_marker("unit") is not None
        and any(item.get_closest_marker(m) is not None for m in OUTSIDE_UNIT)
    ]
    if both:
        raise pytest.UsageError(
            f"marked unit and {'/'.join(OUTSIDE_UNIT)} at once: {', '.join(both[:3])}"
        )
    # pytest-xdist (`-n auto` in pyproject's addopts) spreads the tests over one worker per
    # core, a group (`--dist loadgroup`: an xdist_group) at a time. The SLURM tests share one
    # single-node cluster whose slots they each fill: one group, one test after another. Every
    # other module is a group of its own, so a module's fixtures (a trained store) are built
    # once, not once per worker. Groups go out longest first (the SLURM group, then by slow
    # tests), so no long module starts last while the other worker idles.
    def group(item: pytest.Item) -> str:
        return "slurm" if item.get_closest_marker("slurm") else item.nodeid.split("::")[0]

    cost: dict[str, float] = {}
    for item in items:
        heavy = any(item.get_closest_marker(m) is not None for m in OUTSIDE_UNIT)
        cost[group(item)] = cost.get(group(item), 0.0) + (1.0 if heavy else 0.05)
    cost["slurm"] = float("inf") if "slurm" in cost else 0.0
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(group(item)))
    items.sort(key=lambda item: -cost[group(item)])  # stable: a module keeps its order


def set_attr(store: Path, key: str, value) -> Path:
    """Set one attribute of a store as a hand edit would, and consolidate its metadata again."""
    import warnings

    import zarr

    group = zarr.open_group(str(store), mode="r+", zarr_format=2, use_consolidated=False)
    group.attrs[key] = value
    with warnings.catch_warnings():  # the listing meets .jobs/, which is ours
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(store))
    return store


@contextlib.contextmanager
def cells_written(store: Path, where: tuple, finished: bool = True) -> Iterator[Any]:
    """Write cells of a store as a job does: yields the zarr group to write their values into,
    then sets their flags (True, or False: the cells unfinished, as a sweep that has not
    trained them yet leaves them) and records their chunks (sweep.integrity.writing). A flag
    edited in place would fail its whole chunk's record instead.

    where: one index per cell dim (an int or a slice)."""
    import numpy as np
    import zarr

    from sweep import integrity

    c = integrity.cover(store)
    reg = {
        d: slice(w, w + 1) if isinstance(w, int) else slice(*w.indices(n)[:2])
        for d, w, n in zip(c.flag.dims, where, c.flag.shape, strict=True)
    }
    group = zarr.open_group(str(store), mode="r+", zarr_format=2, use_consolidated=True)
    with integrity.writing(store, reg) as commit:
        yield group
        commit(np.full(tuple(s.stop - s.start for s in reg.values()), finished))
