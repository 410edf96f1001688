"""Figures of a store from Python: any registered family (analysis.registry.FIGURES), drawn
as `python -m analysis` draws it, returned instead of written."""

from __future__ import annotations

from pathlib import Path

import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

import toysweep.accessor  # noqa: F401 - registers ds.toysweep
from analysis import registry, source
from analysis.context import Context
from analysis.figs.style import theme
from analysis.report import AnalysisError

Source = xr.Dataset | str | Path


def _context(name: str, store: Source) -> Context:
    registry.check_figures([name])  # one-line SettingsError for an unknown family
    ds = store if isinstance(store, xr.Dataset) else source.open_lazy(store)
    return ds.toysweep.context(families={name})


def figures(name: str, store: Source) -> dict[str, Figure]:
    """Every figure of the family `name` for a store (a path or an opened dataset), by stem
    (the file name `python -m analysis` would give it). AnalysisError (one line) when the
    family has nothing to draw for this store, e.g. `phase_diagram` of a grid that is not a
    closed-form phase grid."""
    ctx = _context(name, store)
    with theme():
        drawn = registry.FIGURES[name](ctx)
    if not drawn:
        raise AnalysisError(f"figure family {name!r}: nothing to draw for this store")
    return drawn


def figure(name: str, store: Source, ax: Axes | None = None) -> Figure:
    """The figure of the family `name` for a store (a path or an opened dataset).

    Without ax: the family's figure, when it draws one (for a family drawing several, e.g.
    `boundaries`, use `figures`). With ax: drawn into that matplotlib Axes, for the families
    with a single-axes form, `phase_diagram` (the trained panel with the analytic boundaries)
    and `boundaries` (the boundary diagram); returns ax's figure. Any other family or a
    family with nothing to draw for this store raises with one line.
    """
    if ax is None:
        drawn = figures(name, store)
        if len(drawn) > 1:
            raise AnalysisError(
                f"figure family {name!r} draws {len(drawn)} figures ({', '.join(drawn)}): "
                "use toysweep.figures() to get them all"
            )
        return next(iter(drawn.values()))
    if name not in registry.AXES:
        registry.check_figures([name])
        raise AnalysisError(
            f"figure family {name!r} has no single-axes form: expected one of "
            f"{', '.join(registry.AXES)} with ax=, or call without ax"
        )
    ctx = _context(name, store)
    with theme():
        if not registry.AXES[name](ctx, ax):
            raise AnalysisError(f"figure family {name!r}: nothing to draw for this store")
    fig = ax.get_figure()
    assert isinstance(fig, Figure)
    return fig
