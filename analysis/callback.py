"""The end-of-sweep analysis as a Hydra callback, so that the engine never imports the analysis.

Registered in conf/config.yaml:

    hydra:
      callbacks:
        analysis:
          _target_: analysis.callback.AnalysisCallback

- `on_multirun_start` (before the sweeper plans or creates anything) checks `analysis.*`: the
  figure names against analysis.registry, the seed rule, the thresholds, `run`; a bad value
  ends the run with one line `error: analysis.<key>=<value> is not allowed: expected ...` and
  exit code 2, so nothing is trained with settings the analysis would refuse afterwards.
- `on_multirun_end` (after the sweeper, only reached when every block finished) analyses the
  store with the run's `analysis.*` settings when `analysis.run` is true. Any failure there is
  one line and a nonzero exit (`finish`): Hydra turns an exception a callback raises into a
  warning and exit code 0, so nothing may leave this callback as an exception.

The `on_run_*` hooks do the same for `hydra.mode=RUN`, where one process runs the whole sweep.
Heavy imports (xarray, matplotlib) wait until the analysis runs: Hydra also instantiates the
callback in every job process.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from analysis.settings import KEYS, SettingsError, not_allowed
from sweep import cli, timing


def _section(config: DictConfig) -> dict[str, Any]:
    section = OmegaConf.select(config, "analysis", default=None)
    if section is None:
        return {}
    out = OmegaConf.to_container(section, resolve=True, enum_to_str=True)  # typed config: Enums
    return {str(k): v for k, v in out.items()} if isinstance(out, dict) else {}


def check(config: DictConfig) -> dict[str, Any]:
    """The run's analysis settings, checked; SettingsError (one line) if one is bad."""
    from analysis.registry import check_figures
    from analysis.settings import Settings

    section = _section(config)
    for key, value in section.items():
        if key not in (*KEYS, "run"):
            raise not_allowed(key, value, f"a key among run, {', '.join(KEYS)}")
    if not isinstance(section.get("run", True), bool):
        raise not_allowed("run", section["run"], "true or false")
    settings = Settings().updated(section)
    if settings.figures is not None:
        check_figures(settings.figures)
    return section


def run_analysis(config: DictConfig) -> dict[str, Any] | None:
    """Analyse the run's store when analysis.run is true and all its cells are finished."""
    section = check(config)
    if not section.get("run", True):
        return None
    from analysis.report import analyse
    from sweep.reader import open_store

    path = Path(str(config.store.path)).expanduser().absolute()
    with cli.about(f"the end-of-sweep analysis of {path}"):
        ds = open_store(path)
        # A refined grid (sweep/refine.py) leaves points untrained by design: complete when its
        # levels are done (attr `refine_complete`).
        if not (bool(ds["finished"].all()) or bool(ds.attrs.get("refine_complete", False))):
            return None  # the sweep has reported its unfinished cells; nothing to draw yet
        return analyse(path, settings=section)


def finish(config: DictConfig) -> None:
    """`run_analysis`, ending the process in one line with a nonzero exit if it fails: a
    refused store or setting exit 2, anything else (an unwritable figures folder) exit 1."""
    if _section(config).get("run", True) is False:  # checked before the sweep; nothing to draw
        return  # (and nothing to import: analysis.report loads matplotlib, seconds)
    from analysis.report import AnalysisError
    from sweep.reader import StoreError

    def analysis() -> None:
        run_analysis(config)

    code = cli.exit_code(analysis, (StoreError, AnalysisError, SettingsError))
    if code:
        sys.exit(code)


class AnalysisCallback(Callback):
    """Check `analysis.*` before a sweep; analyse its store after it (see the module doc)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        def settings() -> None:
            check(config)

        code = cli.exit_code(settings, (SettingsError,))
        if code:
            sys.exit(code)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        finish(config)
        timing.mark("analysis")

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.on_multirun_start(config)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        if OmegaConf.select(config, "block", default=None) is None:  # not a single job
            finish(config)
