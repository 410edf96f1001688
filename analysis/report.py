"""The analysis of one store: check it, compute the analysis dataset, draw the figures.

`analyse(store)` is what `python -m analysis <store>` and the end of a sweep call. Figures are
chosen by grid name through `FIGURES`; a grid without an entry gets the phase-diagram figures
when its config is a 2→1 or 3→2 phase grid, else the generic panels (`DEFAULT`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import xarray as xr
import yaml

from analysis import aggregate, correlated_absval, experiments, figures
from sweep.store import StoreError, config_of, open_store

CONF_GRIDS = Path(__file__).resolve().parent.parent / "conf" / "grid"
DEFAULT = "default"  # FIGURES key used for known grids with no entry of their own
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


@dataclass
class Context:
    """What a figure function gets: the (loaded) store, its analysis and config."""

    path: Path
    store: xr.Dataset
    analysis: xr.Dataset
    config: dict
    kind: str | None  # "2to1", "3to2" or None


FigureSet = Callable[[Context], dict]  # returns {stem: Figure}


def phase_figures(ctx: Context) -> dict:
    """Phase diagram of the extra feature, per-feature panels, loss curves."""
    out = {}
    if ctx.kind is not None:
        out[f"phase_diagram_{ctx.kind}"] = figures.phase_diagram(ctx.analysis, ctx.kind)
        out.update(boundary_figures(ctx))
    return {**out, **generic_figures(ctx)}


# -- phase boundaries (issue 16): measured boundaries over trained points, distance to theory
def boundary_figures(ctx: Context) -> dict:
    """Measured boundaries with bands beside both theories, and their distance to each."""
    from analysis import boundary_figures as bf

    if ctx.kind is None or "boundary" not in ctx.analysis:
        return {}
    return {f"boundaries_{ctx.kind}": bf.boundary_diagram(ctx.analysis, ctx.kind),
            f"boundary_distance_{ctx.kind}": bf.boundary_distance(ctx.analysis, ctx.kind)}


def refine_figures(ctx: Context) -> dict:
    """A refined grid (sweep/refine.py): boundary figures and loss curves (no cell heatmaps,
    which would be mostly untrained points)."""
    return {**boundary_figures(ctx),
            "loss_curves": figures.loss_curves(ctx.store, ctx.analysis["usable_seed"])}
# -- end of phase boundaries


def generic_figures(ctx: Context) -> dict:
    """Norms and superposition per feature and cell, and the loss curves: for every store."""
    return {
        "feature_panels": figures.feature_overview(ctx.analysis),
        "loss_curves": figures.loss_curves(ctx.store, ctx.analysis["usable_seed"]),
    }


# Grid name -> figures. Add an entry for an experiment's own figures; DEFAULT serves the rest.
FIGURES: dict[str, FigureSet] = {
    "phase": phase_figures,
    "phase3": phase_figures,
    "phase-refine": refine_figures,
    "phase3-refine": refine_figures,
    DEFAULT: generic_figures,
}
FIGURES.update(experiments.FIGURES)  # the paper's experiments (analysis/experiments.py)
FIGURES.update(correlated_absval.FIGURES)  # correlated sets, |x| (analysis/correlated_absval.py)


def known_grids() -> set[str]:
    """Grid names this analysis accepts: the grid files, FIGURES entries and the bare default."""
    return {p.stem for p in CONF_GRIDS.glob("*.yaml")} | set(FIGURES) | {"default"}


def phase_kind(cfg: dict, ds: xr.Dataset) -> str | None:
    """'2to1' or '3to2' when a store is a phase grid the closed forms describe, else None.

    That is: ReLU model, n → m = 2 → 1 or 3 → 2, all importances 1 but the last feature's,
    scaled by the relative_importance axis, one density for all features, and exactly the axes
    relative_importance and density.
    """
    model, data = cfg.get("model") or {}, cfg.get("data") or {}
    imp = data.get("importance") or {}
    cell_dims = {d for d in ds["loss"].dims if d != "seed"}
    if cell_dims != {"relative_importance", "density"} or model.get("kind") != "relu":
        return None
    if (
        data.get("density_features") is not None
        or imp.get("schedule") != "constant"
        or float(imp.get("value", 1.0)) != 1.0
    ):
        return None
    shape = (model.get("n_features"), model.get("n_hidden"))
    kind = {(2, 1): "2to1", (3, 2): "3to2"}.get(shape)
    if kind is None or list(data.get("relative_importance_features") or []) != [shape[0] - 1]:
        return None
    return kind


def load(store_path: Path | str) -> tuple[Path, xr.Dataset, dict, aggregate.Settings]:
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
    name = str(ds.attrs.get("grid_name", ""))
    if name not in known_grids() and phase_kind(cfg, ds) is None:
        raise AnalysisError(
            f"{path}: written by grid {name!r}, which this analysis does not know (known: "
            f"{', '.join(sorted(known_grids()))}); add conf/grid/{name}.yaml or an entry to "
            "analysis.report.FIGURES"
        )
    try:
        settings = aggregate.Settings.from_config(cfg)
    except (TypeError, ValueError) as e:
        raise AnalysisError(f"{path}: {e} (in the store's config)") from None
    return path, ds, cfg, settings


def analyse(
    store_path: Path | str, figures_dir: Path | str | None = None, verbose: bool = True
) -> dict:
    """Analyse a store: write `<store>.analysis.zarr` beside it and figures (PNG and SVG) into
    figures_dir (default `<store>/figures/`); return a summary dict.

    All checks run before anything is written, so a refused store is left as it was.
    """
    path, ds, cfg, settings = load(store_path)
    kind = phase_kind(cfg, ds)
    agg = aggregate.analyse_store(ds, settings)
    if kind is not None:
        agg = aggregate.compare_with_theory(agg, kind)
        # -- phase boundaries (issue 16, analysis/boundaries.py): measured p(r) with bands
        from analysis import boundaries

        agg = boundaries.add_boundaries(agg, ds, kind)
        # -- end of phase boundaries
    out_dir = Path(figures_dir) if figures_dir is not None else path / "figures"
    ana_path = aggregate.write_atomic(agg, aggregate.analysis_path(path))
    ctx = Context(path, ds, agg, cfg, kind)
    name = str(ds.attrs.get("grid_name", ""))
    figure_set = FIGURES.get(name) or (phase_figures if kind else FIGURES[DEFAULT])
    paths = []
    for stem, fig in figure_set(ctx).items():
        paths += figures.save(fig, out_dir, stem)
    a = agg.attrs
    summary = {
        "store": str(path),
        "analysis": str(ana_path),
        "grid_name": name,
        "kind": kind,
        "aggregate": settings.aggregate,
        "agreement": a.get("agreement"),
        "n_compared": a.get("n_compared"),
        "n_agree": a.get("n_agree"),
        "n_near_boundary": a.get("n_near_boundary"),
        **{
            k: a[k]
            for k in (
                "n_models",
                "n_unfinished",
                "n_diverged",
                "n_cells",
                "n_missing_cells",
                "n_disagreeing_cells",
            )
        },
        "figures": [str(p) for p in paths],
    }
    if verbose:
        print(summary_lines(summary))
        if "boundary" in agg:  # phase boundaries (issue 16)
            from analysis import boundaries

            print(boundaries.summary(agg))
        if summary["n_unfinished"]:
            print(
                f"warning: {summary['n_unfinished']} of {summary['n_models']} models "
                f"unfinished ({summary['n_missing_cells']} cells missing, drawn as missing); "
                "rerun the sweep to train them",
                file=sys.stderr,
            )
    return summary


def summary_lines(s: dict) -> str:
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
    return "\n".join(lines)
