"""The hostile table for each store kind: a grid, a refinement (`+grid=phase-refine`) and a grid
with snapshots (`train.snapshots`), each built once per module and copied per case.

Tried on each kind:
- damage to every array of the store (found from the zarr metadata the store is written from,
  checked against the built store's own `.zmetadata`) × delete / truncate / garbage;
- flags flipped (one cleared, all inverted);
- a hand-edited recorded config, for the sweep and for `python -m analysis`;
- a setting changed on resume (the kind's own settings included);
- a new store nested inside the store (its `.jobs/`, `.commits/`, an array's folder) or
  around it;
- a resume killed by SIGINT and by SIGKILL half-way through a chunk's write, then resumed;
- outputs of `python -m analysis` that cannot be written;
- a store that says it is of an older format (1, 2).

The truth each case is held to is independent of the code under test: a repaired store equals
the undamaged one, every value bit for bit (for a refinement too: its levels are re-derived
from what is finished and intact, so the same points are trained to the same numbers); a
refused run ends in one line `error: …` with exit 2 and leaves every file as it was (hashes
before and after). The engine and the analysis run in this process (a subprocess costs ~10 s
of imports here); signals are sent to a forked child, the resume that is killed.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from omegaconf import DictConfig, OmegaConf, open_dict

from sweep import driver, integrity, layout, refine
from sweep.grid import GridPlan
from sweep.reader import SCHEMA_VERSION
from tests.conftest import make_config, tree_hash

pytestmark = [
    pytest.mark.filterwarnings("ignore:Object at:UserWarning"),  # .jobs/, .commits/
    pytest.mark.hostile,
]

GRID = [
    "+grid=phase",
    "train.steps=20",
    "grid.seeds=2",
    "grid.axes.density=[0.1,1.0]",
    "grid.axes.relative_importance=[0.5,2.0]",
    "chunk.max_instances=4",
    "train.compile=false",
    "train.threads=1",
    "workers=1",
]
KINDS: dict[str, list[str]] = {
    "grid": GRID,
    "snapshots": [*GRID, "train.snapshots=[5,20]"],
    # 3 coarse densities bisected twice: 9 fine points, of which the levels train 5 to 9
    "refine": [
        "+grid=phase-refine",
        "grid.axes.relative_importance=[0.3]",
        "grid.axes.density=[log,0.1,1.0,3]",
        "grid.seeds=2",
        "train.steps=200",
        "train.lr=0.01",
        "train.compile=false",
        "train.threads=1",
        "refine.levels=2",
        "refine.budget=null",
        "workers=1",
    ],
}
_CONFIGS: dict[str, DictConfig] = {}


def config(kind: str, path: Path, *extra: str) -> DictConfig:
    """The kind's composed config for a store at path (composed once per kind and extra)."""
    key = "\0".join([kind, *extra])
    if key not in _CONFIGS:
        _CONFIGS[key] = make_config([*KINDS[kind], *extra])
    cfg = OmegaConf.create(OmegaConf.to_container(_CONFIGS[key]))  # the config, no Hydra node
    with open_dict(cfg):
        cfg.store.path = str(path)
    return cfg


def run(kind: str, path: Path, *extra: str) -> int:
    """A sweep of this kind on path, as `python -m sweep` runs it, in this process."""
    cfg = config(kind, path, *extra)
    return refine.run(cfg) if kind == "refine" else driver.run(cfg)


def template_arrays(kind: str) -> list[str]:
    """The arrays a store of this kind holds: those of the template it is written from."""
    cfg = config(kind, Path("/nonexistent/s"))
    if kind == "refine":
        cfg = refine.fine_config(cfg)
    return sorted(str(v) for v in layout.template(GridPlan(cfg), cfg).variables)


def metadata_arrays(path: Path) -> list[str]:
    meta = json.loads((path / ".zmetadata").read_text())["metadata"]
    return sorted(k.split("/")[0] for k in meta if k.endswith("/.zarray"))


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    """One finished store of each kind, trained once for the module."""
    out = {}
    for kind in KINDS:
        path = tmp_path_factory.mktemp(kind) / "store"
        assert run(kind, path) == 0, kind
        out[kind] = path
    return out


@pytest.fixture
def copy(stores, tmp_path) -> Callable[[str], Path]:
    def make(kind: str) -> Path:
        path = tmp_path / kind / "s"
        shutil.copytree(stores[kind], path)
        return path

    return make


def same_store(path: Path, ref: Path) -> None:
    """Every array equal bit for bit (NaN where NaN), every cell intact where it was, the
    static arrays as recorded, and no lock file left in the records."""
    got, want = xr.open_zarr(path).load(), xr.open_zarr(ref).load()
    assert sorted(got.variables) == sorted(want.variables)
    for v in want.variables:
        np.testing.assert_array_equal(got[v].values, want[v].values, err_msg=str(v))
    np.testing.assert_array_equal(integrity.intact(path), integrity.intact(ref))
    assert integrity.damaged_static(path) == []
    assert not list((path / integrity.RECORDS).glob("*.lock"))
    meta = json.loads((path / ".zmetadata").read_text())["metadata"]
    for key, value in meta.items():  # every metadata file says what the consolidated copy says
        assert json.loads((path / key).read_text()) == value, key


def one_line(capsys, code: int | None, expected: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert expected in err[0], err[0]
    return err[0]


def refused(kind: str, path: Path, capsys, expected: str, *extra: str) -> str:
    """A sweep that must be refused: one line, exit 2."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run(kind, path, *extra)
    return one_line(capsys, exc.value.code, expected)


def analysis_cli(argv: list[str]) -> int:
    """`python -m analysis argv`, in this process (its figures closed after)."""
    import matplotlib.pyplot as plt

    from analysis.__main__ import main

    try:
        return main(argv)
    finally:
        plt.close("all")


# ------------------------------------------------------------------ damage to every array

HOW = ("delete", "truncate", "garbage")
ARRAYS = {kind: template_arrays(kind) for kind in KINDS}
DAMAGE = [(kind, name, how) for kind in KINDS for name in ARRAYS[kind] for how in HOW]


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_arrays_tried_are_the_stores_own(stores, kind):
    """The damage cases below cover every array the built store's metadata lists."""
    assert metadata_arrays(stores[kind]) == ARRAYS[kind]
    assert {"W", "finished", "loss"} <= set(ARRAYS[kind])
    assert ("W_snapshot" in ARRAYS[kind]) == (kind == "snapshots")


def chunk_files(path: Path, name: str) -> list[Path]:
    return sorted(p for p in (path / name).rglob("*") if p.is_file() and not p.name.startswith("."))


def damage(target: Path, how: str) -> None:
    """One file deleted, cut to half its length, or overwritten with garbage."""
    if how == "delete":
        target.unlink()
    elif how == "truncate":
        target.write_bytes(target.read_bytes()[: max(1, target.stat().st_size // 2)])
    else:
        target.write_bytes(b"\x00garbage\xff" * 7)


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "name", "how"), DAMAGE, ids=["-".join(c) for c in DAMAGE])
def test_damaged_array_is_repaired_to_the_same_numbers(stores, copy, kind, name, how):
    """The array's last chunk file damaged; an array that holds only its fill value has no
    chunk file (zarr writes none), so its metadata file is deleted or truncated instead, and
    garbage lands where its first chunk would be."""
    path = copy(kind)
    files = chunk_files(path, name)
    if files:
        target = files[-1]
    elif how == "garbage":
        target = path / name / ".".join(["0"] * len(xr.open_zarr(path)[name].dims))
    else:
        target = path / name / ".zarray"
    damage(target, how)
    assert run(kind, path) == 0
    same_store(path, stores[kind])


@pytest.mark.parametrize("kind", list(KINDS))
def test_readers_count_only_intact_cells_of_a_damaged_store(stores, copy, kind):
    """Before any resume repairs it, a store with the last chunk file of one array damaged
    (each array in turn, each way) reads, through sweep.reader (the analysis, the explorer,
    the export, the API), with exactly the intact cells finished: never a flag decoded from
    damage, never a cell whose values no longer match their record."""
    from sweep.reader import open_store

    ref = integrity.intact(stores[kind])
    for name in ARRAYS[kind]:
        files = chunk_files(stores[kind], name)
        if not files or name not in integrity.cover(stores[kind]).cells | {integrity.FLAG: 0}:
            continue  # static arrays are rewritten from the plan; fill-only arrays: no file
        for how in HOW:
            path = copy(kind)
            damage(path / files[-1].relative_to(stores[kind]), how)
            got = open_store(path)["finished"].values
            np.testing.assert_array_equal(got, integrity.intact(path), err_msg=f"{name} {how}")
            assert got.sum() < ref.sum() and not (got & ~ref).any(), (name, how)
            shutil.rmtree(path.parent)


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_store_copied_without_its_hidden_folders_is_named_by_the_analysis(copy, kind, capsys):
    """`cp -r store/* elsewhere` leaves `.commits/` behind: the analysis says so in one line
    (instead of drawing every cell as missing) and writes nothing."""
    path = copy(kind)
    shutil.rmtree(path / integrity.RECORDS)
    before = tree_hash(path.parent)
    capsys.readouterr()
    one_line(capsys, analysis_cli([str(path)]), "copied without its hidden folders")
    assert tree_hash(path.parent) == before


# ------------------------------------------------------------------ flags flipped


def _flip(path: Path, how: str) -> None:
    flags = zarr.open_group(str(path), mode="r+", use_consolidated=True)[integrity.FLAG]
    values = np.asarray(flags[...])
    if how == "clear-one":
        first = tuple(np.argwhere(values)[0])
        values[first] = False
    else:  # invert-all: trained cells unfinished, untrained ones (refinement) finished
        values = ~values
    flags[...] = values


FLIPS = [(kind, how) for kind in KINDS for how in ("clear-one", "invert-all")]


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "how"), FLIPS, ids=["-".join(c) for c in FLIPS])
def test_flipped_flags_are_retrained_to_the_same_numbers(stores, copy, kind, how):
    path = copy(kind)
    _flip(path, how)
    assert not np.array_equal(integrity.intact(path), integrity.intact(stores[kind]))
    assert run(kind, path) == 0
    same_store(path, stores[kind])


# ------------------------------------------------------------------ the recorded config edited


def _edit_attrs(path: Path, change: Callable[[dict], None]) -> None:
    """Change the store's attrs in both places zarr keeps them (.zattrs, .zmetadata)."""
    meta = json.loads((path / ".zmetadata").read_text())
    change(meta["metadata"][".zattrs"])
    (path / ".zmetadata").write_text(json.dumps(meta))
    (path / ".zattrs").write_text(json.dumps(meta["metadata"][".zattrs"]))


# (kind, the line of config_yaml as recorded, as edited): each a setting that decides numbers
EDITS = [
    *[(kind, "  lr: 0.", "  lr: 0.5") for kind in KINDS],
    *[(kind, "  seeds: 2", "  seeds: 3") for kind in KINDS],
    ("snapshots", "  - 5\n  - 20\n", "  - 6\n  - 20\n"),
    ("refine", "  levels: 2", "  levels: 1"),
    ("refine", "  norm_threshold: 0.5", "  norm_threshold: 0.4"),
]
EDITED = [(*e, who) for e in EDITS for who in ("sweep", "analysis")]


@pytest.mark.parametrize(
    ("kind", "old", "new", "who"), EDITED, ids=[f"{e[0]}-{e[2].strip()}-{e[3]}" for e in EDITED]
)
def test_hand_edited_config_is_refused_untouched(stores, copy, kind, old, new, who, capsys):
    path = copy(kind)

    def edit(attrs: dict) -> None:
        assert attrs["config_yaml"].count(old) == 1, old
        attrs["config_yaml"] = attrs["config_yaml"].replace(old, new)

    _edit_attrs(path, edit)
    before = tree_hash(path.parent)
    capsys.readouterr()
    if who == "sweep":
        refused(kind, path, capsys, "the recorded config was edited")
    else:
        one_line(capsys, analysis_cli([str(path)]), "the recorded config was edited")
    assert tree_hash(path.parent) == before


# ------------------------------------------------------------------ a setting changed on resume

CHANGES = {
    "grid": ["train.steps=21", "train.lr=0.02", "grid.seeds=3", "train.snapshots=[5]"],
    "snapshots": [
        "train.steps=21",
        "grid.seeds=3",
        "train.snapshots=[6,20]",
        "train.snapshots=null",
    ],
    "refine": [
        "train.steps=201",
        "grid.seeds=3",
        "refine.levels=1",
        "refine.budget=8",
        "refine.seed_disagreement=true",
        "analysis.norm_threshold=0.4",
        "analysis.superposition_threshold=0.6",
    ],
}
CHANGED = [(kind, change) for kind, changes in CHANGES.items() for change in changes]


@pytest.mark.parametrize(("kind", "change"), CHANGED, ids=["-".join(c) for c in CHANGED])
def test_changed_setting_on_resume_is_refused_untouched(copy, kind, change, capsys):
    path = copy(kind)
    before = tree_hash(path.parent)
    key = change.split("=")[0]
    line = refused(kind, path, capsys, "", change)
    assert key in line and ("different grid or settings" in line or "store's" in line), line
    assert tree_hash(path.parent) == before


# ------------------------------------------------------------------ nesting

NESTS = {
    "inside": (lambda s: s / "inner", "it lies inside the store"),
    "inside-jobs": (lambda s: s / ".jobs" / "x", "it lies inside the store"),
    "inside-records": (lambda s: s / integrity.RECORDS / "x", "it lies inside the store"),
    "inside-an-array": (lambda s: s / "W" / "x", "it lies inside the store"),
    "around": (lambda s: s.parent.parent, "it holds the store"),
}
NESTED = [(kind, nest) for kind in KINDS for nest in NESTS]


@pytest.mark.parametrize(("kind", "nest"), NESTED, ids=["-".join(c) for c in NESTED])
def test_a_store_nested_in_or_around_is_refused(copy, kind, nest, capsys):
    path = copy(kind)
    where, expected = NESTS[nest]
    before = tree_hash(path.parent.parent)
    refused(kind, where(path), capsys, expected)
    assert tree_hash(path.parent.parent) == before  # nothing created, in it or around it


# ------------------------------------------------------------------ signals


def forked(target: Callable[..., None], *args: object) -> multiprocessing.Process:
    """A child process forked from this one (no imports to pay again), started."""
    child = multiprocessing.get_context("fork").Process(target=target, args=args, daemon=True)
    child.start()
    return child


def joined(child: multiprocessing.Process) -> int | None:
    """The child's exit code once it ends; killed (and the test failed) if it hangs."""
    child.join(300)
    if child.exitcode is None:
        child.kill()
        pytest.fail("the child process hung")
    return child.exitcode


def _in_child() -> None:
    # A forked child inherits the parent's thread pools without their threads: dask's pool
    # would queue work that no thread runs. Compute in the child's own thread instead.
    import dask

    dask.config.set(scheduler="synchronous")


def _resume_dying(kind: str, path: str, sig: int) -> None:
    """A resume that receives `sig` once a chunk's values are written, before its record and
    flags: the worst moment."""
    _in_child()
    real = integrity._save

    def dying(at: Path, lead: object, rec: dict) -> None:
        if lead != integrity.TEMPLATE:
            os.kill(os.getpid(), sig)
        real(at, lead, rec)

    integrity._save = dying  # type: ignore[assignment]
    run(kind, Path(path))


SIGNALS = [(kind, sig) for kind in KINDS for sig in ("SIGINT", "SIGKILL")]


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "sig"), SIGNALS, ids=["-".join(c) for c in SIGNALS])
def test_a_resume_killed_mid_write_resumes_to_the_same_numbers(stores, copy, kind, sig):
    path = copy(kind)
    target = chunk_files(path, "W")[0]
    target.write_bytes(b"\x00garbage\xff" * 7)  # the resume has a chunk to write
    child = forked(_resume_dying, kind, str(path), getattr(signal, sig))
    # SIGKILL: killed by it; SIGINT: a KeyboardInterrupt that ends the process, not a hang
    assert joined(child) == (-signal.SIGKILL if sig == "SIGKILL" else 1)
    assert run(kind, path) == 0
    same_store(path, stores[kind])


# ------------------------------------------------------------------ unwritable analysis outputs

OUTPUTS = {
    "figures-folder-is-a-file": lambda s: ([str(s)], s / "figures"),
    "figures-dir-under-a-file": lambda s: (
        [str(s), "--figures-dir", str(s.parent / "f" / "figs")],
        s.parent / "f",
    ),
    "analysis-zarr-is-a-file": lambda s: ([str(s)], s.parent / f"{s.name}.analysis.zarr"),
}
UNWRITABLE = [(kind, out) for kind in KINDS for out in OUTPUTS]


@pytest.mark.parametrize(("kind", "out"), UNWRITABLE, ids=["-".join(c) for c in UNWRITABLE])
def test_unwritable_analysis_output_one_line_store_untouched(copy, kind, out, capsys):
    path = copy(kind)
    argv, blocker = OUTPUTS[out](path)
    shutil.rmtree(blocker, ignore_errors=True)
    blocker.write_text("a file where a folder should be")
    before = tree_hash(path)
    capsys.readouterr()
    code = analysis_cli(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code in (1, 2) and len(err) == 1 and err[0].startswith("error: "), (code, err)
    assert blocker.name in err[0], err[0]
    assert tree_hash(path) == before  # the analysis only reads the store
    assert blocker.read_text() == "a file where a folder should be"


# ------------------------------------------------------------------ a store claiming format 1 or 2

OLD_WHO = [(kind, v, who) for kind in KINDS for v in (1, 2) for who in ("sweep", "analysis")]


@pytest.mark.parametrize(
    ("kind", "version", "who"), OLD_WHO, ids=[f"{k}-v{v}-{w}" for k, v, w in OLD_WHO]
)
def test_a_store_claiming_an_older_format_is_refused_untouched(copy, kind, version, who, capsys):
    path = copy(kind)
    _edit_attrs(path, lambda attrs: attrs.update(schema_version=version))
    before = tree_hash(path.parent)
    capsys.readouterr()
    if who == "sweep":
        refused(kind, path, capsys, "python -m sweep.migrate")
    else:
        one_line(capsys, analysis_cli([str(path)]), "python -m sweep.migrate")
    assert tree_hash(path.parent) == before


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_migrated_from_format_2_keeps_its_numbers_and_run_attrs(copy, stores, kind):
    """A store of each kind relabelled as format 2 (its records are format 3's, which vouch for
    the same cells) migrates to a store equal to the original bit for bit, with every attr a
    run recorded (a refinement's levels and refine_complete, cell counts) carried over."""
    from sweep import migrate

    path = copy(kind)
    _edit_attrs(path, lambda attrs: attrs.update(schema_version=2))
    assert "schema_version 3" in migrate.migrate(path)
    same_store(path, stores[kind])
    got, want = xr.open_zarr(path).attrs, xr.open_zarr(stores[kind]).attrs
    # the migration's own provenance; config_yaml records store.path where the store now lies
    # (the fingerprint, compared, is its hash without the path)
    new = {"run_id", "git_commit", "host", "migrated_from", "config_yaml"}
    assert {k: v for k, v in got.items() if k not in new} == {
        k: v for k, v in want.items() if k not in new
    }
    assert got["migrated_from"]["schema_version"] == 2
    if kind == "refine":
        assert got["refine_complete"] is True


# ------------------------------------------------------------------ a migration beside others

V1 = Path(__file__).parent / "data" / "store_v1"


def _migrate_held_open(path: str, go: object, ready: object) -> None:
    """A migration that, once it holds the store, waits for `go` before it copies."""
    from sweep import migrate

    _in_child()
    real = migrate._migrate_held

    def waiting(at: Path) -> str:
        ready.set()  # type: ignore[attr-defined]
        go.wait(120)  # type: ignore[attr-defined]
        return real(at)

    migrate._migrate_held = waiting  # type: ignore[assignment]
    os._exit(migrate.main([path]))


def test_a_migration_refuses_a_store_in_use_and_is_refused_while_running(tmp_path, capsys):
    """`python -m sweep.migrate` takes the sweep's own store lock: a second migration, or one
    while a sweep holds the store, is refused in one line and changes nothing; a sweep started
    during a migration is refused; the migration then ends as if alone."""
    from sweep import migrate
    from sweep.__main__ import preflight
    from sweep.identity import hold_store
    from tests.test_layout import V1_CONFIG

    path = tmp_path / "s"
    shutil.copytree(V1, path)
    before = tree_hash(tmp_path)
    with hold_store(path):  # what a running sweep's driver holds
        capsys.readouterr()
        one_line(capsys, migrate.main([str(path)]), "is in use")
    assert tree_hash(tmp_path) == before

    ctx = multiprocessing.get_context("fork")
    go, ready = ctx.Event(), ctx.Event()
    child = forked(_migrate_held_open, str(path), go, ready)
    try:
        assert ready.wait(120)
        capsys.readouterr()
        one_line(capsys, migrate.main([str(path)]), "is in use")  # a second migration
        with pytest.raises(SystemExit) as exc:  # a sweep on it
            driver.prepare(preflight([*V1_CONFIG, "workers=1", f"store.path={path}"]))
        one_line(capsys, exc.value.code, "in use by another sweep")
    finally:
        go.set()
    assert joined(child) == 0
    assert (tmp_path / "s.v1-backup").is_dir()
    assert xr.open_zarr(path).attrs["schema_version"] == SCHEMA_VERSION
