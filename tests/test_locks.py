"""sweep.locks.flocked, the engine's one file lock: holders exclude each other (shared ones only
exclusive ones), a transient lock file goes when released without letting two hold it at once,
and a lock that cannot be had warns and goes on, or raises where it is required.

Threads stand in for processes: flock locks belong to open files, so two opens in one process
exclude each other as two processes do."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from sweep.locks import flocked

pytestmark = pytest.mark.unit


class Holders:
    """Who holds the lock when: the most at once, and the order they came in."""

    def __init__(self) -> None:
        self.now = self.most = 0
        self.order: list[str] = []
        self.guard = threading.Lock()

    def hold(self, target: Path, name: str, seconds: float, start: float = 0.0, **kw) -> None:
        time.sleep(start)
        with flocked(target, **kw) as held:
            assert held
            with self.guard:
                self.now += 1
                self.most = max(self.most, self.now)
                self.order.append(name)
            time.sleep(seconds)
            with self.guard:
                self.now -= 1


def run(*threads: threading.Thread) -> None:
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive()


def test_a_transient_lock_is_held_by_one_at_a_time_and_leaves_no_file(tmp_path):
    """a holds; b opens the file and waits; a releases and removes the file; c comes after and
    makes a new one. b must not go on holding the removed file beside c (without the check of
    the file it holds against the path, b and c held at once)."""
    target, h = tmp_path / "x.lock", Holders()
    run(
        threading.Thread(target=h.hold, args=(target, "a", 0.3), kwargs={"transient": True}),
        threading.Thread(target=h.hold, args=(target, "b", 0.3, 0.1), kwargs={"transient": True}),
        threading.Thread(target=h.hold, args=(target, "c", 0.3, 0.45), kwargs={"transient": True}),
    )
    assert h.most == 1 and h.order[0] == "a" and sorted(h.order) == ["a", "b", "c"]
    assert not target.exists()


def test_shared_holders_share_and_an_exclusive_one_waits_for_them(tmp_path):
    target, h = tmp_path / "swap", Holders()
    run(
        threading.Thread(target=h.hold, args=(target, "s1", 0.4), kwargs={"shared": True}),
        threading.Thread(target=h.hold, args=(target, "s2", 0.4, 0.1), kwargs={"shared": True}),
        threading.Thread(target=h.hold, args=(target, "x", 0.1, 0.2)),
    )
    assert h.most == 2 and h.order == ["s1", "s2", "x"]
    assert target.exists()  # not transient: the file stays


def test_a_lock_that_cannot_be_had_goes_on_with_a_warning_unless_required(tmp_path, caplog):
    target = tmp_path / "taken.lock"
    target.mkdir()  # cannot be opened as a file (as another user's lock file)
    with (
        caplog.at_level(logging.WARNING, logger="sweep.locks"),
        flocked(target, transient=True) as held,
    ):
        assert held is False
    assert f"no lock on {target}" in caplog.text
    assert target.is_dir()  # not held, so not removed
    with pytest.raises(IsADirectoryError), flocked(target, required=True):
        pass
