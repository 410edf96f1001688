"""`python -m analysis.explore <store>`: explore a sweep store in the browser.

Serves the explorer on 127.0.0.1 (a free port unless --port) and prints its URL; on a cluster,
forward the port: `ssh -L 5006:localhost:5006 login-node`, then `--port 5006`. With
`--export out.html` it writes one self-contained HTML file instead (opens offline).
Bad input: one line on stderr, exit code 2, nothing written; any other failure (a chunk that
does not decode, an export that cannot be written) one line and exit code 1 (sweep/cli.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from analysis.explore.data import ExploreError, label
from sweep import cli


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def parse_select(items: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        dim, sep, values = item.partition("=")
        if not sep or not dim or not values:
            raise ExploreError(f"--select={item} is not allowed: expected AXIS=VALUE[,VALUE...]")
        out.setdefault(dim, []).extend(v.strip() for v in values.split(","))
    return out


@cli.one_line()
def main(argv: list[str]) -> int:
    t0 = time.perf_counter()
    ap = cli.Parser(prog="python -m analysis.explore", description=__doc__.split("\n")[0])
    ap.add_argument("store", help="a sweep's store, e.g. results/phase")
    ap.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    ap.add_argument("--port", type=int, default=0, help="port (default 0: a free one)")
    ap.add_argument("--x", default=None, help="grid axis along the map's x (default: auto)")
    ap.add_argument("--y", default=None, help="grid axis along the map's y (default: auto)")
    ap.add_argument(
        "--export",
        default=None,
        metavar="OUT.html",
        help="write a self-contained HTML file instead of serving",
    )
    ap.add_argument(
        "--select",
        action="append",
        default=[],
        metavar="AXIS=V1[,V2...]",
        help="with --export: only these values of an axis (repeatable)",
    )
    args = ap.parse_args(argv)
    if not 0 <= args.port <= 65535:
        return _fail(f"--port={args.port} is not allowed: expected 0 (a free port) to 65535")
    out = None
    if args.export is not None:
        out = Path(args.export).expanduser().absolute()
        if out.is_dir() or not out.parent.is_dir():
            return _fail(
                f"--export={args.export} is not allowed: expected a file path in an "
                "existing directory"
            )
    try:
        with cli.about(f"exploring {args.store}"):
            return explore(args, out, t0)
    except ExploreError as e:
        return _fail(str(e))


def explore(args: argparse.Namespace, out: Path | None, t0: float) -> int:
    """Read the store, check the axes asked for, then export the HTML file or serve."""
    select = parse_select(args.select)
    from analysis.explore.data import Explorer

    ex = Explorer(args.store)
    for key, val in (("--x", args.x), ("--y", args.y), *((f"--select {d}", d) for d in select)):
        if val is not None and val not in ex.cell_dims:
            raise ExploreError(
                f"{key}={val} is not allowed: expected a grid axis of the "
                f"store, one of {', '.join(ex.cell_dims) or '(none)'}"
            )
    if args.x is not None and args.x == args.y:
        raise ExploreError(f"--y={args.y} is not allowed: expected an axis other than --x")
    for d, values in select.items():
        known = [label(v) for v in ex.coords[d]]
        bad = [v for v in values if v not in known]
        if bad:
            raise ExploreError(
                f"--select {d}={bad[0]} is not allowed: expected one of {', '.join(known)}"
            )
    ex.summary()  # per-cell numbers, slab by slab
    if out is not None:
        from analysis.explore.app import export

        path, n = export(ex, out, args.x, args.y, select)
        print(
            f"wrote {path} ({n} cells, {path.stat().st_size / 2**20:.1f} MB, "
            f"{time.perf_counter() - t0:.1f} s); open it in a browser, no server needed"
        )
        return 0
    from analysis.explore.app import serve

    print(
        f"read {ex.path}: {len(ex.summary())} cells × {len(ex.seeds)} seeds in "
        f"{time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    serve(ex, args.host, args.port, args.x, args.y)
    return 0


if __name__ == "__main__":
    sys.exit(main())
