"""Phase boundaries of the exact expected-loss minimum (the referee), beside the closed forms.

The closed forms in analysis/theory.py are losses of *fixed* candidates (unit norms, zero bias
for the antipodal pair). Here every (r, p) is solved by minimising the exact expected loss
(theory's quadrature, numpy only) over W and b, from many starts, and the extra feature's phase
is read from the global minimiser with the same thresholds as trained models
(analysis.metrics.classify_phases). Along each r the phase is scanned on a log grid in p, and
every change is bisected in log p. At the bisection midpoint the global minimum is the best of
warm starts from *both* bracket ends (so both competing local minima are followed across the
boundary), the closed-form candidates and random starts.

The 2→1 superposed/ignored transition is first order: at r = 0.1 the superposed minimum
(‖W_2‖ ≈ 0.64, positive biases) and the ignored one cross at p ≈ 0.181, where the closed form
says 0.16 (paper.md's note). The minimiser takes seconds per r for 2→1 and ~10 s for 3→2, so
the curves are computed once by `python -m analysis.exact_minimum` into
`analysis/data/exact_boundaries_<kind>.csv` and read from there; `boundary_curve` interpolates
that table.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits

from analysis import theory
from analysis.metrics import PHASE_NAMES, classify_phases
from sweep.quadrature import _loss_and_grad

TABLE = Path(__file__).resolve().parent / "data" / "exact_boundaries.csv"  # + _<kind>
# kind -> (n features, m hidden). 2→1 and 3→2 have closed-form candidates (analysis.theory)
# as starts; the n = 4 shapes of the dimension grid (the quadrature's reach, n <= 4) start from
# warm and random starts only.
SHAPES = {"2to1": (2, 1), "3to2": (3, 2), "4to2": (4, 2), "4to3": (4, 3)}


def importances(kind: str, r: float) -> np.ndarray:
    """n − 1 features of importance 1, the last at r (the phase and dimension grids)."""
    n, _ = SHAPES[kind]
    return np.array([1.0] * (n - 1) + [r])


class Minimum(NamedTuple):
    W: np.ndarray  # (hidden, feature)
    b: np.ndarray  # (feature,)
    loss: float
    phase: int  # phase code of the extra (last) feature


def boundary_name(low: int, high: int) -> str:
    """Name of the boundary between a phase at lower density and another at higher density."""
    return f"{PHASE_NAMES[low]}|{PHASE_NAMES[high]}"


def _local_min(
    theta0: np.ndarray, n: int, m: int, imp: np.ndarray, p: float
) -> tuple[np.ndarray, float]:
    dens = np.full(n, p)
    scale = float(np.sum(imp * dens)) / 3  # loss at W = 0, b = 0: keeps the objective O(1)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        W, b = theta[: m * n].reshape(m, n), theta[m * n :]
        loss, g_W, g_b = _loss_and_grad(W, b, imp, dens)
        assert g_W is not None and g_b is not None
        return float(loss) / scale, np.concatenate([g_W.ravel(), g_b]) / scale

    res = minimize(
        objective,
        theta0,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 3000, "ftol": 1e-15, "gtol": 1e-11},
    )
    return res.x, float(res.fun) * scale


def global_minimum(
    kind: str,
    r: float,
    p: float,
    random_starts: int = 6,
    warm: tuple[np.ndarray, ...] = (),
    seed: int = 0,
) -> Minimum:
    """Best local minimum of the exact loss at (r, p) over candidate, warm and random starts.

    Starts: every closed-form candidate (its W and b), each candidate with the extra feature's
    column shrunk to 0.7 (the free optimum's superposed column is shorter near the boundary),
    the `warm` parameter vectors (W.ravel() then b), and `random_starts` xavier-normal W, b = 0.
    """
    n, m = SHAPES[kind]
    imp = importances(kind, r)
    rng = np.random.default_rng(seed)
    starts = list(warm)
    for cand in theory.CANDIDATES.get(kind, ()):
        W, b = theory.candidate_params(kind, cand.name, p)
        starts.append(np.concatenate([W.ravel(), b]))
        W2 = W.copy()
        W2[:, -1] *= 0.7
        starts.append(np.concatenate([W2.ravel(), b + 0.02 * p]))
    for _ in range(random_starts):
        starts.append(np.concatenate([rng.normal(0, np.sqrt(2 / (m + n)), m * n), np.zeros(n)]))
    best: tuple[np.ndarray, float] | None = None
    with threadpool_limits(limits=1, user_api="blas"):  # tiny matrices: threads only cost
        for theta0 in starts:
            theta, loss = _local_min(np.asarray(theta0, dtype=float), n, m, imp, p)
            if best is None or loss < best[1] - 1e-15:
                best = (theta, loss)
    assert best is not None
    theta, loss = best
    W, b = theta[: m * n].reshape(m, n), theta[m * n :]
    phase = int(classify_phases(W[None], 0.5, 0.5)[0, -1])
    return Minimum(W, b, loss, phase)


def _theta(mn: Minimum) -> np.ndarray:
    return np.concatenate([mn.W.ravel(), mn.b])


def boundaries_at(
    kind: str,
    r: float,
    p_min: float = 0.01,
    p_max: float = 1.0,
    scan: int = 25,
    tol_decades: float = 2e-4,
    random_starts: int = 6,
    bisect_random_starts: int = 1,
) -> list[tuple[str, float]]:
    """(name, p) of every change of the global minimum's phase along p at fixed r.

    Scans `scan` log-spaced densities (each warm-started from its neighbour's minimum too),
    then bisects each change in log10 p until the bracket is below tol_decades. The scan
    looks for the global minimum widely (random starts); the bisection mainly follows the two
    local minima of the bracket ends (warm starts), so it needs few random starts.
    """
    ps = np.geomspace(p_min, p_max, scan)
    mins: list[Minimum] = []
    for p in ps:
        warm = (_theta(mins[-1]),) if mins else ()
        mins.append(global_minimum(kind, r, float(p), random_starts, warm))
    out = []
    for k in range(scan - 1):
        lo, hi = mins[k], mins[k + 1]
        if lo.phase == hi.phase:
            continue
        a, b = np.log10(ps[k]), np.log10(ps[k + 1])
        low_phase, high_phase = lo.phase, hi.phase
        while b - a > tol_decades:
            mid = (a + b) / 2
            mn = global_minimum(kind, r, 10**mid, bisect_random_starts, (_theta(lo), _theta(hi)))
            if mn.phase == lo.phase:
                a, lo = mid, mn
            elif mn.phase == hi.phase:
                b, hi = mid, mn
            else:  # a third phase in between: keep the lower change, the scan misses the other
                b, hi, high_phase = mid, mn, mn.phase
        out.append((boundary_name(low_phase, high_phase), float(10 ** ((a + b) / 2))))
    return out


# Settings of boundaries_at per kind. A 3→2 minimisation costs ~10x a 2→1 one (six weights,
# a larger quadrature), and its one boundary lies above p = 0.15 on r >= 0.1, so its scan is
# coarser and starts at p = 0.05; the bisection does the precision either way.
SETTINGS: dict[str, dict[str, Any]] = {
    "2to1": {"scan": 25, "tol_decades": 2e-4},
    "3to2": {"p_min": 0.05, "scan": 9, "random_starts": 4, "tol_decades": 5e-4},
    # n = 4: one loss-and-gradient evaluation takes ~0.15 s on the loaded 2-core machine (3→2:
    # 3 ms), so a coarse scan and a bisection to 0.01 decades (the trained boundaries' bands
    # are wider); no closed-form candidates, so more random starts at the scan points.
    "4to2": {"p_min": 0.05, "scan": 7, "random_starts": 4, "tol_decades": 0.01},
    "4to3": {"p_min": 0.05, "scan": 7, "random_starts": 4, "tol_decades": 0.01},
}
HEADER = (
    "# Exact expected-loss minimum: phase boundaries of the extra feature.\n"
    "# Made by `python -m analysis.exact_minimum` (analysis/exact_minimum.py).\n"
    "kind,r,boundary,p\n"
)


def compute_table(kind: str, r_values: list[float], out: Path, verbose: bool = True) -> int:
    """Write rows kind,r,boundary,p of the exact-minimum boundaries at each r to `out`, one r
    at a time (a long run killed half-way keeps what it found in `<out>.partial`). Returns the
    number of rows."""
    n = 0
    tmp = out.with_name(out.name + ".partial")
    with open(tmp, "w") as f:
        f.write(HEADER)
        for r in r_values:
            t = time.perf_counter()
            found = boundaries_at(kind, float(r), **SETTINGS[kind])
            for name, p in found:
                f.write(f"{kind},{r:.6g},{name},{p:.6g}\n")
                n += 1
            f.flush()
            if verbose:
                print(f"{kind} r={r:.4g}: {found} ({time.perf_counter() - t:.1f} s)", flush=True)
    tmp.replace(out)
    return n


@cache
def _table() -> tuple[dict, ...]:
    """Rows of every table in analysis/data (exact_boundaries*.csv: one per kind or both)."""
    rows: list[dict] = []
    for path in sorted(TABLE.parent.glob("exact_boundaries*.csv")):
        with open(path) as f:
            rows += [
                {
                    "kind": row["kind"],
                    "r": float(row["r"]),
                    "boundary": row["boundary"],
                    "p": float(row["p"]),
                }
                for row in csv.DictReader(line for line in f if not line.startswith("#"))
            ]
    return tuple(rows)


def boundary_names(kind: str) -> list[str]:
    """Boundaries of the exact-minimum diagram of `kind`, as stored in the table."""
    return sorted({row["boundary"] for row in _table() if row["kind"] == kind})


def boundary_table(kind: str, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(r, p) points of one exact-minimum boundary, sorted by r."""
    pts = sorted(
        (row["r"], row["p"]) for row in _table() if row["kind"] == kind and row["boundary"] == name
    )
    if not pts:
        raise ValueError(
            f"no exact boundary {name!r} for kind {kind!r}; expected one of {boundary_names(kind)}"
        )
    r, p = np.array(pts).T
    return r, p


def boundary_curve(kind: str, name: str, r: np.ndarray | float) -> np.ndarray:
    """Exact-minimum boundary p(r), interpolated linearly in (log r, log p) between table rows.

    NaN outside the r range where the table has this boundary (the boundary does not exist
    there, or was not tabulated). Table spacing is 0.05 decades in r; the curve is smooth, so
    the interpolation error is far below the measurement's 0.02 decades.
    """
    lr = np.log10(np.asarray(r, dtype=float))
    if name not in boundary_names(kind):  # not a boundary of this diagram (or not tabulated)
        return np.full(lr.shape, np.nan)
    tr, tp = boundary_table(kind, name)
    out = 10 ** np.interp(lr, np.log10(tr), np.log10(tp))
    return np.where((lr >= np.log10(tr[0]) - 1e-9) & (lr <= np.log10(tr[-1]) + 1e-9), out, np.nan)


def closed_form_curve(kind: str, name: str, r: np.ndarray | float) -> np.ndarray:
    """The closed-form (fixed-candidate) boundary matching an exact boundary's name, or NaN."""
    b = theory.boundaries_2to1(r) if kind == "2to1" else theory.boundaries_3to2(r)
    r = np.asarray(r, dtype=float)
    if name == "superposed|ignored":
        return np.asarray(b.superposed_ignored)
    if name == "superposed|dedicated":
        return np.asarray(b.superposed_dedicated)
    return np.full(r.shape, np.nan)


def main(argv: list[str] | None = None) -> int:
    """Recompute a table, e.g. the stored ones:
    `python -m analysis.exact_minimum 2to1 --points 41` (24 min on the loaded 2-core machine);
    `python -m analysis.exact_minimum 3to2 --r 0.1 0.2 0.3728 0.5179 0.7197 0.85 1 1.389 3`;
    `python -m analysis.exact_minimum 4to2 --r 0.316227 0.562342` (and 4to3: 14-16 min each on
    the loaded 2-core machine; the r values bracket the dimension grid's, whose table lookup
    interpolates only inside the tabulated range).
    """
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=sorted(SHAPES))
    ap.add_argument("--points", type=int, default=41, help="log-spaced r values on [0.1, 10]")
    ap.add_argument("--r", type=float, nargs="+", help="these r values instead of --points")
    ap.add_argument("--out", type=Path, help="default: analysis/data/exact_boundaries_<kind>.csv")
    args = ap.parse_args(argv)
    t = time.perf_counter()
    r_values = args.r or [float(v) for v in np.geomspace(0.1, 10, args.points)]
    out = args.out or TABLE.parent / f"exact_boundaries_{args.kind}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = compute_table(args.kind, r_values, out)
    print(f"wrote {rows} rows to {out} in {time.perf_counter() - t:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
