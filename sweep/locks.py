"""File locks (flock) on named files: the one way the engine takes a lock on a file.

flock, because the kernel releases it when its holder dies, however it dies: a killed job or
builder never leaves a lock held. Every lock of the engine goes through `flocked`: a block's
(two jobs of one block), the store's swap (jobs against an overwrite), a chunk's record
(sweep.integrity) and a compiled step's package (sweep.packages). The store's own lock, taken
without waiting and naming its holder, is sweep.identity.hold_store.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


@contextlib.contextmanager
def flocked(
    target: Path, *, shared: bool = False, transient: bool = False, required: bool = False
) -> Iterator[bool]:
    """Hold an flock on the file `target` (made if missing) for the with-block: shared or
    exclusive, waiting for it. Yields True once held.

    transient: the file is removed on release, so none is left behind. Why that is safe: it is
    unlinked while still held, and a waiter that had opened it before finds, once it holds it,
    that the path is gone or names a newer file, and starts over; so at any time only the file
    the path names can be held.

    Where no lock can be had (the file cannot be opened: another user's, a read-only folder;
    or the file system has no flock: some network mounts), a required lock raises the OSError;
    any other warns once and yields False: its holder goes on without it, which the callers
    allow because their writes are whole without it (atomic renames, whole chunks).
    """
    while True:
        try:
            handle = open(target, "a")  # noqa: SIM115 - closed below
        except OSError as e:
            if required:
                raise
            log.warning(f"no lock on {target} ({e.strerror or e}); going on without it")
            yield False
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            if not transient or os.fstat(handle.fileno()).st_ino == os.stat(target).st_ino:
                break
        except FileNotFoundError:
            pass  # a transient file unlinked by the holder we waited for: open the new one
        except OSError as e:
            handle.close()
            if required:
                raise
            log.warning(f"no lock on {target} ({e.strerror or e}); going on without it")
            yield False
            return
        except BaseException:
            handle.close()
            raise
        handle.close()
    try:
        yield True
    finally:
        if transient:
            target.unlink(missing_ok=True)
        handle.close()
