"""Shared helpers: compose the real Hydra config, shrink it, run the real CLI."""

from __future__ import annotations

import os
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


@pytest.fixture
def tiny_phase(tmp_path: Path) -> DictConfig:
    """The phase grid at a size that trains in about a second."""
    return make_config(["+grid=phase", "train.steps=30", "grid.seeds=2",
                        "grid.axes.density=[log,0.1,1.0,3]",
                        "grid.axes.relative_importance=[log,0.5,2.0,2]"],
                       store=tmp_path / "store")
