"""sweep.identity: a job writes only into the store it was launched for, which is the store with
its creation id AND its settings' fingerprint. Hand-made stores (a .zattrs file, no training):
the truth is which of the two differ, set here."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from sweep import driver
from sweep.__main__ import preflight
from sweep.identity import StaleWrite, check_identity, fingerprint, identity
from tests.conftest import BASE, make_config, refused, tree_hash


def _store(path: Path, run_id: str, fp: str) -> Path:
    path.mkdir()
    (path / ".zattrs").write_text(json.dumps({"run_id": run_id, "fingerprint": fp}))
    return path


@pytest.mark.unit
@pytest.mark.parametrize(
    "run_id", ["8e68538008424411", "1234567890123456", "0000000000000000", "abcdef0123456789"]
)
def test_a_run_id_reaches_its_jobs_as_the_same_text(tmp_path, run_id):
    """The driver hands each job its store's path and run id as Hydra overrides, and the job
    composes its config from them. A run id is 16 hex digits; unquoted, about one in 1,300 (digits
    around one `e`) read as a float (8e68538008424411: 8·10^68538008424411, inf), and every job
    of that run refused its own store as stale (seen once in a whole-suite run). All digits read
    as an int, which the schema's str turns back into the same text."""
    from types import SimpleNamespace

    from hydra_plugins.toysweep.toysweep_sweeper import ToySweeper

    path = _store(tmp_path / "s", run_id, "f1")
    cfg = make_config([*BASE, *ToySweeper._ident(SimpleNamespace(path=path))])
    assert cfg.store.run_id == run_id
    assert Path(cfg.store.path) == path


@pytest.mark.unit
@pytest.mark.parametrize(
    ("run_id", "fp", "refused"),
    [
        ("r1", "f1", False),  # the store the job was launched for
        ("r1", "f2", True),  # its run id, other settings (a hand-launched job)
        ("r2", "f1", True),  # same settings, another creation (an overwrite since)
        ("r2", "f2", True),
    ],
)
def test_a_job_writes_only_where_run_id_and_fingerprint_both_match(tmp_path, run_id, fp,
                                                                   refused):
    path = _store(tmp_path / "s", "r1", "f1")
    job = {"run_id": run_id, "fingerprint": fp}
    if refused:
        with pytest.raises(StaleWrite, match="writes nothing"):
            check_identity(path, job)
    else:
        check_identity(path, job)
    assert identity(path) == {"run_id": "r1", "fingerprint": "f1"}  # read, never changed


@pytest.mark.unit
def test_a_store_that_is_gone_or_unreadable_refuses_every_job(tmp_path):
    with pytest.raises(StaleWrite):
        check_identity(tmp_path / "missing", {"run_id": "r1", "fingerprint": "f1"})
    path = _store(tmp_path / "s", "r1", "f1")
    (path / ".zattrs").write_text("{")
    with pytest.raises(StaleWrite):
        check_identity(path, {"run_id": "r1", "fingerprint": "f1"})


@pytest.mark.unit
def test_every_setting_that_changes_training_changes_the_fingerprint():
    base = ["+grid=phase", "train.steps=20"]
    ref = fingerprint(make_config(base))
    for change in ("train.lr=0.01", "train.steps=21", "grid.seeds=3", "model.n_hidden=2",
                   "data.density=0.5", "train.weight_decay=0.0"):
        assert fingerprint(make_config([*base, change])) != ref, change
    # where the store lives and how the run is shown are not what it trained
    assert fingerprint(make_config([*base, "progress=false", "workers=1"])) == ref


# Hostile cases (issue 10) against a finished store (tests/conftest.py `finished`): a store
# in a state no run may write into, a store in use, a stale job, a failed overwrite.
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


@pytest.mark.hostile
@pytest.mark.parametrize("state", list(STATES))
def test_hostile_store_state_refused_untouched(finished, tmp_path, state, capsys):
    make, expected = STATES[state]
    path, extra = make(tmp_path, finished)
    before = tree_hash(tmp_path)
    line = refused([*BASE, *extra, f"store.path={path}"], capsys)
    assert expected in line, line
    assert tree_hash(tmp_path) == before


@pytest.mark.hostile
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


@pytest.mark.hostile
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


@pytest.mark.hostile
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


@pytest.mark.hostile
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


