"""The analysis of one store: check it, compute the analysis dataset, draw the figures.

`analyse(store, settings=...)` is what `python -m analysis <store>` and the end-of-sweep Hydra
callback (analysis.callback) call. In order:

1. open and check the store (sweep.reader), read its config and analysis settings; the caller's
   settings override the store's;
2. per-model metrics and one value per cell (analysis.aggregate), then the analysis steps
   (analysis.steps: theory, geometry, neurons, feature sets);
3. draw the figure families the settings or the store's config name (else the generic ones)
   (analysis.registry), each in a process of its own (analysis.saving), into a hidden folder;
4. only when every family has drawn: the analysis dataset written beside the store, then the
   figures moved into `<store>/figures/`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import xarray as xr
import yaml

from analysis import aggregate, registry, saving, steps, theory
from analysis.context import Context
from analysis.settings import Settings, SettingsError
from sweep.reader import StoreError, config_of, open_store

REQUIRED_VARS = (
    "W",
    "b",
    "loss",
    "loss_curve",
    "finished",
    "diverged",
    "importance",
    "feature_density",
)


class AnalysisError(RuntimeError):
    """A store this analysis cannot use; str() is a one-line message."""


def phase_kind(cfg: Mapping[str, Any], ds: xr.Dataset) -> str | None:
    """'2to1' or '3to2' when a store is a phase grid the closed forms describe, else None
    (analysis.theory.phase_kind over the store's cell dims)."""
    return theory.phase_kind(cfg, (str(d) for d in ds["loss"].dims if d != "seed"))


def load(store_path: Path | str) -> tuple[Path, xr.Dataset, dict[str, Any], Settings]:
    """Open and check a store; raise StoreError / AnalysisError with a one-line message."""
    path = Path(store_path).expanduser().absolute()
    if path.is_file():
        raise StoreError(f"{path}: is a file, not a store (a store is a directory)")
    if path.is_dir() and not any(path.iterdir()):
        raise StoreError(f"{path}: an empty directory, not a store")
    ds = open_store(path)
    missing = [v for v in REQUIRED_VARS if v not in ds]
    if missing:
        raise AnalysisError(f"{path}: store lacks variables {', '.join(missing)}")
    try:
        cfg = config_of(ds)
    except (KeyError, yaml.YAMLError) as e:
        raise AnalysisError(
            f"{path}: store has no readable config_yaml attr ({type(e).__name__})"
        ) from None
    if not isinstance(cfg, dict):
        raise AnalysisError(f"{path}: config_yaml attr is not a mapping")
    try:
        settings = Settings.from_config(cfg)
    except SettingsError as e:
        raise AnalysisError(f"{path}: {e} (in the store's config)") from None
    return path, ds, cfg, settings


def grid_figures(ds: xr.Dataset, cfg: dict, stored: Settings) -> tuple[str, ...]:
    """The families the store's config names, else the generic panels."""
    if stored.figures is not None:
        return registry.check_figures(stored.figures)
    return registry.GENERIC_FIGURES


def analyse(
    store_path: Path | str,
    figures_dir: Path | str | None = None,
    verbose: bool = True,
    settings: Mapping[str, Any] | Settings | None = None,
) -> dict[str, Any]:
    """Analyse a store: write `<store>.analysis.zarr` beside it and figures (PNG and SVG) into
    figures_dir (default `<store>/figures/`); return a summary dict.

    settings (norm_threshold, superposition_threshold, aggregate, figures) override the store's
    `analysis:` config. All checks run before anything is written, so a refused store is left
    as it was; bad settings raise SettingsError, a bad store StoreError or AnalysisError.
    """
    overrides = asdict(settings) if isinstance(settings, Settings) else settings
    early = Settings().updated(overrides)  # the caller's settings first: not the store's fault
    if early.figures is not None:
        registry.check_figures(early.figures)
    path, ds, cfg, stored = load(store_path)
    chosen = stored.updated(overrides)
    try:
        of_grid = grid_figures(ds, cfg, stored)
    except SettingsError as e:  # e.g. a family renamed since the store was written
        if early.figures is None:
            raise AnalysisError(
                f"{path}: {e} (in the store's config; choose others with --figures)"
            ) from None
        of_grid = ()
    names = registry.check_figures(chosen.figures) if chosen.figures is not None else of_grid
    kind = phase_kind(cfg, ds)
    agg = aggregate.analyse_store(ds, chosen)
    ctx = Context(path, ds, agg, cfg, chosen, kind)
    steps.run_steps(ctx, families={*of_grid, *names})  # the grid's steps run in any case
    out_dir = Path(figures_dir) if figures_dir is not None else path / "figures"
    with saving.Staged(out_dir) as figures:  # each family drawn in a process of its own
        try:
            skipped = figures.draw({name: partial(registry.FIGURES[name], ctx) for name in names})
        except saving.Refused as e:  # a family asked of a store it does not fit
            name, _, why = str(e).partition(": ")
            raise AnalysisError(
                f"{path}: figure family {name!r} cannot draw this store ({why})"
            ) from None
        ana_path = aggregate.write_atomic(ctx.analysis, aggregate.analysis_path(path))
        paths = figures.commit()  # the figures appear once the analysis dataset is written
    a = ctx.analysis.attrs
    counts = ("n_models", "n_unfinished", "n_diverged", "n_cells", "n_missing_cells")
    summary = {
        "store": str(path),
        "analysis": str(ana_path),
        "grid_name": str(ds.attrs.get("grid_name", "")),
        "kind": kind,
        "aggregate": chosen.aggregate,
        "figure_families": list(names),
        "skipped": skipped,
        "agreement": a.get("agreement"),
        "n_compared": a.get("n_compared"),
        "n_agree": a.get("n_agree"),
        "n_near_boundary": a.get("n_near_boundary"),
        **{k: a[k] for k in (*counts, "n_disagreeing_cells")},
        "figures": [str(p) for p in paths],
    }
    if verbose:
        print(summary_lines(summary))
        if "boundary" in ctx.analysis:  # phase boundaries (issue 16)
            from analysis import boundaries

            print(boundaries.summary(ctx.analysis))
        if summary["n_unfinished"] and ds.attrs.get("refine_complete"):
            print(
                f"refined grid: {a.get('n_models', 0) - summary['n_unfinished']} models "
                "trained where the boundaries are; the other points are untrained by design"
            )
        elif summary["n_unfinished"]:
            print(
                f"warning: {summary['n_unfinished']} of {summary['n_models']} models "
                f"unfinished ({summary['n_missing_cells']} cells missing, drawn as missing); "
                "rerun the sweep to train them",
                file=sys.stderr,
            )
    return summary


def summary_lines(s: dict[str, Any]) -> str:
    """The agreement line (phase grids), counts, and one line per figure."""
    lines = []
    if s["kind"] is not None:
        lines.append(
            f"agreement with theory ({s['kind']}, rule {s['aggregate']}): {s['agreement']:.1%} "
            f"of {s['n_compared']} cells away from analytic boundaries ({s['n_near_boundary']} "
            f"near a boundary, {s['n_missing_cells']} missing, left out)"
        )
    lines.append(
        f"{s['n_cells']} cells, {s['n_models']} models: {s['n_unfinished']} "
        f"unfinished, {s['n_diverged']} diverged, {s['n_disagreeing_cells']} cells "
        f"whose seeds disagree; analysis {s['analysis']}"
    )
    lines += [f"figure: {p}" for p in s["figures"]]
    lines += [f"figure family {n}: nothing to draw for this store" for n in s["skipped"]]
    return "\n".join(lines)
