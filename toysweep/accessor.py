"""`ds.toysweep`: the analysis of a store as xarray objects, on the dataset itself.

Every method calls the analysis the CLI runs (analysis.aggregate, analysis.steps,
analysis.boundaries) with the store's own `analysis:` settings, which keyword arguments
override, so a number here is the number in `<store>.analysis.zarr`.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from analysis import aggregate, boundaries, source, steps, theory
from analysis.context import Context
from analysis.metrics import ABSENT, PHASE_NAMES
from analysis.report import AnalysisError
from analysis.settings import Settings

# CF conventions' way of naming integer codes: xarray, netCDF tools and R's ncdf4 read them.
PHASE_FLAGS = {
    "flag_values": [ABSENT, *range(len(PHASE_NAMES))],
    "flag_meanings": " ".join(("absent", *PHASE_NAMES)),
}
EXTRA_FEATURE = "the extra feature (the last): the one the phase diagram is about"


@xr.register_dataset_accessor("toysweep")
class ToysweepAccessor:
    """Phases, seed aggregate, theory, boundaries and single cells of a toysweep store."""

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds
        # xarray keeps one accessor per dataset object: results are cached on it
        self._agg: dict[Settings, xr.Dataset] = {}
        self._ctx: dict[tuple[Settings, frozenset[str]], Context] = {}

    def settings(self, **overrides: Any) -> Settings:
        """The store's analysis settings with overrides (rule=, norm_threshold=,
        superposition_threshold=); a bad value raises SettingsError with one line."""
        if "rule" in overrides:
            overrides["aggregate"] = overrides.pop("rule")
        return Settings.from_config(source.config(self._ds)).updated(overrides)

    def aggregate(self, rule: str | None = None, **thresholds: float) -> xr.Dataset:
        """Per-model metrics (`*_seed`: norm, superposition, phase, loss, usable) and one value
        per cell by the seed rule (`drop_worst` or `lowest_loss`; default: the store's):
        phase, norm, superposition, dimensionality, loss, phase_share, seeds_disagree,
        n_usable, missing (analysis.aggregate.analyse_store). Reads the whole store."""
        return self._aggregate(self.settings(rule=rule, **thresholds))

    def _aggregate(self, settings: Settings) -> xr.Dataset:
        if settings not in self._agg:
            # a shallow copy: analyse_store loads its data, the caller's dataset stays lazy
            self._agg[settings] = aggregate.analyse_store(self._ds.copy(), settings)
        return self._agg[settings]

    def analysis(self, families: Collection[str] = (), **settings: Any) -> xr.Dataset:
        """The whole analysis dataset, as `python -m analysis` writes it to
        `<store>.analysis.zarr`: the aggregate plus every analysis step that applies (theory,
        boundaries, geometry, dynamics, ...; `embeddings` only when named in families)."""
        return self.context(families, **settings).analysis

    def context(self, families: Collection[str] = (), **settings: Any) -> Context:
        """What figure families draw from (analysis.context.Context), with the steps run."""
        chosen = self.settings(**settings)
        key = (chosen, frozenset(families))
        if key not in self._ctx:
            cfg = source.config(self._ds)
            kind = theory.phase_kind(cfg, [str(d) for d in self._ds["loss"].dims if d != "seed"])
            path = source.store_path(self._ds) or Path(str(self._ds.attrs.get("grid_name", "")))
            agg = self._aggregate(chosen).copy()
            ctx = Context(path, self._ds, agg, cfg, chosen, kind)
            steps.run_steps(ctx, families=set(families))
            self._ctx[key] = ctx
        return self._ctx[key]

    def phases(self, rule: str | None = None, **thresholds: float) -> xr.Dataset:
        """`phase_seed` (cells..., seed, feature): each model's phase of each feature, and
        `phase` (cells..., feature): the cell's by the seed rule. Codes 0 ignored, 1 dedicated,
        2 superposed, -1 absent (unfinished, diverged or padded); ‖W_i‖ < norm_threshold is
        ignored, else superposition Σ_j≠i (Ŵ_i·W_j)² >= superposition_threshold is superposed."""
        agg = self.aggregate(rule, **thresholds)
        out = xr.Dataset({"phase": agg["phase"], "phase_seed": agg["phase_seed"]})
        for name in out.data_vars:
            out[name].attrs = dict(PHASE_FLAGS)
        out.attrs = {k: agg.attrs[k] for k in ("aggregate", *Settings().rule_settings())}
        return out

    def kind(self) -> str:
        """'2to1' or '3to2'; one-line AnalysisError for a grid the closed forms do not cover."""
        cells = [str(d) for d in self._ds["loss"].dims if d != "seed"]
        kind = theory.phase_kind(source.config(self._ds), cells)
        if kind is None:
            raise AnalysisError(
                f"not a closed-form phase grid (2→1 or 3→2 ReLU over relative_importance and "
                f"density); this store's cells are over {', '.join(cells) or 'nothing'}"
            )
        return kind

    def agreement(self, rule: str | None = None, **thresholds: float) -> xr.Dataset:
        """The closed-form phase of the extra feature beside the trained one, per cell
        (relative_importance, density): `phase`, `analytic_phase`, `near_boundary`, `compared`
        (not missing, not near a boundary), `agrees`; attrs `agreement` (share of compared
        cells that agree), `n_compared`, `n_agree`. Phase grids only (`kind`)."""
        kind = self.kind()
        full = aggregate.compare_with_theory(self.aggregate(rule, **thresholds), kind)
        out = full[["analytic_phase", "near_boundary", "compared", "agrees"]]
        out["phase"] = full["phase"].isel(feature=-1, drop=True)
        out["phase"].attrs = {**PHASE_FLAGS, "description": EXTRA_FEATURE}
        out["analytic_phase"].attrs.update(PHASE_FLAGS)
        keys = ("aggregate", "theory_kind", "agreement", "n_compared", "n_agree", "n_near_boundary")
        out.attrs = {k: full.attrs[k] for k in keys}
        return out

    def boundaries(self, n_boot: int = boundaries.BOOTSTRAP, **thresholds: float) -> xr.Dataset:
        """Measured boundaries p(r) of a phase grid with seed-bootstrap bands and both theories
        (analysis.boundaries.boundary_dataset): over (boundary, relative_importance),
        `boundary_density` and its band `_lo`/`_hi`, `boundary_exact`,
        `boundary_closed_form`, distances in decades and `*_within_band`."""
        kind = self.kind()
        agg = self._aggregate(self.settings(**thresholds))
        return boundaries.boundary_dataset(agg, self._ds, kind, n_boot)

    def cell(self, **coords: Any) -> xr.Dataset:
        """The models (every seed) of one cell, one coordinate per grid axis (the nearest value
        on a numeric axis): W, b, loss, finished, diverged (W_out for absval) and the Gram
        matrix `gram` = WᵀW (seed, feature, feature_j), the padding of a grid over shapes cut
        off. Example: `ds.toysweep.cell(relative_importance=1, density=0.1)`."""
        ds = self._ds
        cells = [str(d) for d in ds["loss"].dims if d != "seed"]
        if sorted(coords) != sorted(cells):
            given = ", ".join(f"{k}=" for k in coords) or "none"
            raise ValueError(
                f"cell({given}): expected one coordinate per grid axis: "
                f"{', '.join(f'{d}=' for d in cells)}"
            )
        for k, v in coords.items():  # a label axis (model kind) is matched exactly
            if not np.issubdtype(ds[k].dtype, np.number) and v not in ds[k].values:
                raise ValueError(
                    f"cell: {k}={v!r} is not on the grid: expected one of "
                    f"{', '.join(map(str, ds[k].values))}"
                )
        numeric = {k: v for k, v in coords.items() if np.issubdtype(ds[k].dtype, np.number)}
        picked = ds.sel({k: v for k, v in coords.items() if k not in numeric})
        picked = picked.sel(numeric, method="nearest")
        names = [n for n in ("W", "b", "W_out", "loss", "finished", "diverged") if n in picked]
        # padding of a shape grid: features without an importance, hidden rows past n_hidden
        out = picked[names].isel(feature=np.flatnonzero(picked["importance"].notnull().values))
        if "n_hidden" in picked.coords:
            out = out.isel(hidden=slice(0, int(picked["n_hidden"])))
        out = out.load()
        W = out["W"].transpose("seed", "hidden", "feature")
        gram = np.einsum("shi,shj->sij", W.values, W.values)  # (seed, feature, feature_j)
        out["gram"] = (("seed", "feature", "feature_j"), gram, {"description": "WᵀW"})
        return out.assign_coords(feature_j=out["feature"].values)
