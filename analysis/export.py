"""`python -m analysis.export <store> --to parquet|csv [--out DIR]`: a store as two tidy tables.

- `models.<ext>`: one row per (cell, seed, feature), long format: the grid coordinates, seed,
  feature, then the model's own columns, repeated on each of its feature rows (loss, finished,
  diverged), then the feature's (norm ‖W_i‖, superposition Σ_j≠i (Ŵ_i·W_j)², phase). Why
  long: per-feature quantities are then one column each, whatever n_features, and a model's
  values are one `groupby` away (pandas, dplyr), where a wide table would need n columns
  per quantity and differ from grid to grid.
- `cells.<ext>`: one row per (cell, feature): the grid coordinates, feature, importance and
  feature_density, and the seed aggregate by the store's rule (analysis.aggregate): phase,
  phase_share, norm, superposition, dimensionality, seeds_disagree, and the cell's loss,
  n_usable, missing.

Phases are the names ignored / dedicated / superposed, empty (NA) where a model is unfinished
or diverged (its metrics too). Padded features of a grid over shapes (NaN importance) have no
rows. The metrics are the analysis's own (analysis.aggregate), with the store's thresholds.

Streaming: the store is read a piece at a time, whole storage chunks of its leading grid axis,
as many as fit PIECE_BYTES of working memory (at least one), and each piece is appended to the
tables (pyarrow's ParquetWriter: one row group per piece; CSV appends), so a store larger than
memory exports in the memory of one piece. The tables are written into a temporary folder
beside DIR and renamed into place: an export is whole or absent. Bad input (no such store, an
unknown format, an unwritable DIR) is one line on stderr and exit code 2, before anything is
written.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import xarray as xr

from analysis import aggregate, source
from analysis.metrics import PHASE_NAMES
from analysis.settings import Settings

FORMATS = ("parquet", "csv")
TABLES = ("models", "cells")
# Per-feature columns of the models table, from analysis.aggregate.model_metrics.
MODEL_FEATURE = ("norm", "superposition")
CELL_FEATURE = ("norm", "superposition", "dimensionality", "phase_share")
# What the tables are computed from (the exact loss that ranks seeds needs b, importance, density)
READ = ("W", "b", "loss", "finished", "diverged", "importance", "feature_density")
CELL_LEVEL = ("loss", "dims_per_feature", "n_usable", "missing", "seeds_disagree")


class ExportError(ValueError):
    """Bad input to the export; str() is the one-line message."""


def phase_names(codes: np.ndarray) -> pd.Categorical:
    """Phase codes -> a categorical of their names, NA for -1 (absent, unfinished, diverged)."""
    return pd.Categorical.from_codes(np.where(codes >= 0, codes, -1), categories=PHASE_NAMES)


# Working memory of one piece: the metrics hold a few float64 copies of W (hidden, feature) and
# of the overlaps (feature, feature) per model; 256 MB keeps a piece well inside a laptop's RAM
# while amortising xarray's fixed cost per piece (~0.3 s) over many chunks of a small store.
PIECE_BYTES = 256 * 2**20


def model_bytes(ds: xr.Dataset) -> int:
    """Working bytes per model of `tables`: float64 copies of W and of its overlaps."""
    n_hidden, n_feat = ds.sizes["hidden"], ds.sizes["feature"]
    return 8 * 4 * (n_hidden * n_feat + n_feat * n_feat)


def pieces(ds: xr.Dataset, budget: int = PIECE_BYTES) -> Iterator[xr.Dataset]:
    """The store cut along its leading grid axis at its storage chunks, as many consecutive
    chunks per piece as fit the budget (at least one)."""
    lead = ds["loss"].dims[0]
    per_index = model_bytes(ds) * (ds["loss"].size // max(ds.sizes[lead], 1))
    start = stop = 0
    for n in ds["loss"].chunksizes.get(lead, (ds.sizes[lead],)):
        if stop > start and (stop + n - start) * per_index > budget:
            yield ds.isel({lead: slice(start, stop)})
            start = stop
        stop += n
    if stop > start:
        yield ds.isel({lead: slice(start, stop)})


def _frame(columns: dict[str, xr.DataArray], dims: list[str]) -> pd.DataFrame:
    """Columns from DataArrays broadcast over dims, rows in C order of dims (coords first)."""
    return xr.Dataset(columns).to_dataframe(dim_order=dims).reset_index()


def tables(piece: xr.Dataset, settings: Settings) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(models, cells) rows of one piece of a store."""
    piece = piece[list(READ)].load()  # not the loss curves or snapshots: never exported
    mm = aggregate.model_metrics(piece, settings)
    agg = aggregate.aggregate_seeds(mm, settings.aggregate)
    cells = [str(d) for d in piece["loss"].dims if d != "seed"]
    present = piece["importance"].notnull()  # (cells..., feature): False where padded
    model_cols = {
        "loss": piece["loss"],
        "finished": piece["finished"],
        "diverged": piece["diverged"],
        **{n: mm[n] for n in MODEL_FEATURE},
        "phase": mm["phase"],
    }
    models = _frame(model_cols, [*cells, "seed", "feature"])
    keep = present.broadcast_like(mm["phase"]).transpose(*cells, "seed", "feature")
    models = models[keep.values.reshape(-1)]
    models["phase"] = phase_names(models["phase"].to_numpy())
    cell_cols = {
        "importance": piece["importance"],
        "feature_density": piece["feature_density"],
        "phase": agg["phase"],
        **{n: agg[n] for n in CELL_FEATURE},
        "seeds_disagree_feature": agg["seeds_disagree_feature"],
        **{n: agg[n] for n in CELL_LEVEL},
    }
    table = _frame(cell_cols, [*cells, "feature"])
    table = table[present.transpose(*cells, "feature").values.reshape(-1)]
    table["phase"] = phase_names(table["phase"].to_numpy())
    return models.reset_index(drop=True), table.reset_index(drop=True)


class _Writer:
    """Appends pandas frames to one table file, parquet or csv, opened at the first frame."""

    def __init__(self, path: Path, fmt: str, metadata: dict[str, str]) -> None:
        self.path, self.fmt, self.metadata = path, fmt, metadata
        self.parquet: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, frame: pd.DataFrame) -> None:
        if self.fmt == "csv":
            frame.to_csv(self.path, mode="a", header=self.rows == 0, index=False)
        else:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if self.parquet is None:
                schema = table.schema.with_metadata(
                    {**(table.schema.metadata or {}), **self.metadata}
                )
                self.parquet = pq.ParquetWriter(self.path, schema)
            self.parquet.write_table(table.cast(self.parquet.schema))
        self.rows += len(frame)

    def close(self) -> None:
        if self.parquet is not None:
            self.parquet.close()


def check_out(out: Path, store: Path) -> None:
    """Refuse an out folder we may not replace (a file, a folder holding other files) or may
    not write (inside the store: a sweep refuses a store holding foreign files)."""
    if out.resolve().is_relative_to(store.resolve()):
        raise ExportError(f"--out {out}: inside the store {store}, expected a folder outside it")
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out}: is a file, expected a folder for the tables")
    ours = {f"{t}.{f}" for t in TABLES for f in FORMATS}
    if out.is_dir():
        other = sorted(p.name for p in out.iterdir() if p.name not in ours)
        if other:
            raise ExportError(
                f"--out {out}: holds files that are not an export ({', '.join(other[:3])}): "
                "expected a new or an export folder"
            )


def export(
    store: Path | str,
    fmt: str = "parquet",
    out: Path | str | None = None,
    piece_bytes: int = PIECE_BYTES,
) -> Path:
    """Write the store's models and cells tables into the folder out (default
    `<store>.export` beside the store); return it. ExportError / StoreError: one line."""
    if fmt not in FORMATS:
        raise ExportError(f"--to {fmt}: unknown format, expected one of {', '.join(FORMATS)}")
    ds = source.open_lazy(store)
    path = source.store_path(ds)
    assert path is not None
    cfg = source.config(ds)
    settings = Settings.from_config(cfg)
    dest = Path(out).expanduser().absolute() if out else path.parent / f"{path.name}.export"
    check_out(dest, path)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
    except OSError as e:
        raise ExportError(f"--out {dest}: cannot write there ({e.strerror})") from None
    metadata = {
        "toysweep_store": str(path),
        "toysweep_fingerprint": str(ds.attrs.get("fingerprint", "")),
        **{f"toysweep_{k}": str(v) for k, v in settings.rule_settings().items()},
    }
    writers = {t: _Writer(tmp / f"{t}.{fmt}", fmt, metadata) for t in TABLES}
    try:
        for piece in pieces(ds, piece_bytes):
            for name, frame in zip(TABLES, tables(piece, settings), strict=True):
                writers[name].write(frame)
        for w in writers.values():
            w.close()
        swap_in(tmp, dest)
    finally:
        for w in writers.values():
            w.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def swap_in(tmp: Path, dest: Path) -> None:
    """Replace dest (absent, or an earlier export: check_out) by tmp."""
    old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
    if dest.exists():
        os.rename(dest, old)
    os.rename(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m analysis.export", description=__doc__.split("\n")[0]
    )
    p.add_argument("store", help="a sweep's store, e.g. results/phase")
    # checked by export(), not argparse's choices: one line instead of a usage block
    p.add_argument("--to", default="parquet", help="parquet (default) or csv")
    p.add_argument("--out", default=None, help="folder for the tables (default <store>.export)")
    args = p.parse_args(argv)
    from analysis.source import StoreError

    try:
        dest = export(args.store, args.to, args.out)
    except (ExportError, StoreError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sizes = {t: (dest / f"{t}.{args.to}").stat().st_size for t in TABLES}
    print(
        f"exported {args.store} to {dest}: "
        + ", ".join(f"{t}.{args.to} ({sizes[t] / 1e6:.2f} MB)" for t in TABLES)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
