"""The figures' shared look: theme, axis labels, log-spaced cell edges, and saving.

Colours are Okabe–Ito (safe for the common colour-vision deficiencies); missing cells are grey
with a cross hatch everywhere, so "no data" never looks like a phase.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib

# Files only, never a display: Agg, unless MPLBACKEND names a backend (a Jupyter kernel sets
# its inline one there, which shows the figures toysweep.figure returns in a notebook).
if not os.environ.get("MPLBACKEND"):
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from analysis.metrics import DEDICATED, IGNORED, SUPERPOSED  # noqa: E402

OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
PHASE_COLOURS = {IGNORED: "#E69F00", DEDICATED: "#56B4E9", SUPERPOSED: "#009E73"}
MISSING_COLOUR = "#CCCCCC"
MISSING_HATCH = "xx"
DISAGREE_HATCH = "//"
AXIS_LABELS = {
    "density": "density p = 1 − S",
    "relative_importance": "relative importance r",
    "n_features": "features n",
    "n_hidden": "hidden dimensions m",
    "model": "model",
    "correlation": "feature sets",
}


@contextmanager
def theme() -> Iterator[None]:
    """seaborn's "ticks" style with the Okabe–Ito cycle, for the figures drawn inside.

    A context (not sns.set_theme) so that importing the analysis never changes a user's global
    matplotlib settings; font sizes stay matplotlib's, which the panels' layouts assume.
    """
    rc = {"axes.grid": False, "figure.dpi": 100, "savefig.dpi": 150}
    with sns.axes_style("ticks", rc=rc), sns.color_palette(list(OKABE_ITO)):
        yield


def is_log_axis(values: Any) -> bool:
    """True for positive values spanning at least a factor 10 (sweep axes are then log-spaced)."""
    v = np.asarray(values, dtype=float)
    return bool(v.size >= 2 and np.all(v > 0) and v.max() / v.min() >= 10)


def cell_edges(values: Any, log: bool) -> np.ndarray:
    """Edges of the cells centred on sorted values: midpoints in log space when log."""
    v = np.asarray(values, dtype=float)
    t = np.log(v) if log else v
    if t.size == 1:
        mid = np.array([t[0] - 0.5, t[0] + 0.5]) if not log else t[0] + np.array([-0.1, 0.1])
    else:
        inner = (t[:-1] + t[1:]) / 2
        mid = np.concatenate([[2 * t[0] - inner[0]], inner, [2 * t[-1] - inner[-1]]])
    return np.exp(mid) if log else mid


def cell_rect(xe: np.ndarray, ye: np.ndarray, i: int, j: int, **kw: Any) -> Rectangle:
    """The rectangle of cell (i, j) between the given edges."""
    return Rectangle((xe[i], ye[j]), xe[i + 1] - xe[i], ye[j + 1] - ye[j], **kw)


def set_axis(ax: Axes, which: str, name: str, values: Any, label: str | None = None) -> bool:
    """Log scale for a log-spaced sweep axis, and its label; returns whether it is log."""
    log = is_log_axis(values)
    getattr(ax, f"set_{which}scale")("log" if log else "linear")
    getattr(ax, f"set_{which}label")(label or AXIS_LABELS.get(name, name))
    return log


def fmt_p(p: float) -> str:
    """A density (or any sweep value) in 3 significant digits."""
    return f"{p:.3g}"


def save(fig: Figure, directory: Path, stem: str) -> list[Path]:
    """Write fig as PNG and SVG into directory, cropped to what is drawn; return both paths.

    The crop is measured once, by a layout pass that renders nothing, and given to both files:
    `bbox_inches="tight"` measures it again in each savefig (a third of the analysis's
    writing time, measured on the phase grid's figures); the crops differ by at most a pixel.
    """
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{stem}.png", directory / f"{stem}.svg"]
    fig.draw_without_rendering()
    crop = fig.get_tightbbox().padded(matplotlib.rcParams["savefig.pad_inches"])
    for p in paths:
        fig.savefig(p, dpi=150, bbox_inches=crop)
    plt.close(fig)
    return paths
