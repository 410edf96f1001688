"""`python -m analysis.export`: tables read back by pandas equal the store, recounted from W;
streamed a chunk at a time; bad input is one line, exit 2, and nothing written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import xarray as xr

from analysis import aggregate, export
from analysis.export import main
from analysis.settings import Settings
from sweep import driver
from sweep.reader import config_of
from tests.conftest import make_config

pytestmark = pytest.mark.unit

R, P = "relative_importance", "density"
TINY = ["train.steps=40", "grid.seeds=2", "train.compile=false", "train.curve_points=5"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A 2->1 phase store of 4 x 3 cells and 2 seeds in 4 storage chunks along r."""
    path = tmp_path_factory.mktemp("export") / "phase"
    axes = ["grid.axes.relative_importance=[log,0.1,10,4]", "grid.axes.density=[log,0.01,1,3]"]
    cfg = make_config(["+grid=phase", *TINY, *axes, "chunk.max_instances=6"], store=path)
    assert driver.run(cfg) == 0
    return path


def read(folder: Path, fmt: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    if fmt == "csv":
        return pd.read_csv(folder / "models.csv"), pd.read_csv(folder / "cells.csv")
    return pd.read_parquet(folder / "models.parquet"), pd.read_parquet(folder / "cells.parquet")


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_tables_read_back_equal_the_store(store, tmp_path, fmt, capsys):
    out = tmp_path / "out"
    assert main([str(store), "--to", fmt, "--out", str(out)]) == 0
    assert f"models.{fmt}" in capsys.readouterr().out
    models, cells = read(out, fmt)
    ds = xr.open_zarr(store)
    W = ds["W"].transpose(R, P, "seed", "hidden", "feature").values.astype(float)
    n_r, n_p, n_seed, _, n_feat = W.shape
    assert len(models) == n_r * n_p * n_seed * n_feat  # one row per model and feature
    assert len(cells) == n_r * n_p * n_feat
    # rows in C order of (r, p, seed, feature): compare column by column with the store
    np.testing.assert_allclose(models["norm"], np.sqrt((W**2).sum(-2)).reshape(-1), rtol=1e-6)
    loss = ds["loss"].transpose(R, P, "seed").values
    np.testing.assert_allclose(models["loss"], np.repeat(loss.reshape(-1), n_feat), rtol=1e-6)
    assert models["finished"].astype(bool).all() and not models["diverged"].astype(bool).any()
    r = np.repeat(ds[R].values, n_p * n_seed * n_feat)
    np.testing.assert_allclose(models[R], r)
    np.testing.assert_array_equal(models["seed"], np.tile(np.repeat([0, 1], n_feat), n_r * n_p))
    norms = np.sqrt((W**2).sum(-2))
    dots = np.einsum("...hi,...hj->...ij", W, W)
    sup = (dots[..., 0, 1] ** 2)[..., None] / norms**2  # 2 features: the other one only
    want = np.where(norms < 0.5, "ignored", np.where(sup >= 0.5 - 1e-9, "superposed", "dedicated"))
    np.testing.assert_array_equal(models["phase"].astype(str), want.reshape(-1))
    imp = ds["importance"].transpose(R, P, "feature").values.reshape(-1)
    np.testing.assert_allclose(cells["importance"], imp)
    # the seed aggregate, exported piece by piece, is the analysis's over the whole store
    whole = aggregate.analyse_store(ds, Settings.from_config(config_of(ds)))
    names = np.array(["ignored", "dedicated", "superposed"])
    want = names[whole["phase"].transpose(R, P, "feature").values.reshape(-1)]
    np.testing.assert_array_equal(cells["phase"].astype(str), want)
    np.testing.assert_allclose(
        cells["loss"], np.repeat(whole["loss"].transpose(R, P).values.reshape(-1), n_feat)
    )


def test_parquet_is_streamed_one_chunk_at_a_time(store, tmp_path, monkeypatch):
    seen = []
    tables = export.tables

    def spy(piece, settings):
        seen.append(dict(piece.sizes))
        return tables(piece, settings)

    monkeypatch.setattr(export, "tables", spy)
    one_chunk = export.model_bytes(xr.open_zarr(store)) * 3 * 2  # a chunk: 1 r x 3 p x 2 seeds
    dest = export.export(store, "parquet", tmp_path / "out", piece_bytes=one_chunk)
    assert [s[R] for s in seen] == [1, 1, 1, 1]  # the store's 4 chunks along r, one by one
    meta = pq.ParquetFile(dest / "models.parquet")
    assert meta.metadata.num_row_groups == 4
    assert meta.schema_arrow.metadata[b"toysweep_aggregate"] == b"lowest_loss"
    seen.clear()
    export.export(store, "parquet", tmp_path / "out", piece_bytes=2 * one_chunk)
    assert [s[R] for s in seen] == [2, 2]  # two chunks a piece: within the budget
    seen.clear()
    export.export(store, "parquet", tmp_path / "out")
    assert [s[R] for s in seen] == [4]  # the default budget holds this small store whole


def test_a_failure_half_way_leaves_nothing(store, tmp_path, monkeypatch):
    calls = []
    tables = export.tables

    def fail_second(piece, settings):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return tables(piece, settings)

    monkeypatch.setattr(export, "tables", fail_second)
    with pytest.raises(OSError):
        export.export(store, "parquet", tmp_path / "out", piece_bytes=1)  # a chunk a piece
    assert list(tmp_path.iterdir()) == []  # no table, no temporary folder


def test_bad_input_is_one_line_and_writes_nothing(store, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    cases = (
        ([str(tmp_path / "nothing")], "no such store"),
        ([str(store), "--to", "xlsx"], "--to xlsx: unknown format, expected one of parquet, csv"),
        ([str(store), "--out", str(tmp_path / "a_file")], "is a file"),
        ([str(store), "--out", str(tmp_path / "a_file" / "x")], "cannot write there"),
        ([str(store), "--out", str(tmp_path / "no" / "such" / "x")], "cannot write there"),
        ([str(store), "--out", str(mine)], "holds files that are not an export (notes.txt)"),
        ([str(store), "--out", str(store / "export")], "inside the store"),
    )
    for argv, said in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and said in err and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "mine"]
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
    assert not Path(f"{store}.export").exists() and not (store / "export").exists()


def test_an_export_is_replaced_whole(store, tmp_path):
    out = tmp_path / "out"
    export.export(store, "parquet", out)
    export.export(store, "csv", out)
    assert sorted(p.name for p in out.iterdir()) == ["cells.csv", "models.csv"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_padded_features_of_a_shape_grid_have_no_rows(tmp_path):
    path = tmp_path / "shapes"
    cfg = make_config(
        [
            "+grid=phase",
            *TINY,
            "grid.axes.relative_importance=[1.0]",
            "grid.axes.density=[0.1,1.0]",
            "+grid.axes.n_features=[2,3]",
        ],
        store=path,
    )
    assert driver.run(cfg) == 0
    models, cells = read(export.export(path, "parquet"), "parquet")
    per_shape = models.groupby("n_features")["feature"].nunique()
    assert per_shape.to_dict() == {2: 2, 3: 3}
    assert len(models) == 2 * 2 * (2 + 3) and len(cells) == 2 * (2 + 3)
    assert models["norm"].notna().all()
