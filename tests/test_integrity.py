"""sweep.integrity: damage to any chunk file of any array, whatever wrote it, is found.

The stores are written by the engine (tiny grids, seconds). The arrays damaged are the ones
the store holds, discovered from its metadata, so a new variable is tried without a new line
here. Each damage must fail exactly the chunks it touched, and no other.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from sweep import driver, integrity, layout
from sweep.grid import GridPlan
from tests.conftest import BASE, make_config

pytestmark = pytest.mark.hostile

# absval (own output weights W_out) beside relu, with snapshots: every kind of array the
# engine writes, in 4 chunks (one per model kind and relative importance)
TINY = [
    "+grid=phase",
    "train.steps=10",
    "train.snapshots=[5,10]",
    "grid.seeds=2",
    "grid.axes.density=[0.1,1.0]",
    "grid.axes.relative_importance=[0.5,2.0]",
    "+grid.axes.model=[relu,absval]",
    "chunk.max_instances=4",
    "workers=1",
]
# what the engine writes today; discovery must find at least these (it finds any others too)
KNOWN = {"W", "b", "loss", "loss_curve", "diverged", "W_out", "W_snapshot", "b_snapshot"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("integrity") / "store"
    assert driver.run(make_config(TINY, store=path)) == 0
    return path


@pytest.fixture
def copy(trained, tmp_path):
    def make() -> Path:
        path = tmp_path / f"s{len(list(tmp_path.iterdir()))}"
        shutil.copytree(trained, path)
        return path

    return make


def _chunk_ok(path: Path) -> dict[tuple[int, ...], bool]:
    """Per chunk of the cell dims: whether all its cells are intact."""
    c = integrity.cover(path)
    ok = integrity.intact(path)
    out = {}
    for lead in np.ndindex(*c.flag.grid):
        idx = tuple(slice(i * n, (i + 1) * n) for i, n in zip(lead, c.flag.chunks, strict=True))
        out[lead] = bool(ok[idx].all())
    return out


@pytest.mark.unit
def test_a_trained_store_is_intact_and_covers_every_array(trained):
    c = integrity.cover(trained)
    assert set(c.cells) >= KNOWN, sorted(c.cells)
    assert {"importance", "feature_density", "density", "seed"} <= set(c.static)
    assert all(_chunk_ok(trained).values())
    assert integrity.damaged_static(trained) == []
    assert len(_chunk_ok(trained)) == 4


def _delete(files: list[Path]) -> None:
    files[0].unlink()


def _truncate(files: list[Path]) -> None:
    data = files[0].read_bytes()
    files[0].write_bytes(data[: len(data) // 2])


def _garbage(files: list[Path]) -> None:
    files[0].write_bytes(b"\x00garbage" * 7)


def _swap(files: list[Path]) -> None:
    a, b = files[0].read_bytes(), files[1].read_bytes()
    files[0].write_bytes(b)
    files[1].write_bytes(a)


DAMAGE = {"delete": _delete, "truncate": _truncate, "garbage": _garbage, "swap": _swap}


@pytest.mark.unit
@pytest.mark.parametrize("how", list(DAMAGE))
def test_damage_to_any_cell_array_fails_exactly_its_chunks(copy, how):
    names = sorted(integrity.cover(copy()).cells)
    tried = []
    for name in names:
        path = copy()
        a = integrity.cover(path).cells[name]
        leads = list(np.ndindex(*integrity.cover(path).flag.grid))
        # the chunk files of this array on disk, with the chunk they belong to
        on_disk = [(lead, a.folder / k) for lead in leads for k in a.files(lead)]
        present = [(lead, f) for lead, f in on_disk if f.exists()]
        if how == "swap":
            # two files of different chunks with different bytes (equal ones swap to nothing)
            pairs = [
                (p, q)
                for i, p in enumerate(present)
                for q in present[i + 1 :]
                if p[0] != q[0] and p[1].read_bytes() != q[1].read_bytes()
            ]
            if not pairs:
                continue
            chosen = list(pairs[0])
        elif how == "garbage":
            chosen = [present[0] if present else on_disk[0]]  # garbage also where none was
        else:
            if not present:
                continue  # an array at its fill value has no files to delete or cut
            chosen = [present[-1]]
        DAMAGE[how]([f for _, f in chosen])
        hit = {lead for lead, _ in chosen}
        got = _chunk_ok(path)
        assert got == {lead: lead not in hit for lead in got}, (name, how, got)
        tried.append(name)
    assert set(tried) >= (KNOWN - {"diverged"} if how != "garbage" else KNOWN), tried


@pytest.mark.unit
def test_a_flag_cleared_fails_its_chunk_and_a_record_lost_its_chunk(copy):
    """A flag chunk edited (or damaged) fails every cell of its chunk, not only the cell that
    changed: its file no longer hashes to the record, so none of its flags can be trusted."""
    path = copy()
    group = zarr.open_group(str(path), mode="r+", use_consolidated=True)
    flags = group[integrity.FLAG]
    flags[(0,) * flags.ndim] = False
    assert sum(not v for v in _chunk_ok(path).values()) == 1
    assert not _chunk_ok(path)[(0,) * flags.ndim]
    path = copy()
    record = sorted((path / integrity.RECORDS).glob("0.*.json"))[0]
    record.unlink()
    assert sum(not v for v in _chunk_ok(path).values()) == 1


@pytest.mark.unit
def test_a_truncated_flag_chunk_is_rewritten_from_its_record_never_read(tmp_path):
    """A truncated blosc flag chunk decodes without an error into whatever memory follows it
    (a different garbage on each read). The repair rewrites the flags from the record, keeping
    the trained value, and no cell the record does not vouch for comes back flagged: tried on a
    chunk with one cell of its 2 written, truncated, checked and repaired 20 times."""
    cfg = make_config(TINY, store=tmp_path / "t")
    path = layout.create(tmp_path / "t", GridPlan(cfg), cfg)
    c = integrity.cover(path)
    dims = c.flag.dims
    lead = (0,) * len(dims)
    assert c.flag.chunks[-1] == 2
    reg = {d: slice(0, 1) for d in dims}
    with integrity.writing(path, reg) as commit:
        group = zarr.open_group(str(path), mode="r+", use_consolidated=True)
        group["loss"][tuple(reg.values())] = np.full((1,) * len(dims), 7.0, np.float32)
        commit()
    want = integrity.intact(path)
    assert want.sum() == 1 and want[lead]
    f = c.flag.folder / c.flag.key(lead)
    whole = f.read_bytes()
    for _ in range(20):
        f.write_bytes(whole[: len(whole) // 2])
        assert not integrity.intact(path).any()
        repair = integrity.reset_damaged(path)
        assert repair == integrity.Repair(emptied=[], reflagged=[".".join(["0"] * len(dims))])
        np.testing.assert_array_equal(integrity.intact(path), want)
        flags = np.asarray(zarr.open_group(str(path), mode="r")[integrity.FLAG][...])
        np.testing.assert_array_equal(flags, want)
        assert f.read_bytes() == whole
    assert float(np.asarray(zarr.open_group(str(path), mode="r")["loss"][lead])) == 7.0


@pytest.mark.unit
def test_a_flag_set_without_a_commit_is_not_finished(tmp_path):
    """A flag set by hand (or by a writer that skipped the record) vouches for nothing."""
    cfg = make_config(TINY, store=tmp_path / "t")
    path = layout.create(tmp_path / "t", GridPlan(cfg), cfg)
    group = zarr.open_group(str(path), mode="r+", use_consolidated=True)
    group[integrity.FLAG][...] = True
    assert not integrity.intact(path).any()


@pytest.mark.unit
@pytest.mark.filterwarnings("ignore:Object at:UserWarning")  # xarray lists .jobs/, .commits/
def test_an_array_the_record_does_not_know_fails_every_chunk(copy):
    """A variable added to a store after its blocks were committed leaves them incomplete
    (they hold nothing for it), without any line naming it."""
    path = copy()
    ds = xr.open_zarr(path)
    extra = xr.Dataset({"extra": (ds["loss"].dims, np.zeros(ds["loss"].shape, np.float32))})
    extra["extra"].encoding["chunks"] = integrity.cover(path).flag.chunks
    extra.to_zarr(path, mode="a", consolidated=True, zarr_format=2)
    assert "extra" in integrity.cover(path).cells
    assert not any(_chunk_ok(path).values())


@pytest.mark.unit
@pytest.mark.parametrize("how", ["delete", "truncate", "garbage"])
def test_damage_to_any_static_array_is_named(copy, how):
    names = sorted(integrity.cover(copy()).static)
    for name in names:
        path = copy()
        a = integrity.cover(path).static[name]
        f = a.folder / a.files(())[0]
        if how != "garbage" and not f.exists():
            continue
        DAMAGE[how]([f])
        assert integrity.damaged_static(path) == [name], (name, how)
        assert all(_chunk_ok(path).values())  # the cells' records do not cover it


@pytest.mark.unit
def test_part_of_a_chunk_keeps_the_cells_its_record_held(tmp_path):
    """A region smaller than a chunk (a refinement point) adds its cells to the chunk's record
    and keeps the others only if the record still held before the write."""
    cfg = make_config(TINY, store=tmp_path / "t")
    path = layout.create(tmp_path / "t", GridPlan(cfg), cfg)
    c = integrity.cover(path)
    group = zarr.open_group(str(path), mode="r+", use_consolidated=True)
    dims = c.flag.dims

    def write(cell: dict[str, int], value: float) -> None:
        reg = {d: slice(cell.get(d, 0), cell.get(d, 0) + 1) for d in dims}
        idx = tuple(reg.values())
        with integrity.writing(path, reg) as commit:
            group["loss"][idx] = np.full((1,) * len(dims), value, np.float32)
            commit()

    last = dims[-1]  # within one chunk: the chunk holds 2 along the last cell dim
    assert c.flag.chunks[-1] == 2
    write({}, 1.0)
    write({last: 1}, 2.0)
    ok = integrity.intact(path)
    assert ok.sum() == 2 and ok[(0,) * len(dims)] and ok[(0,) * (len(dims) - 1) + (1,)]
    # the chunk's loss file replaced behind the record's back: a later write in the chunk
    # does not bless the earlier cell again
    f = c.cells["loss"].folder / c.cells["loss"].files((0,) * len(dims))[0]
    f.unlink()
    write({last: 1}, 3.0)
    ok = integrity.intact(path)
    assert ok.sum() == 1 and ok[(0,) * (len(dims) - 1) + (1,)]


REFINE = [
    "+grid=phase-refine",
    "grid.axes.relative_importance=[0.3]",
    "grid.axes.density=[log,0.1,1.0,3]",
    "grid.seeds=2",
    "train.steps=200",
    "train.lr=0.01",
    "train.compile=false",
    "refine.levels=2",
    "refine.budget=null",
]


@pytest.fixture(scope="module")
def refined(tmp_path_factory) -> Path:
    from sweep import refine

    path = tmp_path_factory.mktemp("refine") / "store"
    assert refine.run(make_config(REFINE, store=path)) == 0
    return path


@pytest.mark.parametrize(
    ("name", "how"), [("W", "garbage"), ("loss", "delete"), ("finished", "garbage")]
)
def test_a_damaged_refinement_store_is_retrained_to_the_same_numbers(refined, tmp_path, name, how):
    from sweep import refine

    path = tmp_path / "s"
    shutil.copytree(refined, path)
    assert integrity.intact(path).sum() == xr.open_zarr(path)["finished"].values.sum() > 0
    a = integrity.cover(path)
    arr = a.cells.get(name) or a.flag
    f = sorted(p for p in arr.folder.iterdir() if not p.name.startswith("."))[0]
    DAMAGE[how]([f])
    assert integrity.intact(path).sum() < integrity.intact(refined).sum()
    assert refine.run(make_config(REFINE, store=path)) == 0
    want, got = xr.open_zarr(refined).load(), xr.open_zarr(path).load()
    for v in want.data_vars:
        np.testing.assert_array_equal(got[v].values, want[v].values, err_msg=v)
    np.testing.assert_array_equal(integrity.intact(path), integrity.intact(refined))


@pytest.mark.slow
def test_the_engine_retrains_a_damaged_chunk_of_any_array_to_the_same_numbers(copy, capsys):
    """Through the driver, as a rerun of the same command: only the damaged chunk trains; a
    damaged static array (coordinates included) is rewritten from the plan, nothing trains."""
    want = xr.open_zarr(copy()).load()
    for name in sorted(integrity.cover(copy()).cells):
        path = copy()
        a = integrity.cover(path).cells[name]
        f = a.folder / a.files((0,) * len(integrity.cover(path).flag.dims))[0]
        DAMAGE["garbage"]([f])
        capsys.readouterr()
        assert driver.run(make_config(TINY, store=path)) == 0
        assert "trained 4 models" in capsys.readouterr().out, name
        got = xr.open_zarr(path).load()
        for v in want.data_vars:
            np.testing.assert_array_equal(got[v].values, want[v].values, err_msg=f"{name}: {v}")
    for name in sorted(integrity.cover(copy()).static):  # coords too, which opening reads
        path = copy()
        a = integrity.cover(path).static[name]
        DAMAGE["garbage"]([a.folder / a.files(())[0]])
        capsys.readouterr()
        assert driver.run(make_config(TINY, store=path)) == 0, name
        assert "trained 0 models" in capsys.readouterr().out, name
        assert integrity.damaged_static(path) == [], name
        got = xr.open_zarr(path).load()
        xr.testing.assert_identical(got.drop_attrs(), want.drop_attrs())


def _write_cells(path: str, dims: tuple[str, ...], cells: list[int], rounds: int) -> None:
    """One writer: each of its cells (along the last cell dim, all in chunk 0) written again
    and again, values then flags and record, as writes.write_chunk does."""
    group = zarr.open_group(path, mode="r+", use_consolidated=True)
    for r in range(rounds):
        for j in cells:
            reg = {d: slice(0, 1) for d in dims[:-1]} | {dims[-1]: slice(j, j + 1)}
            idx = tuple(reg[d] for d in dims)
            with integrity.writing(Path(path), reg) as commit:
                group["loss"][idx] = np.full((1,) * len(dims), 100 * j + r, np.float32)
                commit()


@pytest.mark.unit
def test_writers_of_one_chunk_lose_no_cell(tmp_path):
    """Two processes writing different cells of one chunk at once (refinement points of two
    jobs): every cell ends with its last value, flagged and vouched for. Without the chunk's
    lock, one writer's read-modify-write of the chunk file loses the other's cell; with a lock
    file removed unsafely (a waiter holding the unlinked file beside a new holder), too."""
    import multiprocessing

    cfg = make_config([*TINY[:-2], "grid.seeds=8", "chunk.max_instances=64"], store=tmp_path / "t")
    path = layout.create(tmp_path / "t", GridPlan(cfg), cfg)
    c = integrity.cover(path)
    assert c.flag.chunks[-1] == 8 and c.flag.grid[-1] == 1, c.flag.chunks  # seeds: one chunk
    ctx = multiprocessing.get_context("fork")
    rounds = 15
    procs = [
        ctx.Process(target=_write_cells, args=(str(path), c.flag.dims, cells, rounds))
        for cells in ([0, 2, 4, 6], [1, 3, 5, 7])
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    first = (0,) * (len(c.flag.dims) - 1)
    loss = np.asarray(zarr.open_group(str(path), mode="r")["loss"][first])
    np.testing.assert_array_equal(loss, 100 * np.arange(8) + rounds - 1)
    assert integrity.intact(path)[first].all()
    # each chunk lock's file is removed on release, under contention too: none is left behind
    left = sorted(p.name for p in (path / integrity.RECORDS).iterdir())
    assert left == [".".join(["0"] * len(c.flag.dims)) + ".json", "template.json"], left


# Hostile cases (issue 10) against the finished grid store (tests/conftest.py `finished`).
# Damage: (variable, how) -> the next run retrains exactly the damaged block, numbers as before;
# a damaged flag chunk alone is rewritten from its record, nothing retrained.
CHUNK_DAMAGE = [
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


@pytest.mark.parametrize(("var", "how"), CHUNK_DAMAGE, ids=[f"{v}-{h}" for v, h in CHUNK_DAMAGE])
def test_damaged_chunk_of_any_variable_is_retrained(finished, tmp_path, var, how, capsys):
    path = tmp_path / "s"
    shutil.copytree(finished, path)
    _damage(path, var, how)
    assert driver.run(make_config(BASE, store=path)) == 0
    trained = 0 if var == "finished" else 4  # exactly the damaged block
    assert f"trained {trained} models" in capsys.readouterr().out
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
