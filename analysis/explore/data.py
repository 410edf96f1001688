"""The explorer's reads of a store: lazy, a slab of cells at a time, one cell's W on a click.

Nothing here loads the whole store. `Explorer.summary()` walks the first grid axis in slabs
whose weights fit `SLAB_BYTES`, turns each slab into per-cell numbers with the analysis's own
functions (`aggregate.model_metrics`, `aggregate.aggregate_seeds`) and keeps only those numbers
(a few floats per cell); `refresh()` recomputes only the slabs whose `finished` flags changed, so
a store that a sweep is still writing can be watched. `cell_detail()` reads one cell.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
import yaml

from analysis import aggregate, metrics
from analysis.theory import phase_kind
from sweep.reader import StoreError, open_store
from sweep.reader import config_of as stored_config

REQUIRED = ("W", "b", "loss", "loss_curve", "finished", "diverged", "importance", "feature_density")
# What aggregate.model_metrics reads (it ranks seeds by the exact loss where one exists, which
# needs b, importance and density too).
METRIC_VARS = ["W", "b", "loss", "finished", "diverged", "importance", "feature_density"]
SLAB_BYTES = 32 * 2**20  # working memory of one slab's metrics (W, overlaps), bytes
PHASES = {
    metrics.IGNORED: "ignored",
    metrics.DEDICATED: "dedicated",
    metrics.SUPERPOSED: "superposed",
    metrics.ABSENT: "missing",
}


class ExploreError(RuntimeError):
    """A store or option the explorer cannot use; str() is a one-line message."""


def open_lazy(path: Path | str) -> xr.Dataset:
    """Open a sweep store lazily (dask) with the engine's checks; ExploreError otherwise."""
    path = Path(path).expanduser().absolute()
    if path.is_file():
        raise ExploreError(f"{path}: is a file, not a store (a store is a directory)")
    try:
        ds = open_store(path)
    except StoreError as e:
        raise ExploreError(str(e)) from None
    missing = [v for v in REQUIRED if v not in ds]
    if missing:
        raise ExploreError(f"{path}: a damaged store, it lacks variables {', '.join(missing)}")
    return ds


def config_of(ds: xr.Dataset) -> dict:
    """The store's resolved config (sweep.config_of), checked to be a mapping."""
    try:
        cfg = stored_config(ds)
    except (KeyError, yaml.YAMLError) as e:
        raise ExploreError(f"store has no readable config_yaml attr ({type(e).__name__})") from None
    if not isinstance(cfg, dict):
        raise ExploreError("store's config_yaml attr is not a mapping")
    return cfg


def label(value: object) -> str:
    """An axis value as the explorer shows and selects it."""
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    return str(value.item() if isinstance(value, np.generic) else value)


@dataclasses.dataclass
class SeedDetail:
    seed: int
    status: str  # finished | unfinished | diverged
    loss: float
    W: np.ndarray  # (m, n), NaN when not usable
    b: np.ndarray  # (n,)
    norms: np.ndarray  # (n,)
    superposition: np.ndarray  # (n,)
    phases: list[str]  # per feature
    curve_step: np.ndarray
    curve: np.ndarray
    role: str  # what the aggregation did with this seed, and why
    exact_loss: float = float("nan")  # the exact expected loss seeds are ranked by, if any


@dataclasses.dataclass
class CellDetail:
    coords: dict  # axis -> value
    m: int
    n: int
    status: str
    rule: str
    rule_text: str
    cell_phases: list[str]  # aggregated phase per feature
    cell_loss: float
    disagree: bool
    seeds: list[SeedDetail]


class Explorer:
    """A store opened for exploring: lazily read, summarised per cell, read per cell on demand."""

    def __init__(self, path: Path | str):
        self.path = Path(path).expanduser().absolute()
        self.ds = open_lazy(self.path)
        self.cfg = config_of(self.ds)
        try:
            self.settings = aggregate.Settings.from_config(self.cfg)
        except (TypeError, ValueError) as e:
            raise ExploreError(f"{self.path}: {e} (in the store's config)") from None
        self.cell_dims = [str(d) for d in self.ds["loss"].dims if d != "seed"]
        self.kind = phase_kind(self.cfg, self.cell_dims)
        self.coords = {d: self.ds[d].values for d in self.cell_dims}
        self.shape = tuple(len(self.coords[d]) for d in self.cell_dims)
        self.seeds = self.ds["seed"].values
        self.name = str(self.ds.attrs.get("grid_name", self.path.name))
        self._slabs = self._plan_slabs()
        self._done: list[np.ndarray | None] = [None] * len(self._slabs)  # finished flags seen
        self._parts: list[pd.DataFrame | None] = [None] * len(self._slabs)

    # ---------------------------------------------------------------- summary, slab by slab

    def _plan_slabs(self) -> list[slice]:
        if not self.cell_dims:
            return [slice(None)]
        d0 = self.cell_dims[0]
        nh, nf = self.ds.sizes["hidden"], self.ds.sizes["feature"]
        per_model = 8 * (nh * nf + 4 * nf * nf)  # W in float64 plus the feature overlaps
        per_index = per_model * len(self.seeds) * int(np.prod(self.shape[1:], dtype=np.int64))
        step = max(1, SLAB_BYTES // max(per_index, 1))
        # W's own chunks (DataArray.chunksizes also asks its coords, which may be chunked
        # otherwise, e.g. n_features along a zipped `shape` axis)
        W = self.ds["W"]
        chunk = (
            dict(zip(W.dims, getattr(W.data, "chunks", None) or (), strict=False)).get(d0)
            or (step,)
        )[0]
        if step >= chunk:  # whole zarr chunks: no chunk is read twice
            step -= step % chunk
        n0 = self.shape[0]
        return [slice(i, min(i + step, n0)) for i in range(0, n0, step)]

    def _slab(self, sl: slice) -> xr.Dataset:
        sub = self.ds[METRIC_VARS]
        return sub.isel({self.cell_dims[0]: sl}) if self.cell_dims else sub

    def refresh(self) -> int:
        """Re-read the finished flags; recompute slabs that changed. Returns slabs recomputed.

        The store is opened again once anything was summarised: its `finished` flags are the
        cells found intact when it was opened (sweep.reader.open_store)."""
        if any(d is not None for d in self._done):
            self.ds = open_lazy(self.path)
        fin = self.ds["finished"].values  # (cells..., seed) bools: small even for 1e5 models
        redone = 0
        for k, sl in enumerate(self._slabs):
            part = fin[sl] if self.cell_dims else fin
            seen = self._done[k]
            if seen is not None and np.array_equal(seen, part):
                continue
            self._parts[k] = self._summarise(self._slab(sl).load(), sl)
            self._done[k] = part.copy()
            redone += 1
        return redone

    def summary(self) -> pd.DataFrame:
        """One row per cell (C order over the grid axes): status and aggregated numbers."""
        if any(p is None for p in self._parts):
            self.refresh()
        return pd.concat(self._parts, ignore_index=True)

    def _summarise(self, sub: xr.Dataset, sl: slice) -> pd.DataFrame:
        mm = aggregate.model_metrics(sub, self.settings)
        agg = aggregate.aggregate_seeds(mm, self.settings.aggregate)
        dims = self.cell_dims
        agg = agg.transpose(*dims, "feature")
        fin = sub["finished"].transpose(*dims, "seed").values
        div = sub["diverged"].transpose(*dims, "seed").values & fin
        present = np.isfinite(sub["importance"].transpose(*dims, "feature").values)
        n_seed = fin.shape[-1]
        phase = agg["phase"].values  # (cells..., feature)
        n_real = present.sum(-1)
        extra = np.maximum(n_real - 1, 0)  # the last real feature: a phase grid's extra one
        ph_extra = np.take_along_axis(phase, extra[..., None], -1)[..., 0]
        missing = agg["missing"].values
        n_fin, n_div = fin.sum(-1), div.sum(-1)
        status = np.where(n_fin == 0, "unfinished", "finished").astype(object)
        part = (n_fin > 0) & (n_fin < n_seed)
        status[part] = [f"partly finished ({k}/{n_seed} seeds)" for k in n_fin[part]]
        status[(n_div > 0) & ~missing] = [
            f"{k}/{n_seed} seeds diverged" for k in n_div[(n_div > 0) & ~missing]
        ]
        status[missing & (n_fin > 0)] = "diverged (all finished seeds)"
        counts = {
            name: np.where(missing, np.nan, (phase == code).sum(-1))
            for code, name in (
                (metrics.IGNORED, "n_ignored"),
                (metrics.DEDICATED, "n_dedicated"),
                (metrics.SUPERPOSED, "n_superposed"),
            )
        }
        index = np.indices(fin.shape[:-1]).reshape(len(dims), -1)  # (dim, cell)
        if dims:
            index[0] += sl.start or 0
        out = {f"i_{d}": index[k] for k, d in enumerate(dims)}
        out.update(
            {
                "status": status.ravel(),
                "missing": missing.ravel(),
                "n_finished": n_fin.ravel(),
                "n_diverged": n_div.ravel(),
                "n_usable": agg["n_usable"].values.ravel(),
                "n_features": n_real.ravel(),
                "phase": ph_extra.ravel(),
                "loss": agg["loss"].values.ravel(),
                "dstar": agg["dims_per_feature"].values.ravel(),
                # as the phase diagram: the seeds' disagreement on the feature the map shows
                "disagree": np.take_along_axis(
                    agg["seeds_disagree_feature"].values, extra[..., None], -1
                )[..., 0].ravel(),
                **{k: v.ravel() for k, v in counts.items()},
            }
        )
        return pd.DataFrame(out)

    # ---------------------------------------------------------------- one cell

    DETAIL_VARS = (*METRIC_VARS, "loss_curve")

    def cell_details(self, indices: list[tuple[int, ...]]) -> list[CellDetail]:
        """cell_detail of many cells, reading the store a slab at a time (the export)."""
        out: dict[tuple[int, ...], CellDetail] = {}
        for sl in self._slabs:
            inside = [ix for ix in indices if not self.cell_dims or sl.start <= ix[0] < sl.stop]
            if not inside:
                continue
            sub = self.ds[list(self.DETAIL_VARS)]
            slab = (sub.isel({self.cell_dims[0]: sl}) if self.cell_dims else sub).load()
            for ix in inside:
                local = (ix[0] - sl.start, *ix[1:]) if self.cell_dims else ix
                out[ix] = self.cell_detail(
                    ix, slab.isel(dict(zip(self.cell_dims, local, strict=True)))
                )
        return [out[ix] for ix in indices]

    def cell_detail(self, index: tuple[int, ...], one: xr.Dataset | None = None) -> CellDetail:
        """Everything the explorer shows for one cell, read from the store for that cell only
        (or taken from `one`, that cell's variables already in memory)."""
        sel = dict(zip(self.cell_dims, index, strict=True))
        if one is None:
            one = self.ds[list(self.DETAIL_VARS)].isel(sel).load()  # (seed, hidden, feature)…
        one = one.transpose("seed", "hidden", "feature", "curve_step")
        coords = {d: self.coords[d][i] for d, i in sel.items()}
        n = int(np.isfinite(one["importance"].values).sum())
        mcfg = self.cfg.get("model") or {}
        # m: the cell's n_hidden coord (its axis, or along a zipped (n, m) `shape` axis)
        has_m = "n_hidden" in one.coords and one["n_hidden"].size == 1
        m = int(one["n_hidden"]) if has_m else int(mcfg.get("n_hidden", one.sizes["hidden"]))
        fin = one["finished"].values
        div = one["diverged"].values & fin
        usable = fin & ~div
        W = np.where(usable[:, None, None], one["W"].values[:, :m, :n].astype(float), np.nan)
        b = np.where(usable[:, None], one["b"].values[:, :n].astype(float), np.nan)
        loss = np.where(usable, one["loss"].values.astype(float), np.nan)
        s = self.settings
        phases = metrics.classify_phases(W, s.norm_threshold, s.superposition_threshold)
        # The cell's aggregate, by the analysis's own rule (one cell: no grid dims left), and
        # the loss it ranks seeds by: exact (quadrature) where the model has one, else stored.
        mm = aggregate.model_metrics(one.drop_vars("loss_curve"), s)
        agg = aggregate.aggregate_seeds(mm, s.aggregate)
        rank_loss = mm["loss"].values.astype(float)
        exact = "loss_mc" in mm
        roles = seed_roles(rank_loss, fin, div, s.aggregate, "exact loss" if exact else "loss")
        if s.aggregate == "drop_worst":
            assert sum(r.startswith("kept") for r in roles) == int(agg["n_pooled"])
        cell_ph = agg["phase"].values[:n]
        n_fin = int(fin.sum())
        status = (
            "unfinished"
            if n_fin == 0
            else f"partly finished ({n_fin}/{len(fin)} seeds)"
            if n_fin < len(fin)
            else "diverged (every seed)"
            if not usable.any()
            else f"finished, {int(div.sum())} of {len(fin)} seeds diverged"
            if div.any()
            else "finished"
        )
        seeds = []
        for k, seed in enumerate(self.seeds):
            st = "unfinished" if not fin[k] else "diverged" if div[k] else "finished"
            seeds.append(
                SeedDetail(
                    seed=int(seed),
                    status=st,
                    loss=float(loss[k]),
                    W=W[k],
                    b=b[k],
                    norms=metrics.feature_norms(W[k]),
                    superposition=metrics.superposition(W[k]),
                    phases=[PHASES[int(c)] for c in phases[k]],
                    curve_step=one["curve_step"].values,
                    curve=one["loss_curve"].values[k].astype(float),
                    role=roles[k],
                    exact_loss=float(rank_loss[k]) if exact else float("nan"),
                )
            )
        return CellDetail(
            coords=coords,
            m=m,
            n=n,
            status=status,
            rule=s.aggregate,
            rule_text=str(agg.attrs.get("aggregate_rule", s.aggregate)),
            cell_phases=[PHASES[int(c)] for c in cell_ph],
            cell_loss=float(agg["loss"]),
            disagree=bool(agg["seeds_disagree"]),
            seeds=seeds,
        )


def seed_roles(
    loss: np.ndarray, finished: np.ndarray, diverged: np.ndarray, rule: str, what: str = "loss"
) -> list[str]:
    """What the aggregation rule did with each seed of a cell, and why (aggregate's ranking)."""
    usable = finished & ~diverged
    order = np.argsort(np.where(usable, loss, np.inf), kind="stable")  # as aggregate_seeds
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    n_use = int(usable.sum())
    roles = []
    for k in range(len(loss)):
        if not finished[k]:
            roles.append("left out: not trained yet (unfinished)")
        elif diverged[k]:
            roles.append("left out: diverged (NaN/inf during training)")
        elif n_use == 1:
            roles.append("kept: the only usable seed, it stands for the cell")
        elif rule == "lowest_loss":
            roles.append(
                f"kept: lowest {what} of the usable seeds, it stands for the cell"
                if rank[k] == 0
                else f"not picked: {what} rank {rank[k] + 1} of {n_use} usable seeds"
            )
        elif rank[k] == n_use - 1:
            roles.append(f"dropped: highest {what} of the {n_use} usable seeds (drop_worst)")
        else:
            roles.append(
                f"kept: {what} rank {rank[k] + 1} of {n_use}; the cell's phase is the "
                "mode of the kept seeds"
            )
    return roles
