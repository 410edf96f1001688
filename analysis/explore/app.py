"""Serving the explorer (a Bokeh server on one port) and exporting it as one HTML file."""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
from pathlib import Path

import numpy as np

from analysis.explore.data import ExploreError, Explorer, label
from analysis.explore.payload import payload
from analysis.explore.view import build

# An export embeds every chosen cell's models; past this, ask for a subset (--select).
EXPORT_LIMIT_BYTES = 200 * 2**20


def cell_index(key: str) -> tuple[int, ...]:
    return tuple(int(v) for v in key.split(","))


def make_document(ex: Explorer, x: str | None, y: str | None, lock: threading.Lock):
    """The Bokeh server's per-session document: the page, a click reads one cell."""

    def modify(doc) -> None:
        with lock:
            page = build(ex, x, y, served=True)

        def on_select(attr, old, new) -> None:
            if not new:
                return
            key = page.src.data["key"][new[0]]
            with lock:
                det = ex.cell_detail(cell_index(key))
            page.show(payload(det, len(ex.seeds)))

        def on_refresh() -> None:
            with lock:
                ex.refresh()
                table = ex.summary()
            page.redraw(table)

        page.src.selected.on_change("indices", on_select)
        assert page.refresh is not None
        page.refresh.on_click(on_refresh)
        doc.add_root(page.root)
        doc.title = f"toysweep explorer: {ex.name}"

    return modify


def free_port(host: str) -> int:
    """A port that is free now on host (for --port 0: the server's origins need its number)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def origins(host: str, port: int) -> list[str]:
    """Websocket origins the page may connect from: this host's names at this port only."""
    names = {"localhost", "127.0.0.1", host}
    if host in ("0.0.0.0", "::", ""):
        names |= {socket.gethostname(), socket.getfqdn()}
    return [f"{n}:{port}" for n in sorted(names) if n]


def serve(ex: Explorer, host: str, port: int, x: str | None, y: str | None) -> None:
    """Serve until interrupted; prints the URL once listening. OSError if the port is taken."""
    from bokeh.application import Application
    from bokeh.application.handlers.function import FunctionHandler
    from bokeh.server.server import Server

    logging.getLogger("bokeh").setLevel(logging.WARNING)
    logging.getLogger("tornado").setLevel(logging.ERROR)
    asked = port
    app = Application(FunctionHandler(make_document(ex, x, y, threading.Lock())))
    try:
        port = port or free_port(host)
        server = Server(
            {"/": app},
            address=host,
            port=port,
            num_procs=1,
            allow_websocket_origin=origins(host, port),
        )
    except OSError as e:  # in use, or an address this machine does not have
        if isinstance(e, socket.gaierror) or e.errno == errno.EADDRNOTAVAIL:
            raise ExploreError(
                f"--host={host} is not allowed: {e.strerror or e}; expected an address of "
                "this machine (127.0.0.1, or 0.0.0.0 for all)"
            ) from None
        raise ExploreError(
            f"--port={asked} is not allowed on --host={host}: "
            f"{e.strerror or e}; expected a free port (0 picks one)"
        ) from None
    server.start()
    shown = "localhost" if host in ("127.0.0.1", "localhost") else host
    print(f"explorer of {ex.path} at http://{shown}:{server.port}/ (Ctrl-C to stop)", flush=True)
    try:
        server.io_loop.start()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def subset(ex: Explorer, select: dict[str, list[str]]) -> np.ndarray:
    """Mask over the summary's rows: cells whose axis values are among the selected ones."""
    table = ex.summary()
    keep = np.ones(len(table), bool)
    for d, values in select.items():
        labels = np.array([label(v) for v in ex.coords[d]])
        wanted = np.flatnonzero(np.isin(labels, values))
        keep &= np.isin(table[f"i_{d}"].to_numpy(), wanted)
    return keep


def export(
    ex: Explorer, out: Path, x: str | None, y: str | None, select: dict[str, list[str]]
) -> tuple[Path, int]:
    """Write one self-contained HTML file (Bokeh's JS inlined) of the chosen cells."""
    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    keep = subset(ex, select)
    table = ex.summary()[keep]
    dims = ex.cell_dims
    n, m = ex.ds.sizes["feature"], ex.ds.sizes["hidden"]
    per_cell = len(ex.seeds) * (12 * (n * n + m * n + 6 * n) + 3000)  # JSON bytes, roughly
    if len(table) * per_cell > EXPORT_LIMIT_BYTES:
        raise ExploreError(
            f"--export of {len(table)} cells would be about {len(table) * per_cell / 2**20:.0f} "
            f"MB (limit {EXPORT_LIMIT_BYTES // 2**20} MB): choose a subset with "
            f"--select AXIS=VALUE[,VALUE...] over {', '.join(dims)}"
        )
    cells = [
        tuple(int(v) for v in idx)
        for idx in table[[f"i_{d}" for d in dims]].itertuples(index=False)
    ]
    payloads = {
        ",".join(map(str, ix)): payload(det, len(ex.seeds))
        for ix, det in zip(cells, ex.cell_details(cells), strict=True)
    }
    page = build(ex, x, y, keep=keep, payloads=payloads, served=False)
    text = file_html(page.root, resources=INLINE, title=f"toysweep explorer: {ex.name}")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    return out, len(payloads)
