"""The figure families, by name: what a grid file lists under `analysis.figures`.

One line per family below; a family is a function `draw(ctx) -> {stem: Figure}` in a module
of analysis/figs/. A grid file picks its families:

    analysis:
      figures: [phase_diagram, feature_panels, loss_curves]

A config that names none (`analysis.figures: null`) gets the generic panels
(`GENERIC_FIGURES`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from analysis.settings import not_allowed

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from analysis.context import Context, FigureFn


class Families(Mapping[str, Any]):
    """Name -> function, from `"<module of analysis.figs>:<function>"`, imported on first use.

    Why lazy: the names are checked before every sweep (the Hydra callback) and in every job
    process; importing the figure modules pulls in matplotlib and seaborn (seconds), which only
    drawing needs.
    """

    def __init__(self, specs: dict[str, str]):
        self.specs = specs

    def __getitem__(self, name: str) -> Any:
        module, attr = self.specs[name].split(":")
        return getattr(importlib.import_module(f"analysis.figs.{module}"), attr)

    def __contains__(self, name: object) -> bool:  # Mapping's would import the module
        return name in self.specs

    def __iter__(self) -> Iterator[str]:
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)


FIGURES: Mapping[str, FigureFn] = Families(
    {
        "phase_diagram": "phase:draw",  # 2→1 / 3→2 phase grids only; skipped elsewhere
        "feature_panels": "features:draw",
        "loss_curves": "curves:draw",
        "arrows_by_density": "arrows:intro",
        "perturbed_arrows": "arrows:perturb",
        "arrows_by_set": "arrows:by_set",
        "gram_bias_norms": "gram:basic",
        "bias_and_gram": "gram:blog",
        "dimensionality": "geometry:draw",
        "neuron_weights": "neurons:privileged",
        "scaled_neuron_weights": "neurons:absval",
        "gram_grid": "latent:gram_grid",
        "embeddings": "latent:embeddings",
        "boundaries": "boundary:draw",  # measured boundaries vs theory; 2→1 / 3→2 grids only
        "dynamics": "dynamics:draw",  # needs train.snapshots
        "absval_check": "absval:draw",  # absval: |x| computed? features per neuron
        "perturbation": "perturbation:draw",  # one feature's density varied (perturb grid)
        "capacity_map": "capacity:capacity_map",  # grids with an n_hidden axis (capacity grid)
        "dims_per_feature": "capacity:dims_by_ratio",  # D* against density for each m/n
        "dimension_diagrams": "dimension:diagrams",  # each (n, m) diagram of a shape-pairs grid
        "dimension_boundaries": "dimension:boundaries",  # every (n, m) boundary against r
    }
)

# Families with a single-axes form, drawn into a caller's matplotlib Axes (the public API's
# `toysweep.figure(name, ds, ax=ax)`): (ctx, ax) -> False when nothing applies to the store.
AXES: Mapping[str, Callable[[Context, Axes], bool]] = Families(
    {
        "phase_diagram": "phase:draw_axes",  # the trained panel with the analytic boundaries
        "boundaries": "boundary:draw_axes",  # the boundary diagram (not the distance figure)
    }
)

CONF_GRIDS = Path(__file__).resolve().parent.parent / "conf" / "grid"
# what a config that names no families (analysis.figures: null) gets
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
