"""The figure families, by name: what a grid file lists under `analysis.figures`.

One line per family below; a family is a function `draw(ctx) -> {stem: Figure}` in a module
of analysis/figs/. A grid file picks its families:

    analysis:
      figures: [phase_diagram, feature_panels, loss_curves]

A store whose config names none (stores written before grids named their figures) gets the
families of the grid file its config matches (`fallback_figures`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from matplotlib.axes import Axes

from analysis.context import Context, FigureFn
from analysis.figs import (
    absval,
    arrows,
    boundary,
    curves,
    dynamics,
    features,
    geometry,
    gram,
    latent,
    neurons,
    perturbation,
    phase,
)
from analysis.settings import not_allowed

FIGURES: dict[str, FigureFn] = {
    "phase_diagram": phase.draw,  # 2→1 / 3→2 phase grids only; skipped elsewhere
    "feature_panels": features.draw,
    "loss_curves": curves.draw,
    "arrows_by_density": arrows.intro,
    "perturbed_arrows": arrows.perturb,
    "arrows_by_set": arrows.by_set,
    "gram_bias_norms": gram.basic,
    "bias_and_gram": gram.blog,
    "dimensionality": geometry.draw,
    "neuron_weights": neurons.privileged,
    "scaled_neuron_weights": neurons.absval,
    "gram_grid": latent.gram_grid,
    "embeddings": latent.embeddings,
    "boundaries": boundary.draw,  # measured boundaries vs theory; 2→1 / 3→2 phase grids only
    "dynamics": dynamics.draw,  # needs train.snapshots
    "absval_check": absval.draw,  # absval: |x| computed? features per neuron
    "perturbation": perturbation.draw,  # one feature's density varied (perturb grid)
}

# Families with a single-axes form, drawn into a caller's matplotlib Axes (the public API's
# `toysweep.figure(name, ds, ax=ax)`): (ctx, ax) -> False when nothing applies to the store.
AXES: dict[str, Callable[[Context, Axes], bool]] = {
    "phase_diagram": phase.draw_axes,  # the trained panel with the analytic boundaries
    "boundaries": boundary.draw_axes,  # the boundary diagram (not the distance figure)
}

CONF_GRIDS = Path(__file__).resolve().parent.parent / "conf" / "grid"
PHASE_FIGURES = ("phase_diagram", "boundaries", "feature_panels", "loss_curves")
GENERIC_FIGURES = ("feature_panels", "loss_curves")


def check_figures(names: Iterable[str]) -> tuple[str, ...]:
    """The names, if every one is a registered family; else one SettingsError line."""
    names = tuple(names)
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise not_allowed("figures", ",".join(unknown), f"names from {', '.join(FIGURES)}")
    return names


def grid_files() -> dict[str, dict[str, Any]]:
    """conf/grid/<name>.yaml -> its content (a missing conf/ gives {}: an installed package)."""
    out = {}
    for path in sorted(CONF_GRIDS.glob("*.yaml")):
        with open(path) as f:
            out[path.stem] = yaml.safe_load(f) or {}
    return out


def _leaves(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _matches(grid: Mapping[str, Any], cfg: Mapping[str, Any]) -> int:
    """How many model/data/refine settings a grid file fixes, when the config has all of them
    and the same grid axes; -1 otherwise."""
    axes = set(((grid.get("grid") or {}).get("axes") or {}).keys())
    if axes != set(((cfg.get("grid") or {}).get("axes") or {}).keys()):
        return -1
    # refine: phase-refine fixes the same model and data as phase, and its refine section
    # (levels > 0) tells the two apart (a phase store has the schema's levels = 0)
    want = _leaves({k: grid.get(k) or {} for k in ("model", "data", "refine")})
    have = _leaves({k: cfg.get(k) or {} for k in ("model", "data", "refine")})
    return len(want) if all(have.get(k) == v for k, v in want.items()) else -1


def fallback_figures(cfg: Mapping[str, Any], grid_name: str, kind: str | None) -> tuple[str, ...]:
    """Families for a store whose config names none, in order of preference:

    1. the grid file of the store's name (stores written before grids named their figures);
    2. the grid file whose model/data settings and axes the store's config matches (a grid run
       under another name, e.g. `+grid=intro name=intro2`; the most specific match wins);
    3. the phase-diagram families for a closed-form phase grid, else the generic panels.
    """
    grids = grid_files()
    listed: dict[str, list[str]] = {
        n: list((g.get("analysis") or {}).get("figures") or []) for n, g in grids.items()
    }
    if listed.get(grid_name):
        return tuple(listed[grid_name])
    scores = {n: _matches(g, cfg) for n, g in grids.items() if listed.get(n)}
    best = max(scores.values(), default=-1)
    winners = [n for n, s in scores.items() if s == best]
    if best >= 0 and len(winners) == 1:
        return tuple(listed[winners[0]])
    return PHASE_FIGURES if kind is not None else GENERIC_FIGURES
