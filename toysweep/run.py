"""`toysweep.sweep(grid, overrides)`: a sweep from Python, through the command line itself.

Why the CLI in a child process rather than the driver in this one: `python -m sweep` is Hydra's
multirun, whose sweeper and launcher (worker processes, SLURM) and end-of-sweep analysis
callback are the engine a user runs; Hydra configures logging and global state per process, and
its entry point reads sys.argv, neither of which belongs in a notebook's kernel. The child runs
the same command line, so the checks, store and numbers are the CLI's by construction. The
checks also run here first (`sweep.__main__.preflight`, as the hostile-input tests call it), so
a bad setting raises in this process, with the CLI's one line, before any child starts.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import os
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from analysis import callback as analysis_callback
from analysis.settings import SettingsError


class SweepError(RuntimeError):
    """A sweep refused or failed; str() is the CLI's one-line message (without `error: `),
    `code` its exit code (2: bad input, nothing created; 1: blocks failed)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _error_line(text: str, code: int) -> SweepError:
    """The last `error: ...` line the CLI printed, as a SweepError."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    line = errors[-1] if errors else (lines[-1] if lines else f"exit code {code}")
    return SweepError(line.removeprefix("error: "), code)


def check(grid: str, overrides: Sequence[str]) -> Path:
    """Run every check of `python -m sweep +grid=<grid> <overrides>` in this process; return
    the real store path. SweepError with the CLI's line on the first problem; nothing is
    created."""
    from sweep import driver
    from sweep.__main__ import preflight

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            cfg = preflight([f"+grid={grid}", *overrides])
    except SystemExit as e:  # the CLI's checks print one line and exit
        raise _error_line(err.getvalue(), int(e.code or 2)) from None
    try:  # analysis.* as the CLI's analysis callback checks them before the sweeper starts
        analysis_callback.check(cfg)
    except SettingsError as e:
        raise SweepError(str(e), 2) from None
    return driver.store_path(cfg)


def sweep(grid: str = "phase", overrides: Sequence[str] = (), echo: bool = True) -> Path:
    """Train a grid as `python -m sweep +grid=<grid> <overrides...>` does and return its store's
    path (open it with `toysweep.open`).

    grid: a file of conf/grid/ (e.g. "phase", "dynamics"); overrides: Hydra overrides, e.g.
    ["train.steps=1500", "grid.seeds=2", "store.path=/tmp/phase"]; a relative store.path is
    relative to the current directory, as on the command line. The same checks, store, resume
    and end-of-sweep analysis as the CLI (pass "analysis.run=false" to skip the figures).
    echo: print the CLI's output as it comes. Raises SweepError carrying the CLI's one-line
    message: before anything is created for a bad setting (code 2), after the run when blocks
    failed (code 1). An interrupt (Ctrl-C, a notebook's stop button) is passed on to the CLI,
    which keeps the finished cells, and raised again as KeyboardInterrupt.
    """
    overrides = [str(o) for o in overrides]
    path = check(grid, overrides)
    cmd = [sys.executable, "-m", "sweep", f"+grid={grid}", *overrides]
    tail: deque[str] = deque(maxlen=256)  # the end of the output: where the error line is
    decode = codecs.getincrementaldecoder("utf-8")("replace").decode

    def pump(fd: int) -> None:
        """Pass on the CLI's output as it comes (not by lines: its progress bar redraws with
        \\r) until it closes."""
        while chunk := os.read(fd, 65536):
            tail.append(text := decode(chunk))
            if echo:
                sys.stdout.write(text)
                sys.stdout.flush()

    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        assert proc.stdout is not None
        try:
            pump(proc.stdout.fileno())
        except KeyboardInterrupt:  # a notebook's interrupt reaches only this process: pass it on
            proc.send_signal(signal.SIGINT)
            pump(proc.stdout.fileno())  # what it says while stopping, so it never blocks on us
            proc.wait()
            raise
        code = proc.wait()
    if code:
        raise _error_line("".join(tail), code)
    return path
