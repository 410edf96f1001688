"""`python -m sweep +grid=<name> [overrides]`: expand a grid and train it.

Without a grid the embedded default, the 2→1 phase diagram (`+grid=phase`), runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

CONF = Path(__file__).resolve().parent.parent / "conf"


def grid_names() -> list[str]:
    return sorted(p.stem for p in (CONF / "grid").glob("*.yaml"))


def check_argv(argv: list[str]) -> list[str]:
    """Pick the default grid and reject an unknown one in one line, before Hydra starts."""
    picked = [a for a in argv if a.split("=", 1)[0].lstrip("+~") == "grid"]
    if not picked:
        return [*argv, "+grid=phase"]
    for arg in picked:
        name = arg.split("=", 1)[1] if "=" in arg else ""
        if name not in grid_names():
            print(f"error: grid={name!r} (from the command line) is not a known grid: expected "
                  f"one of {', '.join(grid_names())} (files in {CONF / 'grid'})", file=sys.stderr)
            sys.exit(2)
    return argv


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict | int:
    from sweep import driver

    if cfg.block is None:  # RUN mode (hydra.mode=RUN): the whole sweep in this process
        return driver.run(cfg)
    return driver.run_block(cfg)


if __name__ == "__main__":
    sys.argv[1:] = check_argv(sys.argv[1:])
    main()
