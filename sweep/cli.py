"""How every command ends: one line `error: <what> (<where>)` on stderr and a nonzero exit.

`python -m sweep`, `python -m analysis`, `python -m analysis.explore`, `python -m sweep.migrate`
and the end-of-sweep analysis end through `exit_code`, so a failure nobody foresaw (a chunk that
does not decode, an output folder that is a file) reads like the refusals that were foreseen,
instead of a traceback. The traceback is printed only when asked: `--debug` or
`TOYSWEEP_DEBUG=1`. No torch and nothing of the analysis: both packages import it.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NoReturn

DEBUG = "TOYSWEEP_DEBUG"
_ROOT = Path(__file__).resolve().parent.parent
# frames in these folders are this project's, installed or not
OURS = (_ROOT / "sweep", _ROOT / "analysis", _ROOT / "hydra_plugins" / "toysweep")
_ABOUT = "toysweep_about"  # attribute `about` sets on an exception: what it concerns


def take_debug_flag(argv: list[str]) -> list[str]:
    """argv without `--debug`. The flag is kept in the environment, so that the end-of-sweep
    analysis (a Hydra callback) and worker processes see it too."""
    if "--debug" in argv:
        os.environ[DEBUG] = "1"
    return [a for a in argv if a != "--debug"]


def debugging() -> bool:
    return os.environ.get(DEBUG, "") not in ("", "0")


@contextmanager
def about(subject: str) -> Iterator[None]:
    """Name what a failure inside concerns ("analysing <store>") in its one line; the
    innermost `about` wins. Like Python 3.11's add_note, which 3.10 lacks."""
    try:
        yield
    except Exception as e:
        if not hasattr(e, _ABOUT):
            with suppress(AttributeError, TypeError):  # an exception type without a __dict__
                setattr(e, _ABOUT, subject)
        raise


def where(e: BaseException) -> str:
    """What the error concerns, if said, and the innermost frame of our code it passed."""
    place = "outside toysweep's code"
    for frame in traceback.extract_tb(e.__traceback__):
        path = Path(frame.filename).resolve()
        if any(path.is_relative_to(folder) for folder in OURS):
            place = f"at {path.relative_to(_ROOT)}:{frame.lineno}"
    subject = getattr(e, _ABOUT, None)
    return f"{type(e).__name__} {'while ' + subject + ', ' if subject else ''}{place}"


def flat(e: BaseException) -> str:
    """The error's message as one line (a multi-line message is joined)."""
    return " ".join(str(e).split()) or type(e).__name__


def report(e: BaseException, refusals: tuple[type[BaseException], ...] = ()) -> int:
    """Print `e` as one line, after its traceback when debugging; return the exit code.

    A refusal the command foresaw (a bad store or setting) names what and where itself:
    exit 2. Any other error is named by its type, what it concerns and the place in our code
    it came from: exit 1.
    """
    if debugging():
        traceback.print_exception(e)
    if isinstance(e, refusals):
        print(f"error: {flat(e)}", file=sys.stderr)
        return 2
    hint = "" if debugging() else f"; --debug or {DEBUG}=1 shows the traceback"
    print(f"error: {flat(e)} ({where(e)}{hint})", file=sys.stderr)
    return 1


def refused(e: BaseException) -> int:
    """A refusal caught where it was foreseen: its own message, exit 2 (see `report`)."""
    return report(e, (type(e),))


def exit_code(
    call: Callable[[], int | None],
    refusals: tuple[type[BaseException], ...] = (),
    interrupted: str = "interrupted",
) -> int:
    """Run `call`; its exit code, or that of the one line it ended in (see `report`).
    Ctrl-C is `error: <interrupted>`, 130. A SystemExit (a command's own exit) passes."""
    try:
        return call() or 0
    except KeyboardInterrupt:
        print(f"error: {interrupted}", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the point: no failure leaves as a traceback
        return report(e, refusals)


def one_line(
    *refusals: type[BaseException], interrupted: str = "interrupted"
) -> Callable[[Callable[[list[str]], int | None]], Callable[..., int]]:
    """Decorate a command's `main(argv)`: `--debug` is taken out of argv (default: the
    command line), and it returns an exit code whatever happens (`exit_code`)."""

    def wrap(main: Callable[[list[str]], int | None]) -> Callable[..., int]:
        @functools.wraps(main)
        def run(argv: list[str] | None = None) -> int:
            args = take_debug_flag(sys.argv[1:] if argv is None else list(argv))
            return exit_code(lambda: main(args), refusals, interrupted)

        return run

    return wrap


class Parser(argparse.ArgumentParser):
    """argparse with its usage errors as one line (exit 2) instead of a usage block."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault(
            "epilog", f"On failure: one line on stderr; --debug or {DEBUG}=1 adds the traceback."
        )
        super().__init__(*args, **kwargs)


def leave(code: int) -> NoReturn:
    """End a command's process now, with `code`, skipping the interpreter's module teardown.

    Why: with torch, Dynamo, matplotlib and xarray loaded, Python's own exit (tearing down
    thousands of modules) took 1.5-12 s on the 2-core machine (benchmarks/startup.py, "exit"),
    after every file was written, while the atexit handlers themselves take ~0.1 s. So: stop
    this sweep's local worker processes (loky's: their jobs have returned, every chunk is
    written), run the atexit handlers (logging, multiprocessing's clean-up, coverage), then
    leave. Only for a `__main__` that has finished: never for a call inside another program
    (tests, the API), nor under a profiler, which writes its data after the program returns.
    """
    import atexit
    import os

    if sys.getprofile():
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    loky = sys.modules.get("joblib.externals.loky.reusable_executor")
    executor = getattr(loky, "_executor", None)  # the workers of this process, if it started any
    if executor is not None:  # each ends quickly (toysweep_launcher._exit_quickly)
        executor.shutdown(wait=True)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
