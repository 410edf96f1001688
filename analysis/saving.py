"""Write an analysis's figures (PNG and SVG each) into a folder, one process per core.

Why processes: writing the files is most of an analysis's time (the phase grid's five figures:
~9 s of 15 on the loaded 2-core machine, each file drawn afresh by matplotlib with a tight
bounding box), matplotlib's Agg and SVG renderers hold the GIL, and each figure is
independent. The writers are forked after the figures are drawn, so they inherit them and
nothing is pickled. Plain os.fork, not a process pool: a pool's forked workers wait on a pipe
that their siblings also hold open, so a driver killed meanwhile left them waiting forever;
these writers only write their share and exit, whatever happens to the parent. Where fork is
unavailable, or one core, or one figure, the figures are written here one after another: the
same files either way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _write(drawn: dict[str, Figure], stems: list[str], directory: Path) -> None:
    from analysis.figs.style import save

    for stem in stems:
        save(drawn[stem], directory, stem)


def save_all(drawn: dict[str, Figure], directory: Path) -> list[Path]:
    """Write every figure of `drawn` (stem -> figure) as `<stem>.png` and `<stem>.svg` into
    `directory`; return the paths in the order of `drawn`. Closes the figures. A writer's
    failure is raised here as an OSError carrying its message."""
    import matplotlib.pyplot as plt

    from analysis.figs.style import save

    stems = list(drawn)
    writers = min(len(stems), _cores())
    if writers < 2 or not hasattr(os, "fork"):
        return [p for stem, fig in drawn.items() for p in save(fig, directory, stem)]
    directory.mkdir(parents=True, exist_ok=True)
    children = []
    try:
        for k in range(writers):  # 1. fork the writers, each with every writers-th figure
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:  # the writer: its share, then leave without the parent's teardown
                os.close(read)
                code = 0
                try:
                    _write(drawn, stems[k::writers], directory)
                except BaseException as e:  # noqa: BLE001 - reported through the pipe
                    os.write(write, f"{type(e).__name__}: {e}".encode()[:4000])
                    code = 1
                finally:
                    os._exit(code)
            os.close(write)
            children.append((pid, read))
        errors = []
        for pid, read in children:  # 2. wait for each; collect what failed
            with os.fdopen(read, "rb") as f:
                said = f.read().decode(errors="replace")
            _, status = os.waitpid(pid, 0)
            if status or said:
                errors.append(said or f"figure writer {pid} ended with status {status}")
        if errors:
            raise OSError(f"writing figures into {directory}: {'; '.join(errors)}")
    finally:
        for fig in drawn.values():
            plt.close(fig)
    return [directory / f"{stem}.{ext}" for stem in stems for ext in ("png", "svg")]
