"""The end-of-sweep analysis as a Hydra callback (conf/config.yaml, hydra.callbacks.analysis).

MINIMAL VERSION written by the engine helper so that the engine can stop importing analysis/;
the analysis helper's version replaces it. The engine never imports this module: Hydra does.
"""

from __future__ import annotations

import inspect
import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class AnalysisCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Check analysis.* before the sweep creates anything: one line and exit 2 if bad."""
        from sweep.validate import ConfigError, check_analysis

        try:
            check_analysis(config)
        except ConfigError as e:
            print(f"error: {e} (in the sweep config)", file=sys.stderr)
            sys.exit(2)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Analyse the store when every cell finished and analysis.run is true."""
        if not OmegaConf.select(config, "analysis.run", default=True):
            return
        from analysis.report import analyse
        from sweep.store import open_store

        path = Path(str(config.store.path)).expanduser().absolute()
        ds = open_store(path)
        if not bool(ds["finished"].all()):
            return
        settings = OmegaConf.to_container(config.analysis, resolve=True, enum_to_str=True)
        if "settings" in inspect.signature(analyse).parameters:
            analyse(path, settings=settings)
        else:
            analyse(path)
