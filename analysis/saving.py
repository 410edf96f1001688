"""Write an analysis's figures (PNG and SVG each) into a folder, one process per core.

Why processes: writing the files is most of an analysis's time (the phase grid's five figures:
~9 s of 15 on the loaded 2-core machine, each file drawn afresh by matplotlib with a tight
bounding box), matplotlib's Agg and SVG renderers hold the GIL, and each figure is
independent. The workers are forked after the figures are drawn, so they inherit them: nothing
is pickled but each file's path back. Where fork is unavailable, or one core, or one figure,
the figures are written here one after another: the same files either way.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_DRAWN: dict[str, Figure] = {}  # the figures the forked workers write (set only while they run)


def _cores() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _save_one(stem: str, directory: str) -> list[Path]:
    from analysis.figs.style import save

    return save(_DRAWN[stem], Path(directory), stem)


def save_all(drawn: dict[str, Figure], directory: Path) -> list[Path]:
    """Write every figure of `drawn` (stem -> figure) as `<stem>.png` and `<stem>.svg` into
    `directory`; return the paths in the order of `drawn`. Closes the figures."""
    import matplotlib.pyplot as plt

    from analysis.figs.style import save

    global _DRAWN
    workers = min(len(drawn), _cores())
    if workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return [p for stem, fig in drawn.items() for p in save(fig, directory, stem)]
    directory.mkdir(parents=True, exist_ok=True)
    _DRAWN = drawn
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            done = list(pool.map(_save_one, drawn, [str(directory)] * len(drawn)))
    finally:
        _DRAWN = {}
        for fig in drawn.values():
            plt.close(fig)
    return [p for paths in done for p in paths]
