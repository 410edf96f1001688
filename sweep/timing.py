"""A light timing record of a sweep's phases, for benchmarks/startup.py.

With `TOYSWEEP_TIMING=<file>` in the environment, every process of a sweep (the driver and
the workers it starts, which inherit the environment) appends one JSON line per phase end to
that file: `{"phase": ..., "t": <unix time>, "pid": ...}` plus optional details. Without it a
mark costs one dictionary lookup. Standard library only: the driver marks its own imports.

Why not a profiler: the phases span processes (driver, loky workers) and the costs in question
(imports, Dynamo's tracing, worker start) are what a profiler's own start-up would blur.
"""

from __future__ import annotations

import json
import os
import time

VAR = "TOYSWEEP_TIMING"


def mark(phase: str, **details: object) -> None:
    """Record that `phase` ended now, in this process (nothing when the variable is unset)."""
    path = os.environ.get(VAR)
    if not path:
        return
    line = json.dumps({"phase": phase, "t": time.time(), "pid": os.getpid(), **details})
    # one write of one short line with O_APPEND: lines of concurrent processes never interleave
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)
