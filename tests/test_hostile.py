"""Hostile input, tried as a user would (issue 10): each case ends with one line and exit 2
before anything is created, or with a clean retrain; a store that was there before is
byte-identical afterwards, or repaired to exactly the numbers it held.

Most cases run in this process through `sweep.__main__.preflight` and `driver.prepare`, the
very checks the command line runs before it creates anything; a few go through the real CLI.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from sweep import driver
from sweep.__main__ import preflight
from sweep.identity import identity
from sweep.reader import open_store
from tests.conftest import ROOT, make_config, run_cli

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


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished 8-model store (2 blocks of 4), trained once for the whole module."""
    path = tmp_path_factory.mktemp("ref") / "store"
    assert driver.run(make_config(BASE, store=path)) == 0
    return path


def refused(args: list[str], capsys) -> str:
    """Run the CLI's checks and the store checks in-process; return the one error line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        sweep = driver.prepare(preflight(args))
        sweep.lock.close()  # it was accepted: release the store before failing the test
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# (override(s), what the one line must contain). Each is tried against the finished store.
SCHEMA = [  # types and choices, from the OmegaConf schema
    ("model.kind=sigmoid", "model.kind='sigmoid'"),
    ("model.kind=RELU", "model.kind='RELU'"),
    ("model.kind=1", "model.kind=1"),
    ("model.n_features=two", "model.n_features='two'"),
    ("model.n_features=2.5", "model.n_features=2.5"),
    ("model.n_hidden=[1]", "model.n_hidden"),
    ("model.n_hidden=null", "model.n_hidden"),
    ("data.density=dense", "data.density='dense'"),
    ("data.correlation=maybe", "data.correlation='maybe'"),
    ("data.set_size=2.5", "data.set_size=2.5"),
    ("data.importance.schedule=cubic", "data.importance.schedule='cubic'"),
    ("data.importance.ratio=[0.5]", "data.importance.ratio"),
    ("data.relative_importance_features=[a]", "data.relative_importance_features"),
    ("data.relative_importance_features=1", "data.relative_importance_features"),
    ("data.density_features=[0.5]", "data.density_features"),
    ("train.steps=ten", "train.steps='ten'"),
    ("train.steps=1e3", "train.steps"),
    ("train.batch_size=true", "train.batch_size"),
    ("train.lr=fast", "train.lr='fast'"),
    ("train.lr_schedule=step", "train.lr_schedule='step'"),
    ("train.dtype=float16", "train.dtype='float16'"),
    ("train.dtype=bfloat16", "train.dtype"),
    ("train.backend=cuda", "train.backend='cuda'"),
    ("train.threads=auto", "train.threads"),
    ("train.checkpoint_seconds=soon", "train.checkpoint_seconds"),
    ("chunk.memory_mb=lots", "chunk.memory_mb='lots'"),
    ("chunk.max_instances=1.5", "chunk.max_instances=1.5"),
    ("store.mode=append", "store.mode='append'"),
    ("store.verify=true", "store.verify"),  # gone in format 2: every run checks every record
    ("retries=x", "retries='x'"),
    ("progress=loud", "progress='loud'"),
    ("analysis.run=perhaps", "analysis.run='perhaps'"),
    ("analysis.aggregate=bogus", "analysis.aggregate='bogus'"),
    ("analysis.aggregate=mean", "analysis.aggregate='mean'"),
    ("analysis.norm_threshold=half", "analysis.norm_threshold='half'"),
    ("analysis.figures=3", "analysis.figures=3"),
]
RANGES = [  # ranges declared in the schema, and extreme values
    ("model.n_features=0", "model.n_features=0"),
    ("model.n_hidden=-1", "model.n_hidden=-1"),
    ("model.n_features=10000000000", "model.n_features"),
    ("data.density=0", "data.density=0"),
    ("data.density=1.5", "data.density=1.5"),
    ("data.density=nan", "data.density=nan"),
    ("data.density=-inf", "data.density=-inf"),
    ("data.importance.value=-1", "data.importance.value=-1"),
    ("data.importance.value=inf", "data.importance.value=inf"),
    ("data.importance.ratio=nan", "data.importance.ratio=nan"),
    ("train.steps=0", "train.steps=0"),
    ("train.steps=-5", "train.steps=-5"),
    ("train.steps=100000000000000", "train.steps"),
    ("train.batch_size=0", "train.batch_size=0"),
    ("train.lr=0", "train.lr=0"),
    ("train.lr=-1e-3", "train.lr=-0.001"),
    ("train.lr=inf", "train.lr=inf"),
    ("train.lr=nan", "train.lr=nan"),
    ("train.weight_decay=-0.1", "train.weight_decay=-0.1"),
    ("train.curve_points=0", "train.curve_points=0"),
    ("train.checkpoint_seconds=0", "train.checkpoint_seconds=0"),
    ("train.threads=-1", "train.threads=-1"),
    ("train.threads=100000", "train.threads"),
    ("chunk.memory_mb=0", "chunk.memory_mb=0"),
    ("chunk.memory_mb=-5", "chunk.memory_mb"),
    ("chunk.memory_mb=0.001", "chunk.memory_mb=0.001"),
    ("chunk.max_instances=0", "chunk.max_instances=0"),
    ("retries=-1", "retries=-1"),
    ("retries=1000000000", "retries"),
    ("analysis.norm_threshold=0", "analysis.norm_threshold=0"),
    ("analysis.norm_threshold=-1", "analysis.norm_threshold=-1"),
    ("analysis.superposition_threshold=10", "analysis.superposition_threshold=10"),
    ("analysis.superposition_threshold=nan", "analysis.superposition_threshold"),
]
RULES = [  # settings that tie several keys together
    ("train.warmup_steps=20", "train.warmup_steps=20"),
    ("train.warmup_steps=-1", "train.warmup_steps=-1"),
    ("data.relative_importance_features=[1,1]", "no duplicates"),
    ("data.relative_importance_features=[5]", "data.relative_importance_features=[5]"),
    # -1 is the last feature (issue 23's dimension grid); -3 lies before the first at n = 2
    ("data.relative_importance_features=[-3]", "data.relative_importance_features=[-3]"),
    ("data.relative_importance_features=[1,-1]", "no duplicates"),
    ("data.density_features=[0,0]", "no duplicates"),
    ("data.density_features=[2]", "data.density_features=[2]"),
    ("data.importance.schedule=exponential data.importance.start=0", "data.importance.start"),
    ("data.correlation=correlated data.set_size=3", "data.set_size=3"),
    ("model.kind=absval data.correlation=correlated", "model.kind='absval'"),
    ("+grid.axes.model=[relu,absval] +grid.axes.correlation=[correlated]", "grid.axes.model"),
    ("train.device=tpu", "train.device='tpu'"),
    ("train.device=cuda:x", "train.device"),
    ("train.device=cuda", "train.device='cuda'"),
    ("train.device=cuda:3", "train.device"),
    ("train.compile=sometimes", "train.compile"),
    ("grid.seeds=0", "grid.seeds=0"),
    ("grid.seeds=-3", "grid.seeds=-3"),
    ("grid.seeds=[1,1]", "grid.seeds=[1, 1]"),
    ("grid.seeds=[]", "grid.seeds=[]"),
    ("grid.seeds=[-1]", "grid.seeds=[-1]"),
    ("grid.seeds=[a]", "grid.seeds"),
    ("grid.seeds=2.5", "grid.seeds=2.5"),
    ("analysis.figures=[a,a]", "analysis.figures"),
]
AXES = [
    ("grid.axes.density=[0.5,1.5]", "grid.axes.density=1.5"),
    ("grid.axes.density=[]", "grid.axes.density='[]'"),
    ("grid.axes.density=[1,1.0]", "distinct values"),
    ("grid.axes.density=[0.5,0.50]", "distinct values"),
    ("grid.axes.density=[a,b]", "grid.axes.density='a'"),
    ("grid.axes.density=[log,0,1,3]", "start, stop > 0"),
    ("grid.axes.density=[log,0.1,1,0]", "grid.axes.density"),
    ("grid.axes.density=[log,0.1,1,2.5]", "grid.axes.density"),
    ("grid.axes.density=[lin,0.1,1]", "grid.axes.density"),
    ("grid.axes.density=[nan]", "grid.axes.density"),
    ("grid.axes.density=0.5", "grid.axes.density"),
    ("grid.axes.relative_importance=[-1.0,2.0]", "grid.axes.relative_importance=-1.0"),
    ("grid.axes.relative_importance=[inf]", "grid.axes.relative_importance=inf"),
    ("+grid.axes.n_hidden=[0,1]", "grid.axes.n_hidden=0"),
    ("+grid.axes.n_hidden=[1.5]", "grid.axes.n_hidden=1.5"),
    ("+grid.axes.n_features=[2,2]", "distinct values"),
    ("+grid.axes.temperature=[1,2]", "grid.axes='temperature'"),
    ("+grid.axes.model=[relu,softmax]", "grid.axes.model='softmax'"),
    ("+grid.axes.correlation=[sometimes]", "grid.axes.correlation='sometimes'"),
]
SIZES = [  # size guards: refused before any memory is taken
    ("grid.seeds=1000000000", "grid.seeds=1000000000"),
    ("grid.axes.density=[log,0.001,1,1000000000]", "at most"),
    ("train.batch_size=50000000", "train.batch_size=50000000"),
    ("model.n_features=1000000 model.n_hidden=1000000", "train.batch_size"),
    (
        "grid.axes.density=[log,0.001,1,5000] grid.axes.relative_importance=[log,0.1,10,5000]",
        "models in one store",
    ),
]
GRAMMAR = [  # Hydra's override grammar
    ("train.steps=[1,2", "cannot parse"),
    ("train.steps=", "train.steps"),
    ("no_such_key=1", "no_such_key"),
    ("train.no_such=1", "no_such"),
    ("launcher=pbs", "launcher/pbs"),
    ("train.steps=${nope}", "nope"),
    ("~model", "model"),
    ("train=5", "train"),
    ("=5", "no key"),
    ("train.steps=1,2", "train.steps"),
    ("train.steps={a:1}", "train.steps"),
    ("name=${name}", "name"),
    ("train.steps=${train.lr}", "train.steps"),
    ("hydra.mode=SOMETIMES", "hydra.mode"),
]
CASES = SCHEMA + RANGES + RULES + AXES + SIZES + GRAMMAR


@pytest.mark.parametrize(("override", "expected"), CASES, ids=[c[0] for c in CASES])
def test_hostile_setting_one_line_store_untouched(finished, override, expected, capsys):
    before = tree_hash(finished)
    line = refused([*BASE, *override.split(), f"store.path={finished}"], capsys)
    assert expected in line, line
    assert tree_hash(finished) == before


def test_unknown_figure_is_refused_by_the_analysis_callback(finished, capsys):
    from analysis.callback import AnalysisCallback

    cfg = preflight([*BASE, "analysis.figures=[no_such_figure]", f"store.path={finished}"])
    with pytest.raises(SystemExit) as exc:
        AnalysisCallback().on_multirun_start(cfg)
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and "no_such_figure" in line


def test_slurm_without_sbatch_refused(finished, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, sacct on PATH
    before = tree_hash(finished)
    line = refused([*BASE, "launcher=slurm", f"store.path={finished}"], capsys)
    assert "launcher='slurm'" in line and "sbatch" in line
    assert tree_hash(finished) == before


# Store states: (how to prepare tmp_path from the finished store, overrides, expected).
def _other_settings(tmp: Path, ref: Path) -> tuple[Path, list[str]]:
    shutil.copytree(ref, tmp / "s")
    return tmp / "s", ["train.steps=21"]


def _user_files_overwrite(tmp: Path, ref: Path) -> tuple[Path, list[str]]:
    shutil.copytree(ref, tmp / "s")
    (tmp / "s" / "thesis.tex").write_text("precious")
    return tmp / "s", ["store.mode=overwrite"]


def _nested_store_overwrite(tmp: Path, ref: Path) -> tuple[Path, list[str]]:
    shutil.copytree(ref, tmp / "s")
    shutil.copytree(ref, tmp / "s" / "inner")
    return tmp / "s", ["store.mode=overwrite"]


def _foreign_dir(tmp: Path, ref: Path) -> tuple[Path, list[str]]:
    (tmp / "s").mkdir()
    (tmp / "s" / "data.csv").write_text("1,2")
    return tmp / "s", ["store.mode=overwrite"]


def _a_file(tmp: Path, ref: Path) -> tuple[Path, list[str]]:
    (tmp / "s").write_text("keep me")
    return tmp / "s", []


def _under_a_file(tmp: Path, ref: Path) -> tuple[Path, list[str]]:
    (tmp / "f").write_text("keep me")
    return tmp / "f" / "s", []


def _edited_config(tmp: Path, ref: Path) -> tuple[Path, list[str]]:
    shutil.copytree(ref, tmp / "s")
    meta = json.loads((tmp / "s" / ".zmetadata").read_text())
    attrs = meta["metadata"][".zattrs"]
    attrs["config_yaml"] = attrs["config_yaml"].replace("n_features: 2", "n_features: 3")
    (tmp / "s" / ".zmetadata").write_text(json.dumps(meta))
    (tmp / "s" / ".zattrs").write_text(json.dumps(attrs))
    return tmp / "s", []


def _edited_config_restamped(tmp: Path, ref: Path) -> tuple[Path, list[str]]:
    """The config edited and its fingerprint recomputed by hand: the arrays still disagree."""
    from sweep.identity import fingerprint_of_yaml

    path, extra = _edited_config(tmp, ref)
    meta = json.loads((path / ".zmetadata").read_text())
    attrs = meta["metadata"][".zattrs"]
    attrs["fingerprint"] = fingerprint_of_yaml(attrs["config_yaml"])
    (path / ".zmetadata").write_text(json.dumps(meta))
    (path / ".zattrs").write_text(json.dumps(attrs))
    return path, extra


def _version_1(tmp: Path, ref: Path) -> tuple[Path, list[str]]:
    shutil.copytree(Path(__file__).parent / "data" / "store_v1", tmp / "s")
    return tmp / "s", []


def _inside_a_store(tmp: Path, ref: Path) -> tuple[Path, list[str]]:
    shutil.copytree(ref, tmp / "s")
    return tmp / "s" / "inner", []


def _inside_a_stores_jobs(tmp: Path, ref: Path) -> tuple[Path, list[str]]:
    shutil.copytree(ref, tmp / "s")
    return tmp / "s" / ".jobs" / "logs" / "inner", []


def _around_a_store(tmp: Path, ref: Path) -> tuple[Path, list[str]]:
    shutil.copytree(ref, tmp / "runs" / "a" / "s")
    return tmp / "runs", []


def _garbage_metadata(tmp: Path, ref: Path) -> tuple[Path, list[str]]:
    shutil.copytree(ref, tmp / "s")
    (tmp / "s" / ".zmetadata").write_text("{")
    return tmp / "s", []


def _old_schema(tmp: Path, ref: Path) -> tuple[Path, list[str]]:
    shutil.copytree(ref, tmp / "s")
    meta = json.loads((tmp / "s" / ".zmetadata").read_text())
    meta["metadata"][".zattrs"]["schema_version"] = 99
    (tmp / "s" / ".zmetadata").write_text(json.dumps(meta))
    (tmp / "s" / ".zattrs").write_text(json.dumps(meta["metadata"][".zattrs"]))
    return tmp / "s", []


def _dangling_link_into_file(tmp: Path, ref: Path) -> tuple[Path, list[str]]:
    (tmp / "f").write_text("keep me")
    (tmp / "s").symlink_to(tmp / "f")
    return tmp / "s", []


def _symlink_loop(tmp: Path, ref: Path) -> tuple[Path, list[str]]:
    (tmp / "s").symlink_to(tmp / "s")
    return tmp / "s", []


def _symlink_chain_into_a_file(tmp: Path, ref: Path) -> tuple[Path, list[str]]:
    (tmp / "f").write_text("keep me")
    (tmp / "a").symlink_to(tmp / "f")
    (tmp / "s").symlink_to(tmp / "a")
    return tmp / "s" / "store", []


STATES = {
    "other_settings": (_other_settings, "different grid or settings"),
    "overwrite_user_files": (_user_files_overwrite, "thesis.tex"),
    "overwrite_nested_store": (_nested_store_overwrite, "inner"),
    "overwrite_foreign_dir": (_foreign_dir, "not a zarr store"),
    "store_is_a_file": (_a_file, "is a file"),
    "store_under_a_file": (_under_a_file, "which is a file"),
    "edited_config_yaml": (_edited_config, "the recorded config was edited"),
    "edited_config_yaml_restamped": (_edited_config_restamped, "disagree with its config_yaml"),
    "version_1": (_version_1, "convert it with `python -m sweep.migrate"),
    "inside_a_store": (_inside_a_store, "it lies inside the store"),
    "inside_a_stores_jobs": (_inside_a_stores_jobs, "it lies inside the store"),
    "around_a_store": (_around_a_store, "it holds the store"),
    "garbage_metadata": (_garbage_metadata, "cannot be opened"),
    "old_schema": (_old_schema, "schema_version=99"),
    "symlink_to_a_file": (_dangling_link_into_file, "is a file"),
    "symlink_loop": (_symlink_loop, "cannot be resolved"),
    "symlink_chain_into_a_file": (_symlink_chain_into_a_file, "which is a file"),
}


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/", "expected a folder below a directory other than the file system's root /"),
        ("/toysweep-run", "expected a folder below a directory other than"),
        ("''", "store.path='' is not allowed: expected a path to a folder"),
        ("' '", "expected a path to a folder"),
        (f"/tmp/{'x' * 240}", "a name of 240 bytes in it, expected at most 233"),
        (f"/tmp/{'y' * 300}/s", "a name of 300 bytes in it, expected at most 255"),
    ],
)
def test_store_path_at_the_root_empty_or_too_long_refused(given, expected, tmp_path, capsys):
    """No store (and so none of its lock files) in the file system's root, unnamed, or with a
    name its file system cannot hold; checked before anything is created, in the root, in the
    working folder or in /tmp."""
    root = sorted(p.name for p in Path("/").iterdir())
    tmp = sorted(p.name for p in Path("/tmp").iterdir() if "xxxx" in p.name or "yyyy" in p.name)
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        line = refused([*BASE, f"store.path={given}"], capsys)
    finally:
        os.chdir(cwd)
    assert expected in line, line
    assert sorted(p.name for p in Path("/").iterdir()) == root
    assert list(tmp_path.iterdir()) == []
    assert tmp == sorted(
        p.name for p in Path("/tmp").iterdir() if "xxxx" in p.name or "yyyy" in p.name
    )


@pytest.mark.parametrize("state", list(STATES))
def test_hostile_store_state_refused_untouched(finished, tmp_path, state, capsys):
    make, expected = STATES[state]
    path, extra = make(tmp_path, finished)
    before = tree_hash(tmp_path)
    line = refused([*BASE, *extra, f"store.path={path}"], capsys)
    assert expected in line, line
    assert tree_hash(tmp_path) == before


def test_symlink_alias_of_a_store_in_use_is_refused(finished, tmp_path, capsys):
    real = tmp_path / "real"
    shutil.copytree(finished, real)
    alias = tmp_path / "alias"
    alias.symlink_to(real)
    first = driver.prepare(preflight([*BASE, f"store.path={real}"]))
    try:
        line = refused([*BASE, f"store.path={alias}"], capsys)
        assert "in use by another sweep" in line and str(os.getpid()) in line
    finally:
        first.lock.close()
    # a symlink store path stays a symlink through an overwrite
    assert (
        driver.run(make_config([*BASE, "train.lr=0.01", "store.mode=overwrite"], store=alias)) == 0
    )
    assert alias.is_symlink() and alias.resolve() == real
    assert xr.open_zarr(alias).attrs["config_yaml"].count("lr: 0.01") == 1


# Damage: (variable, how) -> the next run retrains exactly the damaged block, numbers as before.
DAMAGE = [
    (v, how)
    for v in ("W", "b", "loss", "loss_curve", "finished")
    for how in ("delete", "garbage", "truncate")
] + [("diverged", "garbage")]


def _damage(path: Path, var: str, how: str) -> None:
    chunks = sorted(p for p in (path / var).iterdir() if not p.name.startswith("."))
    # an array at its fill value everywhere (diverged: all False) has no chunk files
    chunk = chunks[-1] if chunks else path / var / "1.0.0"
    if how == "delete":
        chunk.unlink()
    elif how == "garbage":
        chunk.write_bytes(b"\x00garbage" * 7)
    else:
        chunk.write_bytes(chunk.read_bytes()[: max(1, chunk.stat().st_size // 2)])


def _same_results(path: Path, ref: Path) -> None:
    a, b = xr.open_zarr(path).load(), xr.open_zarr(ref).load()
    for v in (
        "W",
        "b",
        "loss",
        "loss_curve",
        "finished",
        "diverged",
        "importance",
        "feature_density",
    ):
        np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=v)


def test_intact_store_trains_nothing(finished, tmp_path, capsys):
    """The check that finds damage finds none in an intact store (reads every variable)."""
    path = tmp_path / "s"
    shutil.copytree(finished, path)
    assert driver.run(make_config(BASE, store=path)) == 0
    assert "trained 0 models" in capsys.readouterr().out
    _same_results(path, finished)


@pytest.mark.parametrize(("var", "how"), DAMAGE, ids=[f"{v}-{h}" for v, h in DAMAGE])
def test_damaged_chunk_of_any_variable_is_retrained(finished, tmp_path, var, how, capsys):
    path = tmp_path / "s"
    shutil.copytree(finished, path)
    _damage(path, var, how)
    assert driver.run(make_config(BASE, store=path)) == 0
    assert "trained 4 models" in capsys.readouterr().out  # exactly the damaged block
    _same_results(path, finished)  # to exactly the numbers it held


@pytest.mark.parametrize("what", ["finished_array", "W_zarray", "importance"])
def test_lost_metadata_and_static_variables_repaired(finished, tmp_path, what):
    path = tmp_path / "s"
    shutil.copytree(finished, path)
    if what == "finished_array":
        shutil.rmtree(path / "finished")
    elif what == "W_zarray":
        (path / "W" / ".zarray").unlink()
    else:  # the template's record finds it on every resume
        _damage(path, "importance", "garbage")
    assert driver.run(make_config(BASE, store=path)) == 0
    _same_results(path, finished)
    assert driver.run(make_config(BASE, store=path)) == 0  # and it stays usable


def test_stale_job_of_an_overwritten_store_writes_nothing(finished, tmp_path, caplog):
    path = tmp_path / "s"
    shutil.copytree(finished, path)
    old = make_config(BASE, store=path)
    # a job of the old run, launched before the overwrite (its block is unfinished again)
    from sweep.grid import GridPlan

    stale = driver.job_config(old, path, GridPlan(old).blocks[0].key())
    assert (
        driver.run(make_config([*BASE, "train.lr=0.01", "store.mode=overwrite"], store=path)) == 0
    )
    before = tree_hash(path)
    with caplog.at_level("WARNING"):
        out = driver.run_block(stale)
    assert out.get("stale") and out["models"] == 0
    assert "stale job, nothing written" in caplog.text
    assert tree_hash(path) == before


def test_job_with_the_run_id_but_other_settings_writes_nothing(finished, tmp_path, caplog):
    """A job carrying the store's run id but settings that differ from the store's (a
    hand-launched job, a launcher that composed another config) would train other numbers into
    the store's cells: it is refused like a stale job."""
    path = tmp_path / "s"
    shutil.copytree(finished, path)
    from sweep.grid import GridPlan

    other = make_config([*BASE, "train.lr=0.01"], store=path)
    key = GridPlan(other).blocks[0].key()
    job = driver.job_config(other, path, key, run_id=identity(path)["run_id"])
    zarr_finished = xr.open_zarr(path)["finished"].values.copy()
    before = tree_hash(path)
    with caplog.at_level("WARNING"):
        out = driver.run_block(job)
    assert out.get("stale") and out["models"] == 0
    assert tree_hash(path) == before
    np.testing.assert_array_equal(xr.open_zarr(path)["finished"].values, zarr_finished)


def test_checkpoint_of_another_run_or_shape_is_not_loaded(finished, tmp_path, caplog):
    from sweep.grid import GridPlan
    from sweep.train import train_block

    cfg = make_config(BASE)
    plan = GridPlan(cfg)
    job = plan.job(plan.blocks[:1])
    ckpt = tmp_path / "c.pt"
    one = type(job)(
        **{
            **job.__dict__,
            "seeds": job.seeds[:1],
            "density": job.density[:1],
            "importance": job.importance[:1],
        }
    )
    assert (
        train_block(one, checkpoint=ckpt, progress=False, stop_at=10, identity={"run_id": "a"})
        is None
    )
    fresh = train_block(job, progress=False)
    with caplog.at_level("WARNING"):
        got = train_block(job, checkpoint=ckpt, progress=False, identity={"run_id": "a"})
    assert got.resumed_from == 0 and "another run or block shape" in caplog.text
    np.testing.assert_array_equal(got.W, fresh.W)
    # same shape, other run: not loaded either
    assert (
        train_block(job, checkpoint=ckpt, progress=False, stop_at=10, identity={"run_id": "a"})
        is None
    )
    assert (
        train_block(job, checkpoint=ckpt, progress=False, identity={"run_id": "b"}).resumed_from
        == 0
    )


def test_overwrite_keeps_the_old_store_when_the_new_run_fails(
    finished, tmp_path, capsys, monkeypatch
):
    """A failure that only shows inside a job (here: training raises) leaves the old store."""
    path = tmp_path / "s"
    shutil.copytree(finished, path)
    before = tree_hash(path)

    def broken(*a, **k):
        raise RuntimeError("CUDA error: no kernel image is available")

    import sweep.train

    monkeypatch.setattr(sweep.train, "train_block", broken)  # the driver imports it when used
    with pytest.raises(SystemExit) as exc:
        driver.prepare(make_config([*BASE, "train.lr=0.01", "store.mode=overwrite"], store=path))
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 1 and "untouched" in line and "no kernel image" in line
    assert tree_hash(path) == before
    assert not list(tmp_path.glob(".s.new-*"))


def test_analysis_settings_from_the_command_line_are_used(finished, tmp_path):
    from analysis.callback import run_analysis

    path = tmp_path / "s"
    shutil.copytree(finished, path)
    cfg = preflight(
        [
            *BASE,
            "analysis.aggregate=lowest_loss",
            "analysis.norm_threshold=0.9",
            "analysis.figures=[loss_curves]",
            f"store.path={path}",
        ]
    )
    summary = run_analysis(_with_run(cfg))
    assert summary["aggregate"] == "lowest_loss"
    ana = xr.open_zarr(Path(str(path) + ".analysis.zarr"))
    assert float(ana.attrs["norm_threshold"]) == 0.9


def _with_run(cfg):
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.analysis.run = True
    return cfg


# The real command line, for what only a process shows.
def test_cli_odd_path_quoted_for_jobs(tmp_path):
    odd = tmp_path / "a b (c), d$;é'q"
    quoted = driver.hydra_quote(str(odd))
    r = run_cli(["-m", "sweep", *BASE, f"store.path={quoted}"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert bool(xr.open_zarr(odd).finished.all())


@pytest.mark.slow
def test_cli_odd_path_through_submitit_jobs(tmp_path):
    """The same through submitit's local executor: jobs in their own processes."""
    odd = tmp_path / "ü (1), $x;"
    r = run_cli(
        [
            "-m",
            "sweep",
            *BASE,
            "launcher=submitit_local",
            f"store.path={driver.hydra_quote(str(odd))}",
        ],
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert bool(xr.open_zarr(odd).finished.all())


def test_cli_keyboard_interrupt_one_line_then_resume(tmp_path):
    path = tmp_path / "s"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweep", *BASE, "train.steps=200000", f"store.path={path}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Waits on the store's template (the sweep is past its checks and training), with limits
    # generous enough for a loaded machine: no step here is sized for an idle one.
    deadline = time.time() + 600
    while not (path / ".zmetadata").exists():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("error: interrupted"), err[-3000:]
    open_store(path)  # the interrupted store still opens (a rerun resumes it)


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


def test_full_disk_one_line_nothing_left(tmpfs, capsys):
    (tmpfs / "filler").write_bytes(b"\0" * 250_000)  # leaves a few KiB
    line = refused([*BASE, f"store.path={tmpfs / 's'}"], capsys)
    assert "cannot write the store" in line or "not writable" in line, line
    assert sorted(p.name for p in tmpfs.iterdir() if not p.name.startswith(".s.")) == ["filler"]
    assert not (tmpfs / "s").exists()


def test_read_only_store_one_line_untouched(tmpfs, finished, capsys):
    shutil.copytree(finished, tmpfs / "s")
    before = tree_hash(tmpfs / "s")
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    line = refused([*BASE, f"store.path={tmpfs / 's'}"], capsys)
    assert "not writable" in line
    assert tree_hash(tmpfs / "s") == before


def test_renamed_grid_is_analysed(tmp_path):
    """`+grid=intro name=intro_v2`: the figures come from the grid file's analysis.figures,
    recorded in the store, not from the store's name."""
    from analysis.report import analyse

    path = tmp_path / "v2"
    cfg = make_config(
        [
            "+grid=intro",
            "name=intro_v2",
            "train.steps=10",
            "grid.seeds=1",
            "grid.axes.density=[0.1,1.0]",
        ],
        store=path,
    )
    assert driver.run(cfg) == 0
    summary = analyse(path, verbose=False)
    assert summary["figures"]
