"""The explorer's palette and labels, as the project's figures (analysis/figures.py):
Okabe–Ito phases, grey for missing cells, viridis for ordered values, RdBu for signed ones."""

from __future__ import annotations

import numpy as np
from bokeh.models import LogColorMapper

from analysis.metrics import DEDICATED, IGNORED, SUPERPOSED

PHASE_COLOURS = {IGNORED: "#E69F00", DEDICATED: "#56B4E9", SUPERPOSED: "#009E73"}
PHASE_NAMES = {IGNORED: "ignored", DEDICATED: "dedicated", SUPERPOSED: "superposed"}
MISSING = "#CCCCCC"
SEED_COLOURS = (
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#000000",
    "#F0E442",
)
AXIS_LABELS = {
    "density": "density p = 1 − S",
    "relative_importance": "relative importance r",
    "n_features": "features n",
    "n_hidden": "hidden dimensions m",
    "model": "model",
    "correlation": "correlation",
    "shape": "shape n-m (features-hidden)",
}


def axis_label(dim: str) -> str:
    return AXIS_LABELS.get(dim, dim)


def colours(values: np.ndarray, mapper) -> list[str]:
    """Hex colours of values under a Bokeh colour mapper (computed here, so the map needs no
    per-quantity renderer); NaN is grey."""
    pal = list(mapper.palette)
    v = np.asarray(values, dtype=float)
    lo, hi = float(mapper.low), float(mapper.high)
    if isinstance(mapper, LogColorMapper):
        v, lo, hi = np.log(np.where(v > 0, v, np.nan)), np.log(lo), np.log(hi)
    t = np.clip((v - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    k = np.nan_to_num(t * (len(pal) - 1)).round().astype(int)
    return [pal[j] if np.isfinite(x) else MISSING for j, x in zip(k, t, strict=True)]
