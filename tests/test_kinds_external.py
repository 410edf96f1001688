"""Model kinds from outside the package: an installed distribution registers a kind through the
entry point group `toysweep.kinds` (tests/plugins/toysweep_tanh), and a sweep uses it by name
with the same checks, store and figures as a built-in kind; entry points that cannot be used
are left out in one line each, and the built-in kinds go on working.

The plugin is installed as pip installs it (`pip install --target`, the dist-info beside the
module), into a folder of this test's own: processes that get it on PYTHONPATH find the entry
point through importlib.metadata; the test's own environment is left as it was.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import yaml

from sweep import kinds
from tests.conftest import ROOT
from tests.test_kinds import model_alone

PLUGIN = ROOT / "tests" / "plugins" / "toysweep_tanh"
BUILT_IN = tuple(kinds.REGISTRY)
# Entry points of a broken distribution -> why each is left out (part of the line it gets).
BROKEN = {
    "missing": ("toysweep_no_such_module:KIND", "fails to import: ModuleNotFoundError"),
    "notakind": ("json:dumps", "gives a function, not a sweep.kinds.KindSpec"),
    "relu": ("toysweep_tanh:KIND", "the name is taken by the built-in kind"),
    "renamed": ("toysweep_tanh:KIND", "its KindSpec is named 'tanh', not 'renamed'"),
    "boom": ("toysweep_boom", "fails to import: RuntimeError: boom at import line two"),
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tanh package, installed by pip into a folder of its own."""
    tmp = tmp_path_factory.mktemp("plugin")
    src = tmp / "src"
    shutil.copytree(PLUGIN, src)  # the build writes build/ and *.egg-info beside its sources
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
         "--no-index", "--quiet", "--disable-pip-version-check", "--target",
         str(tmp / "site"), str(src)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp / "site" / "toysweep_tanh-0.1.0.dist-info" / "entry_points.txt").exists()
    return tmp / "site"


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An installed distribution (dist-info laid out as pip leaves it) whose entry points
    cannot be used: a missing module, not a KindSpec, a built-in's name, a name its spec does
    not carry, a module that raises on import."""
    tmp = tmp_path_factory.mktemp("broken")
    info = tmp / "toysweep_broken-0.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toysweep-broken\nVersion: 0.2\n")
    lines = [f"{name} = {value}" for name, (value, _) in BROKEN.items()]
    (info / "entry_points.txt").write_text("[toysweep.kinds]\n" + "\n".join(lines) + "\n")
    (tmp / "toysweep_boom.py").write_text('raise RuntimeError("boom at import\\nline two")\n')
    return tmp


def run(args: list[str], *paths: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Python with these folders (and the project) on its path, as an installed package is."""
    path = os.pathsep.join([*map(str, paths), str(ROOT)])
    env = {**os.environ, "PYTHONPATH": path, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env
    )


LIST_KINDS = (
    "import sys; from sweep import kinds; from sweep.config import ModelKind; "
    "print(','.join(kinds.KINDS)); print(','.join(k.value for k in ModelKind)); "
    "print(kinds.label('{name}')); print('torch' in sys.modules)"
)


def test_installed_kind_is_a_choice_like_a_built_in(site):
    r = run(["-c", LIST_KINDS.format(name="tanh")], site)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    names, choices, label, torch_loaded = r.stdout.split("\n")[:4]
    assert names.split(",") == [*BUILT_IN, "tanh"] and choices == names
    assert label == "tanh(WᵀWx + b)"
    assert torch_loaded == "False"  # the plugin imports torch inside its functions, as ours do


def test_broken_entry_points_are_left_out_in_one_line_each(site, broken):
    r = run(["-c", LIST_KINDS.format(name="relu")], site, broken)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[0].split(",") == [*BUILT_IN, "tanh"]  # all the working ones
    assert kinds.get("relu").label in r.stdout  # relu stays the built-in one
    lines = r.stderr.strip().split("\n")
    assert len(lines) == len(BROKEN) and "Traceback" not in r.stderr, r.stderr
    for line, (name, (value, why)) in zip(lines, BROKEN.items(), strict=True):
        assert line.startswith(f"warning: model kind {name!r} left out:"), line
        assert f"'{name} = {value}'" in line and "toysweep-broken 0.2" in line, line
        assert why in line, line


@pytest.mark.slow
def test_broken_or_misspelt_kind_is_refused_in_one_line(site, broken, tmp_path):
    """A sweep naming a broken or a misspelt kind is refused in one line listing the kinds
    that work, before anything is written."""
    allowed = "expected one of " + ", ".join([*BUILT_IN, "tanh"])
    store = tmp_path / "store"
    for override, bad in [
        ("model.kind=missing", "model.kind='missing'"),
        ("+grid.axes.model=[tanh,tahn]", "grid.axes.model='tahn'"),
    ]:
        r = run(["-m", "sweep", override, f"store.path={store}"], site, broken, cwd=tmp_path)
        errors = [line for line in r.stderr.split("\n") if line.startswith("error:")]
        assert r.returncode == 2 and len(errors) == 1, r.stderr[-2000:]
        assert f"{bad} is not allowed: {allowed}" in errors[0]
        assert "Traceback" not in r.stderr and not store.exists()


@pytest.mark.slow
def test_sweep_of_installed_kind_equals_model_trained_alone(site, broken, tmp_path):
    """`python -m sweep model.kind=tanh` with the plugin installed (and a broken one beside
    it): the store holds what a tanh model trained alone gives, and the figures are drawn."""
    store = tmp_path / "tanh"
    steps, batch, seeds, densities = 60, 64, [2, 9], [0.1, 0.7]
    r = run(
        [
            "-m", "sweep", "+grid=gelu", "model.kind=tanh", "name=tanh", "workers=1",
            f"train.steps={steps}", f"train.batch_size={batch}", "train.dtype=float64",
            f"grid.seeds=[{seeds[0]},{seeds[1]}]",
            f"grid.axes.density=[{densities[0]},{densities[1]}]", f"store.path={store}",
        ],
        site, broken, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert "trained 4 models" in r.stdout and "Traceback" not in r.stderr
    ds = xr.open_zarr(store)
    assert yaml.safe_load(ds.attrs["config_yaml"])["model"]["kind"] == "tanh"
    assert bool(ds.finished.all()) and not bool(ds.diverged.any())
    n, m = ds.sizes["feature"], ds.sizes["hidden"]
    importance = 0.9 ** np.arange(n)  # the gelu grid's geometric importance
    for d in densities:
        for s in seeds:
            alone = model_alone(s, np.full(n, d), importance, m, steps, batch, act=torch.tanh)
            stored = ds.W.sel(density=d, seed=s).values  # (hidden, feature), float32
            np.testing.assert_allclose(stored, alone, rtol=1e-6, atol=1e-7)  # a few float32 ulps
    figures = sorted(p.name for p in (store / "figures").glob("*.png"))
    assert figures == ["arrows_by_density.png", "feature_panels.png", "loss_curves.png"]
