"""`python -m sweep +grid=<name> [overrides]`: expand a grid and train it.

Without a grid the embedded default, the 2→1 phase diagram (`+grid=phase`), runs. Every
failure ends in one line on stderr and a nonzero exit (sweep/cli.py); `--debug` or
`TOYSWEEP_DEBUG=1` adds the traceback.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from sweep import cli, timing

timing.mark("imports")

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
            print(
                f"error: grid={name!r} (from the command line) is not a known grid: expected "
                f"one of {', '.join(grid_names())} (files in {CONF / 'grid'})",
                file=sys.stderr,
            )
            sys.exit(2)
    return argv


def check_composes(argv: list[str]) -> DictConfig:
    """Compose the config once, so Hydra's own errors (unknown key, bad override syntax,
    unknown launcher) come out as one line instead of a multi-line report. Returns the
    composed config with Hydra's node (the launcher), as the sweeper will see it."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.utils import get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    # The overrides as Hydra's own argument parser reads them, so a flag's value (`--cfg job`,
    # `-cn config`) is not taken for an override.
    overrides = get_args_parser().parse_known_args(argv)[0].overrides
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
        # interpolations (e.g. train.steps=${nope}) are resolved only later: try them now
        OmegaConf.to_container(
            OmegaConf.masked_copy(cfg, [str(k) for k in cfg if k != "hydra"]), resolve=True
        )
    except (HydraException, OmegaConfBaseException, ValueError, TypeError) as e:
        typed = schema_error(e, overrides)
        if typed:  # a value the schema refuses: say which key, which value, what is allowed
            print(f"error: {typed}", file=sys.stderr)
            sys.exit(2)
        detail = " ".join(str(e).split())
        if isinstance(e, (OverrideParseException, ValueError, TypeError)):  # name the override
            parser = OverridesParser.create()
            for arg in overrides:
                try:
                    parser.parse_override(arg)
                except HydraException:
                    detail = f"cannot parse {arg!r}: {detail}"
                    break
                if not arg.split("=", 1)[0].lstrip("+~"):
                    detail = f"cannot parse {arg!r}: no key before '=' ({detail})"
                    break
        print(f"error: {detail} (from the command line)", file=sys.stderr)
        sys.exit(2)
    finally:
        GlobalHydra.instance().clear()
    return cfg


def preflight(argv: list[str]) -> DictConfig:
    """Everything the command line checks before anything is created, in this process (the
    hostile-input tests use it): the grid name, composition against the schema, then every
    setting, the machine, the launcher and the store path. Exits 2 with one line on the first
    problem; returns the composed config."""
    from sweep import driver

    argv = check_argv(argv)
    cfg = check_composes(argv)
    driver.check(cfg)
    return cfg


def schema_error(e: BaseException, overrides: list[str]) -> str | None:
    """`key=value is not allowed: expected …` for a type or choice error of the schema."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf.errors import ValidationError

    from sweep.config import expected, schema_field

    err: BaseException | None = e
    while err is not None and not isinstance(err, ValidationError):
        err = err.__cause__ or err.__context__
    if err is None or not getattr(err, "full_key", None):
        return None
    key = str(err.full_key)
    key = key.split("[")[0]  # a list element: name the list
    value = getattr(err, "value", None)
    parser = OverridesParser.create()
    for arg in overrides:  # the user's own spelling of the value, when it came from them
        try:
            o = parser.parse_override(arg)
        except Exception:  # noqa: BLE001 - unparsable ones are reported by Hydra itself
            continue
        if o.key_or_group == key:
            value = o.value()
    value = list(value) if isinstance(value, (list, tuple)) else value
    where = (
        "from the command line"
        if any(a.lstrip("+~").startswith(key + "=") for a in overrides)
        else "in the config files"
    )
    allowed = expected(key)
    choices = re.search(r"expected one of \[([^\]]*)\]", str(getattr(err, "msg", "")))
    if schema_field(key) is None and choices:  # Hydra's own enums (e.g. hydra.mode)
        allowed = f"one of {choices[1]}"
    return f"{key}={value!r} is not allowed: expected {allowed} ({where})"


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict | int:
    from sweep import driver

    # sweep.refine only where it runs: it reads stores with xarray, which a plain job's process
    # never imports (it writes with zarr alone; ~0.4 s of every worker's start)
    if cfg.block is None:  # RUN mode (hydra.mode=RUN): the whole sweep in this process
        if OmegaConf.select(cfg, "refine.levels", default=None):  # adaptive refinement
            from sweep import refine

            return refine.run(cfg)
        return driver.run(cfg)
    if str(cfg.block).startswith("refine-"):  # a job of an adaptive refinement's level
        from sweep import refine

        return refine.run_job(cfg)
    return driver.run_block(cfg)


@cli.one_line(
    interrupted="interrupted; finished cells are kept, rerun the same command to train the rest"
)
def command(argv: list[str]) -> int:
    """The command line: checks that end in one line before Hydra starts, then the sweep."""
    sys.argv[1:] = check_argv(argv)
    check_composes(sys.argv[1:])
    timing.mark("compose")
    # Hydra's own report of an exception is a trimmed traceback; with HYDRA_FULL_ERROR it
    # re-raises instead, and `one_line` reports it in one line.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    main()
    return 0


if __name__ == "__main__":
    cli.leave(command())
