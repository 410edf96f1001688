"""`python -m analysis <store>`: redraw every figure of a store into <store>/figures/.

No retraining: the store is only read. Prints the agreement with theory (phase grids), counts
and the figure paths; a store that cannot be analysed, or a bad setting, gives one line on
stderr and exit code 2; any other failure (a chunk that does not decode, an output that cannot
be written) one line and exit code 1 (sweep/cli.py). Settings given here override the store's
`analysis:` config.
"""

from __future__ import annotations

import argparse

from sweep import cli, timing


def parser() -> argparse.ArgumentParser:
    from analysis.registry import FIGURES
    from analysis.settings import RULES

    p = cli.Parser(prog="python -m analysis", description=__doc__.split("\n")[0])
    p.add_argument("store", help="a sweep's store, e.g. results/phase")
    p.add_argument(
        "--figures-dir", default=None, help="where to write the figures (default: <store>/figures)"
    )
    p.add_argument(
        "--figures",
        default=None,
        help="comma-separated figure families (default: the store's grid's); one of "
        + ", ".join(FIGURES),
    )
    p.add_argument("--aggregate", default=None, help=f"seed rule: {' or '.join(RULES)}")
    # Numbers are read by number() below, not argparse's type=float: a bad one then gets the
    # same one-line message as in a config, not argparse's usage block.
    p.add_argument("--norm-threshold", default=None, help="‖W_i‖ below this: ignored")
    p.add_argument(
        "--superposition-threshold", default=None, help="superposition at or above: superposed"
    )
    return p


def number(text: str | None) -> float | str | None:
    """A float if text reads as one; else text itself, which the settings check refuses."""
    try:
        return None if text is None else float(text)
    except ValueError:
        return text


@cli.one_line()
def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)

    from analysis.report import AnalysisError, analyse
    from analysis.settings import SettingsError
    from sweep.reader import StoreError

    timing.mark("imports")
    settings = {
        "figures": args.figures,
        "aggregate": args.aggregate,
        "norm_threshold": number(args.norm_threshold),
        "superposition_threshold": number(args.superposition_threshold),
    }
    try:
        with cli.about(f"analysing {args.store}"):
            analyse(args.store, args.figures_dir, settings=settings)
    except (StoreError, AnalysisError, SettingsError) as e:
        return cli.refused(e)
    timing.mark("analysis")
    return 0


if __name__ == "__main__":
    cli.leave(main())
