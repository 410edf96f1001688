"""The store format: the storage chunks are a function of the grid and the memory budget only, and
how a run groups them into jobs is its own choice. So a store made with 2 workers resumes with
1 or 8 (or on a machine with other cores) with no special code, to bit-identical numbers; the
recorded config is authoritative (an edited one is refused); a store is never created inside
or around another; a store of an older format (1, 2) is refused with the migration command,
and migrated.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from sweep import cores, driver, integrity, jobs, layout, writes
from sweep.grid import GridPlan
from sweep.identity import fingerprint
from sweep.reader import SCHEMA_VERSION, StoreError, open_store
from tests.conftest import ROOT, make_config, run_cli, set_attr, tree_hash

TINY = [
    "+grid=phase",
    "train.steps=30",
    "grid.seeds=2",
    "grid.axes.density=[log,0.1,1.0,4]",
    "grid.axes.relative_importance=[0.5,1.0,2.0]",
    "train.compile=false",
    "chunk.max_instances=4",  # 6 chunks of 4 models (3 rows × 2)
]
V1 = ROOT / "tests" / "data" / "store_v1"
# store_v1 migrated to format 2 by the code of da39448: records without the flag files' hashes
V2 = ROOT / "tests" / "data" / "store_v2"
V1_CONFIG = [  # the overrides tests/data/store_v1 was made with (by the code of 2dea7ab)
    "+grid=phase",
    "train.steps=50",
    "grid.seeds=2",
    "grid.axes.density=[log,0.1,1,3]",
    "grid.axes.relative_importance=[0.5,2]",
    "chunk.max_instances=4",
]


def _arrays(path: Path) -> dict[str, np.ndarray]:
    ds = xr.open_zarr(path)
    return {v: ds[v].values for v in ("W", "b", "loss", "loss_curve", "finished")}


def _drop_chunks(path: Path, var: str, every: int = 1) -> int:
    """Delete every `every`-th stored chunk file of one variable (a damaged store); returns how
    many."""
    gone = sorted(p for p in (path / var).iterdir() if not p.name.startswith("."))[::every]
    for p in gone:
        p.unlink()
    return len(gone)


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    for v in a:
        np.testing.assert_array_equal(a[v], b[v], err_msg=v)


@pytest.mark.unit
@pytest.mark.parametrize("workers", [1, 2, 8, 64])
def test_chunks_ignore_the_worker_count_and_the_machine(monkeypatch, workers):
    monkeypatch.setattr(cores, "available_cores", lambda: 3)
    ref = GridPlan(make_config(["+grid=phase", "workers=1"]))
    plan = GridPlan(make_config(["+grid=phase", f"workers={workers}"]))
    assert plan.chunks == ref.chunks and [b.key() for b in plan.blocks] == [
        b.key() for b in ref.blocks
    ]
    # small enough to spread: 15 chunks (one row of 75 models each) for the default grid
    assert len(plan.blocks) == 15 and max(b.size for b in plan.blocks) == 75


@pytest.mark.unit
@pytest.mark.parametrize("workers", [1, 2, 3, 8, 64])
def test_jobs_cover_the_unfinished_chunks_once_each_under_the_budget(monkeypatch, workers):
    monkeypatch.setattr(jobs, "SPLIT_WORK", 1)
    plan = GridPlan(make_config(["+grid=phase", "chunk.max_instances=300"]))
    keys = [b.key() for b in plan.blocks]
    todo = keys[:3] + keys[5:]  # chunks 3 and 4 finished
    names = jobs.group(plan, todo, workers)
    got = [b.key() for n in names for b in jobs.chunks_of(plan, n)]
    assert sorted(got) == sorted(todo) and len(got) == len(set(got))
    assert all(sum(b.size for b in jobs.chunks_of(plan, n)) <= plan.job_cap for n in names)
    # about `workers` jobs: never fewer than min(workers, what the budget allows), plus the cut
    # at the finished chunks
    need = -(-plan.n_cells // plan.job_cap)
    assert max(need, min(workers, len(todo)) - 2) <= len(names) <= max(need, workers) + 2
    # a job's name gives back its chunks; anything else is one ConfigError line
    with pytest.raises(Exception, match="block="):
        jobs.chunks_of(plan, "relu-2-1-c3..c999")


def test_store_made_with_2_workers_resumes_with_1_and_8_bit_identical(tmp_path, monkeypatch):
    """Damaged, then resumed with other worker counts (other groupings into jobs): the same
    numbers as an undamaged run, and a resume with nothing to do trains nothing."""
    monkeypatch.setattr(jobs, "SPLIT_WORK", 1)  # the tiny grid is spread over the workers
    path = tmp_path / "s"
    grid = [*TINY[:-1], "grid.seeds=4", "grid.axes.density=[log,0.05,1.0,8]",
            "grid.axes.relative_importance=[log,0.2,5,9]"]  # fmt: skip
    plan = GridPlan(make_config([*grid, "workers=2"]))
    keys = [b.key() for b in plan.blocks]  # 3 chunks of 3 rows × 32 models
    assert len(keys) == 3 and jobs.group(plan, keys) == ["relu-2-1-c0", "relu-2-1-c1..c2"]
    assert jobs.group(plan, keys, 1) == ["relu-2-1-c0..c2"] and len(jobs.group(plan, keys, 8)) == 3
    assert driver.run(make_config([*grid, "workers=2"], store=path)) == 0
    made = _arrays(path)
    assert made["finished"].all()
    for workers in (1, 8):
        assert _drop_chunks(path, "W") == 3
        assert driver.run(make_config([*grid, f"workers={workers}"], store=path)) == 0
        _same(_arrays(path), made)
    stamps = {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file() and
              ".jobs" not in p.parts and p.parent.name in writes.TRAINED}  # fmt: skip
    prepared = driver.prepare(make_config([*grid, "workers=8"], store=path))
    prepared.lock.close()
    assert prepared.jobs == [] and prepared.todo == []
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_an_edited_config_is_refused_and_never_restamped(tmp_path, capsys):
    path = tmp_path / "s"
    cfg = [*TINY, "workers=1", "grid.axes.density=[0.1,1.0]", "grid.axes.relative_importance=[1]"]
    assert driver.run(make_config(cfg, store=path)) == 0
    attrs = json.loads((path / ".zattrs").read_text())
    attrs["config_yaml"] = attrs["config_yaml"].replace("steps: 30", "steps: 31")
    (path / ".zattrs").write_text(json.dumps(attrs))
    layout.repair_metadata(path)
    writes.update_attrs(path, {})  # the consolidated copy follows .zattrs
    before = (path / ".zattrs").read_text()
    with pytest.raises(StoreError, match="config_yaml hashes to .* was edited"):
        open_store(path)
    for steps in (30, 31):  # neither the recorded nor the edited settings resume it
        with pytest.raises(SystemExit) as e:
            driver.run(make_config([*cfg, f"train.steps={steps}"], store=path))
        assert e.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "was edited" in err[0], err
    assert (path / ".zattrs").read_text() == before


def test_a_changed_refine_setting_is_refused(tmp_path, capsys):
    """Refinement settings decide which points are trained: part of the fingerprint. (And the
    grid driver refuses a refinement config rather than train it as a plain grid.)"""
    base = make_config(["+grid=phase-refine"])
    for change in ("refine.budget=500", "refine.seed_disagreement=true", "refine.levels=2",
                   "analysis.norm_threshold=0.4"):  # fmt: skip
        assert fingerprint(make_config(["+grid=phase-refine", change])) != fingerprint(base)
    assert fingerprint(make_config(["+grid=phase", "analysis.norm_threshold=0.4"])) == (
        fingerprint(make_config(["+grid=phase"]))
    )  # only the analysis: not in the fingerprint of a grid that is not refined
    path = tmp_path / "r"
    small = ["+grid=phase-refine", "train.steps=20", "grid.seeds=2", "refine.levels=1",
             "grid.axes.density=[0.1,0.5,1.0]", "grid.axes.relative_importance=[0.5]",
             "workers=1", "train.compile=false"]  # fmt: skip
    from sweep import refine

    assert refine.run(make_config(small, store=path)) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        refine.run(make_config([*small, "refine.seed_disagreement=true"], store=path))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refine.seed_disagreement=true (the store's: false)" in err[0], err
    with pytest.raises(SystemExit):
        driver.run(make_config(small, store=path))
    assert "refine.levels=1 is not allowed here" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["inside", "in its .jobs", "around"])
def test_no_store_inside_or_around_another(tmp_path, where):
    outer = tmp_path / "outer"
    assert driver.run(make_config([*TINY, "workers=1", "grid.seeds=1"], store=outer)) == 0
    target = {
        "inside": outer / "inner",
        "in its .jobs": outer / ".jobs" / "inner",
        "around": tmp_path,
    }[where]
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    out = run_cli(["-m", "sweep", *TINY, "workers=1", f"store.path={target}"], cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not allowed" in lines[0] and "store" in lines[0], lines
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before  # nothing created


@pytest.mark.parametrize(("version", "old"), [(1, V1), (2, V2)])
def test_an_older_store_is_refused_with_the_migration_command(tmp_path, version, old):
    path = tmp_path / "old"
    shutil.copytree(old, path)
    with pytest.raises(StoreError, match=f"schema_version={version}, an older format"):
        open_store(path)
    out = run_cli(["-m", "sweep", *V1_CONFIG, f"store.path={path}"], cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and f"python -m sweep.migrate {path}" in out.stderr


@pytest.mark.parametrize(("version", "old"), [(1, V1), (2, V2)])
def test_migrate_an_older_store(tmp_path, version, old):
    """Every value copied, each cell's flag as it was; the result opens, resumes (training only
    the cells that were unfinished), and a second migration has nothing to do."""
    path = tmp_path / "old"
    shutil.copytree(old, path)
    before = _arrays(path)
    assert 0 < before["finished"].sum() < before["finished"].size  # flags must follow
    out = run_cli(["-m", "sweep.migrate", str(path)], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().count("\n") == 0 and f"old.v{version}-backup" in out.stdout
    assert (tmp_path / f"old.v{version}-backup" / ".zattrs").exists()
    _same(_arrays(path), before)  # NaN where unfinished in both
    ds = open_store(path)
    assert ds.attrs["schema_version"] == SCHEMA_VERSION
    assert ds.attrs["migrated_from"]["schema_version"] == version
    np.testing.assert_array_equal(integrity.intact(path), before["finished"])
    assert driver.run(make_config([*V1_CONFIG, "workers=1"], store=path)) == 0
    after = _arrays(path)
    done = before["finished"]
    for v in ("W", "b", "loss", "loss_curve"):  # the copied cells untouched by the resume
        np.testing.assert_array_equal(after[v][done], before[v][done], err_msg=v)
    assert after["finished"].all()
    prepared = driver.prepare(make_config([*V1_CONFIG, "workers=1"], store=path))
    prepared.lock.close()
    assert prepared.todo == []  # a second resume trains nothing
    again = run_cli(["-m", "sweep.migrate", str(path)], cwd=tmp_path)
    assert again.returncode == 0 and f"already schema_version {SCHEMA_VERSION}" in again.stdout
    bad = run_cli(["-m", "sweep.migrate", str(tmp_path)], cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0, bad.stderr
    assert "not a toysweep store" in bad.stderr


@pytest.mark.unit
def test_a_format_2_flag_its_record_does_not_vouch_for_is_not_migrated(tmp_path):
    """A format-2 store's flags were not hashed: a flag set by damage over NaN values would be
    copied as finished. The migration counts a flag only where the chunk's record vouches."""
    from sweep import migrate

    path = tmp_path / "old"
    shutil.copytree(V2, path)
    flags = zarr.open_group(str(path), mode="r+", use_consolidated=True)["finished"]
    was = np.asarray(flags[...])
    flags[...] = True  # every flag set, the unfinished cells' included
    migrate.migrate(path)
    np.testing.assert_array_equal(xr.open_zarr(path)["finished"].values, was)
    np.testing.assert_array_equal(integrity.intact(path), was)


@pytest.mark.unit
def test_the_reader_imports_neither_torch_nor_the_grid_planner():
    code = (
        "import sys, sweep.reader; "
        "print([m for m in ('torch', 'sweep.grid', 'sweep.layout') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_axes_in_another_order_are_refused(tmp_path, capsys):
    """The same axes listed in the other order: the store's dims keep the first order, so the
    order is part of the fingerprint (a resume in the new order would write its chunks across
    the wrong cells). A job of such a config is stale too: it checks the fingerprint."""
    from omegaconf import OmegaConf, open_dict

    path = tmp_path / "s"
    axes = ["grid.axes.density=[0.1,0.3,1.0]", "grid.axes.relative_importance=[0.5,2.0]"]
    assert driver.run(make_config([*TINY, "workers=1", *axes], store=path)) == 0
    _drop_chunks(path, "W")  # a resume would retrain every chunk
    before = tree_hash(path)
    cfg = make_config([*TINY, "workers=1", *axes], store=path)
    with open_dict(cfg):
        given = OmegaConf.to_container(cfg.grid.axes)
        cfg.grid.axes = {k: given[k] for k in reversed(list(given))}
    assert fingerprint(cfg) != open_store(path).attrs["fingerprint"]
    with pytest.raises(SystemExit) as e:
        driver.run(cfg)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different grid or settings" in err[0]
    assert 'dims=["density", "relative_importance", "seed"]' in err[0]
    assert '(the store\'s: ["relative_importance", "density", "seed"])' in err[0]
    assert tree_hash(path) == before


@pytest.mark.slow
def test_through_local_workers_a_damaged_store_resumes_with_other_workers(tmp_path):
    """Through the real CLI and its worker processes: a store made with workers=2 (2 jobs), 3
    of its 15 W chunks lost, resumed with workers=1 (1 job) and, lost again, with workers=3 (3
    jobs, each job's plan derived from the options the sweeper hands it): the numbers of the
    undamaged run."""
    args = [
        "-m", "sweep", "+grid=phase", "train.steps=1800", "grid.seeds=5",
        "analysis.run=false", "progress=false", f"store.path={tmp_path / 's'}",
    ]  # fmt: skip
    plan = GridPlan(make_config([*args[2:-1], "workers=2"]))
    assert len(jobs.group(plan, [b.key() for b in plan.blocks])) == 2  # enough work to spread
    first = run_cli([*args, "workers=2"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    made = _arrays(tmp_path / "s")
    for workers in (1, 3):
        assert _drop_chunks(tmp_path / "s", "W", every=5) == 3 == len(plan.blocks) // 5
        again = run_cli([*args, f"workers={workers}"], cwd=tmp_path)
        assert again.returncode == 0, again.stderr[-2000:]
        assert "trained 225 models" in again.stdout
        _same(_arrays(tmp_path / "s"), made)


@pytest.mark.unit
def test_relaunch_retries_only_what_is_still_unfinished():
    """The one retry loop (grid jobs and refinement levels): each round reads what is left
    afresh, launches only that, stops when nothing is left or the retries are spent, and keeps
    the last failure of each job."""
    from sweep.jobs import relaunch

    left = [["a", "b", "c"], ["b"], ["b"], ["b"]]  # what the store says is unfinished, per read
    launched: list[list[str]] = []

    def unfinished() -> list[str]:
        return left[len(launched)]

    def launch(todo: list[str]) -> dict[str, str]:
        launched.append(todo)
        return {k: f"failed in round {len(launched)}" for k in todo if k == "b"}

    assert relaunch(unfinished, launch, retries=2) == {"b": "failed in round 3"}
    assert launched == [["a", "b", "c"], ["b"], ["b"]]
    launched.clear()
    left = [["a"], []]
    assert relaunch(unfinished, launch, retries=5) == {}
    assert launched == [["a"]]


@pytest.mark.unit
def test_every_grouping_of_a_shape_decides_compilation_alike():
    """train.compile=auto decides by the shape's work over the whole grid, not the job's: a
    chunk retrained alone (a damaged one) must take the kernels of its first, larger job, since
    compiled and eager steps round differently. 2→1 at 2,000 steps: 225 of the grid's 1,125
    models alone would train eager (~29 s < the 50 s a compile costs)."""
    from sweep import compiling
    from sweep.train import make_trainer

    if not compiling.compiler_available("cpu"):
        pytest.skip("no C++ compiler")
    plan = GridPlan(make_config(["+grid=phase", "train.steps=2000", "grid.seeds=5"]))
    decided = set()
    for blocks in (plan.blocks, plan.blocks[:3], plan.blocks[10:11]):
        job = plan.job(blocks)
        assert job.shape_instances == 1125
        t = make_trainer(
            job.kind,
            job.seeds,
            job.density,
            job.importance,
            job.n_hidden,
            job.train,
            job.correlation,
            job.set_size,
            job.shape_instances,
        )
        decided.add((t.compiled, t.eval_compiled, t.gram))
    assert decided == {(True, False, True)}
    alone = plan.job(plan.blocks[10:11])
    t = make_trainer(
        alone.kind, alone.seeds, alone.density, alone.importance, alone.n_hidden, alone.train
    )  # the job's own work: what a grouping used to decide by
    assert not t.compiled


@pytest.mark.unit
def test_a_migration_refused_names_why_and_changes_nothing(tmp_path, capsys):
    """A backup already where the migration would keep the old store, or a format it does not
    convert: one line naming it, exit 2, every file as it was."""
    from sweep import migrate

    path = tmp_path / "old"
    shutil.copytree(V2, path)
    (tmp_path / "old.v2-backup").mkdir()
    (tmp_path / "old.v2-backup" / "mine.txt").write_text("a user's file")
    before = tree_hash(tmp_path)
    assert migrate.main([str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "old.v2-backup exists; move it away first" in err[0], err
    assert tree_hash(tmp_path) == before
    shutil.rmtree(tmp_path / "old.v2-backup")
    set_attr(path, "schema_version", 99)
    before = tree_hash(tmp_path)
    assert migrate.main([str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and "schema_version=99; expected a toysweep store of schema_version 1 or 2" in err[0]
    ), err
    assert tree_hash(tmp_path) == before
