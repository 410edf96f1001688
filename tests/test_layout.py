"""A store's blocks are cut for the worker count of the run that made it (grid.SPLIT_WORK).
That cut must travel with the store: the same store opened for analysis on a machine with
other cores, or resumed there or with another `workers`, plans the very same blocks, and a
retrained block holds exactly the numbers it held (the cut never changes a model's numbers).

Before the store recorded its cut (chunk.feed), `workers: auto` re-planned with the reading
machine's cores: the analysis refused the store ("its chunks ... are not the blocks this
toysweep plans") and a resume was refused as "made by a different grid or settings", with
advice to overwrite it.

The same for the other parts of a store's layout that the fingerprint does not hash: the order
of the axes (the store's dims), and the fingerprint's own rules (a store hashed by an older
toysweep resumes, and its jobs, which check today's hash, write).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from sweep import cores, driver, grid, store
from tests.conftest import make_config, run_cli

TINY = [
    "+grid=phase",
    "train.steps=30",
    "grid.seeds=2",
    "grid.axes.density=[log,0.1,1.0,4]",
    "grid.axes.relative_importance=[0.5,1.0,2.0]",
    "train.compile=false",
    "workers=auto",
]


def _on_cores(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """This process sees n cores (as `workers: auto` reads them), and the tiny grid holds
    enough work to be cut for them."""
    monkeypatch.setattr(cores, "available_cores", lambda: n)
    monkeypatch.setattr(grid, "SPLIT_WORK", 1)


def _arrays(path: Path) -> dict[str, np.ndarray]:
    ds = xr.open_zarr(path)
    return {v: ds[v].values for v in ("W", "b", "loss", "finished")}


def _stamps(path: Path) -> dict[str, int]:
    """Modification times of the trained arrays' chunk files."""
    return {
        str(p.relative_to(path)): p.stat().st_mtime_ns
        for v in store.TRAINED
        for p in (path / v).iterdir()
        if not p.name.startswith(".")
    }


def _drop_chunks(path: Path, var: str) -> int:
    """Delete every stored chunk of one variable (a damaged store); returns how many."""
    gone = [p for p in (path / var).iterdir() if not p.name.startswith(".")]
    for p in gone:
        p.unlink()
    return len(gone)


def test_a_store_keeps_its_cut_on_other_cores_and_workers(tmp_path, monkeypatch):
    path = tmp_path / "s"
    _on_cores(monkeypatch, 2)
    assert driver.run(make_config(TINY, store=path)) == 0
    made = _arrays(path)
    ds = store.open_store(path)
    recorded = yaml.safe_load(ds.attrs["config_yaml"])
    assert recorded["workers"] == "auto" and recorded["chunk"]["feed"] == 2
    chunks = ds["finished"].encoding["chunks"]
    assert np.prod([len(ds[d]) for d in ("relative_importance", "density")]) > np.prod(
        chunks[:2]
    )  # cut into more than one block

    # Another machine (5 cores): the store opens, analyses, and resumes with nothing to train.
    _on_cores(monkeypatch, 5)
    from analysis import aggregate, report

    _, opened, _, settings = report.load(path)
    assert aggregate.analyse_store(opened, settings) is not None
    stamps = _stamps(path)
    assert driver.run(make_config(TINY, store=path)) == 0
    assert _stamps(path) == stamps  # nothing trained, nothing rewritten
    for v, a in _arrays(path).items():
        np.testing.assert_array_equal(a, made[v])

    # ... and a damaged variable is retrained there, block by block, to the same numbers.
    assert _drop_chunks(path, "W") >= 2
    assert driver.run(make_config(TINY, store=path)) == 0
    for v, a in _arrays(path).items():
        np.testing.assert_array_equal(a, made[v])

    # workers=1 on the same machine: the same store, resumed.
    assert driver.run(make_config([*TINY, "workers=1"], store=path)) == 0
    for v, a in _arrays(path).items():
        np.testing.assert_array_equal(a, made[v])


@pytest.mark.parametrize("hashed", ["today", "by older rules"])
def test_store_made_before_the_cut_was_recorded(tmp_path, monkeypatch, hashed):
    """An older store's config says only `workers: auto`: its cut is found from its
    fingerprint (or, hashed under older rules, from its chunks), so it opens and resumes on a
    machine with other cores."""
    path = tmp_path / "s"
    _on_cores(monkeypatch, 3)
    assert driver.run(make_config(TINY, store=path)) == 0
    made = _arrays(path)
    attrs_file = path / ".zattrs"
    attrs = json.loads(attrs_file.read_text())
    old = yaml.safe_load(attrs["config_yaml"])
    old["chunk"].pop("feed")
    attrs["config_yaml"] = yaml.safe_dump(old, sort_keys=False)
    if hashed != "today":
        attrs["fingerprint"] = "0123456789abcdef"
    attrs_file.write_text(json.dumps(attrs))
    store.repair_metadata(path)  # the consolidated copy follows .zattrs
    store.update_attrs(path, {})

    _on_cores(monkeypatch, 7)
    assert store.stored_feed(store.open_store(path)) == 3
    assert _drop_chunks(path, "b") >= 2
    assert driver.run(make_config(TINY, store=path)) == 0
    for v, a in _arrays(path).items():
        np.testing.assert_array_equal(a, made[v])


def test_a_different_cut_given_by_hand_is_refused(tmp_path, monkeypatch, capsys):
    path = tmp_path / "s"
    _on_cores(monkeypatch, 2)
    assert driver.run(make_config(TINY, store=path)) == 0
    before = _arrays(path)
    with pytest.raises(SystemExit) as e:
        driver.run(make_config([*TINY, "chunk.feed=3"], store=path))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different grid or settings (chunk.feed=3 (the store's: 2))" in err[0]
    for v, a in _arrays(path).items():
        np.testing.assert_array_equal(a, before[v])


@pytest.mark.slow
def test_resumed_jobs_on_local_workers_get_the_store_cut(tmp_path):
    """Through the real CLI and its local worker processes: a store cut for 2 workers, its W
    lost, resumed with workers=3 (jobs in 2 worker processes, each planning from the options
    the sweeper hands it), gets back exactly the numbers it held."""
    args = [
        "-m", "sweep", "+grid=phase", "train.steps=1800", "grid.seeds=5",
        "analysis.run=false", "progress=false", f"store.path={tmp_path / 's'}",
    ]  # fmt: skip
    plan = grid.GridPlan(make_config([*args[2:-1], "workers=2"]))
    assert plan.fed == 2 and len(plan.blocks) == 2  # enough work to be cut for 2 workers
    first = run_cli([*args, "workers=2"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    made = _arrays(tmp_path / "s")
    assert yaml.safe_load(xr.open_zarr(tmp_path / "s").attrs["config_yaml"])["chunk"]["feed"] == 2
    assert _drop_chunks(tmp_path / "s", "W") == 2
    again = run_cli([*args, "workers=3"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    for v, a in _arrays(tmp_path / "s").items():
        np.testing.assert_array_equal(a, made[v])


def test_axes_in_another_order_are_refused(tmp_path, capsys):
    """The same axes listed in the other order: the store's dims keep the first order, so
    the order is part of the fingerprint. (Before, the axes were hashed as a mapping only; a
    resume that planned in the new order wrote its blocks across the wrong cells, measured:
    W left NaN on a third of the cells, all flagged finished.) A job of such a config is
    stale too: it checks the fingerprint before it writes."""
    from omegaconf import OmegaConf, open_dict

    from tests.test_hostile import tree_hash

    path = tmp_path / "s"
    axes = ["grid.axes.density=[0.1,0.3,1.0]", "grid.axes.relative_importance=[0.5,2.0]"]
    assert driver.run(make_config([*TINY, "workers=1", *axes], store=path)) == 0
    _drop_chunks(path, "W")  # a resume would retrain every block
    before = tree_hash(path)
    cfg = make_config([*TINY, "workers=1", *axes], store=path)
    with open_dict(cfg):
        given = OmegaConf.to_container(cfg.grid.axes)
        cfg.grid.axes = {k: given[k] for k in reversed(list(given))}
    assert store.fingerprint(cfg) != store.open_store(path).attrs["fingerprint"]
    with pytest.raises(SystemExit) as e:
        driver.run(cfg)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different grid or settings" in err[0]
    assert 'dims=["density", "relative_importance", "seed"]' in err[0]
    assert '(the store\'s: ["relative_importance", "density", "seed"])' in err[0]
    assert tree_hash(path) == before


def test_store_hashed_under_older_rules_resumes_and_its_jobs_write(tmp_path):
    """A store whose recorded fingerprint an older toysweep computed (other hashing rules),
    with the same settings in its config_yaml: the resume re-hashes it, records today's hash,
    and the jobs, which check it before they write, retrain its damaged blocks exactly."""
    path = tmp_path / "s"
    cfg = [*TINY, "workers=1", "chunk.max_instances=6"]
    assert driver.run(make_config(cfg, store=path)) == 0
    made = _arrays(path)
    store.update_attrs(path, {"fingerprint": "0123456789abcdef"})  # an older rule's hash
    assert _drop_chunks(path, "W") >= 2
    assert driver.run(make_config(cfg, store=path)) == 0
    for v, a in _arrays(path).items():
        np.testing.assert_array_equal(a, made[v])
    assert store.identity(path)["fingerprint"] == store.fingerprint(make_config(cfg))
