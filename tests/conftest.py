"""Shared helpers: compose the real Hydra config, shrink it, run the real CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

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
    # core. The SLURM tests share one single-node cluster whose slots they each fill, so they
    # run one after another in one worker (`--dist loadgroup` honours xdist_group).
    for item in items:
        if item.get_closest_marker("slurm") is not None:
            item.add_marker(pytest.mark.xdist_group("slurm"))
