"""`python -m analysis <store>`: redraw every figure of a store into <store>/figures/.

No retraining: the store is only read. Prints the agreement with theory (phase grids), counts
and the figure paths; a store that cannot be analysed gives one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.split("\n")[0])
    parser.add_argument("store", help="a sweep's store, e.g. results/phase")
    parser.add_argument(
        "--figures-dir", default=None, help="where to write the figures (default: <store>/figures)"
    )
    args = parser.parse_args(argv)

    from analysis.report import AnalysisError, analyse
    from sweep.store import StoreError

    try:
        analyse(args.store, args.figures_dir)
    except (StoreError, AnalysisError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
