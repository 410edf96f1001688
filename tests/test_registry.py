"""Figures chosen by the grid file (analysis.registry), settings from the caller, the Hydra
callback, and an analysis that never imports torch."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml
from omegaconf import open_dict

from analysis import aggregate, registry
from analysis.__main__ import main as analysis_main
from analysis.callback import AnalysisCallback
from analysis.figs.curves import loss_curves
from analysis.metrics import IGNORED
from analysis.report import analyse
from sweep import driver
from sweep.reader import config_of
from tests.conftest import CONF, cells_written, make_config, run_cli, set_attr

GRIDS = sorted(p.stem for p in (CONF / "grid").glob("*.yaml"))
TINY = ["train.steps=40", "grid.seeds=2", "train.compile=false", "train.curve_points=5"]


def without_figures(store: Path, grid_name: str) -> Path:
    """The store with no analysis.figures in its config, renamed."""
    cfg = config_of(xr.open_zarr(store))
    cfg["analysis"].pop("figures", None)
    set_attr(store, "config_yaml", yaml.safe_dump(cfg, sort_keys=False))
    return set_attr(store, "grid_name", grid_name)


@pytest.fixture(scope="module")
def phase_store(tmp_path_factory) -> Path:
    """A tiny trained 2->1 phase store (3 x 3 cells, 2 seeds)."""
    store = tmp_path_factory.mktemp("reg") / "phase"
    axes = ["grid.axes.density=[log,0.01,1.0,3]", "grid.axes.relative_importance=[log,0.1,10,3]"]
    assert driver.run(make_config(["+grid=phase", *TINY, *axes], store=store)) == 0
    return store


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("figures"))
    return dst


def stems(summary: dict) -> list[str]:
    return sorted({Path(p).stem for p in summary["figures"]})


# ---------------------------------------------------------------- the registry and grid files


def test_grid_files_name_registered_families_and_every_family_is_used():
    named = {n: registry.grid_files()[n]["analysis"]["figures"] for n in GRIDS}
    for name, families in named.items():
        assert registry.check_figures(families) == tuple(families), name
    assert set().union(*named.values()) == set(registry.FIGURES)


def test_a_store_whose_config_names_no_figures_gets_the_generic_panels(phase_store, tmp_path):
    """No guessing from the store's name or settings: analysis.figures null draws the generic
    panels, never a refusal."""
    store = without_figures(copy(phase_store, tmp_path / "p"), "phase")
    s = analyse(store, verbose=False)
    assert s["figure_families"] == list(registry.GENERIC_FIGURES) and s["skipped"] == []
    assert stems(s) == ["feature_panels", "loss_curves"]


def test_model_axis_on_a_phase_grid_draws_the_generic_figures(tmp_path):
    """The bug: a `model` axis made loss_curves stack cells into a dim named `model`."""
    store = tmp_path / "s"
    axes = [
        "+grid.axes.model=[linear,relu]",
        "grid.axes.density=[0.1,1.0]",
        "grid.axes.relative_importance=[0.5,2.0]",
    ]
    assert driver.run(make_config(["+grid=phase", *TINY, *axes], store=store)) == 0
    s = analyse(store, verbose=False)
    assert s["kind"] is None and s["skipped"] == ["phase_diagram", "boundaries"]
    assert stems(s) == ["feature_panels", "loss_curves"]


def test_loss_curves_median_over_models_with_a_model_axis():
    steps = np.array([1, 10, 100])
    rng = np.random.default_rng(0)
    curve = rng.uniform(0.1, 1.0, (2, 3, 4, 3))  # (model, density, seed, curve_step)
    dims = ("model", "density", "seed")
    store = xr.Dataset(
        {
            "loss_curve": ((*dims, "curve_step"), curve),
            "loss": (dims, curve[..., -1]),
        },
        coords={"model": ["linear", "relu"], "density": [0.01, 0.1, 1.0], "curve_step": steps},
    )
    usable = xr.DataArray(np.ones((2, 3, 4), bool), dims=dims, coords=store["loss"].coords)
    fig = loss_curves(store, usable)
    ax_raw, ax_rel = fig.axes[:2]
    sparsest = [ln for ln in ax_raw.get_lines() if len(ln.get_xdata()) == 3][0]
    np.testing.assert_allclose(sparsest.get_ydata(), np.median(curve[:, 0].reshape(8, 3), 0))
    rel = [ln for ln in ax_rel.get_lines() if len(ln.get_xdata()) == 3][0]
    ratio = (curve / curve[..., -1:]).reshape(-1, 3)
    np.testing.assert_allclose(rel.get_ydata(), np.median(ratio, 0))
    # the band: 10th to 90th percentile over models at every step (a closed polygon)
    band = ax_rel.collections[0].get_paths()[0].vertices
    for q in (10, 90):
        for x, y in zip(steps, np.percentile(ratio, q, 0), strict=True):
            assert np.isclose(band, [x, y]).all(1).any(), (q, x, y)
    assert ax_raw.get_xscale() == "log" and ax_raw.get_yscale() == "log"


# ---------------------------------------------------------------- settings from the caller


def test_command_line_settings_win_and_steps_run_without_their_figures(phase_store, tmp_path):
    store = copy(phase_store, tmp_path / "p")
    args = [str(store), "--aggregate", "lowest_loss", "--norm-threshold", "0.9"]
    assert analysis_main([*args, "--figures", "loss_curves"]) == 0
    assert sorted(p.name for p in (store / "figures").iterdir()) == [
        "loss_curves.png",
        "loss_curves.svg",
    ]
    ana = xr.open_zarr(aggregate.analysis_path(store)).load()
    assert ana.attrs["aggregate"] == "lowest_loss" and ana.attrs["norm_threshold"] == 0.9
    # the threshold is the one applied: a usable model's feature is ignored iff its norm < 0.9
    usable = ana["usable_seed"].values[..., None]
    ignored = ana["phase_seed"].values == IGNORED
    assert ((ignored == (ana["norm_seed"].values < 0.9)) | ~usable).all()
    # analysis steps ran although only the loss curves were drawn
    for var in ("analytic_phase", "dimensionality_best", "sticky_count", "monosemanticity_best"):
        assert var in ana, var


@pytest.mark.parametrize(
    "args, line",
    [
        (
            ["--figures", "bogus,loss_curves"],
            "error: analysis.figures=bogus is not allowed: expected names from phase_diagram, "
            "feature_panels, loss_curves, ",
        ),
        (
            ["--aggregate", "median"],
            "error: analysis.aggregate=median is not allowed: expected one of drop_worst, "
            "lowest_loss",
        ),
        (
            ["--norm-threshold", "abc"],
            "error: analysis.norm_threshold=abc is not allowed: expected a number in (0, 10)",
        ),
        (
            ["--superposition-threshold", "0"],
            "error: analysis.superposition_threshold=0.0 is not allowed: expected a number in "
            "(0, 10)",
        ),
    ],
)
def test_bad_settings_one_line_nothing_written(phase_store, tmp_path, capsys, args, line):
    store = copy(phase_store, tmp_path / "p")
    assert analysis_main([str(store), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(line) and err.count("\n") == 1, err
    assert not (store / "figures").exists() and not aggregate.analysis_path(store).exists()


# ---------------------------------------------------------------- the Hydra callback


@pytest.mark.parametrize(
    "setting, start",
    [
        # figure names: only the callback knows the registry
        ("analysis.figures=[nope]", "error: analysis.figures=nope is not allowed: expected names"),
        # the rule and thresholds: the engine's typed config or the callback, whichever is first
        ("analysis.aggregate=bogus", "error: analysis.aggregate="),
        ("analysis.norm_threshold=-1", "error: analysis.norm_threshold=-1"),
    ],
)
def test_bad_analysis_settings_refused_before_the_sweep(tmp_path, setting, start):
    store = tmp_path / "s"
    r = run_cli(["-m", "sweep", "+grid=phase", setting, f"store.path={store}"], tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(start) and r.stderr.count("\n") == 1, r.stderr
    assert "is not allowed: expected" in r.stderr
    assert not store.exists() and list(tmp_path.iterdir()) == []


def test_callback_check_names_the_bad_setting(capsys):
    cfg = make_config(["+grid=phase"])
    with open_dict(cfg):
        cfg.analysis.figures = ["phase_diagram", "nope"]
    with pytest.raises(SystemExit) as e:
        AnalysisCallback().on_multirun_start(cfg)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: analysis.figures=nope is not allowed: expected names from ")
    assert err.count("\n") == 1


def test_a_renamed_grid_is_trained_and_analysed_with_the_command_lines_settings(tmp_path):
    """`+grid=intro name=intro_v2` end to end through the registered callback; the analysis
    settings of the run, not the grid file's, are the ones used (the grid says lowest_loss)."""
    store = tmp_path / "s"
    args = ["+grid=intro", "name=intro_v2", "train.steps=5", "grid.seeds=2", "progress=false"]
    args += ["grid.axes.density=[1.0,0.05]", "analysis.aggregate=drop_worst"]
    args += ["analysis.norm_threshold=0.9", f"store.path={store}"]
    r = run_cli(["-m", "sweep", *args], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.name for p in (store / "figures").glob("*.png")) == [
        "arrows_by_density.png",
        "loss_curves.png",
    ]
    attrs = xr.open_zarr(aggregate.analysis_path(store)).attrs
    assert (attrs["aggregate"], attrs["norm_threshold"]) == ("drop_worst", 0.9)


def test_callback_analyses_a_finished_store_with_the_runs_settings(phase_store, tmp_path):
    store = copy(phase_store, tmp_path / "p")
    cfg = make_config(["+grid=phase", "analysis.figures=[loss_curves]"], store=store)
    callback = AnalysisCallback()
    callback.on_multirun_end(cfg)  # analysis.run is false in make_config: nothing
    assert not (store / "figures").exists()
    with open_dict(cfg):
        cfg.analysis.run = True
        cfg.analysis.aggregate = "lowest_loss"
    callback.on_multirun_end(cfg)
    assert sorted(p.stem for p in (store / "figures").iterdir()) == ["loss_curves"] * 2
    assert xr.open_zarr(aggregate.analysis_path(store)).attrs["aggregate"] == "lowest_loss"
    # an unfinished store is left to the rerun that trains it
    unfinished = copy(phase_store, tmp_path / "u")
    with cells_written(unfinished, (0, 0, 0), finished=False):
        pass
    with open_dict(cfg):
        cfg.store.path = str(unfinished)
    callback.on_multirun_end(cfg)
    assert not (unfinished / "figures").exists()


# ---------------------------------------------------------------- no torch


def test_analysing_a_store_imports_no_torch(phase_store, tmp_path):
    store = copy(phase_store, tmp_path / "p")
    code = (
        "import sys; from analysis.__main__ import main; rc = main([sys.argv[1]]); "
        "print('torch' in sys.modules, rc)"
    )
    r = run_cli(["-c", code, str(store)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "False 0", r.stdout[-500:]


# ---------------------------------------------------------------- imports


def imports_of(path: Path) -> set[str]:
    """Modules a source file imports (anywhere in it, lazy imports included)."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


@pytest.mark.unit
def test_analysis_imports_no_cycle_and_only_store_and_quadrature_from_the_engine():
    root = CONF.parent
    files = {
        ".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
        for p in (root / "analysis").rglob("*.py")
    }
    graph = {m: {i for i in imports_of(p) if i in files and i != m} for m, p in files.items()}
    engine = {i for p in files.values() for i in imports_of(p) if i.split(".")[0] == "sweep"}
    # the numbers shared with the engine (sweep.constants: thresholds, phase codes; no imports)
    engine = {i for i in engine if i.split(".")[:2] != ["sweep", "constants"]}
    # the store's reader, and the exact expected loss (numpy only; the refinement ranks by it);
    # "sweep" itself only as the package of `from sweep import reader`
    assert engine <= {
        "sweep",
        "sweep.reader",
        "sweep.reader.StoreError",
        "sweep.reader.config_of",
        "sweep.reader.open_store",
        "sweep.reader.finished",
        "sweep.reader.read_cell",
        "sweep.quadrature",
        "sweep.quadrature.MAX_FEATURES",
        "sweep.quadrature.ArrayLike",
        "sweep.quadrature._loss_and_grad",
        "sweep.quadrature.expected_loss",
        "sweep.cli",
        "sweep.timing",
        "sweep.cores",
        "sweep.cores.available_cores",
    }, engine  # fmt: skip  (timing: the phase marks; cores: CPU affinity; stdlib)
    assert not any("torch" in i.split(".") for p in files.values() for i in imports_of(p))
    # no module reaches itself through its imports
    for start in graph:
        seen, todo = set(), list(graph[start])
        while todo:
            m = todo.pop()
            assert m != start, f"{start} imports itself through {sorted(seen)}"
            if m not in seen:
                seen.add(m)
                todo += graph[m]
