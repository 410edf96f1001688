"""Process hygiene: a driver killed by SIGKILL takes its local worker processes with it.

Real processes: a sweep with two loky workers, its driver killed once both train; every process
the driver had started must be gone within seconds, not train on for minutes as orphans.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.hostile

GONE_WITHIN = 15.0  # seconds after the kill: the watcher polls every 0.5 s


def stat(pid: int) -> tuple[int, str, str] | None:
    """(parent pid, state, start time) of a process, None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), fields[0], fields[19]


def descendants(root: int) -> dict[int, str]:
    """Live descendants of `root`: pid -> start time (a reused pid has another start time)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (s := stat(int(entry.name))) is not None:
            table[int(entry.name)] = s
    out: dict[int, str] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _, start) in table.items():
            if ppid == parent and pid not in out:
                out[pid] = start
                frontier.append(pid)
    return out


def alive(procs: dict[int, str]) -> list[int]:
    """The pids of `procs` still running (the same process, not a zombie)."""
    out = []
    for pid, start in procs.items():
        s = stat(pid)
        if s is not None and s[2] == start and s[1] != "Z":
            out.append(pid)
    return out


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_workers_stop_when_the_driver_is_killed(tmp_path):
    store = tmp_path / "store"
    log = tmp_path / "driver.log"
    args = [
        "-m",
        "sweep",
        "+grid=phase",
        "grid.seeds=2",
        "grid.axes.density=[log,0.1,1.0,4]",
        "grid.axes.relative_importance=[0.5,2.0]",
        "chunk.max_instances=8",  # two blocks of 8 models, one per worker
        "workers=2",
        "train.steps=5000000",  # minutes of training: far longer than the test waits
        "train.compile=false",
        "train.checkpoint_seconds=1",  # the checkpoint file: the sign a worker is training
        "progress=false",
        "analysis.run=false",
        f"store.path={store}",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "0"}
    with open(log, "w") as out:
        driver = subprocess.Popen([sys.executable, *args], cwd=tmp_path, stdout=out, stderr=out,
                                  env=env)
    workers: dict[int, str] = {}
    try:
        # Both workers are training once both blocks have saved a checkpoint (generous limit:
        # two torch imports and a start on a busy 2-core machine).
        deadline = time.monotonic() + 300
        while len(list(store.glob(".jobs/**/*.pt"))) < 2:
            assert driver.poll() is None, f"driver ended early: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no two checkpoints: {log.read_text()[-3000:]}"
            time.sleep(0.5)
        workers = descendants(driver.pid)
        loky = [p for p in workers if b"popen_loky" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(loky) == 2, (workers, log.read_text()[-3000:])

        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
        deadline = time.monotonic() + GONE_WITHIN
        while alive(workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = alive(workers)
        assert not left, f"still running {GONE_WITHIN:.0f} s after the driver's SIGKILL: {left}"
        assert "the driver (pid" in log.read_text()  # the workers said why they stopped
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        for pid in alive(workers):  # never leave a broken run's workers training
            os.kill(pid, signal.SIGKILL)
