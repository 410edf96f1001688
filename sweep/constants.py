"""The numbers the engine and the analysis must agree on, each defined here and nowhere else.

A phase is read from trained weights with two thresholds; the sweep's schema (sweep.config,
`analysis:` section), the analysis settings (analysis.settings), the metrics (analysis.metrics)
and the refinement (sweep.refine, which bisects where phases change) all take them from here,
so they cannot drift apart. Plain Python, no imports: the reader, the schema and the analysis
may all import it (the engine never imports analysis/). `tests/test_one_source.py` fails if
any of these names is assigned anywhere else in sweep/ or analysis/.
"""

from __future__ import annotations

# A feature is ignored when ‖W_i‖ < NORM_THRESHOLD. Trained norms are bimodal (≈0 not learned,
# ≈1 learned), so halfway between leaves the widest margin on both sides.
NORM_THRESHOLD = 0.5
# A learned feature is superposed when Σ_{j≠i} (Ŵ_i·W_j)² >= SUPERPOSITION_THRESHOLD, else
# dedicated. The superposed geometry of the 2→1 and 3→2 phase diagrams is an antipodal pair
# (1), a dedicated feature is orthogonal to the rest (0): halfway again. A tight frame of k
# features in d dimensions has k/d - 1: a triangle 1/2 (on the threshold, counted superposed),
# a pentagon 3/2, but a tetrahedron 1/3 would read as dedicated: lower it for larger models.
SUPERPOSITION_THRESHOLD = 0.5
# Both thresholds must lie in this open interval: norms of trained features are ≈0 or ≈1 and
# superposition stays below ~10 for every geometry the grids produce; outside it is a typo.
THRESHOLD_RANGE = (0.0, 10.0)
# The triangle sits exactly on the superposition threshold (2 cos²(120°) = 1/2): rounding error
# must not decide its phase, so "at or above" allows this much below.
TIE_TOL = 1e-9
# A column shorter than this is exactly zero: its direction is undefined, so its superposition
# and dimensionality are 0 rather than computed from noise.
ZERO_NORM = 1e-8

# Phase codes of a feature (and -1 where the feature is absent: padding, unfinished, diverged).
IGNORED, DEDICATED, SUPERPOSED = 0, 1, 2
ABSENT = -1

# Seeds of a cell -> one value. drop_worst: the paper's rule, drop the highest-loss seed, then
# average (phases: the mode of the remaining seeds, ties to the lowest-loss seed's phase); it
# discards the one seed most likely stuck in a local minimum. lowest_loss: the best seed.
AGGREGATE_RULES = ("drop_worst", "lowest_loss")
DEFAULT_AGGREGATE = "drop_worst"
