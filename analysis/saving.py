"""Draw figure families and write their files (PNG and SVG each), one forked process a family.

Why processes: drawing and writing the figures is most of an analysis's time (the phase grid's
five figures: ~5 of ~7 CPU s on the 2-core machine), matplotlib holds the GIL, and families are
independent. A writer is forked once the analysis dataset is computed, so it inherits the
context (nothing is pickled), draws its family and writes its files. Plain os.fork, not a
process pool: a pool's forked workers wait on a pipe that their siblings also hold open, so a
driver killed meanwhile left them waiting forever; these writers only do their family and exit,
whatever happens to the parent. Where fork is unavailable, or one core, the families are drawn
and written here one after another: the same files either way.

Nothing reaches the figures folder before every family has drawn: writers write into a hidden
folder inside it, whose files are moved into place (one rename each) only when all succeeded.
So a family refused half-way (it cannot draw this store) leaves the folder as it was.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sweep.cores import available_cores

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# a family's drawing: stem -> figure ({} when there is nothing to draw for this store)
Draw = Callable[[], "dict[str, Figure]"]
EXTENSIONS = ("png", "svg")
# Writers at once, per core. All five of the phase grid's families at once on 2 cores took
# 2.2-2.5 s, two at a time 2.4-2.6 s (the longest family waited for a slot): within this VM's
# noise, but a long family no longer starts last. At most this many share a core.
AT_ONCE = 3


class Refused(ValueError):
    """A family that cannot draw this store (its KeyError or ValueError); str(): `<family>:
    <Type>: <message>`, for the caller's one line."""


def _alive(pid: str) -> bool:
    """Whether the process of a staging folder's name still runs (not a number: kept)."""
    try:
        os.kill(int(pid), 0)
    except ValueError:
        return True
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _family(name: str, draw: Draw, directory: Path) -> dict:
    """Draw one family and write its files into directory: {"stems": [...]}, or {"refused":
    message} when the family cannot draw this store. Other errors propagate."""
    import matplotlib.pyplot as plt

    from analysis.figs.style import save, theme

    with theme():
        try:
            figs = draw()
        except (KeyError, ValueError) as e:
            return {"refused": f"{name}: {type(e).__name__}: {e}"}
        try:
            for stem, fig in figs.items():
                save(fig, directory, stem)
        finally:
            for fig in figs.values():
                plt.close(fig)
    return {"stems": list(figs)}


def _fork(name: str, draw: Draw, directory: Path) -> tuple[int, int]:
    """A writer process for one family: (pid, the read end of its report pipe)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the writer: its family, its report, then leave without the parent's teardown
        os.close(read)
        code = 0
        try:
            said = _family(name, draw, directory)
        except BaseException as e:  # noqa: BLE001 - reported through the pipe
            said, code = {"error": f"{name}: {type(e).__name__}: {e}"}, 1
        try:
            os.write(write, json.dumps(said).encode()[:60000])
        finally:
            os._exit(code)
    os.close(write)
    return pid, read


def _collect(pid: int, read: int) -> dict:
    with os.fdopen(read, "rb") as f:
        said = f.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    try:
        return json.loads(said)
    except ValueError:
        return {"error": f"figure writer {pid} ended with status {status} and no report"}


class Staged:
    """Figure families drawn into a hidden folder inside `directory`, moved into it by
    `commit()`. A context: leaving it without a commit removes what was drawn, and `directory`
    itself when this made it and it is empty, so a refused analysis changes nothing.

        with Staged(out_dir) as figures:
            skipped = figures.draw({name: drawing, ...})  # Refused, OSError
            ...  # other outputs, written before the figures appear
            paths = figures.commit()
    """

    def __init__(self, directory: Path):
        self.directory = directory
        self.stems: dict[str, list[str]] = {}

    def __enter__(self) -> Staged:
        # imported here, once: every writer forked by draw() inherits them (~0.8 s of imports)
        import matplotlib.pyplot  # noqa: F401

        import analysis.figs.style  # noqa: F401

        self.made = not self.directory.exists()
        self.directory.mkdir(parents=True, exist_ok=True)
        for old in self.directory.glob(".new-*-*"):  # of an analysis killed half-way
            if not _alive(old.name.split("-")[1]):
                shutil.rmtree(old, ignore_errors=True)
        self.staging = Path(tempfile.mkdtemp(dir=self.directory, prefix=f".new-{os.getpid()}-"))
        return self

    def draw(self, families: dict[str, Draw]) -> list[str]:
        """Draw every family (name -> drawing) and write each figure as `<stem>.png` and
        `<stem>.svg` into the staging folder; return the families with nothing to draw. Raises
        Refused (a family cannot draw this store) or OSError (a writer failed)."""
        reports = _run(families, self.staging)
        refused = [r["refused"] for r in reports.values() if "refused" in r]
        if refused:
            raise Refused(refused[0])
        errors = [r["error"] for r in reports.values() if "error" in r]
        if errors:
            raise OSError(f"writing figures into {self.directory}: {'; '.join(errors)}")
        self.stems = {name: reports[name]["stems"] for name in families}
        return [name for name, stems in self.stems.items() if not stems]

    def commit(self) -> list[Path]:
        """Move the drawn files into the folder (one rename each); their paths, in the order
        of the families and their figures."""
        paths = []
        for stems in self.stems.values():
            for stem in stems:
                for ext in EXTENSIONS:
                    os.replace(self.staging / f"{stem}.{ext}", self.directory / f"{stem}.{ext}")
                    paths.append(self.directory / f"{stem}.{ext}")
        return paths

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        if self.made and not any(self.directory.iterdir()):
            self.directory.rmdir()  # a refused analysis leaves no empty folder behind


def _run(families: dict[str, Draw], staging: Path) -> dict[str, dict]:
    """Each family's report, drawn by at most one writer per core at once (here, one after
    another, where fork is unavailable or there is one core)."""
    if available_cores() < 2 or len(families) < 2 or not hasattr(os, "fork"):
        return {name: _family(name, draw, staging) for name, draw in families.items()}
    waiting = list(families.items())
    running: list[tuple[str, int, int]] = []
    reports: dict[str, dict] = {}
    while waiting or running:
        while waiting and len(running) < AT_ONCE * available_cores():
            name, draw = waiting.pop(0)
            running.append((name, *_fork(name, draw, staging)))
        ready, _, _ = select.select([read for _, _, read in running], [], [])
        done = next(r for r in running if r[2] == ready[0])  # a writer that reported
        running.remove(done)
        reports[done[0]] = _collect(done[1], done[2])
    return reports
